//! The `correlations` read model: for each correlation id (the business transaction an
//! event belongs to, in its metadata), the log positions of its events in log order;
//! and the query of one correlation's positions, for
//! `GET /api/v1/correlations/{correlation_id}`.
//!
//! Why a read model and not a tree kept by the store's indexer: the index is the
//! store's own (only `eventstore` imports sled) and the write path's, and a new tree
//! there would be empty for every event appended before it existed, needing a migration
//! of existing data directories; a read model is built from position 0 when it is
//! first started, rebuilt in blue-green like the others (`annals projections rebuild
//! correlations`), and costs the write path nothing. What it costs is a projection
//! touching nearly every event (every command sets a correlation id).
//!
//! Positions are stored per correlation in chunks of [`POSITIONS_PER_CHUNK`] (key: the
//! correlation id's 16 bytes and the chunk number, big-endian), with a count per
//! correlation telling which chunk the next position goes to: a correlation costs two
//! keys per batch whatever its length, and a live update rewrites at most one chunk.
//! Events without a correlation id are not indexed.

use eventstore::{Model, StoredEvent};
use projections::{ApplyError, Changes, Error, Projection};

use crate::CORRELATIONS;

/// Positions per stored chunk.
pub const POSITIONS_PER_CHUNK: u64 = 128;

/// Correlation id (16 bytes) ++ chunk number (u32, big-endian) -> positions, ascending.
const CHUNKS: &str = "correlation_chunks";

/// Correlation id (16 bytes) -> how many positions it has.
const COUNTS: &str = "correlation_counts";

/// The log positions of each correlation's events.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorrelationsProjection;

impl Projection for CorrelationsProjection {
    fn name(&self) -> &str {
        CORRELATIONS
    }

    fn version(&self) -> u32 {
        1
    }

    fn apply(&self, event: &StoredEvent<'_>, changes: &mut Changes) -> Result<(), ApplyError> {
        let Some(correlation_id) = event.metadata.correlation_id else {
            return Ok(());
        };
        let count = changes.entry::<u64>(COUNTS, &correlation_id)?;
        let index = count.unwrap_or(0);
        *count = Some(index + 1);
        let chunk = u32::try_from(index / POSITIONS_PER_CHUNK).map_err(|_| {
            ApplyError::Inconsistent(format!(
                "correlation {} has more than {} events",
                hex(&correlation_id),
                u64::from(u32::MAX) * POSITIONS_PER_CHUNK
            ))
        })?;
        let positions = changes.entry::<Vec<u64>>(CHUNKS, &chunk_key(&correlation_id, chunk))?;
        positions.get_or_insert_with(Vec::new).push(event.position);
        Ok(())
    }
}

fn chunk_key(correlation_id: &[u8; 16], chunk: u32) -> [u8; 20] {
    let mut key = [0; 20];
    key[..16].copy_from_slice(correlation_id);
    key[16..].copy_from_slice(&chunk.to_be_bytes());
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Up to `limit` log positions of the events of `correlation_id`, in log order, and
/// whether more follow. An unknown correlation has none.
pub fn correlated_positions(
    model: &Model,
    correlation_id: &[u8; 16],
    limit: usize,
) -> Result<(Vec<u64>, bool), Error> {
    let wanted = limit.saturating_add(1);
    let chunks = wanted.div_ceil(POSITIONS_PER_CHUNK as usize);
    let mut positions: Vec<u64> =
        projections::scan::<Vec<u64>>(model, CHUNKS, correlation_id, None, chunks)?
            .into_iter()
            .flat_map(|(_, chunk)| chunk)
            .take(wanted)
            .collect();
    let more = positions.len() > limit;
    positions.truncate(limit);
    Ok((positions, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check, order};

    const FIRST: [u8; 16] = [1; 16];
    const SECOND: [u8; 16] = [2; 16];

    fn placed(order_id: &str) -> orders::Event {
        orders::Event::OrderPlaced {
            order_id: order_id.into(),
            customer_id: "alice".into(),
            lines: vec![],
            shipping_address: None,
        }
    }

    /// Every position of `correlation_id` in the model, chunk by chunk.
    fn positions(model: &projections::MemoryModel, correlation_id: [u8; 16]) -> Vec<u64> {
        model
            .rows::<Vec<u64>>(CHUNKS)
            .unwrap()
            .into_iter()
            .filter(|(key, _)| key[..16] == correlation_id)
            .flat_map(|(_, chunk)| chunk)
            .collect()
    }

    #[test]
    fn events_are_indexed_by_their_correlation_in_log_order() {
        let model = check(
            &CorrelationsProjection,
            &[order("o1", placed("o1")).correlated(FIRST)],
            &[
                order("o2", placed("o2")).correlated(SECOND),
                order("o1", orders::Event::OrderConfirmed { total: 1 }).correlated(FIRST),
                order("o3", placed("o3")),
            ],
        )
        .unwrap();
        assert_eq!(positions(&model, FIRST), vec![0, 2]);
        assert_eq!(positions(&model, SECOND), vec![1]);
        assert_eq!(
            model.rows::<u64>(COUNTS).unwrap().len(),
            2,
            "an event without a correlation is not indexed"
        );
    }

    #[test]
    fn a_long_correlation_fills_chunk_after_chunk() {
        let events: Vec<_> = (0..POSITIONS_PER_CHUNK + 3)
            .map(|_| order("o1", placed("o1")).correlated(FIRST))
            .collect();
        let model = check(&CorrelationsProjection, &events[..5], &events[5..]).unwrap();
        let chunks = model.rows::<Vec<u64>>(CHUNKS).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].1.len() as u64, POSITIONS_PER_CHUNK);
        assert_eq!(
            chunks[1].1,
            (POSITIONS_PER_CHUNK..POSITIONS_PER_CHUNK + 3).collect::<Vec<_>>()
        );
        assert_eq!(
            positions(&model, FIRST),
            (0..POSITIONS_PER_CHUNK + 3).collect::<Vec<_>>()
        );
    }
}
