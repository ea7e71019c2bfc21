//! CUDA-graph capture and replay, which tch does not expose: a safe wrapper over
//! `csrc/cuda_graph.cpp` (at::cuda::CUDAGraph on a side stream), compiled by build.rs when the
//! torch wheel's CUDA headers are there (`cfg(wndqn_cuda_graph)`).
//!
//! A graph records every kernel that libtorch launches while [`CudaGraph::capture`] runs its
//! closure, with the memory it used, and [`CudaGraph::replay`] launches them all again with one
//! call: the inputs are the same tensors (copy new data into them first), the outputs land in
//! the same tensors. Work to be captured must first run eagerly on the same side stream
//! ([`CudaGraph::warm_up`]), so that libtorch's lazily made per-stream state exists.
//! [`Stager`] is the other piece tch lacks: a copy stream and events, so that the next batch is
//! copied to the device while the GPU computes. The graphed learner ([`crate::graphed`]) is
//! built on both; they run only where a GPU is present.

use anyhow::{anyhow, bail, Result};
#[cfg(wndqn_cuda_graph)]
use wndqn_agents::ffi::{call, handles};

#[cfg(wndqn_cuda_graph)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    use torch_sys::C_tensor;
    extern "C" {
        pub fn wcg_new(device: c_int) -> *mut c_void;
        pub fn wcg_delete(g: *mut c_void);
        pub fn wcg_enter(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_leave(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_capture_begin(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_capture_end(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcg_replay(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcs_new(device: c_int, err: *mut c_char, cap: usize) -> *mut c_void;
        pub fn wcs_delete(s: *mut c_void);
        pub fn wcs_stage(
            s: *mut c_void,
            slot: c_int,
            dst: *const *mut C_tensor,
            src: *const *mut C_tensor,
            n: usize,
            err: *mut c_char,
            cap: usize,
        ) -> c_int;
        pub fn wcs_wait_copied(s: *mut c_void, slot: c_int, err: *mut c_char, cap: usize) -> c_int;
        pub fn wcs_mark_consumed(s: *mut c_void, slot: c_int, err: *mut c_char, cap: usize) -> c_int;
    }
}

/// Whether this binary was built with the CUDA-graph shim.
pub fn built() -> bool {
    cfg!(wndqn_cuda_graph)
}

/// Run `f`, turning a panic (tch reports libtorch errors, such as an operation that is not
/// allowed during a capture, by panicking) into an error.
#[cfg_attr(not(wndqn_cuda_graph), allow(dead_code))]
fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let msg = crate::util::panic_message(e.as_ref());
        anyhow!("CUDA graph {what}: {}", msg.lines().next().unwrap_or("a panic"))
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
            call("CUDA graph warm-up", |e, n| unsafe { ffi::wcg_enter(self.ptr, e, n) })?;
            let r = guarded("warm-up", f);
            call("CUDA graph warm-up", |e, n| unsafe { ffi::wcg_leave(self.ptr, e, n) })?;
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
            call("CUDA graph capture", |e, n| unsafe { ffi::wcg_capture_begin(self.ptr, e, n) })?;
            let r = guarded("capture", f);
            let end = call("CUDA graph capture", |e, n| unsafe { ffi::wcg_capture_end(self.ptr, e, n) });
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
        return call("CUDA graph replay", |e, n| unsafe { ffi::wcg_replay(self.ptr, e, n) });
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

/// A copy stream with two slots of device buffers (double buffering): [`Stager::stage`] copies
/// host tensors into a slot on the copy stream once the compute stream has consumed that slot's
/// previous contents ([`Stager::mark_consumed`]); [`Stager::wait_copied`] makes the compute
/// stream wait for a slot's copies. The slots' buffers are the caller's tensors.
pub struct Stager {
    #[cfg(wndqn_cuda_graph)]
    ptr: *mut std::ffi::c_void,
}

impl Stager {
    /// A copy stream on `device`.
    pub fn new(device: usize) -> Result<Stager> {
        if !tch::Cuda::is_available() {
            bail!("a copy stream needs a CUDA device; libtorch sees none");
        }
        #[cfg(wndqn_cuda_graph)]
        {
            let mut ptr = std::ptr::null_mut();
            // SAFETY: the error buffer comes with its capacity; a null result means failure.
            call("copy stream", |e, n| {
                ptr = unsafe { ffi::wcs_new(device as std::ffi::c_int, e, n) };
                if ptr.is_null() {
                    -1
                } else {
                    0
                }
            })?;
            Ok(Stager { ptr })
        }
        #[cfg(not(wndqn_cuda_graph))]
        {
            let _ = device;
            bail!("built without the CUDA shim")
        }
    }

    /// Copy `src[i]` (pinned host memory, for the copy to be asynchronous) into `dst[i]` (slot
    /// `slot`'s device buffers) on the copy stream.
    pub fn stage(&self, slot: usize, dst: &[&tch::Tensor], src: &[&tch::Tensor]) -> Result<()> {
        if dst.len() != src.len() || slot > 1 {
            bail!("copy stream: {} destinations for {} sources in slot {slot}", dst.len(), src.len());
        }
        #[cfg(wndqn_cuda_graph)]
        {
            let (d, s) = (handles(dst.iter().copied()), handles(src.iter().copied()));
            // SAFETY: two lists of live tensor handles, of the same length, for the call.
            call("copy stream", |e, n| unsafe {
                ffi::wcs_stage(self.ptr, slot as _, d.as_ptr(), s.as_ptr(), d.len(), e, n)
            })
        }
        #[cfg(not(wndqn_cuda_graph))]
        bail!("built without the CUDA shim")
    }

    /// Make the current (compute) stream wait for slot `slot`'s copies.
    pub fn wait_copied(&self, slot: usize) -> Result<()> {
        #[cfg(wndqn_cuda_graph)]
        return self.on_slot(ffi::wcs_wait_copied, slot);
        #[cfg(not(wndqn_cuda_graph))]
        self.on_slot((), slot)
    }

    /// Mark slot `slot` free for the next copy once the current stream's work so far is done.
    pub fn mark_consumed(&self, slot: usize) -> Result<()> {
        #[cfg(wndqn_cuda_graph)]
        return self.on_slot(ffi::wcs_mark_consumed, slot);
        #[cfg(not(wndqn_cuda_graph))]
        self.on_slot((), slot)
    }

    #[cfg(wndqn_cuda_graph)]
    fn on_slot(&self, f: SlotFn, slot: usize) -> Result<()> {
        // SAFETY: `ptr` is a live stager; the error buffer comes with its capacity.
        call("copy stream", |e, n| unsafe { f(self.ptr, slot as _, e, n) })
    }

    #[cfg(not(wndqn_cuda_graph))]
    fn on_slot(&self, _: (), _: usize) -> Result<()> {
        bail!("built without the CUDA shim")
    }
}

/// A shim entry point on one slot of a stager.
#[cfg(wndqn_cuda_graph)]
type SlotFn =
    unsafe extern "C" fn(*mut std::ffi::c_void, std::ffi::c_int, *mut std::ffi::c_char, usize) -> std::ffi::c_int;

#[cfg(wndqn_cuda_graph)]
impl Drop for Stager {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from wcs_new and is freed once.
        unsafe { ffi::wcs_delete(self.ptr) }
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

    #[test]
    fn staged_copies_land_in_their_slot() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED staged_copies_land_in_their_slot: no CUDA device");
            assert!(Stager::new(0).is_err(), "a copy stream without a GPU must be an error");
            return;
        }
        let d = Device::Cuda(0);
        let n = 1i64 << 20;
        let st = Stager::new(0).unwrap();
        let slots = [Tensor::zeros([n], (Kind::Float, d)), Tensor::zeros([n], (Kind::Float, d))];
        for i in 0..6 {
            let k = i % 2;
            let src = Tensor::full([n], i as f64, (Kind::Float, Device::Cpu)).pin_memory(d);
            st.stage(k, &[&slots[k]], &[&src]).unwrap();
            st.wait_copied(k).unwrap();
            let got = slots[k].mean(Kind::Float).double_value(&[]);
            assert_eq!(got, i as f64, "slot {k} after copy {i}");
            st.mark_consumed(k).unwrap();
        }
    }
}
