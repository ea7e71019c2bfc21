//! The small networks' f32 matrix products (MinAtar's, the MLP's) by this crate's own AVX-512
//! kernels, where the CPU has AVX-512F and libtorch runs one thread: at those shapes MKL's sgemm,
//! what libtorch calls, spends much of each call packing operands it then uses once
//! (docs/BENCHMARKS.md measures both). Anything else (no AVX-512, several intra-op threads,
//! another dtype, an operand that needs a gradient, a layout the kernels do not take) is left to
//! libtorch: [`product`] and [`product_into`] fall back to it, [`addmm`] and [`mm_into`] say
//! whether they took the product.
//!
//! Two kernels keep a tile of the output in registers over the whole inner dimension `k`:
//! - `nn`, `C = A B` for a `B` whose rows are contiguous (`A` at any strides, read an element
//!   at a time): a fused multiply-add per term, `k` in order;
//! - `nt`, `C = A B^T` for an `A` and a `B^T` whose rows (along `k`) are contiguous: dot
//!   products in 16 lanes, summed at the end.
//!
//! The bias, where there is one, starts `nn`'s sums and ends `nt`'s.

use tch::{Device, Kind, Tensor};

/// `bias + a b` (`bias` `[n]` added to every row) or `a b`: by the kernels where they take it
/// ([`addmm`]), else libtorch's `addmm` or `mm`.
pub fn product(bias: Option<&Tensor>, a: &Tensor, b: &Tensor) -> Tensor {
    addmm(bias, a, b).unwrap_or_else(|| match bias {
        Some(c) => c.addmm(a, b),
        None => a.mm(b),
    })
}

/// `a b` into `out`: by the kernels where they take it ([`mm_into`]), else libtorch's `mm_out`.
pub fn product_into(out: &Tensor, a: &Tensor, b: &Tensor) {
    if !mm_into(out, None, a, b) {
        let _ = a.mm_out(out, b);
    }
}

/// `out[i, j] = bias[j] + sum_p x[rows[i] + cols[p]] b[p, j]` (`bias` optional) by the `nn`
/// kernel, with `A[i, p]` read where it lies in `x`, at `rows[i] + cols[p]` of its elements: a
/// convolution's patches without their copy (`rows` the windows' corners, `cols` a window's
/// offsets), or, with the roles of the two swapped, the patches seen transposed (its weight
/// gradient). The same sums in the same order as gathering `A` first and [`mm_into`]. `out`
/// is contiguous `[rows.len(), n]`, `b` `[cols.len(), n]` with contiguous rows, `x` contiguous;
/// false, with `out` untouched, where the kernels do not take them.
///
/// # Safety
/// Every `rows[i] + cols[p]` is the index of one of `x`'s elements (the caller knows its
/// offsets' bounds; checking them here took a pass over them per call).
pub unsafe fn indexed_into(
    out: &Tensor,
    x: &Tensor,
    rows: &[isize],
    cols: &[isize],
    b: &Tensor,
    bias: Option<&Tensor>,
) -> bool {
    if !enabled() || !usable(x) || !x.is_contiguous() || !usable(b) || !usable(out) || !out.is_contiguous() {
        return false;
    }
    let (m, k, n) = (rows.len(), cols.len(), b.size().last().copied().unwrap_or(0) as usize);
    if b.dim() != 2 || b.size()[0] as usize != k || b.stride()[1] != 1 || out.size() != [m as i64, n as i64] {
        return false;
    }
    let Some(bias_ptr) = bias_ptr(bias, n) else { return false };
    if m == 0 || k == 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let a = x86::IndexedA { x: x.data_ptr() as *const f32, rows: rows.as_ptr(), cols: cols.as_ptr() };
        let bp = (b.data_ptr() as *const f32, b.stride()[0] as isize);
        // SAFETY: AVX-512F is present (`enabled`); every `rows[i] + cols[p]` addresses an
        // element of `x` (the caller's contract), `b` and `out` are f32 CPU tensors of the checked shapes
        // and strides, and `out`, handed over by the caller, shares no memory with them.
        unsafe { x86::nn(m, n, k, a, bp, out.data_ptr() as *mut f32, bias_ptr) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = bias_ptr;
        false
    }
}

