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

/// What [`transpose_blocks`] does to each element on its way.
#[derive(Clone, Copy)]
pub(crate) enum Pass<'a> {
    Copy,
    /// `max(x, 0)`.
    Relu,
    /// `x` where the element of this slice at the source's place is positive, else 0 (ReLU's
    /// backward, the slice its output, laid out as the source).
    MaskBy(&'a [f32]),
}

/// Each of the blocks of `rows x cols` (row-major) that `src` holds, transposed into `dst`
/// (`cols x rows` each) through `pass`: the patch product's position-major output into the
/// channel-major map a convolution gives (`rows` positions, `cols` channels), and that map's
/// gradient back. Where the CPU has AVX-512F, tiles of 16 x 16 in registers (sixteen rows
/// loaded, 64 shuffles, sixteen columns stored; the ReLU or the mask applied to the rows as
/// loaded), the edges an element at a time. ATen's copy of the permuted view reads an element at
/// a time, and so does a gather (both about 5-7% of a MinAtar update on Zen 4, where this is 1%).
pub(crate) fn transpose_blocks(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, pass: Pass) {
    transpose(src, dst, rows, cols, pass, true);
}

/// [`transpose_blocks`], in tiles only where `tiles` allows it.
fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, pass: Pass, tiles: bool) {
    assert!(rows * cols > 0 && src.len() == dst.len() && src.len().is_multiple_of(rows * cols));
    if let Pass::MaskBy(m) = pass {
        assert_eq!(m.len(), src.len());
    }
    let (r16, c16) = (rows / 16 * 16, cols / 16 * 16);
    #[cfg(target_arch = "x86_64")]
    let tiled = tiles && std::is_x86_feature_detected!("avx512f") && r16 > 0 && c16 > 0;
    #[cfg(not(target_arch = "x86_64"))]
    let tiled = false && tiles;
    let block = rows * cols;
    for b in 0..src.len() / block {
        let base = b * block;
        let one = |dst: &mut [f32], r: usize, c: usize| {
            let x = src[base + r * cols + c];
            dst[base + c * rows + r] = match pass {
                Pass::Copy => x,
                Pass::Relu => x.max(0.0),
                Pass::MaskBy(m) => {
                    if m[base + r * cols + c] > 0.0 {
                        x
                    } else {
                        0.0
                    }
                }
            };
        };
        if !tiled {
            (0..rows).for_each(|r| (0..cols).for_each(|c| one(dst, r, c)));
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        for r in (0..r16).step_by(16) {
            for c in (0..c16).step_by(16) {
                let at = base + r * cols + c;
                let mask = match pass {
                    Pass::MaskBy(m) => Some(&m[at..]),
                    _ => None,
                };
                // SAFETY: AVX-512F is present (`tiled`); the tile's sixteen rows of sixteen start
                // at `at` with stride `cols` inside this block of `src` (and of the mask, of the
                // same layout), its sixteen columns at `base + c * rows + r` with stride `rows`
                // inside this block of `dst`.
                unsafe {
                    x86::tile16(
                        &src[at..],
                        cols,
                        &mut dst[base + c * rows + r..],
                        rows,
                        mask,
                        matches!(pass, Pass::Relu),
                    )
                };
            }
        }
        (0..r16).for_each(|r| (c16..cols).for_each(|c| one(dst, r, c)));
        (r16..rows).for_each(|r| (0..cols).for_each(|c| one(dst, r, c)));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One 16 x 16 tile of [`super::transpose_blocks`]: rows `i` of `src` at `i * lds`, columns
    /// `j` of the result at `j * ldd` of `dst`; `mask` laid out as `src`.
    ///
    /// # Safety
    /// AVX-512F is present; `src` (and `mask`) hold `15 * lds + 16` elements, `dst` `15 * ldd + 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile16(
        src: &[f32],
        lds: usize,
        dst: &mut [f32],
        ldd: usize,
        mask: Option<&[f32]>,
        relu: bool,
    ) {
        assert!(src.len() > 15 * lds + 15 && dst.len() > 15 * ldd + 15);
        assert!(mask.is_none_or(|m| m.len() > 15 * lds + 15));
        // SAFETY: the loads and stores stay inside the slices (asserted above).
        unsafe {
            let zero = _mm512_setzero_ps();
            let r: [__m512; 16] = std::array::from_fn(|i| {
                let x = _mm512_loadu_ps(src.as_ptr().add(i * lds));
                match mask {
                    Some(m) => {
                        let gate = _mm512_loadu_ps(m.as_ptr().add(i * lds));
                        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(gate, zero), x)
                    }
                    None if relu => _mm512_max_ps(x, zero),
                    None => x,
                }
            });
            // Pairs of rows interleaved within each 128-bit lane.
            let t: [__m512d; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                _mm512_castps_pd(if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) })
            });
            // u[g][m]: lane l holds rows 4g .. 4g + 3 of column 4l + m.
            let u: [[__m512; 4]; 4] = std::array::from_fn(|g| {
                let (lo, hi) = ((t[4 * g], t[4 * g + 2]), (t[4 * g + 1], t[4 * g + 3]));
                [
                    _mm512_castpd_ps(_mm512_unpacklo_pd(lo.0, lo.1)),
                    _mm512_castpd_ps(_mm512_unpackhi_pd(lo.0, lo.1)),
                    _mm512_castpd_ps(_mm512_unpacklo_pd(hi.0, hi.1)),
                    _mm512_castpd_ps(_mm512_unpackhi_pd(hi.0, hi.1)),
                ]
            });
            // Column 4l + m gathers lane l of u[0..4][m]: a 4 x 4 transpose of 128-bit lanes.
            #[allow(clippy::needless_range_loop)]
            for m in 0..4 {
                let p0 = _mm512_shuffle_f32x4::<0x44>(u[0][m], u[1][m]);
                let p1 = _mm512_shuffle_f32x4::<0xEE>(u[0][m], u[1][m]);
                let p2 = _mm512_shuffle_f32x4::<0x44>(u[2][m], u[3][m]);
                let p3 = _mm512_shuffle_f32x4::<0xEE>(u[2][m], u[3][m]);
                let cols = [
                    _mm512_shuffle_f32x4::<0x88>(p0, p2),
                    _mm512_shuffle_f32x4::<0xDD>(p0, p2),
                    _mm512_shuffle_f32x4::<0x88>(p1, p3),
                    _mm512_shuffle_f32x4::<0xDD>(p1, p3),
                ];
                for (l, v) in cols.into_iter().enumerate() {
                    _mm512_storeu_ps(dst.as_mut_ptr().add((4 * l + m) * ldd), v);
                }
            }
        }
    }
}

