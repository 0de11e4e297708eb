//! The store's one error type. Each variant says who should handle it and how.

use std::path::PathBuf;

use uuid::Uuid;

use crate::ids::{Position, StreamId, Version};

/// Everything that can go wrong in the event store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed a malformed stream id. A client error: over HTTP a 400.
    #[error("invalid stream id {id:?}: {reason}")]
    InvalidStreamId {
        /// The offending id (cut to 64 characters).
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The caller passed an event id that is not a UUID v7. A client error: a 400.
    #[error("invalid event id {id}: {reason}")]
    InvalidEventId {
        /// The offending id.
        id: Uuid,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The append was malformed (no events, the same id twice, ...). A client error.
    #[error("invalid append: {0}")]
    InvalidAppend(&'static str),

    /// One event's encoded size is over the configured limit. A client error: a 413.
    #[error("event of {size} bytes is over the limit of {limit} bytes")]
    EventTooLarge {
        /// The encoded size of the event.
        size: usize,
        /// The configured limit (`StoreConfig::max_event_bytes`).
        limit: usize,
    },

    /// The whole append is over the configured limit. A client error: a 413.
    #[error("append of {size} bytes is over the limit of {limit} bytes")]
    AppendTooLarge {
        /// The encoded size of the append.
        size: usize,
        /// The configured limit (`StoreConfig::max_append_bytes`).
        limit: usize,
    },

    /// The stream was not at the expected version. Expected under concurrency: reload
    /// and decide again (the aggregate repository does), or answer 409/412.
    #[error("version conflict on {stream}: expected {expected}, actual {}", actual.map_or("no stream".to_owned(), |v| format!("version {v}")))]
    VersionConflict {
        /// The stream.
        stream: StreamId,
        /// What the writer expected, as text.
        expected: String,
        /// The stream's actual last version (None: the stream does not exist).
        actual: Option<Version>,
    },

    /// Some of the event ids of an append are already stored, but not as the same
    /// append (other ids, another stream or another order). A client error: the client
    /// reused ids for different events.
    #[error("event id {id} is already stored, but not as part of this same append")]
    IdempotencyMismatch {
        /// The first id that did not match.
        id: Uuid,
    },

    /// Another process holds the data directory. Stop it, or use another directory.
    #[error("data directory {} is locked by another process (pid {pid}); stop that process or use another directory", dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid written in the lock file by its holder, if readable.
        pid: String,
    },

    /// The data directory does not exist and the store was told not to create it.
    #[error("data directory {} does not exist; create it or point --data-dir elsewhere", .0.display())]
    MissingDataDir(PathBuf),

    /// A record before the log's tail fails its checksum, its hash chain or its position
    /// sequence. The log is damaged: restore it from a copy (NATS, a backup); Annals never
    /// skips damaged records.
    #[error("corrupt log in {} at byte {offset} (after position {after}): {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// The byte offset of the bad record.
        offset: u64,
        /// The last good position before it (`None` printed as 0 when at the start).
        after: PositionText,
        /// What is wrong.
        reason: String,
    },

    /// An event or snapshot payload could not be encoded or decoded. A bug or a schema
    /// mismatch; the message names the type.
    #[error("cannot encode or decode {what}: {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: &'static str,
        /// The postcard error.
        source: postcard::Error,
    },

    /// A stored event has a schema version this build cannot decode: it was written by
    /// a newer build. Run that build (or a newer one); the log is not damaged.
    #[error(
        "{what} of schema version {schema_version} is unknown to this build (written by a newer one?)"
    )]
    UnknownSchemaVersion {
        /// What was being decoded.
        what: &'static str,
        /// The event's schema version.
        schema_version: u32,
    },

    /// The derived index (sled) failed. The index can always be rebuilt from the log:
    /// delete `<data-dir>/index` and reopen.
    #[error("index error: {0}")]
    Index(#[from] sled::Error),

    /// An I/O error on the log. If it came from writing or syncing, the writer stops
    /// (a failed fsync cannot be retried safely) and the store must be reopened.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// The writer stopped after an I/O failure, or the store was closed. After a
    /// failure, reopen the store from a fresh process ([`Error::RestartRequired`]).
    #[error("the store's writer has stopped ({0}); reopen the store")]
    WriterStopped(String),

    /// A store's writer failed on this data directory earlier in this process (a write or
    /// an `fdatasync` of the log failed). The page cache of this process may hold pages
    /// the disk never got, so the directory is reopened only by a fresh process: restart
    /// it (a server exits with its own code for this; its supervisor restarts it).
    #[error("the store's writer failed on {} earlier in this process ({reason}); restart the process to reopen it (recovery then re-reads the disk)", dir.display())]
    RestartRequired {
        /// The data directory.
        dir: PathBuf,
        /// Why the writer failed.
        reason: String,
    },

    /// The log on NATS JetStream (a store opened with `EventStore::open_replicated`)
    /// could not do what was asked: NATS unreachable, the stream missing or foreign, this
    /// node's copy behind or stopped, or a message of the log that is not a commit.
    #[error("the log on JetStream ({what}): {detail}")]
    Cluster {
        /// What was being done.
        what: &'static str,
        /// What went wrong, and what to do.
        detail: String,
    },

    /// A read asked for a position the log does not hold.
    #[error("position {0} is beyond the end of the log")]
    PositionOutOfRange(Position),
}

/// A position printed for humans in error messages.
#[derive(Debug, Clone, Copy)]
pub struct PositionText(pub Option<Position>);

impl std::fmt::Display for PositionText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(position) => position.fmt(f),
            None => f.write_str("none, at the start of the log"),
        }
    }
}

impl Error {
    pub(crate) fn cluster(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Cluster {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Whether this is a read that would have waited for the disk, made with reads that
    /// may not ([`crate::io::real::without_waiting`]).
    pub fn would_block(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Whether this is an optimistic-concurrency conflict, which a caller may retry.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::VersionConflict { .. })
    }
}