/// `bias + a b` (`bias` `[n]` added to every row) or `a b`, as a new contiguous `[m, n]`
/// tensor; `None` where the kernels do not take it (see the module's text).
pub fn addmm(bias: Option<&Tensor>, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    if !enabled() || !usable(a) || !usable(b) || a.dim() != 2 || b.dim() != 2 {
        return None;
    }
    let out = Tensor::empty([a.size()[0], b.size()[1]], (Kind::Float, Device::Cpu));
    mm_into(&out, bias, a, b).then_some(out)
}

/// [`addmm`] into `out` (contiguous `[m, n]` f32); false, with `out` untouched, where the
/// kernels do not take it.
pub fn mm_into(out: &Tensor, bias: Option<&Tensor>, a: &Tensor, b: &Tensor) -> bool {
    if !enabled() || !usable(a) || !usable(b) || !usable(out) || a.dim() != 2 || b.dim() != 2 {
        return false;
    }
    let ([m, k], [k2, n]) = (dims(a), dims(b));
    if k != k2 || out.size() != [m as i64, n as i64] || !out.is_contiguous() {
        return false;
    }
    let Some(bias_ptr) = bias_ptr(bias, n) else { return false };
    let (sa, sb) = (a.stride(), b.stride());
    // A small `B` seen transposed (a convolution's `W^T`, a head's): one copy, then `nn`,
    // whose tiles suit a short `k` better than `nt`'s dot products.
    let small_copy;
    let (b, sb) = if sb[1] != 1 && !(sb[0] == 1 && sa[1] == 1 && k >= 64) && k * n <= 16_384 {
        small_copy = b.contiguous();
        let s = small_copy.stride();
        (&small_copy, s)
    } else {
        (b, sb)
    };
    let (ap, bp, cp) = (a.data_ptr() as *const f32, b.data_ptr() as *const f32, out.data_ptr() as *mut f32);
    #[cfg(target_arch = "x86_64")]
    {
        if sb[1] == 1 {
            // SAFETY: AVX-512F is present (`enabled`); the pointers address f32 CPU tensors of
            // the checked shapes and strides; `out` is contiguous and, being an output the
            // caller hands over, shares no memory with the operands.
            unsafe { x86::nn(m, n, k, (ap, sa[0] as isize, sa[1] as isize), (bp, sb[0] as isize), cp, bias_ptr) };
            return true;
        }
        if sb[0] == 1 && sa[1] == 1 {
            // SAFETY: as above; `a`'s rows and `b`'s columns are contiguous along `k`.
            unsafe { x86::nt(m, n, k, (ap, sa[0] as isize), (bp, sb[1] as isize), cp, bias_ptr) };
            return true;
        }
    }
    let _ = (ap, bp, cp, bias_ptr);
    false
}

/// `c = a b^T + bias` on slices (`a` `[m, k]`, `bt` `[n, k]`, `c` `[m, n]`, all row-major;
/// `bias` `[n]`): the `nt` kernel where the CPU has AVX-512F, else dot products in eight lanes.
/// For a batch of one ([`crate::acting`]), where a tensor's fixed cost would outweigh the
/// product; unlike [`mm_into`] it runs whatever libtorch's thread count, and calls no MKL.
pub(crate) fn nt_slices(m: usize, n: usize, k: usize, a: &[f32], bt: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
    assert!(k > 0 && a.len() == m * k && bt.len() == n * k && c.len() == m * n && bias.is_none_or(|b| b.len() == n));
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: AVX-512F is present; the slices hold the `[m, k]`, `[n, k]` and `[m, n]`
        // operands (checked above) and `c`, borrowed mutably, overlaps neither.
        unsafe { x86::nt(m, n, k, (a.as_ptr(), k as isize), (bt.as_ptr(), k as isize), c.as_mut_ptr(), bias) };
        return;
    }
    for (row, ci) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
        for (j, out) in ci.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[j]);
            *out = crate::kernels::dot(row, &bt[j * k..(j + 1) * k]) as f32 + b;
        }
    }
}

