//! Opening a data directory: take the lock, recover the log and bring the index up to its
//! end (`recovery`), load what the writer keeps in memory (stream heads, the id filter),
//! and start the writer, syncer and indexer threads.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::StoreConfig;
use crate::derived::index::Index;
use crate::error::{Error, PositionText};
use crate::indexer::run_indexer;
use crate::lock_file::lock_dir;
use crate::reads::RecentCommits;
use crate::recovery::recover;
use crate::segment::{self, DurableEnd};
use crate::segment_files;
use crate::shared::Shared;
use crate::store::{EventStore, Threads};
use crate::syncer;
use crate::writer::{self, Writer};

impl EventStore {
    /// Opens (or creates) the store in `dir`: takes the lock, recovers the log (cutting a
    /// torn tail, refusing corruption), brings the index up to the end of the log, and
    /// starts the writer and indexer threads. A directory whose writer failed earlier in
    /// this process is refused with [`Error::RestartRequired`]: only a fresh process
    /// reopens it (see `failed_dirs`).
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<EventStore, Error> {
        Self::open_with_progress(dir, config, &mut |_, _| {})
    }

    /// [`EventStore::open`], calling `progress(bytes_done, bytes_total)` while the index
    /// catches up with the log (which, for a missing index, is a rebuild of all of it).
    pub fn open_with_progress(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, false, progress)
    }

    /// [`EventStore::open_with_progress`], but the derived index is deleted first (the
    /// whole `index/` sled database: stream and id indexes, heads, checkpoints, snapshots,
    /// read models), so it is rebuilt from the whole log while
    /// `progress(bytes_done, bytes_total)` is called. The lock is taken before anything
    /// is deleted and held throughout, so no other process sees the index half rebuilt.
    /// Nothing in the log changes.
    pub fn open_rebuilding_index(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, true, progress)
    }

    fn open_inner(
        dir: &Path,
        config: StoreConfig,
        rebuild_index: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        let dir = dir.to_path_buf();
        if !dir.is_dir() {
            if !config.create_if_missing {
                return Err(Error::MissingDataDir(dir));
            }
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        crate::failed_dirs::refuse_if_failed(&dir)?;
        let lock = lock_dir(&dir)?;
        let log_dir = dir.join("log");
        std::fs::create_dir_all(&log_dir).map_err(Error::io(&log_dir))?;
        let mut segments = segment::list_segments(&log_dir)?;
        if segments.is_empty() {
            segment_files::create_segment(&log_dir, 0)?;
            segments.push(0);
        }
        if segments[0] != 0 {
            return Err(Error::Corrupt {
                segment: log_dir.join(segment::segment_file_name(segments[0])),
                offset: 0,
                after: PositionText(None),
                reason: "the first segment does not start at position 0".into(),
            });
        }
        let index_dir = dir.join("index");
        if rebuild_index && index_dir.exists() {
            // Deleting the files is much faster than emptying sled's trees key by key,
            // and safe under the lock: a crash now leaves a missing or partial index,
            // which the next open rebuilds anyway.
            std::fs::remove_dir_all(&index_dir).map_err(Error::io(&index_dir))?;
        }
        let index = Index::open(&index_dir, config.index_cache_bytes)?;
        let recovered = recover(&log_dir, &segments, &index, &config, progress)?;
        let heads = index.all_heads()?;
        let stored_ids = index.all_event_ids()?;
        let mut seen = fastbloom::BloomFilter::with_false_pos(0.001)
            .expected_items((stored_ids.len() * 2).max(4_000_000));
        for id in &stored_ids {
            seen.insert(id);
        }

        let last_segment = *segments.last().expect("at least one segment");
        let durable_end = DurableEnd {
            next_position: recovered.next_position,
            active_segment: last_segment,
            active_len: recovered.end_offset,
        };
        let (durable, _) = watch::channel(durable_end);
        let shared = Arc::new(Shared {
            dir,
            log_dir: log_dir.clone(),
            index,
            durable,
            indexed: Mutex::new(recovered.next_position),
            indexed_changed: Condvar::new(),
            segments: RwLock::new(segments),
            readers_waiting: AtomicUsize::new(0),
            recent_commits: Mutex::new(RecentCommits::default()),
            writer_failure: watch::channel(None).0,
            closed: CancellationToken::new(),
            lock: Mutex::new(Some(lock)),
            config,
        });

        let segment_path = log_dir.join(segment::segment_file_name(last_segment));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment_path)
            .map_err(Error::io(&segment_path))?;
        if shared.config.preallocate_segments {
            segment_files::zero_fill(&file, &segment_path, shared.config.segment_bytes)?;
        }
        let writer = Writer::new(
            shared.clone(),
            Arc::new(file),
            writer::LogEnd {
                segment: last_segment,
                segment_len: recovered.end_offset,
                next_position: recovered.next_position,
                last_hash: recovered.last_hash,
            },
            heads,
            seen,
        );
        let (inbox, inbox_rx) = mpsc::channel(shared.config.append_queue);
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel(64);
        let indexer_shared = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("annals-indexer".into())
            .spawn(move || run_indexer(indexer_shared, index_rx))
            .map_err(Error::io(&log_dir))?;
        let syncer_shared = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("annals-syncer".into())
            .spawn(move || syncer::run_syncer(syncer_shared, sync_rx, index_tx))
            .map_err(Error::io(&log_dir))?;
        let writer = std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || writer.run(inbox_rx, sync_tx))
            .map_err(Error::io(&log_dir))?;
        Ok(EventStore {
            shared,
            inbox,
            threads: Arc::new(Mutex::new(Threads {
                writer: Some(writer),
                syncer: Some(syncer),
                indexer: Some(indexer),
            })),
        })
    }
}
