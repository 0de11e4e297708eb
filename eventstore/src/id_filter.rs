//! [`IdFilter`]: the writer's approximate set of every stored event id, a scalable Bloom
//! filter that grows with the log at a bounded false-positive rate.
//!
//! A miss proves an id is new, so the writer consults the recent-ids map and the sled
//! index only for a possible hit. A plain Bloom filter is sized once: as the log grows
//! past its size, its false-positive rate climbs, and with it the sled lookups on the
//! writer thread. This one is a list of Bloom filters (Almeida et al., "Scalable Bloom
//! Filters", 2007): ids go into the newest; when it holds its capacity a new one is added
//! with twice the capacity and half the false-positive rate. The rates form a geometric
//! series, `target/2 + target/4 + ...`, so the chance that an id never inserted hits any of
//! them stays under `target` however many are added, and memory stays proportional to the
//! ids held (about 16 bits per id at a 0.1% target).

/// Every id inserted, approximately: `contains` never misses an inserted id and answers a
/// false "maybe" for fewer than `target` of the others.
#[derive(Debug)]
pub(crate) struct IdFilter {
    /// Oldest first; ids go into the last one.
    filters: Vec<Stage>,
}

/// One Bloom filter of the list, with what it was sized for.
#[derive(Debug)]
struct Stage {
    bloom: fastbloom::BloomFilter,
    capacity: u64,
    inserted: u64,
    false_positive_rate: f64,
}

impl Stage {
    fn new(capacity: u64, false_positive_rate: f64) -> Stage {
        Stage {
            bloom: fastbloom::BloomFilter::with_false_pos(false_positive_rate)
                .expected_items(capacity as usize),
            capacity,
            inserted: 0,
            false_positive_rate,
        }
    }
}

impl IdFilter {
    /// An empty filter whose first stage holds `initial_capacity` ids, the whole filter
    /// keeping its false-positive rate under `target` (for example 0.001).
    pub(crate) fn new(initial_capacity: u64, target: f64) -> IdFilter {
        assert!(
            target > 0.0 && target < 1.0,
            "a false-positive rate is between 0 and 1"
        );
        IdFilter {
            // Stages at target/4, target/8, ...: the nominal rates sum to half the target,
            // leaving the other half as margin for how far a real Bloom filter strays
            // from its nominal rate.
            filters: vec![Stage::new(initial_capacity.max(1), target / 4.0)],
        }
    }

    /// Adds an id, first adding a stage when the newest one holds its capacity.
    pub(crate) fn insert(&mut self, id: &[u8; 16]) {
        let newest = self.filters.last().expect("one stage at least");
        if newest.inserted >= newest.capacity {
            let next = Stage::new(
                newest.capacity.saturating_mul(2),
                newest.false_positive_rate / 2.0,
            );
            self.filters.push(next);
        }
        let newest = self.filters.last_mut().expect("one stage at least");
        newest.bloom.insert(id);
        newest.inserted += 1;
    }

    /// Whether the id may have been inserted; `false` proves it was not.
    pub(crate) fn contains(&self, id: &[u8; 16]) -> bool {
        // The newest stage first: a re-sent id is most often a recent one.
        self.filters
            .iter()
            .rev()
            .any(|stage| stage.bloom.contains(id))
    }

    /// How many Bloom filters the list holds.
    #[cfg(test)]
    fn stages(&self) -> usize {
        self.filters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct ids from a counter: the counter's bytes, spread by a multiplication so
    /// that they do not share long prefixes.
    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[8..].copy_from_slice(&n.to_le_bytes());
        id
    }

    #[test]
    fn inserted_ids_are_always_found() {
        let mut filter = IdFilter::new(100, 0.001);
        for n in 0..5_000 {
            filter.insert(&id(n));
        }
        assert!((0..5_000).all(|n| filter.contains(&id(n))));
        // 100 + 200 + 400 + 800 + 1,600 + 3,200 >= 5,000: six stages.
        assert_eq!(filter.stages(), 6);
    }

    #[test]
    fn grows_to_twenty_times_its_capacity_under_the_target_rate() {
        let target = 0.001;
        let initial = 10_000u64;
        let mut filter = IdFilter::new(initial, target);
        for n in 0..initial * 20 {
            filter.insert(&id(n));
        }
        assert!(filter.stages() > 1, "the filter grew");
        let probes = 400_000u64;
        let false_positives = (0..probes)
            .filter(|n| filter.contains(&id(u64::MAX - n)))
            .count();
        let rate = false_positives as f64 / probes as f64;
        assert!(
            rate < target,
            "false-positive rate {rate} at 20x the initial capacity, target {target}"
        );
    }

    #[test]
    fn a_fixed_size_filter_would_not_have_held_the_rate() {
        // The reason for the list: one Bloom filter sized for the initial capacity,
        // filled to 20 times it, answers "maybe" far above the target.
        let mut fixed = fastbloom::BloomFilter::with_false_pos(0.001).expected_items(10_000);
        for n in 0..200_000u64 {
            fixed.insert(&id(n));
        }
        let hits = (0..100_000u64)
            .filter(|n| fixed.contains(&id(u64::MAX - n)))
            .count();
        assert!(hits > 10_000, "{hits} false positives in 100,000");
    }
}
