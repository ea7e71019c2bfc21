//! libtorch's intra-op parallel loop for work written in Rust (`csrc/parallel.cpp`): the fused
//! CPU optimizer kernels (`optim::fused`) split over the cores on the OpenMP threads that
//! libtorch's own kernels use. Why not threads of our own: libtorch's threads spin for a while
//! after each of its kernels, so a thread of ours would get its core only after the work was
//! done.

use anyhow::Result;
use std::ffi::{c_char, c_int, c_void};

use super::ffi::call;

extern "C" {
    fn wpl_parallel_for(
        n: i64,
        f: extern "C" fn(*mut c_void, i64),
        ctx: *mut c_void,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
}

/// `f(i)` for every `i` in `0..n`, spread over libtorch's intra-op threads (as many as
/// `tch::set_num_threads` said; one `i` per thread when `n` is the thread count), returning
/// when all are done. A panic in `f` is carried back and resumed here.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) -> Result<()> {
    struct Ctx<'a> {
        f: &'a (dyn Fn(usize) + Sync),
        panic: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
    }
    extern "C" fn trampoline(ctx: *mut c_void, i: i64) {
        // SAFETY: `ctx` is the `Ctx` below, alive until `wpl_parallel_for` returns.
        let ctx = unsafe { &*(ctx as *const Ctx) };
        // Unwinding into C++ is undefined behaviour: the panic waits in `ctx`.
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (ctx.f)(i as usize))) {
            ctx.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
        }
    }
    let ctx = Ctx { f, panic: std::sync::Mutex::new(None) };
    // SAFETY: `ctx` outlives the call, which returns only when every `trampoline` call is done.
    call("parallel for", |e, cap| unsafe {
        wpl_parallel_for(n as i64, trampoline, &ctx as *const Ctx as *mut c_void, e, cap)
    })?;
    if let Some(p) = ctx.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        std::panic::resume_unwind(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_runs_on_several_threads() {
        tch::set_num_threads(2);
        let ids = std::sync::Mutex::new(std::collections::BTreeSet::new());
        parallel_for(2, &|_| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            ids.lock().unwrap().insert(format!("{:?}", std::thread::current().id()));
        })
        .unwrap();
        assert_eq!(ids.into_inner().unwrap().len(), 2, "at::parallel_for ran serially (compiled without OpenMP?)");
        let hit = std::sync::atomic::AtomicUsize::new(0);
        parallel_for(5, &|_| {
            hit.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(hit.into_inner(), 5);
        let r = std::panic::catch_unwind(|| parallel_for(2, &|i| assert!(i == 0, "boom")));
        assert!(r.is_err(), "a panic in the work is resumed");
    }
}
