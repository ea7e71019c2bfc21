//! The CPU loops' common parts, what every layer, normalization and optimizer rule of this crate
//! builds its loops from: the element types ([`Real`]), an AVX2 build of a loop with denormals
//! flushed to zero ([`dispatch!`], [`FlushDenormals`]), tensors seen as slices ([`data`],
//! [`f32s`]), and sums in eight lanes that vectorize ([`sum8`], [`lanes`]).
//!
//! Denormals: the loops run with them flushed to zero (MXCSR's FTZ and DAZ, what
//! `torch.set_flush_denormal(True)` sets). An optimizer's state for a weight whose gradient
//! stays zero (a dead unit's) decays geometrically through the denormal range, and each denormal
//! operand costs the CPU a microcode assist; docs/BENCHMARKS.md measures it. Rust never contracts
//! `a * b + c` into an FMA on its own, so the AVX2 build of a loop rounds exactly like the
//! baseline one.

use std::ops::{Add, Div, Mul, Sub};

use tch::Tensor;

/// The element types the kernels run on.
pub(crate) trait Real:
    Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn sqrt(self) -> Self;
    fn abs(self) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
}

/// Denormal operands and results flushed to zero on this thread while it lives (MXCSR's DAZ
/// and FTZ bits); the thread's earlier mode is restored when it is dropped.
pub(crate) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    pub(crate) fn on() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            const FTZ_DAZ: u32 = 0x8040;
            let mut saved = 0u32;
            // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register through a
            // valid 4-byte location; only the two flush bits change.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack, preserves_flags));
                let set = saved | FTZ_DAZ;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &set, options(nostack, preserves_flags, readonly));
            }
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `on`: the mode this thread had before.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved, options(nostack, preserves_flags, readonly));
        }
    }
}

/// Defines `$name`, which runs `$generic` compiled for AVX2 where the CPU has it (8 f32 lanes
/// instead of 4) with denormals flushed to zero ([`FlushDenormals`]).
macro_rules! dispatch {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name<T: $crate::kernels::Real>($($arg: $ty),*) -> $ret {
            let _flush = $crate::kernels::FlushDenormals::on();
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<T: $crate::kernels::Real>($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

pub(crate) use dispatch;

/// `t`'s elements as a slice of `T` (what every CPU loop of this crate reads tensors by).
///
/// # Safety
/// `t` is a contiguous CPU tensor of `T` that nothing writes while the slice lives.
pub(crate) unsafe fn data<'a, T>(t: &Tensor) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

/// [`data`], writable.
///
/// # Safety
/// As for [`data`], and nothing else reads or writes them while the slice lives.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn data_mut<'a, T>(t: &Tensor) -> &'a mut [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel()) }
}

/// [`data`] of an f32 tensor.
///
/// # Safety
/// As for [`data`].
pub(crate) unsafe fn f32s<'a>(t: &Tensor) -> &'a [f32] {
    // SAFETY: the caller's contract.
    unsafe { data::<f32>(t) }
}

/// [`data_mut`] of an f32 tensor.
///
/// # Safety
/// As for [`data_mut`].
pub(crate) unsafe fn f32s_mut<'a>(t: &Tensor) -> &'a mut [f32] {
    // SAFETY: the caller's contract.
    unsafe { data_mut::<f32>(t) }
}

/// Whether `t` is a contiguous CPU f32 tensor (what the loops read).
pub(crate) fn plain_f32(t: &Tensor) -> bool {
    t.device() == tch::Device::Cpu && t.kind() == tch::Kind::Float && t.is_contiguous()
}

/// `y = max(y, 0)` in place.
pub(crate) fn relu(y: &mut [f32]) {
    y.iter_mut().for_each(|e| *e = e.max(0.0));
}

/// ReLU's backward in place: `dy` where the output `y` is positive, else 0.
pub(crate) fn relu_backward(dy: &mut [f32], y: &[f32]) {
    for (d, &e) in dy.iter_mut().zip(y) {
        *d = if e > 0.0 { *d } else { 0.0 };
    }
}

/// `sum_k f(a[k], b[k], c[k])` over equal-length slices, in eight partial sums of `T` (so that
/// the loop vectorizes), added in f64.
#[inline(always)]
pub(crate) fn sum8<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
    let mut acc = [T::of(0.0); 8];
    let (ca, cb, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let rest: f64 =
        ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((&x, &y), &z)| f(x, y, z).to_f64()).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for k in 0..8 {
            acc[k] = acc[k] + f(x[k], y[k], z[k]);
        }
    }
    acc.iter().map(|a| a.to_f64()).sum::<f64>() + rest
}

/// Column sums of `d` (rows of `out.len()` elements) into `out`.
pub(crate) fn col_sums(d: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    for row in d.chunks_exact(out.len()) {
        for (o, &e) in out.iter_mut().zip(row) {
            *o += e;
        }
    }
}

/// `sum_k f(a[k])` into eight lanes (the loop vectorizes), the tail folded into the first lanes.
#[inline(always)]
pub(crate) fn lanes<T: Real>(a: &[T], f: impl Fn(T) -> T) -> [T; 8] {
    let mut acc = [T::of(0.0); 8];
    let chunks = a.chunks_exact(8);
    for (s, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *s = f(x);
    }
    for c in chunks {
        let c: &[T; 8] = c.try_into().expect("chunks of eight");
        for k in 0..8 {
            acc[k] = acc[k] + f(c[k]);
        }
    }
    acc
}

/// The sum of eight lanes, pairwise.
#[inline(always)]
pub(crate) fn lane_total<T: Real>(a: [T; 8]) -> T {
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (b[0] + b[2]) + (b[1] + b[3])
}

/// `a . b` (in eight partial sums, [`sum8`]).
#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    sum8(a, b, b, |x, y, _| x * y)
}
