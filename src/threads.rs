//! Per-thread CPU parallelism for libtorch.
//!
//! `tch::set_num_threads` calls ATen's `at::set_num_threads`, which also sets MKL's thread count
//! for the whole process: an actor thread asking for 1 thread would make the learner's dense
//! layers single-threaded. OpenMP's own `omp_set_num_threads` only changes the calling thread's
//! setting, which is what actors and the evaluator need (libtorch's CPU kernels run on GNU
//! OpenMP, linked by torch-sys).

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// Limit libtorch's intra-op parallelism for ops called from the current thread only.
pub fn limit_current_thread(n: usize) {
    // SAFETY: a plain libgomp call that sets this thread's nthreads ICV.
    unsafe { omp_set_num_threads(n.max(1) as std::os::raw::c_int) }
}

/// Give the current thread the lowest CPU priority (`SCHED_IDLE`): it runs only when a core
/// would otherwise be idle. For every thread of a training run but the learner, once the learner
/// learns, when the config sets `learner.exclusive_cpu` (the Atari presets do): see
/// [`Background`].
///
/// Why: the learner's updates run on an OpenMP team as wide as the machine, and every parallel
/// region waits for its slowest member. Any other runnable thread at normal priority takes a
/// core from that team for a whole scheduler slice; under `SCHED_IDLE` it waits for a free core
/// instead. Actors and the replay thread still get all the CPU they need on a machine the run
/// has to itself: when they fall behind, the replay ratio makes the learner wait, which frees the
/// cores (docs/BENCHMARKS.md, Pong end to end).
///
/// But under `SCHED_IDLE` a thread gets (almost) nothing while any thread of normal priority
/// wants its core, another process's included: beside other work (a build, a second run) the
/// actors would stall and the run with them. So the run watches for it: when the learner spends
/// most of its time waiting for data, the premise is gone, and [`release`] gives every recorded
/// thread its normal scheduling back for the rest of the run (the monitor does it and says so).
/// A stop does the same, so that the threads can wind down whatever else the machine runs.
pub fn background() {
    if RELEASED.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes only the calling thread's policy; failure (a sandbox) leaves it as it was.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) } == 0 {
        // SAFETY: gettid(2) has no preconditions.
        let tid = unsafe { libc::gettid() };
        BACKGROUND.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
    }
}

/// Threads that [`background`] put under `SCHED_IDLE`, by thread id.
static BACKGROUND: std::sync::Mutex<Vec<libc::pid_t>> = std::sync::Mutex::new(Vec::new());

/// Set by [`release`]: no thread goes to the background any more in this process.
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Give every thread [`background`] recorded its normal scheduling back (`SCHED_OTHER`) and keep
/// any other from going there; returns how many it restored.
pub fn release() -> usize {
    RELEASED.store(true, std::sync::atomic::Ordering::Release);
    let p = libc::sched_param { sched_priority: 0 };
    let mut n = 0;
    for tid in BACKGROUND.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        // SAFETY: sched_setscheduler(2) on a thread id of this process; a thread that has
        // ended makes it fail with ESRCH, which changes nothing.
        n += usize::from(unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &p) } == 0);
    }
    n
}

/// A run's thread that goes to the background ([`background`]) once the learner has made its
/// first update, if `wanted` (`learner.exclusive_cpu`): during the warm-up the learner waits
/// for the actors anyway, and idle priority would only slow them down.
pub struct Background {
    wanted: bool,
}

impl Background {
    /// For a thread of a run whose config says `wanted`.
    pub fn new(wanted: bool) -> Background {
        Background { wanted }
    }

    /// Call from the thread's loop: the first call after the learner has started learning
    /// moves it to the background.
    pub fn poll(&mut self, learning: bool) {
        if self.wanted && learning {
            background();
            self.wanted = false;
        }
    }
}

/// CPU threads of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