/// ReLU's backward in place: `dy` where the output `y` is positive, else 0.
pub(crate) fn relu_backward(dy: &mut [f32], y: &[f32]) {
    for (d, &e) in dy.iter_mut().zip(y) {
        *d = if e > 0.0 { *d } else { 0.0 };
    }
}

/// `sum_k f(a[k], b[k], c[k])` over equal-length slices, in 32 partial sums of `T` (so that the
/// loop vectorizes into four independent chains of additions: one chain of eight lanes waits on
/// each addition's latency), added in f64 with the tail of fewer than 32.
#[inline(always)]
pub(crate) fn sum8<T: Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
    const LANES: usize = 32;
    let mut acc = [T::of(0.0); LANES];
    let (ca, cb, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let (ra, rb, rc) = (ca.remainder(), cb.remainder(), cc.remainder());
    let whole = |s: &[T]| -> [T; LANES] { s.try_into().expect("chunks of 32") };
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        let (x, y, z) = (whole(x), whole(y), whole(z));
        for i in 0..LANES {
            acc[i] = acc[i] + f(x[i], y[i], z[i]);
        }
    }
    let rest: f64 = ra.iter().zip(rb).zip(rc).map(|((&x, &y), &z)| f(x, y, z).to_f64()).sum();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// [`transpose_blocks`], tiled and an element at a time, gives ATen's permuted copy, its ReLU and ReLU's
    /// backward, bit for bit, for blocks whose rows are a multiple of the gather's 16 lanes and
    /// blocks with a tail (and NaN, -0.0 and zeros among the values and the mask).
    #[test]
    fn transposed_blocks_are_atens() {
        for (batch, rows, cols) in
            [(3usize, 64usize, 16usize), (2, 16, 64), (2, 32, 48), (2, 5, 7), (1, 37, 21), (2, 20, 35), (4, 1, 20)]
        {
            let shape = [batch as i64, rows as i64, cols as i64];
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            x.view([-1]).narrow(0, 0, 3).copy_(&Tensor::from_slice(&[f32::NAN, -0.0, 0.0]));
            let y = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            y.view([-1]).narrow(0, 1, 2).copy_(&Tensor::from_slice(&[0.0f32, -0.0]));
            let t = |t: &Tensor| t.permute([0, 2, 1]).contiguous();
            let want = [t(&x), t(&x.relu()), t(&x.where_self(&y.gt(0.0), &x.zeros_like()))];
            // SAFETY: contiguous CPU f32 tensors of this test.
            let (xs, ys) = unsafe { (f32s(&x), f32s(&y)) };
            for (i, pass) in [Pass::Copy, Pass::Relu, Pass::MaskBy(ys)].into_iter().enumerate() {
                for wide in [true, false] {
                    let got = Tensor::empty([batch as i64, cols as i64, rows as i64], (Kind::Float, Device::Cpu));
                    // SAFETY: as above; `got` is this test's.
                    let out = unsafe { f32s_mut(&got) };
                    transpose(xs, out, rows, cols, pass, wide);
                    // ReLU of NaN: ATen keeps it, these give 0 (as `relu` does); compare elsewhere.
                    let same = got.eq_tensor(&want[i]).logical_or(&got.isnan().logical_and(&want[i].isnan()));
                    let differ = i64::try_from(same.logical_not().sum(Kind::Int64)).unwrap();
                    let nan_relu = i64::from(i == 1);
                    assert!(differ <= nan_relu, "{batch}x{rows}x{cols} pass {i} wide {wide}: {differ} differ");
                }
            }
        }
    }
}
