//! The seeded generator of every randomized test: xorshift64*, seeded from the clock or
//! from `ANNALS_TEST_SEED`, and printed, so that a failing run can be repeated exactly.

use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that replays a randomized test: the same name for every test
/// of the workspace (it replaces `SAGA_SEED`, `PROJECTIONS_SEED`, `READ_MODELS_SEED` and
/// `ANNALS_CRASH_SEED`).
pub const SEED_VARIABLE: &str = "ANNALS_TEST_SEED";

/// xorshift64*: small, fast and deterministic; not for anything but tests.
#[derive(Debug, Clone)]
pub struct Random(u64);

impl Random {
    /// A generator seeded from `ANNALS_TEST_SEED` if set, else from the clock. The seed is
    /// printed (shown when the test fails) with the command line that repeats it.
    pub fn seeded(test: &str) -> Random {
        let seed = match std::env::var(SEED_VARIABLE) {
            Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                panic!("{SEED_VARIABLE}={text:?} is not a number; give the seed a test printed")
            }),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_nanos() as u64,
        };
        eprintln!("{test}: seed {seed} ({SEED_VARIABLE}={seed} repeats it)");
        Random::from_seed(seed)
    }

    /// A generator with a fixed seed (zero, which xorshift cannot leave, is replaced).
    pub fn from_seed(seed: u64) -> Random {
        Random(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Random::below(0) has no answer");
        self.next_u64() % bound
    }

    /// A generator of its own for another task, derived from this one (so one printed
    /// seed still replays every task).
    pub fn split(&mut self) -> Random {
        Random::from_seed(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::Random;

    #[test]
    fn a_seed_replays_the_same_sequence() {
        let mut first = Random::from_seed(42);
        let mut second = Random::from_seed(42);
        let a: Vec<u64> = (0..100).map(|_| first.below(1000)).collect();
        let b: Vec<u64> = (0..100).map(|_| second.below(1000)).collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|&n| n != a[0]), "the sequence varies");
    }

    #[test]
    fn a_zero_seed_still_varies() {
        let mut random = Random::from_seed(0);
        assert_ne!(random.next_u64(), random.next_u64());
    }
}
