//! CUDA-graph capture and replay, which tch does not expose: a safe wrapper over
//! `csrc/cuda_graph.cpp` (at::cuda::CUDAGraph on a side stream), compiled by `build.rs` when the
//! torch wheel's CUDA headers are there (`cfg(wndqn_cuda_graph)`; elsewhere `cuda_graph_stub.rs`
//! stands in with the same API, every constructor an error).
//!
//! A graph records every kernel that libtorch launches while [`CudaGraph::capture`] runs its
//! closure, with the memory it used, and [`CudaGraph::replay`] launches them all again with one
//! call: the inputs are the same tensors (copy new data into them first), the outputs land in
//! the same tensors. Work to be captured must first run eagerly on the same side stream
//! ([`CudaGraph::warm_up`]), so that libtorch's lazily made per-stream state exists.
//! [`Stager`] is the other piece tch lacks: a copy stream and events, so that the next batch is
//! copied to the device while the GPU computes. The graphed learner ([`super::graphed`]) is
//! built on both; they run only where a GPU is present.

use anyhow::{bail, Result};

use super::ffi::{call, guarded, handles};

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

/// Whether the CUDA-graph extension is built (it is, here).
pub const BUILT: bool = true;

/// A CUDA graph on one device: empty until [`CudaGraph::capture`].
pub struct CudaGraph {
    ptr: *mut std::ffi::c_void,
    captured: bool,
}

impl CudaGraph {
    /// An empty graph for `device`.
    pub fn new(device: usize) -> Result<CudaGraph> {
        if !tch::Cuda::is_available() {
            bail!("CUDA graphs need a CUDA device; libtorch sees none");
        }
        // SAFETY: a new graph object owned by the returned value.
        let ptr = unsafe { ffi::wcg_new(device as std::ffi::c_int) };
        if ptr.is_null() {
            bail!("CUDA graph: out of memory");
        }
        Ok(CudaGraph { ptr, captured: false })
    }

    /// Run `f` eagerly on the stream the capture will use, then wait for it.
    pub fn warm_up<R>(&self, f: impl FnOnce() -> R) -> Result<R> {
        // SAFETY: `ptr` is a live graph; every call gets an error buffer with its capacity.
        call("CUDA graph warm-up", |e, n| unsafe { ffi::wcg_enter(self.ptr, e, n) })?;
        let r = guarded("CUDA graph warm-up", f);
        // SAFETY: as above.
        call("CUDA graph warm-up", |e, n| unsafe { ffi::wcg_leave(self.ptr, e, n) })?;
        r
    }

    /// Capture the GPU work of `f` (it is recorded, not run: replay it).
    pub fn capture(&mut self, f: impl FnOnce()) -> Result<()> {
        if self.captured {
            bail!("CUDA graph: already captured");
        }
        // SAFETY: `ptr` is a live graph; every call gets an error buffer with its capacity.
        call("CUDA graph capture", |e, n| unsafe { ffi::wcg_capture_begin(self.ptr, e, n) })?;
        let r = guarded("CUDA graph capture", f);
        // SAFETY: as above.
        let end = call("CUDA graph capture", |e, n| unsafe { ffi::wcg_capture_end(self.ptr, e, n) });
        r?;
        end?;
        self.captured = true;
        Ok(())
    }

    /// Launch the captured work again, on the current stream.
    pub fn replay(&self) -> Result<()> {
        if !self.captured {
            bail!("CUDA graph: nothing captured");
        }
        // SAFETY: `ptr` is a live, captured graph; the error buffer comes with its capacity.
        call("CUDA graph replay", |e, n| unsafe { ffi::wcg_replay(self.ptr, e, n) })
    }
}

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
    ptr: *mut std::ffi::c_void,
}

impl Stager {
    /// A copy stream on `device`.
    pub fn new(device: usize) -> Result<Stager> {
        if !tch::Cuda::is_available() {
            bail!("a copy stream needs a CUDA device; libtorch sees none");
        }
        let mut ptr = std::ptr::null_mut();
        call("copy stream", |e, n| {
            // SAFETY: the error buffer comes with its capacity; a null result means failure.
            ptr = unsafe { ffi::wcs_new(device as std::ffi::c_int, e, n) };
            if ptr.is_null() {
                -1
            } else {
                0
            }
        })?;
        Ok(Stager { ptr })
    }

    /// Copy `src[i]` (pinned host memory, for the copy to be asynchronous) into `dst[i]` (slot
    /// `slot`'s device buffers) on the copy stream.
    pub fn stage(&self, slot: usize, dst: &[&tch::Tensor], src: &[&tch::Tensor]) -> Result<()> {
        if dst.len() != src.len() || slot > 1 {
            bail!("copy stream: {} destinations for {} sources in slot {slot}", dst.len(), src.len());
        }
        let (d, s) = (handles(dst.iter().copied()), handles(src.iter().copied()));
        // SAFETY: two lists of live tensor handles, of the same length, for the call.
        call("copy stream", |e, n| unsafe {
            ffi::wcs_stage(self.ptr, slot as _, d.as_ptr(), s.as_ptr(), d.len(), e, n)
        })
    }

    /// Make the current (compute) stream wait for slot `slot`'s copies.
    pub fn wait_copied(&self, slot: usize) -> Result<()> {
        self.on_slot(ffi::wcs_wait_copied, slot)
    }

    /// Mark slot `slot` free for the next copy once the current stream's work so far is done.
    pub fn mark_consumed(&self, slot: usize) -> Result<()> {
        self.on_slot(ffi::wcs_mark_consumed, slot)
    }

    fn on_slot(&self, f: SlotFn, slot: usize) -> Result<()> {
        // SAFETY: `ptr` is a live stager; the error buffer comes with its capacity.
        call("copy stream", |e, n| unsafe { f(self.ptr, slot as _, e, n) })
    }
}

/// A shim entry point on one slot of a stager.
type SlotFn =
    unsafe extern "C" fn(*mut std::ffi::c_void, std::ffi::c_int, *mut std::ffi::c_char, usize) -> std::ffi::c_int;

impl Drop for Stager {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from wcs_new and is freed once.
        unsafe { ffi::wcs_delete(self.ptr) }
    }
}
