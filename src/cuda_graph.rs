//! CUDA-graph capture and replay, which tch does not expose: a safe wrapper over
//! `csrc/cuda_graph.cpp` (at::cuda::CUDAGraph on a side stream), compiled by build.rs when the
//! torch wheel's CUDA headers are there (`cfg(wndqn_cuda_graph)`).
//!
//! A graph records every kernel that libtorch launches while [`CudaGraph::capture`] runs its
//! closure, with the memory it used, and [`CudaGraph::replay`] launches them all again with one
//! call: the inputs are the same tensors (copy new data into them first), the outputs land in
//! the same tensors. This is the building block of a graphed learner (issue 11), which needs an
//! update with no host synchronization inside; it runs only where a GPU is present.
// Only `built` is used by the application so far (`wndqn info`); the graphed learner that will
// use the rest is not written yet (README, Known gaps); the tests exercise it on a GPU.
#![allow(dead_code)]

use anyhow::{anyhow, bail, Result};

#[cfg(wndqn_cuda_graph)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" {
        pub fn wcg_new(device: c_int) -> *mut c_void;
        pub fn wcg_delete(g: *mut c_void);
        pub fn wcg_capture_begin(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_capture_end(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_replay(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_synchronize(device: c_int, err: *mut c_char, cap: usize) -> c_int;
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

/// A captured CUDA graph on one device.
pub struct CudaGraph {
    #[cfg(wndqn_cuda_graph)]
    ptr: *mut std::ffi::c_void,
}

impl CudaGraph {
    /// Capture the GPU work of `f` on `device` (it is not run for real; replay it).
    pub fn capture(device: usize, f: impl FnOnce()) -> Result<CudaGraph> {
        if !tch::Cuda::is_available() {
            bail!("CUDA graphs need a CUDA device; libtorch sees none");
        }
        #[cfg(wndqn_cuda_graph)]
        {
            // SAFETY: a new graph object owned by the returned value; every call gets an error
            // buffer with its capacity.
            let ptr = unsafe { ffi::wcg_new(device as std::ffi::c_int) };
            if ptr.is_null() {
                bail!("CUDA graph: out of memory");
            }
            let g = CudaGraph { ptr };
            call("capture", |e, n| unsafe { ffi::wcg_capture_begin(g.ptr, e, n) })?;
            f();
            call("capture", |e, n| unsafe { ffi::wcg_capture_end(g.ptr, e, n) })?;
            Ok(g)
        }
        #[cfg(not(wndqn_cuda_graph))]
        {
            let _ = (device, f);
            bail!("this wndqn was built without the CUDA-graph shim (the torch wheel's CUDA headers were missing)")
        }
    }

    /// Launch the captured work again.
    pub fn replay(&self) -> Result<()> {
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

/// Wait for all work on `device`.
pub fn synchronize(device: usize) -> Result<()> {
    #[cfg(wndqn_cuda_graph)]
    return call("synchronize", |e, n| unsafe { ffi::wcg_synchronize(device as std::ffi::c_int, e, n) });
    #[cfg(not(wndqn_cuda_graph))]
    {
        let _ = device;
        bail!("built without the CUDA-graph shim")
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
            assert!(CudaGraph::capture(0, || {}).is_err(), "capture without a GPU must be an error");
            return;
        }
        let d = Device::Cuda(0);
        let x = Tensor::zeros([1024], (Kind::Float, d));
        let y = Tensor::zeros([1024], (Kind::Float, d));
        let g = CudaGraph::capture(0, || {
            let mut out = y.shallow_clone();
            out.copy_(&(&x * 2.0 + 1.0));
        })
        .unwrap();
        for v in [3.0, -1.5] {
            let mut xin = x.shallow_clone();
            let _ = xin.fill_(v);
            g.replay().unwrap();
            synchronize(0).unwrap();
            let got = y.mean(Kind::Float).double_value(&[]);
            assert!((got - (2.0 * v + 1.0)).abs() < 1e-6, "replay with x = {v} gave {got}");
        }
    }
}
