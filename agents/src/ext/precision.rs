//! Mixed precision, where tch falls short: a cast to another dtype and to the channels-last
//! memory format in one differentiable copy (`csrc/precision.cpp`; tch has no memory formats),
//! libtorch's TF32 switches for CUDA, and whether this CPU computes bf16 natively.

use anyhow::Result;
use std::ffi::{c_char, c_int};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use super::ffi::call;

extern "C" {
    fn wpr_to(
        t: *mut C_tensor,
        kind: c_int,
        channels_last: c_int,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn wpr_allow_tf32(on: c_int, err: *mut c_char, cap: usize) -> c_int;
}

/// c10's `ScalarType` code of the float kinds a cast goes to.
fn scalar_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::BFloat16 => 15,
        other => anyhow::bail!("no cast to {other:?} here"),
    })
}

/// `t` as `kind` (f32, f64 or bf16), and in channels-last memory format when `channels_last`
/// (4-d tensors), in one copy that autograd differentiates (the gradient comes back in `t`'s
/// dtype).
pub fn to(t: &Tensor, kind: Kind, channels_last: bool) -> Result<Tensor> {
    let code = scalar_type(kind)?;
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: a live tensor handle for the call; `out` receives a new tensor the returned
    // `Tensor` owns and frees.
    call("cast", |e, n| unsafe {
        wpr_to(t.as_ptr() as *mut C_tensor, code, c_int::from(channels_last), &mut out, e, n)
    })?;
    // SAFETY: a tensor the shim allocated for us, owned from here on.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Let CUDA matrix products and convolutions use TF32 (or not); a global libtorch setting.
pub fn allow_tf32(on: bool) -> Result<()> {
    // SAFETY: the error buffer comes with its capacity.
    call("TF32 switch", |e, n| unsafe { wpr_allow_tf32(c_int::from(on), e, n) })
}

/// Whether this CPU computes bf16 natively (AVX512_BF16 or AMX-BF16, from /proc/cpuinfo).
/// `WNDQN_CPU_BF16=0|1` overrides what the CPU says, to test what depends on it.
pub fn cpu_has_native_bf16() -> bool {
    if let Some(v) = std::env::var_os("WNDQN_CPU_BF16").filter(|v| !v.is_empty()) {
        return v != "0";
    }
    native_bf16_in(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

/// Whether the first `flags` line of a /proc/cpuinfo text names a native bf16 unit.
fn native_bf16_in(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_cast_to_channels_last_keeps_values_and_gradients() {
        let x = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = to(&x, Kind::BFloat16, true).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(!y.is_contiguous(), "channels-last is not the default layout");
        let back = y.to_kind(Kind::Float);
        assert!(f64::try_from((&back - &x).abs().max()).unwrap() < 0.01);
        (y.to_kind(Kind::Float) * 3.0).sum(Kind::Float).backward();
        assert_eq!(x.grad().kind(), Kind::Float);
        assert!(f64::try_from((x.grad() - 3.0).abs().max()).unwrap() < 1e-6);
    }

    #[test]
    fn native_bf16_is_read_from_the_cpu_flags() {
        assert!(native_bf16_in("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_tile\n"));
        assert!(native_bf16_in("flags\t\t: fpu amx_bf16\n"));
        assert!(!native_bf16_in("flags : fpu sse avx2 avx512f\n"));
        assert!(!native_bf16_in(""));
    }
}
