//! What the tests of Annals share, in one place instead of a copy per test file: a seeded
//! random generator that prints its seed and replays from `ANNALS_TEST_SEED`
//! ([`Random`]), time limits that turn a hang into a failure ([`within`]), free loopback
//! ports, the lock that keeps child processes from inheriting a store's lock
//! ([`SPAWNING`]), and real servers that clean up on `Drop`: [`NatsServer`] and
//! [`AnnalsServer`] (the `annals` binary found, and built when needed, by
//! [`annals_binary`]), either of them over TLS with certificates made at run time
//! ([`tls::TestPki`]); a 3-node NATS JetStream cluster that tests kill and restart node
//! by node ([`NatsCluster`]); the payment provider simulator [`PspSimulator`]; and spans kept
//! in memory for the trace tests ([`traces::MemoryTraces`]); and a scanner for plaintext
//! left in files, exports or messages ([`plaintext`]).
//!
//! A dev-dependency only: no crate's library or binary links it.

mod annals;
mod nats;
mod nats_cluster;
pub mod plaintext;
mod psp;
mod random;
pub mod tls;
pub mod traces;

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

pub use annals::{AnnalsServer, annals_binary, annals_command, run_annals};
pub use nats::{NatsServer, nats_server_binary};
pub use nats_cluster::NatsCluster;
pub use psp::{PspSimulator, psp_sim_binary};
pub use random::{Random, SEED_VARIABLE};

/// How long an await that must finish may take before the test fails: a safety net that
/// turns a hang into a failure, never a way to wait for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test (naming `what`) if it takes longer than
/// [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_limit(PATIENCE, what, future).await
}

/// Awaits `future`, failing the test (naming `what`) if it takes longer than `limit`.
pub async fn within_limit<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// A loopback port that was free a moment ago (bound and released). Another process can
/// take it before the caller binds it: servers started on it retry on another port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Held for writing while a child process is spawned, for reading while a store opens.
/// Spawning forks this process, and until the child's `exec` it holds a copy of every
/// file this process has open, locks included (an `flock` belongs to the open file, not
/// to the process): a store closed and reopened in that moment would find the lock of its
/// own closed self still held and fail with `Locked`. One lock per test binary, shared by
/// every harness here.
pub static SPAWNING: RwLock<()> = RwLock::new(());

/// Spawns `command`, never while a store of this process is being opened.
///
/// `Command::spawn` returns as soon as the child has begun its `exec` (a `vfork` parent
/// resumes when the child gives up its memory), a moment before the child closes the
/// close-on-exec files it inherited: the lock is held until the child no longer has a
/// store's `LOCK` file of this process open, or has ended.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let _spawning = SPAWNING.write().unwrap_or_else(PoisonError::into_inner);
    // The `LOCK` files open before the fork and after it: read only after it, a lock
    // another thread closed between the fork and the read would be missed while the
    // child still holds it; read only before it, one opened meanwhile by a thread that
    // does not take `not_spawning` would be.
    let mut inherited = open_lock_files(std::path::Path::new("/proc/self/fd"));
    let child = command.spawn()?;
    inherited.extend(open_lock_files(std::path::Path::new("/proc/self/fd")));
    if !inherited.is_empty() {
        let fds = std::path::PathBuf::from(format!("/proc/{}/fd", child.id()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline
            && open_lock_files(&fds)
                .iter()
                .any(|file| inherited.contains(file))
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(child)
}

/// Runs `command` to its end through [`spawn`], collecting its output.
pub fn output(command: &mut Command) -> io::Result<std::process::Output> {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    spawn(command)?.wait_with_output()
}

/// The (device, inode) of every file named `LOCK` open in the descriptor directory `fds`
/// (`/proc/PID/fd`); nothing when the process has gone.
fn open_lock_files(fds: &std::path::Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(fds) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.file_name().is_some_and(|name| name == "LOCK"))
        })
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .map(|metadata| (metadata.dev(), metadata.ino()))
        .collect()
}

/// A guard to hold while opening a store: no child is spawned meanwhile.
pub fn not_spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNING.read().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::process::Stdio;

    /// A lock file closed right after a child was spawned can be locked again at once:
    /// the child no longer holds the lock it inherited until its `exec` closed it.
    #[test]
    fn a_lock_closed_right_after_a_spawn_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        for round in 0..2000 {
            let file = File::create(&path).unwrap();
            file.try_lock().unwrap();
            let mut child = super::spawn(
                std::process::Command::new("true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null()),
            )
            .unwrap();
            drop(file);
            let again = File::open(&path).unwrap();
            let locked = again.try_lock();
            child.wait().unwrap();
            assert!(
                locked.is_ok(),
                "round {round}: the closed lock was still held by the child: {locked:?}"
            );
        }
    }
}
