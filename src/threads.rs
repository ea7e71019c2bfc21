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
