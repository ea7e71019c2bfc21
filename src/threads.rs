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
pub fn background() {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes only the calling thread's policy; failure (a sandbox) leaves it as it was.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
}
