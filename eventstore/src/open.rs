//! Opening a data directory: take the lock, recover the log and bring the index up to its
//! end (`recovery`), fill the writer's id filter from the index (streamed, never all ids
//! at once; stream heads are not loaded but read on demand, see `stream_heads`), and
//! start the writer, syncer and indexer threads.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::StoreConfig;
use crate::derived::index::Index;
use crate::error::{Error, PositionText};
use crate::id_filter::IdFilter;
use crate::indexer::run_indexer;
use crate::io::LogFs;
use crate::io::real::RealFs;
use crate::lock_file::lock_dir;
use crate::reads::RecentCommits;
use crate::recovery::recover;
use crate::segment::{self, DurableEnd};
use crate::segment_files;
use crate::shared::Shared;
use crate::store::{EventStore, Threads};
use crate::stream_heads::StreamHeads;
use crate::syncer;
use crate::writer::{self, Writer};

/// The most the writer's id filter may answer "maybe" for a new id: a false "maybe" costs
/// one index lookup on the writer thread.
const ID_FILTER_FALSE_POSITIVES: f64 = 0.001;

impl EventStore {
    /// Opens (or creates) the store in `dir`: takes the lock, recovers the log (cutting a
    /// torn tail, refusing corruption), brings the index up to the end of the log, and
    /// starts the writer and indexer threads. A directory whose writer failed earlier in
    /// this process is refused with [`Error::RestartRequired`]: only a fresh process
    /// reopens it (see `failed_dirs`).
    pub fn open(dir: impl AsRef<Path>, config: StoreConfig) -> Result<EventStore, Error> {
        Self::open_with_progress(dir, config, &mut |_, _| {})
    }

    /// [`EventStore::open`] with the log's files behind `log` instead of `dir/log`: the
    /// simulated disk of the storage tests (`io::sim`), or any other [`LogFs`]. The lock
    /// and the index stay in `dir`. A writer failure does not bar reopening here: a
    /// simulated disk's `restart` stands for the fresh process.
    pub fn open_with_log_fs(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        log: Arc<dyn LogFs>,
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, false, Some(log), &mut |_, _| {})
    }

    /// [`EventStore::open`], calling `progress(bytes_done, bytes_total)` while the index
    /// catches up with the log (which, for a missing index, is a rebuild of all of it).
    pub fn open_with_progress(
        dir: impl AsRef<Path>,
        config: StoreConfig,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        Self::open_inner(dir.as_ref(), config, false, None, progress)
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
        Self::open_inner(dir.as_ref(), config, true, None, progress)
    }

    fn open_inner(
        dir: &Path,
        config: StoreConfig,
        rebuild_index: bool,
        log_fs: Option<Arc<dyn LogFs>>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<EventStore, Error> {
        let dir = dir.to_path_buf();
        if !dir.is_dir() {
            if !config.create_if_missing {
                return Err(Error::MissingDataDir(dir));
            }
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        // A log behind another `LogFs` (the simulated disk) has no page cache to distrust:
        // its `restart` is the fresh process.
        if log_fs.is_none() {
            crate::failed_dirs::refuse_if_failed(&dir)?;
        }
        let lock = lock_dir(&dir)?;
        let log_dir = dir.join("log");
        let fs = match log_fs {
            Some(fs) => fs,
            None => {
                std::fs::create_dir_all(&log_dir).map_err(Error::io(&log_dir))?;
                Arc::new(RealFs::new(&log_dir)) as Arc<dyn LogFs>
            }
        };
        let mut segments = segment::list_segments(fs.as_ref())?;
        if segments.is_empty() {
            segment_files::create_segment(fs.as_ref(), 0)?;
            segments.push(0);
        }
        if segments[0] != 0 {
            return Err(Error::Corrupt {
                segment: fs.path(&segment::segment_file_name(segments[0])),
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
        let recovered = recover(&fs, &segments, &index, &config, progress)?;
        // A segment's name may still be only in the page cache (a process died before its
        // directory sync, or the sync failed): make the directory durable before the
        // writer appends acknowledged events to a file a power loss could unname.
        segment_files::sync_dir(fs.as_ref())?;
        // The writer's id filter, sized for twice the events the log holds (each has one
        // id), so that the log can double before the filter adds a stage. The ids stream
        // from the index into it, one run at a time: none are collected on the way.
        let mut seen = IdFilter::new(
            recovered
                .next_position
                .saturating_mul(2)
                .max(config.id_filter_floor),
            ID_FILTER_FALSE_POSITIVES,
        );
        for id in index.event_ids() {
            seen.insert(&id?);
        }
        // No stream heads are loaded: the writer reads them from the index as it needs
        // them and keeps a bounded number (`stream_heads`).
        let heads = StreamHeads::new(config.stream_head_cache);

        let last_segment = *segments.last().expect("at least one segment");
        let durable_end = DurableEnd {
            next_position: recovered.next_position,
            active_segment: last_segment,
            active_len: recovered.end_offset,
        };
        let (durable, _) = watch::channel(durable_end);
        let shared = Arc::new(Shared {
            dir,
            fs: fs.clone(),
            index,
            durable,
            indexed: Mutex::new(recovered.next_position),
            indexed_changed: Condvar::new(),
            indexed_watch: watch::channel(recovered.next_position).0,
            segments: RwLock::new(segments),
            seen: RwLock::new(seen),
            readers_waiting: AtomicUsize::new(0),
            recent_commits: Mutex::new(RecentCommits::default()),
            writer_failure: watch::channel(None).0,
            closed: CancellationToken::new(),
            lock: Mutex::new(Some(lock)),
            replica: std::sync::OnceLock::new(),
            blocking_io: Arc::new(tokio::sync::Semaphore::new(config.blocking_io.max(1))),
            config,
        });

        let segment_path = fs.path(&segment::segment_file_name(last_segment));
        let file = segment_files::open_segment(fs.as_ref(), last_segment)?;
        if shared.config.preallocate_segments {
            segment_files::zero_fill(file.as_ref(), &segment_path, shared.config.segment_bytes)?;
        }
        let writer = Writer::new(
            shared.clone(),
            file,
            writer::LogEnd {
                segment: last_segment,
                segment_len: recovered.end_offset,
                next_position: recovered.next_position,
                last_hash: recovered.last_hash,
                format: recovered.format,
                header_on_disk: recovered.header_on_disk,
            },
            heads,
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
