//! The Rust side of the C ABI convention of the libtorch extensions (`csrc/c_abi.hpp`): an entry
//! point returns 0, or -1 with the C++ exception's message in the caller's buffer; a tensor
//! crosses as tch's handle (`torch::Tensor*`). And [`guarded`], for libtorch errors that tch
//! reports by panicking.

use anyhow::{anyhow, Result};
use std::ffi::{c_char, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

/// Run `f` with an error buffer; its message, prefixed with `what`, on failure.
pub fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut err = [0u8; 1024];
    if f(err.as_mut_ptr().cast(), err.len()) == 0 {
        return Ok(());
    }
    let msg = std::ffi::CStr::from_bytes_until_nul(&err).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    Err(anyhow!("{what}: {}", msg.lines().next().unwrap_or("")))
}

/// tch handles of `ts`, for a `torch::Tensor* const*` argument; valid while the tensors live.
pub fn handles<'a>(ts: impl IntoIterator<Item = &'a Tensor>) -> Vec<*mut C_tensor> {
    ts.into_iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Run `f`, turning a panic into an error prefixed with `what`: tch reports libtorch errors
/// (such as an operation that is not allowed during a CUDA-graph capture) by panicking.
#[cfg_attr(not(wndqn_cuda_graph), allow(dead_code))]
pub fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow!("{what}: {}", msg.lines().next().unwrap_or("a panic"))
    })
}
