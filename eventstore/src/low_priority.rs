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
//!
//! The idle class alone still lets bulk work take every cycle the commands leave, and
//! those cycles are not free to the commands: two busy loops in the idle class raised the
//! p99 of `annals bench overload`'s orders by a third with no bulk request at all
//! (caches, the hypervisor's share of the cores). So long work also paces itself
//! ([`pace`]): while foreground work is in progress (an interactive request, marked with
//! [`foreground`]), it rests between slices of a few milliseconds as long as it ran,
//! taking at most half of what is left over.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Foreground work in progress now.
static FOREGROUND: AtomicUsize = AtomicUsize::new(0);

/// Foreground work in progress (an interactive request) until dropped: low-priority work
/// rests between its slices meanwhile ([`pace`]).
#[derive(Debug)]
#[must_use = "foreground work ends when this is dropped"]
pub struct Foreground(());

/// Marks foreground work in progress until the returned guard is dropped.
pub fn foreground() -> Foreground {
    FOREGROUND.fetch_add(1, Ordering::Relaxed);
    Foreground(())
}

impl Drop for Foreground {
    fn drop(&mut self) {
        FOREGROUND.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long low-priority work runs before it looks whether to rest.
const SLICE: Duration = Duration::from_millis(2);

/// The longest rest at once.
const MAX_REST: Duration = Duration::from_millis(20);

thread_local! {
    /// Whether this thread runs at low priority (`None`: not looked yet).
    static LOW: Cell<Option<bool>> = const { Cell::new(None) };
    /// When this thread's current slice began.
    static SLICE_BEGAN: Cell<Option<Instant>> = const { Cell::new(None) };
    /// How often this thread rested.
    static RESTS: Cell<u64> = const { Cell::new(0) };
}

/// Called often (every few hundred events) by long work that may run at low priority,
/// such as a read model's replay: on a low-priority thread, once a slice has run while
/// foreground work is in progress, rests as long as the slice ran (at most
/// [`MAX_REST`]). Elsewhere it does nothing, so shared code (a live model's catch-up,
/// at normal priority) can call it too.
pub fn pace() {
    if !LOW.get().unwrap_or_else(|| {
        let low = this_thread_is_low();
        LOW.set(Some(low));
        low
    }) {
        return;
    }
    let now = Instant::now();
    let Some(began) = SLICE_BEGAN.get() else {
        SLICE_BEGAN.set(Some(now));
        return;
    };
    let ran = now.saturating_duration_since(began);
    if ran < SLICE {
        return;
    }
    if let Some(rest) = rest_after(ran, FOREGROUND.load(Ordering::Relaxed) > 0) {
        RESTS.set(RESTS.get() + 1);
        std::thread::sleep(rest);
    }
    SLICE_BEGAN.set(Some(Instant::now()));
}

/// How long to rest after a slice that ran `ran`, with or without foreground work in
/// progress.
fn rest_after(ran: Duration, foreground: bool) -> Option<Duration> {
    (foreground && ran >= SLICE).then(|| ran.min(MAX_REST))
}

/// Whether the calling thread was lowered (or started by one that was).
fn this_thread_is_low() -> bool {
    #[cfg(target_os = "linux")]
    {
        idle_class()
    }
    #[cfg(not(target_os = "linux"))]
    {
        std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with(THREAD_NAME))
    }
}

const THREAD_NAME: &str = "annals-low-priority";

/// The low-priority runtime, or `None` if it could not be made (no threads to spare):
/// the work then runs on the caller's blocking pool.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(MAX_THREADS)
                .thread_name(THREAD_NAME)
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

/// Whether this thread is in the idle scheduling class.
#[cfg(target_os = "linux")]
fn idle_class() -> bool {
    use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    thread_priority::unix::thread_schedule_policy().is_ok_and(|policy| {
        policy == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    })
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

    #[test]
    fn a_slice_rests_as_long_as_it_ran_only_while_foreground_work_runs() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(1), true), None, "shorter than a slice");
        assert_eq!(rest_after(ms(2), true), Some(ms(2)));
        assert_eq!(rest_after(ms(7), true), Some(ms(7)));
        assert_eq!(
            rest_after(ms(500), true),
            Some(MAX_REST),
            "at most MAX_REST"
        );
        assert_eq!(rest_after(ms(7), false), None, "nothing in the foreground");
    }

    /// How often `pace`, called in a loop for `work` on a low-priority thread, rests.
    async fn rests_while(foreground: bool, work: Duration) -> u64 {
        let marked = foreground.then(super::foreground);
        let rests = spawn_blocking(move || {
            let (began, before) = (Instant::now(), RESTS.get());
            while began.elapsed() < work {
                pace();
            }
            RESTS.get() - before
        })
        .await
        .unwrap();
        drop(marked);
        rests
    }

    #[tokio::test]
    async fn low_priority_work_rests_while_foreground_work_runs_and_only_then() {
        // How long it rests depends on the machine's load (an idle-class thread on a busy
        // machine also waits for its core): the arithmetic is tested above.
        let work = Duration::from_millis(100);
        assert!(rests_while(true, work).await > 0);
        assert_eq!(rests_while(false, work).await, 0);
        // At normal priority, pacing never rests.
        let _marked = foreground();
        let before = RESTS.get();
        let began = Instant::now();
        while began.elapsed() < work {
            pace();
        }
        assert_eq!(RESTS.get(), before);
    }

    #[tokio::test]
    async fn a_panic_comes_back_to_the_caller() {
        let joined = spawn_blocking(|| panic!("boom")).await;
        assert!(joined.unwrap_err().is_panic());
    }
}
