//! Work that gives way: blocking work run on threads of the lowest CPU priority (Linux's
//! idle scheduling class), for what may wait when the machine is busy: a read model
//! rebuilt in the background, a 1,000-event page of the bulk lane. When a core is idle it
//! runs as fast as anything; when commands want the cores, they take them from it at
//! once, so a flood of bulk work fills the gaps the commands leave instead of taking half
//! the machine.
//!
//! The threads belong to a small tokio runtime of their own, made on first use and kept
//! for the life of the process. A thread started by a low-priority thread (the catch-up
//! threads of a rebuild) inherits its priority. Where the priority cannot be lowered (a
//! platform without it, a sandbox that forbids it) the work runs at
//! the normal priority and a warning says so, once.

use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Blocking work running at once at most; more waits for a thread.
const MAX_THREADS: usize = 16;

/// Runs `work` on a low-priority thread; await the handle from any runtime. A panic in
/// `work` comes back as the handle's `JoinError`, as with `tokio::task::spawn_blocking`.
pub fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    match runtime() {
        Some(runtime) => runtime.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    }
}

/// The low-priority runtime, or `None` if it could not be made (no threads to spare):
/// the work then runs on the caller's blocking pool.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(MAX_THREADS)
                .thread_name("annals-low-priority")
                .on_thread_start(lower_this_thread)
                .enable_all()
                .build()
                .inspect_err(|error| {
                    tracing::warn!(%error, "no low-priority threads; background work runs at normal priority");
                })
                .ok()
        })
        .as_ref()
}

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`): the kernel
/// runs it only when no normal thread wants the core, and a normal thread that wakes
/// takes the core from it at once. (A nice value alone does not do this: a nice-10 thread
/// measured 70 to 100% of a core during the overload bench, `SCHED_IDLE` about half as
/// much, with the commands' p99 half as high.) Elsewhere than Linux, the lowest priority
/// of the normal class.
fn lower_this_thread() {
    use thread_priority::ThreadPriority;
    #[cfg(target_os = "linux")]
    let lowered = {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
    };
    #[cfg(not(target_os = "linux"))]
    let lowered = thread_priority::set_current_thread_priority(ThreadPriority::Min);
    if let Err(error) = lowered {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(?error, "cannot lower the priority of background threads; bulk work competes with commands at normal priority");
        });
    }
}

/// Whether this thread is in the idle scheduling class (Linux only), for tests.
#[cfg(all(test, target_os = "linux"))]
fn idle_class() -> bool {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    thread_priority::unix::thread_schedule_policy().expect("the policy")
        == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_in_the_idle_class_and_threads_it_starts_inherit_it() {
        assert!(!idle_class(), "the caller runs at the normal priority");
        let (own, child) = spawn_blocking(|| {
            let child = std::thread::spawn(idle_class).join().unwrap();
            (idle_class(), child)
        })
        .await
        .unwrap();
        assert!(own, "the work runs in the idle class");
        assert!(child, "a thread it starts inherits the class");
        assert!(!idle_class(), "the caller's own class is untouched");
    }

    #[tokio::test]
    async fn a_panic_comes_back_to_the_caller() {
        let joined = spawn_blocking(|| panic!("boom")).await;
        assert!(joined.unwrap_err().is_panic());
    }
}
