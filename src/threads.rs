//! Per-thread CPU parallelism for libtorch.
//!
//! `tch::set_num_threads` calls ATen's `at::set_num_threads`, which also sets MKL's thread count
//! for the whole process: an actor thread asking for 1 thread would make the learner's dense
//! layers single-threaded (measured: 25 instead of 46 updates/s). OpenMP's own
//! `omp_set_num_threads` only changes the calling thread's setting, which is what actors and the
//! evaluator need (libtorch's CPU kernels run on GNU OpenMP, linked by torch-sys).

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// Limit libtorch's intra-op parallelism for ops called from the current thread only.
pub fn limit_current_thread(n: usize) {
    // SAFETY: a plain libgomp call that sets this thread's nthreads ICV.
    unsafe { omp_set_num_threads(n.max(1) as std::os::raw::c_int) }
}

/// Give the current thread the lowest CPU priority (`SCHED_IDLE`): it runs only when a core
/// would otherwise be idle. For every thread of a training run but the learner, when the
/// config sets `learner.exclusive_cpu` (the Atari presets do).
///
/// Why: the learner's updates run on an OpenMP team as wide as the machine, and every parallel
/// region waits for its slowest member. Any other runnable thread at normal priority takes a
/// core from that team for a whole scheduler slice: on 2 cores, one busy env thread next to
/// the learner made an update take 72 ms instead of 22 ms; the same thread under `SCHED_IDLE`
/// cost nothing measurable (22.5 ms). Actors and the replay thread still get all the CPU they
/// need: when they fall behind, the replay ratio makes the learner wait, which frees the cores.
/// `wndqn bench e2e`, Pong, weight_norm: 191-197 env steps/s against 172 without it.
///
/// Not the default: under `SCHED_IDLE` a thread gets (almost) nothing while any other thread
/// of normal priority wants the core. Two CartPole runs side by side (a tiny learner whose
/// OpenMP threads spin between updates) took minutes instead of 39 s.
///
/// A stop must not wait for idle CPU, though: under other load (a build, another run at normal
/// priority) a `SCHED_IDLE` thread got no CPU for tens of seconds, and the run abandoned its
/// actors, replay thread and evaluator at the stop deadline (reproduced with three busy
/// processes beside an Atari run on 2 cores: 37 s from SIGINT to exit, threads abandoned). So the
/// thread is recorded, and [`restore_background`] gives every recorded thread its normal
/// priority back when the run stops.
pub fn background() {
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

/// Give every thread [`background`] recorded its normal scheduling back (`SCHED_OTHER`), so
/// that it can wind down at a stop whatever else the machine runs; forgets them.
pub fn restore_background() {
    let p = libc::sched_param { sched_priority: 0 };
    for tid in BACKGROUND.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        // SAFETY: sched_setscheduler(2) on a thread id of this process; a thread that has
        // ended makes it fail with ESRCH, which changes nothing.
        unsafe { libc::sched_setscheduler(tid, libc::SCHED_OTHER, &p) };
    }
}