/// `c[i, j] = bias[j] + sum_p x[rows[i] + cols[p]] b[p, j]` on slices (`b` `[cols.len(), n]`,
/// `c` `[rows.len(), n]`, row-major; `bias` `[n]`): [`indexed_into`]'s product by the `nn`
/// kernel where the CPU has AVX-512F, else a loop in the same order. For a batch of one
/// ([`crate::acting`]), whatever libtorch's thread count. Panics where an offset falls outside
/// `x`.
pub(crate) fn indexed_slices(
    x: &[f32],
    rows: &[isize],
    cols: &[isize],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    let (m, k) = (rows.len(), cols.len());
    assert!(m > 0 && k > 0 && b.len().is_multiple_of(k));
    let n = b.len() / k;
    assert!(n > 0 && c.len() == m * n && bias.is_none_or(|v| v.len() == n));
    let bounds = |o: &[isize]| (o.iter().min().copied().unwrap_or(0), o.iter().max().copied().unwrap_or(0));
    let ((r0, r1), (c0, c1)) = (bounds(rows), bounds(cols));
    assert!(r0 + c0 >= 0 && ((r1 + c1) as usize) < x.len(), "an offset outside the input");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        let a = x86::IndexedA { x: x.as_ptr(), rows: rows.as_ptr(), cols: cols.as_ptr() };
        let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
        // SAFETY: AVX-512F is present; every `rows[i] + cols[p]` is inside `x` (checked above),
        // `b`, `bias` and `c` hold `[k, n]`, `[n]` and `[m, n]`, and `c`, borrowed mutably,
        // overlaps none of them.
        unsafe { x86::nn(m, n, k, a, (b.as_ptr(), n as isize), c.as_mut_ptr(), bias) };
        return;
    }
    for (&r, ci) in rows.iter().zip(c.chunks_exact_mut(n)) {
        match bias {
            Some(v) => ci.copy_from_slice(v),
            None => ci.fill(0.0),
        }
        for (&o, bp) in cols.iter().zip(b.chunks_exact(n)) {
            let a = x[(r + o) as usize];
            for (e, &w) in ci.iter_mut().zip(bp) {
                *e += a * w;
            }
        }
    }
}

/// The kernels' bias operand: null without a bias, the data of a usable contiguous `[n]` one;
/// `None` for a bias they do not take.
fn bias_ptr(bias: Option<&Tensor>, n: usize) -> Option<*const f32> {
    match bias {
        None => Some(std::ptr::null()),
        Some(c) if usable(c) && c.is_contiguous() && c.size() == [n as i64] => Some(c.data_ptr() as *const f32),
        Some(_) => None,
    }
}

/// The shape of a 2-D tensor, as sizes.
fn dims(t: &Tensor) -> [usize; 2] {
    let s = t.size();
    [s[0] as usize, s[1] as usize]
}

/// An f32 CPU tensor that no gradient flows through (none needed, or autograd off: the
/// explicit pass and the passes that need no gradient run with it off).
fn usable(t: &Tensor) -> bool {
    t.kind() == Kind::Float && t.device() == Device::Cpu && t.numel() > 0 && !(t.requires_grad() && grad_mode())
}

/// Whether autograd records on this thread (ATen's `GradMode`, which tch does not read out).
fn grad_mode() -> bool {
    // SAFETY: setting and restoring this thread's grad mode; nothing runs in between.
    unsafe {
        let on = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(on);
        on != 0
    }
}

