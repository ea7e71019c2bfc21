//! CUDA-graph capture and replay, which tch does not expose: a safe wrapper over
//! `csrc/cuda_graph.cpp` (at::cuda::CUDAGraph on a side stream), compiled by build.rs when the
//! torch wheel's CUDA headers are there (`cfg(wndqn_cuda_graph)`).
//!
//! A graph records every kernel that libtorch launches while [`CudaGraph::capture`] runs its
//! closure, with the memory it used, and [`CudaGraph::replay`] launches them all again with one
//! call: the inputs are the same tensors (copy new data into them first), the outputs land in
//! the same tensors. Work to be captured must first run eagerly on the same side stream
//! ([`CudaGraph::warm_up`]), so that libtorch's lazily made per-stream state exists. The
//! graphed learner ([`crate::graphed`]) is built on this; it runs only where a GPU is present.

use anyhow::{anyhow, bail, Result};

#[cfg(wndqn_cuda_graph)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn wcg_new(device: c_int) -> *mut c_void;
        pub fn wcg_delete(g: *mut c_void);
        pub fn wcg_enter(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_leave(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_capture_begin(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_capture_end(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_replay(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
    }
}

/// Whether this binary was built with the CUDA-graph shim.
pub fn built() -> bool {
    cfg!(wndqn_cuda_graph)
}

#[cfg(wndqn_cuda_graph)]
fn call(what: &str, f: impl FnOnce(*mut std::ffi::c_char, usize) -> std::ffi::c_int) -> Result<()> {
    let mut err = [0u8; 1024];
    if f(err.as_mut_ptr().cast(), err.len()) == 0 {
        return Ok(());
    }
    let msg = std::ffi::CStr::from_bytes_until_nul(&err).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    Err(anyhow!("CUDA graph {what}: {}", msg.lines().next().unwrap_or("")))
}

/// Run `f`, turning a panic (tch reports libtorch errors, such as an operation that is not
/// allowed during a capture, by panicking) into an error.
#[cfg_attr(not(wndqn_cuda_graph), allow(dead_code))]
fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| e.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        anyhow!("CUDA graph {what}: {}", msg.lines().next().unwrap_or(""))
    })
}

/// A CUDA graph on one device: empty until [`CudaGraph::capture`].
pub struct CudaGraph {
    #[cfg(wndqn_cuda_graph)]
    ptr: *mut std::ffi::c_void,
    captured: bool,
}

impl CudaGraph {
    /// An empty graph for `device`.
    pub fn new(device: usize) -> Result<CudaGraph> {
        if !tch::Cuda::is_available() {
            bail!("CUDA graphs need a CUDA device; libtorch sees none");
        }
        #[cfg(wndqn_cuda_graph)]
        {
            // SAFETY: a new graph object owned by the returned value.
            let ptr = unsafe { ffi::wcg_new(device as std::ffi::c_int) };
            if ptr.is_null() {
                bail!("CUDA graph: out of memory");
            }
            Ok(CudaGraph { ptr, captured: false })
        }
        #[cfg(not(wndqn_cuda_graph))]
        {
            let _ = device;
            bail!("this wndqn was built without the CUDA-graph shim (the torch wheel's CUDA headers were missing)")
        }
    }

    /// Run `f` eagerly on the stream the capture will use, then wait for it.
    pub fn warm_up<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        #[cfg(wndqn_cuda_graph)]
        {
            // SAFETY: `ptr` is a live graph; every call gets an error buffer with its capacity.
            call("warm-up", |e, n| unsafe { ffi::wcg_enter(self.ptr, e, n) })?;
            let r = guarded("warm-up", f);
            call("warm-up", |e, n| unsafe { ffi::wcg_leave(self.ptr, e, n) })?;
            r
        }
        #[cfg(not(wndqn_cuda_graph))]
        {
            let _ = f;
            bail!("built without the CUDA-graph shim")
        }
    }

    /// Capture the GPU work of `f` (it is recorded, not run: replay it).
    pub fn capture(&mut self, f: impl FnOnce()) -> Result<()> {
        if self.captured {
            bail!("CUDA graph: already captured");
        }
        #[cfg(wndqn_cuda_graph)]
        {
            call("capture", |e, n| unsafe { ffi::wcg_capture_begin(self.ptr, e, n) })?;
            let r = guarded("capture", f);
            let end = call("capture", |e, n| unsafe { ffi::wcg_capture_end(self.ptr, e, n) });
            r?;
            end?;
            self.captured = true;
            Ok(())
        }
        #[cfg(not(wndqn_cuda_graph))]
        {
            let _ = f;
            bail!("built without the CUDA-graph shim")
        }
    }

    /// Launch the captured work again, on the current stream.
    pub fn replay(&self) -> Result<()> {
        if !self.captured {
            bail!("CUDA graph: nothing captured");
        }
        #[cfg(wndqn_cuda_graph)]
        return call("replay", |e, n| unsafe { ffi::wcg_replay(self.ptr, e, n) });
        #[cfg(not(wndqn_cuda_graph))]
        bail!("built without the CUDA-graph shim")
    }
}

#[cfg(wndqn_cuda_graph)]
impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from wcg_new and is freed once.
        unsafe { ffi::wcg_delete(self.ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn the_shim_is_built_with_the_cuda_wheel() {
        let wheel = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/libtorch/lib/libtorch_cuda.so");
        assert_eq!(built(), wheel.exists(), "csrc/cuda_graph.cpp must compile against the CUDA wheel's headers");
    }

    #[test]
    fn captured_work_replays_on_new_inputs() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED captured_work_replays_on_new_inputs: no CUDA device");
            assert!(CudaGraph::new(0).is_err(), "a graph without a GPU must be an error");
            return;
        }
        let d = Device::Cuda(0);
        let x = Tensor::zeros([1024], (Kind::Float, d));
        let y = Tensor::zeros([1024], (Kind::Float, d));
        let work = || {
            let mut out = y.shallow_clone();
            out.copy_(&(&x * 2.0 + 1.0));
        };
        let mut g = CudaGraph::new(0).unwrap();
        g.warm_up(work).unwrap();
        g.capture(work).unwrap();
        for v in [3.0, -1.5] {
            let mut xin = x.shallow_clone();
            let _ = xin.fill_(v);
            g.replay().unwrap();
            let got = y.mean(Kind::Float).double_value(&[]);
            assert!((got - (2.0 * v + 1.0)).abs() < 1e-6, "replay with x = {v} gave {got}");
        }
        // A host read inside a capture is an error, not a crash, and the device goes on working.
        let mut bad = CudaGraph::new(0).unwrap();
        let err = bad.capture(|| {
            let _ = x.sum(Kind::Float).double_value(&[]);
        });
        assert!(err.is_err(), "a host read was captured");
        assert!(bad.replay().is_err());
        let _ = x.shallow_clone().fill_(1.0);
        assert_eq!(x.sum(Kind::Float).double_value(&[]), 1024.0);
    }
}
