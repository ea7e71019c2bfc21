//! ATen's multi-tensor optimizer kernels, and the tensor internals (version counter, setting a
//! gradient), which tch does not expose: a safe wrapper over
//! `csrc/multi_tensor.cpp` (compiled by agents/build.rs against libtorch's headers).
//!
//! Why: the on-device update ([`crate::optim::Optimizer::step_on_device`]) is replayed as a CUDA
//! graph, where every kernel is a graph node. Per-tensor ops cost about seven Adam kernels and
//! three clipping kernels per parameter (100-150 nodes for the Nature CNN); `_fused_adam_` and
//! `_foreach_norm`/`_foreach_mul_` do the same work in a handful, as PyTorch's own optimizers do.

use anyhow::{anyhow, Result};
use std::ffi::{c_char, c_int};
use tch::Tensor;
use torch_sys::C_tensor;

use super::ffi::{call, handles};

extern "C" {
    fn wmt_clip_grad_norm(
        grads: *const *mut C_tensor,
        n: usize,
        max_norm: f64,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn wmt_fused_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avg: *const *mut C_tensor,
        exp_avg_sq: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn wmt_version(t: *mut C_tensor, out: *mut i64, err: *mut c_char, cap: usize) -> c_int;
    fn wmt_set_grad(t: *mut C_tensor, grad: *mut C_tensor, err: *mut c_char, cap: usize) -> c_int;
}

/// Make `grad` (same shape and kind, no copy) `t`'s gradient, or leave `t` without one (None):
/// for gradients computed outside autograd into buffers of their own (`crate::reparam`). tch
/// can read a gradient but not set one.
pub fn set_grad(t: &Tensor, grad: Option<&Tensor>) -> Result<()> {
    if let Some(g) = grad {
        if g.size() != t.size() || g.kind() != t.kind() || g.device() != t.device() {
            return Err(anyhow!("set_grad: the gradient must have the tensor's shape, kind and device"));
        }
    }
    let g = grad.map_or(std::ptr::null_mut(), |g| g.as_ptr() as *mut C_tensor);
    // SAFETY: live tensor handles (or null) for the call; the shim copies the handle's tensor.
    call("set gradient", |e, n| unsafe { wmt_set_grad(t.as_ptr() as *mut C_tensor, g, e, n) })
}

/// `t`'s version counter: every in-place tensor op on `t` or a view of it advances it (writes
/// through a raw pointer, as `optim::fused`'s kernels make, do not). A value computed from
/// `t` stays valid while the counter has not moved.
pub fn version(t: &Tensor) -> Result<i64> {
    let mut v = 0i64;
    // SAFETY: a live tensor handle for the call; `v` outlives it.
    call("tensor version", |e, n| unsafe { wmt_version(t.as_ptr() as *mut C_tensor, &mut v, e, n) })?;
    Ok(v)
}

/// The global L2 norm of `grads` (a device scalar); with `max_norm`, every gradient is scaled
/// in place by `min(1, max_norm / (norm + 1e-6))`. Nothing is read back to the host.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: Option<f64>) -> Result<Tensor> {
    let g = handles(grads);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: `g` holds live tensor handles for the call; `out` receives a new tensor that the
    // returned `Tensor` owns and frees.
    call("foreach gradient clipping", |e, n| unsafe {
        wmt_clip_grad_norm(g.as_ptr(), g.len(), max_norm.unwrap_or(0.0), &mut out, e, n)
    })?;
    // SAFETY: a tensor the shim allocated for us, owned from here on.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Adam's hyper-parameters for [`fused_adam`].
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

/// One Adam step over all `params` with `at::_fused_adam_`; `steps[i]` is parameter `i`'s step
/// counter (f32, on the parameters' device, already advanced for this step; the same tensor may
/// be given for all).
pub fn fused_adam(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avg: &[Tensor],
    exp_avg_sq: &[Tensor],
    steps: &[Tensor],
    h: AdamHyper,
) -> Result<()> {
    let n = params.len();
    if [grads.len(), exp_avg.len(), exp_avg_sq.len(), steps.len()].iter().any(|&l| l != n) {
        return Err(anyhow!("fused Adam: lists of different lengths"));
    }
    let (p, g, m, v, s) = (handles(params), handles(grads), handles(exp_avg), handles(exp_avg_sq), handles(steps));
    // SAFETY: five lists of `n` live tensor handles for the duration of the call.
    call("fused Adam", |e, cap| unsafe {
        wmt_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            e,
            cap,
        )
    })
}