/// Whether this CPU has AVX-512F and libtorch runs one intra-op thread (several threads are
/// MKL's to use).
pub fn enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && tch::get_num_threads() == 1
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `nn`'s tile: `R` rows of C by `V` vectors of 16 columns (the last one masked).
    macro_rules! nn_rows {
        ($v:literal, $r:literal, $m:expr, $args:expr) => {{
            let (k, a, b, c, ldc, bias, mask) = $args;
            let mut i = 0;
            while i + $r <= $m {
                tile_nn::<A, $v, $r>(k, a.down(i), b, c.add(i * ldc), ldc, bias, mask);
                i += $r;
            }
            let args = (k, a.down(i), b, c.add(i * ldc), ldc, bias, mask);
            match $m - i {
                0 => {}
                1 => tile_nn::<A, $v, 1>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                2 => tile_nn::<A, $v, 2>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                3 => tile_nn::<A, $v, 3>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                4 => tile_nn::<A, $v, 4>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                5 => tile_nn::<A, $v, 5>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                6 => tile_nn::<A, $v, 6>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
                _ => tile_nn::<A, $v, 7>(args.0, args.1, args.2, args.3, args.4, args.5, args.6),
            }
        }};
    }

    /// `nn`'s left operand, read an element at a time.
    pub(super) trait Lhs: Copy {
        /// What a tile keeps of one of its rows.
        type Row: Copy;
        /// The operand moved down `i` rows.
        unsafe fn down(self, i: usize) -> Self;
        /// Row `r`, for [`Lhs::get`].
        unsafe fn row(self, r: usize) -> Self::Row;
        /// Element `p` of a row.
        unsafe fn get(self, row: Self::Row, p: usize) -> f32;
    }

    /// (pointer, row stride, column stride).
    type StridedA = (*const f32, isize, isize);

    impl Lhs for StridedA {
        type Row = *const f32;
        #[inline(always)]
        unsafe fn down(self, i: usize) -> Self {
            // SAFETY: the caller stays inside the operand's rows.
            (unsafe { self.0.offset(i as isize * self.1) }, self.1, self.2)
        }
        #[inline(always)]
        unsafe fn row(self, r: usize) -> *const f32 {
            // SAFETY: as for `down`.
            unsafe { self.0.offset(r as isize * self.1) }
        }
        #[inline(always)]
        unsafe fn get(self, row: *const f32, p: usize) -> f32 {
            // SAFETY: the caller stays inside the row.
            unsafe { *row.offset(p as isize * self.2) }
        }
    }

    /// `A[i, p] = x[rows[i] + cols[p]]` ([`super::indexed_into`]).
    #[derive(Clone, Copy)]
    pub(super) struct IndexedA {
        pub(super) x: *const f32,
        pub(super) rows: *const isize,
        pub(super) cols: *const isize,
    }

    impl Lhs for IndexedA {
        type Row = *const f32;
        #[inline(always)]
        unsafe fn down(self, i: usize) -> Self {
            // SAFETY: the caller stays inside `rows`.
            IndexedA { rows: unsafe { self.rows.add(i) }, ..self }
        }
        #[inline(always)]
        unsafe fn row(self, r: usize) -> *const f32 {
            // SAFETY: the caller stays inside `rows`; the offset is one of `x`'s elements' less
            // a column's offset (`indexed_into`'s contract).
            unsafe { self.x.wrapping_offset(*self.rows.add(r)) }
        }
        #[inline(always)]
        unsafe fn get(self, row: *const f32, p: usize) -> f32 {
            // SAFETY: the caller stays inside `cols`; `rows[i] + cols[p]` is inside `x`.
            unsafe { *row.wrapping_offset(*self.cols.add(p)) }
        }
    }

    /// `C[m, n] = bias + A B`: `a` strided (pointer, row stride, column stride) or indexed, `b`
    /// as (pointer, row stride) with contiguous rows, `c` contiguous.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn nn<A: Lhs>(
        m: usize,
        n: usize,
        k: usize,
        a: A,
        b: (*const f32, isize),
        c: *mut f32,
        bias: *const f32,
    ) {
        // SAFETY: the caller's contract: the pointers and strides address the operands' and
        // the output's elements of the given sizes, and AVX-512F is present.
        unsafe {
            let mut j = 0;
            while j < n {
                let w = (n - j).min(64);
                let v = w.div_ceil(16);
                let tail = w - (v - 1) * 16;
                let mask: u16 = if tail == 16 { 0xFFFF } else { (1u16 << tail) - 1 };
                let bj = (b.0.add(j), b.1);
                let biasj = if bias.is_null() { bias } else { bias.add(j) };
                let args = (k, a, bj, c.add(j), n, biasj, mask);
                match v {
                    1 => nn_rows!(1, 8, m, args),
                    2 => nn_rows!(2, 8, m, args),
                    3 => nn_rows!(3, 6, m, args),
                    _ => nn_rows!(4, 4, m, args),
                }
                j += w;
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_nn<A: Lhs, const V: usize, const R: usize>(
        k: usize,
        a: A,
        b: (*const f32, isize),
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
        mask: u16,
    ) {
        // SAFETY: the caller's contract: the pointers and strides address the operands' and
        // the output's elements of the given sizes, and AVX-512F is present.
        unsafe {
            let mut masks = [0xFFFFu16; V];
            masks[V - 1] = mask;
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            if !bias.is_null() {
                for q in 0..V {
                    let bv = _mm512_maskz_loadu_ps(masks[q], bias.add(16 * q));
                    for row in acc.iter_mut() {
                        row[q] = bv;
                    }
                }
            }
            let rows: [A::Row; R] = std::array::from_fn(|r| a.row(r));
            for p in 0..k {
                let bp = b.0.offset(p as isize * b.1);
                let mut bv = [_mm512_setzero_ps(); V];
                for q in 0..V {
                    bv[q] = _mm512_maskz_loadu_ps(masks[q], bp.add(16 * q));
                }
                for (row, &ar) in acc.iter_mut().zip(&rows) {
                    let av = _mm512_set1_ps(a.get(ar, p));
                    for q in 0..V {
                        row[q] = _mm512_fmadd_ps(av, bv[q], row[q]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for q in 0..V {
                    _mm512_mask_storeu_ps(c.add(r * ldc + 16 * q), masks[q], row[q]);
                }
            }
        }
    }

    /// `C[m, n] = A B^T + bias`: `a` as (pointer, row stride) and `bt` (`B^T`, `[n, k]`) as
    /// (pointer, row stride), both with rows contiguous along `k`; `c` contiguous.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn nt(
        m: usize,
        n: usize,
        k: usize,
        a: (*const f32, isize),
        bt: (*const f32, isize),
        c: *mut f32,
        bias: *const f32,
    ) {
        // SAFETY: the caller's contract: the pointers and strides address the operands' and
        // the output's elements of the given sizes, and AVX-512F is present.
        unsafe {
            macro_rules! cols {
                ($r:literal, $i:expr) => {{
                    let mut j = 0;
                    while j < n {
                        let at = (a.0.offset($i as isize * a.1), a.1);
                        let bj = (bt.0.offset(j as isize * bt.1), bt.1);
                        let cij = c.add($i * n + j);
                        let biasj = if bias.is_null() { bias } else { bias.add(j) };
                        match n - j {
                            1 => tile_nt::<$r, 1>(k, at, bj, cij, n, biasj),
                            2 => tile_nt::<$r, 2>(k, at, bj, cij, n, biasj),
                            3 => tile_nt::<$r, 3>(k, at, bj, cij, n, biasj),
                            _ => tile_nt::<$r, 4>(k, at, bj, cij, n, biasj),
                        }
                        j += 4;
                    }
                }};
            }
            let mut i = 0;
            while i + 4 <= m {
                cols!(4, i);
                i += 4;
            }
            match m - i {
                0 => {}
                1 => cols!(1, i),
                2 => cols!(2, i),
                _ => cols!(3, i),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_nt<const R: usize, const S: usize>(
        k: usize,
        a: (*const f32, isize),
        bt: (*const f32, isize),
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
    ) {
        // SAFETY: the caller's contract: the pointers and strides address the operands' and
        // the output's elements of the given sizes, and AVX-512F is present.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); S]; R];
            let mut p = 0;
            let mut step = |p: usize, mask: u16| {
                let mut bv = [_mm512_setzero_ps(); S];
                for (s, v) in bv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask, bt.0.offset(s as isize * bt.1).add(p));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_maskz_loadu_ps(mask, a.0.offset(r as isize * a.1).add(p));
                    for s in 0..S {
                        row[s] = _mm512_fmadd_ps(av, bv[s], row[s]);
                    }
                }
            };
            while p + 16 <= k {
                step(p, 0xFFFF);
                p += 16;
            }
            if p < k {
                step(p, (1u16 << (k - p)) - 1);
            }
            for (r, row) in acc.iter().enumerate() {
                for (s, v) in row.iter().enumerate() {
                    let b = if bias.is_null() { 0.0 } else { *bias.add(s) };
                    *c.add(r * ldc + s) = _mm512_reduce_add_ps(*v) + b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout the kernels take, over shapes with every kind of tail (rows short of a
    /// tile, columns short of a vector or of four, `k` short of 16), against libtorch's
    /// product in f64; and `None` where this CPU or the operands are not theirs.
    #[test]
    fn kernels_give_torchs_products() {
        tch::set_num_threads(1);
        if !enabled() {
            eprintln!("this CPU has no AVX-512F: the products stay libtorch's (checked below)");
        }
        let f = (Kind::Float, Device::Cpu);
        let mut checked = 0;
        for &m in &[1i64, 3, 7, 8, 9, 32, 64] {
            for &n in &[1i64, 6, 16, 17, 36, 64, 70, 128] {
                for &k in &[1i64, 6, 36, 128, 300] {
                    let a = Tensor::randn([m, k], f);
                    let b = Tensor::randn([k, n], f);
                    let bias = Tensor::randn([n], f);
                    // b contiguous (nn), b seen transposed (nt, or nn after a small copy), a
                    // seen transposed (nn reading a by strides).
                    let bt = Tensor::randn([n, k], f);
                    let at = Tensor::randn([k, m], f);
                    for (a, b) in [
                        (a.shallow_clone(), b.shallow_clone()),
                        (a.shallow_clone(), bt.tr()),
                        (at.tr(), b.shallow_clone()),
                    ] {
                        for bias in [None, Some(&bias)] {
                            let want = a.to_kind(Kind::Double).mm(&b.to_kind(Kind::Double));
                            let want = match bias {
                                Some(c) => want + c.to_kind(Kind::Double),
                                None => want,
                            };
                            let got = addmm(bias, &a, &b);
                            assert_eq!(got.is_some(), enabled(), "{m}x{k}x{n}: taken only with AVX-512F");
                            let Some(got) = got else { continue };
                            let scale = (k as f64).sqrt() + 1.0;
                            let err = f64::try_from((got.to_kind(Kind::Double) - &want).abs().max()).unwrap();
                            assert!(err < 2e-6 * scale * 4.0, "{m}x{k}x{n} bias={}: max error {err}", bias.is_some());
                            checked += 1;
                        }
                    }
                }
            }
        }
        if enabled() {
            assert!(checked > 800, "{checked} products checked");
        }
        // Not theirs: a gradient to carry, another dtype, mismatched sizes.
        let a = Tensor::randn([4, 8], f).set_requires_grad(true);
        assert!(addmm(None, &a, &Tensor::randn([8, 16], f)).is_none());
        assert_eq!(tch::no_grad(|| addmm(None, &a, &Tensor::randn([8, 16], f))).is_some(), enabled(), "autograd off");
        let d = Tensor::randn([4, 8], (Kind::Double, Device::Cpu));
        assert!(addmm(None, &d, &Tensor::randn([8, 16], (Kind::Double, Device::Cpu))).is_none());
        let out = Tensor::empty([4, 15], f);
        assert!(!mm_into(&out, None, &Tensor::randn([4, 8], f), &Tensor::randn([8, 16], f)));
    }
}
