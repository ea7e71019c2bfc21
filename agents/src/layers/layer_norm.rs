//! Layer normalization of a layer's pre-activation (before its nonlinearity), with an affine
//! scale and shift ([`Layer::add_layer_norm`]): over a dense layer's units, or a convolution's
//! channels at every position (`channels`, as Flax) or its whole map (`chw`, as PyTorch's
//! `nn.LayerNorm([C, H, W])`). One kernel ([`layer_norm`]) normalizes rows, contiguous or
//! interleaved (a position's channels in an NCHW map), with the ReLU after it in the same loop,
//! for the explicit training pass and for passes outside autograd; its backward
//! ([`layer_norm_backward`]) for the explicit pass. Autograd passes take ATen's.

use tch::{nn, Kind, Tensor};

use super::{rectified, Layer, Op};
use crate::kernels::{f32s, f32s_mut, lane_total, lanes, plain_f32, Real};
use crate::normalization::LayerNormAxes;

/// Epsilon of layer normalization (PyTorch's and Flax's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Affine layer normalization of a layer's pre-activation.
#[derive(Debug)]
pub(super) struct LayerNorm {
    /// Scale (init 1) and shift (init 0), shaped as the normalized axes.
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    /// Normalize a convolution's map over its channels only (permuted to the last axis).
    pub(super) channels: bool,
}

impl LayerNorm {
    /// Layer-normalize `x` (a pre-activation no one else holds: a pass outside autograd may
    /// normalize it in place), then a ReLU with `relu`.
    pub(super) fn apply(&self, x: &Tensor, relu: bool) -> Tensor {
        let x = if x.kind() == Kind::Float { x.shallow_clone() } else { x.to_kind(Kind::Float) };
        if self.in_place(&x, relu) {
            return x;
        }
        let y = if self.channels && x.dim() == 4 {
            let c = self.weight.size()[0];
            x.permute([0, 2, 3, 1])
                .layer_norm([c], Some(&self.weight), Some(&self.bias), LAYER_NORM_EPS, false)
                .permute([0, 3, 1, 2])
        } else {
            x.layer_norm(self.weight.size(), Some(&self.weight), Some(&self.bias), LAYER_NORM_EPS, false)
        };
        rectified(y, relu)
    }
}

impl LayerNorm {
    /// Outside autograd on the CPU, normalize `x` in place by one loop (the explicit pass's
    /// [`crate::explicit::layer_norm`] over contiguous rows, [`layer_norm_rows`] over a map's
    /// channels), the ReLU with `relu` in the same loop, instead of ATen's layer norm and
    /// ReLU; false (nothing done) where that does not apply.
    ///
    /// Why: a pass that needs no gradient (the target network's, an actor's) costs a plain
    /// layer its matrix product and its nonlinearity; ATen's layer norm adds an op of a few
    /// microseconds per layer and pass (more on a channel axis, which it needs permuted), where
    /// the loop over a batch of pre-activations (32 x 128 on the MLP) takes about a
    /// microsecond, and its ReLU costs no op of its own.
    pub(super) fn in_place(&self, x: &Tensor, relu: bool) -> bool {
        if x.requires_grad() || !plain_f32(x) || !plain_f32(&self.weight) || !plain_f32(&self.bias) || x.dim() < 2 {
            return false;
        }
        let size = x.size();
        // Rows of `n` elements `stride` apart: a unit's, a map's (`chw`), or a position's
        // channels in an NCHW map (`channels`).
        let (n, stride) = if self.channels && x.dim() == 4 {
            (size[1] as usize, (size[2] * size[3]) as usize)
        } else {
            ((x.numel() / size[0] as usize), 1)
        };
        if self.weight.numel() != n {
            return false;
        }
        // SAFETY: contiguous CPU f32 tensors (checked); `x` is a fresh pre-activation outside
        // autograd that only this call reads and writes, the affine parameters are not written
        // during a forward pass.
        let (data, w, b) = unsafe { (f32s_mut(x), f32s(&self.weight), f32s(&self.bias)) };
        let mut rstd = if stride == 1 { vec![0f32; data.len() / n] } else { Vec::new() };
        layer_norm(data, w, b, LAYER_NORM_EPS, relu, &mut [], &mut rstd, stride);
        true
    }
}

impl Layer {
    /// Layer-normalize this layer's pre-activation (before its nonlinearity), with an affine
    /// scale and shift under `p`: `out_shape` is the pre-activation's shape without the batch
    /// axis (`[units]` or `[C, H, W]`); a convolution's `axes` say what is normalized.
    pub fn add_layer_norm(&mut self, p: &nn::Path, out_shape: &[i64], axes: LayerNormAxes) {
        let channels = matches!(self.op, Op::Conv2d { .. }) && axes == LayerNormAxes::Channels;
        let shape = if channels { &out_shape[..1] } else { out_shape };
        self.layer_norm = Some(LayerNorm {
            weight: p.var("weight", shape, nn::Init::Const(1.0)),
            bias: p.var("bias", shape, nn::Init::Const(0.0)),
            channels,
        });
    }

    /// Layer norm (then a ReLU with `relu`) in place on `x`, `batch` samples' worth: contiguous
    /// rows of the normalized axes, or a `[B, C, H, W]` map's channels at each position
    /// (`channels`, interleaved rows); keeping `xhat` (in `x`'s layout) and `rstd` (per row, in
    /// position order) of the first `keep` samples' rows. None without a layer norm.
    pub(super) fn layer_norm_explicit(
        &self,
        x: &Tensor,
        keep: i64,
        batch: i64,
        relu: bool,
    ) -> Option<(Tensor, Vec<f32>)> {
        let l = self.layer_norm.as_ref()?;
        let n = l.weight.numel();
        let stride = if l.channels { x.numel() / batch as usize / n } else { 1 };
        let rows = x.numel() / n;
        let kept = rows / batch as usize * keep as usize;
        let xhat = Tensor::empty([kept as i64, n as i64], (Kind::Float, tch::Device::Cpu));
        let mut rstd = vec![0f32; rows];
        // SAFETY: `x` is a fresh contiguous f32 activation only this pass holds, `xhat` a new
        // buffer; the affine parameters are contiguous CPU f32 (`prepare_explicit`).
        unsafe {
            layer_norm(
                f32s_mut(x),
                f32s(&l.weight),
                f32s(&l.bias),
                LAYER_NORM_EPS,
                relu,
                f32s_mut(&xhat),
                &mut rstd,
                stride,
            );
        }
        rstd.truncate(kept);
        Some((xhat, rstd))
    }

    /// The stride of this layer's normalized rows in its explicit pass's output `y` (1:
    /// contiguous; a map's positions for a layer norm over its channels).
    pub(super) fn layer_norm_stride(&self, y: &Tensor) -> usize {
        match &self.layer_norm {
            Some(l) if l.channels => y.numel() / y.size()[0] as usize / l.weight.numel(),
            _ => 1,
        }
    }

    /// The layer norm's scale and shift, if it has one.
    pub fn layer_norm_params(&self) -> Option<(&Tensor, &Tensor)> {
        self.layer_norm.as_ref().map(|l| (&l.weight, &l.bias))
    }
}

/// Rows of layer norm's kernels taken side by side: each row's statistics are a chain of
/// dependent steps (sum, mean, squared deviations, variance, `1 / sqrt`), and one row's chain
/// alone leaves the CPU waiting; four in flight keep it busy (the forward kernel took 75 ns a
/// row of 128 one by one, 39 ns four by four; AMD EPYC, AVX2 build).
const LN_ROWS: usize = 4;

/// Layer norm's forward in place over rows of `gamma.len()` elements, as
/// `torch.nn.functional.layer_norm` (biased variance, f32 statistics as ATen's): `x` becomes
/// `y = xhat * gamma + beta` with `xhat = (x - mean) * rstd`, or `max(y, 0)` with `relu`. Rows
/// are contiguous (`stride` 1: a dense layer's units, a map's `chw`, an acting pass's
/// position-major rows) or `stride` apart (blocks of `n * stride` elements holding `stride`
/// interleaved rows: a position's channels in an NCHW map, the loops vectorized across the
/// positions; the explicit pass's and the target network's). For contiguous rows, the first `xhat.len() / gamma.len()` rows' `xhat` go to `xhat` (none: a pass
/// that needs no backward; fewer rows than `x`: samples that only need their output), and
/// `rstd` per row to `rstd`; for interleaved rows the same in `x`'s layout, `rstd` (none, or
/// one per row) in the order of the rows' positions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn layer_norm_generic<T: Real>(
    x: &mut [T],
    gamma: &[T],
    beta: &[T],
    eps: f64,
    relu: bool,
    xhat: &mut [T],
    rstd: &mut [T],
    stride: usize,
) {
    if stride > 1 {
        interleaved_rows(x, gamma, beta, stride, eps, relu, xhat, rstd);
    } else {
        contiguous_rows(x, gamma, beta, eps, relu, xhat, rstd);
    }
}

/// [`layer_norm_generic`] on contiguous rows, four at a time ([`LN_ROWS`]).
#[inline(always)]
fn contiguous_rows<T: Real>(
    x: &mut [T],
    gamma: &[T],
    beta: &[T],
    eps: f64,
    relu: bool,
    xhat: &mut [T],
    rstd: &mut [T],
) {
    let n = gamma.len();
    let (zero, inv_n, eps) = (T::of(0.0), T::of(1.0 / n as f64), T::of(eps));
    for (blk, (xb, rb)) in x.chunks_mut(n * LN_ROWS).zip(rstd.chunks_mut(LN_ROWS)).enumerate() {
        let rows = rb.len();
        let mut mean = [zero; LN_ROWS];
        let mut sums = [[zero; 8]; LN_ROWS];
        for (s, xr) in sums.iter_mut().zip(xb.chunks_exact(n)) {
            *s = lanes(xr, |e| e);
        }
        for r in 0..rows {
            mean[r] = lane_total(sums[r]) * inv_n;
        }
        for ((s, xr), &m) in sums.iter_mut().zip(xb.chunks_exact(n)).zip(&mean) {
            *s = lanes(xr, |e| (e - m) * (e - m));
        }
        for r in 0..rows {
            rb[r] = T::of(1.0) / (lane_total(sums[r]) * inv_n + eps).sqrt();
        }
        for (r, xr) in xb.chunks_exact_mut(n).enumerate() {
            let (m, rs) = (mean[r], rb[r]);
            let row = blk * LN_ROWS + r;
            let out = |h: T, g: T, b: T| {
                let y = h * g + b;
                if !relu || y > zero {
                    y
                } else {
                    zero
                }
            };
            match xhat.get_mut(row * n..(row + 1) * n) {
                Some(hr) => {
                    for ((e, h), (&g, &b)) in xr.iter_mut().zip(hr).zip(gamma.iter().zip(beta)) {
                        *h = (*e - m) * rs;
                        *e = out(*h, g, b);
                    }
                }
                None => {
                    for (e, (&g, &b)) in xr.iter_mut().zip(gamma.iter().zip(beta)) {
                        *e = out((*e - m) * rs, g, b);
                    }
                }
            }
        }
    }
}

/// Layer norm's backward in place over rows of `gamma.len()` elements: `d` holds `dL/dy` and
/// becomes `dL/dx = rstd (g - mean(g) - xhat mean(g xhat))` with `g = dL/dy * gamma`;
/// `dgamma` and `dbeta` get the column sums of `dL/dy * xhat` and `dL/dy`. With `relu`, `d`
/// is the gradient of the forward's `max(y, 0)`, taken through it first (`y = xhat * gamma +
/// beta` recomputed exactly as the forward computed it).
///
/// The first pass over a row only reads `d` (a store of `d` through the ReLU there became a
/// store per element behind a branch, not vectorized), the second writes it. Rows contiguous
/// (`stride` 1) or interleaved ([`interleaved_backward`]), as the forward's.
#[inline(always)]
fn layer_norm_backward_generic<T: Real>(
    d: &mut [T],
    xhat: &[T],
    rstd: &[T],
    (gamma, beta): (&[T], &[T]),
    relu: bool,
    (dgamma, dbeta): (&mut [T], &mut [T]),
    stride: usize,
) {
    if stride > 1 {
        return interleaved_backward(d, xhat, rstd, (gamma, beta), relu, (dgamma, dbeta), stride);
    }
    let n = gamma.len();
    let (zero, inv_n) = (T::of(0.0), T::of(1.0 / n as f64));
    let dy = |e: T, h: T, g: T, b: T| if !relu || h * g + b > zero { e } else { zero };
    dgamma.fill(zero);
    dbeta.fill(zero);
    for ((db_, hb), rb) in d.chunks_mut(n * LN_ROWS).zip(xhat.chunks(n * LN_ROWS)).zip(rstd.chunks(LN_ROWS)) {
        let (mut s1, mut s2) = ([[zero; 8]; LN_ROWS], [[zero; 8]; LN_ROWS]);
        for ((dr, hr), (s1, s2)) in db_.chunks_exact(n).zip(hb.chunks_exact(n)).zip(s1.iter_mut().zip(s2.iter_mut())) {
            // Lane `k` of eight of the row's sums of `g` and `g xhat` (a tail of fewer than
            // eight in the first lanes), all in local arrays (which the loop keeps in
            // registers).
            let eight = |c: &[T]| -> [T; 8] { c.try_into().expect("chunks of eight") };
            let (mut a1, mut a2) = ([zero; 8], [zero; 8]);
            let chunks = dr
                .chunks_exact(8)
                .zip(hr.chunks_exact(8))
                .zip(gamma.chunks_exact(8).zip(beta.chunks_exact(8)))
                .zip(dgamma.chunks_exact_mut(8).zip(dbeta.chunks_exact_mut(8)));
            for (((e8, h8), (g8, b8)), (dg8, db8)) in chunks {
                let (e8, h8, g8, b8) = (eight(e8), eight(h8), eight(g8), eight(b8));
                let (mut dg, mut dbt) = (eight(dg8), eight(db8));
                for k in 0..8 {
                    let e = dy(e8[k], h8[k], g8[k], b8[k]);
                    dg[k] = dg[k] + e * h8[k];
                    dbt[k] = dbt[k] + e;
                    a1[k] = a1[k] + e * g8[k];
                    a2[k] = a2[k] + e * g8[k] * h8[k];
                }
                dg8.copy_from_slice(&dg);
                db8.copy_from_slice(&dbt);
            }
            let head = n / 8 * 8;
            for k in 0..n - head {
                let j = head + k;
                let e = dy(dr[j], hr[j], gamma[j], beta[j]);
                dgamma[j] = dgamma[j] + e * hr[j];
                dbeta[j] = dbeta[j] + e;
                a1[k] = a1[k] + e * gamma[j];
                a2[k] = a2[k] + e * gamma[j] * hr[j];
            }
            (*s1, *s2) = (a1, a2);
        }
        for (r, ((dr, hr), &rs)) in db_.chunks_exact_mut(n).zip(hb.chunks_exact(n)).zip(rb).enumerate() {
            let (mg, mgh) = (lane_total(s1[r]) * inv_n, lane_total(s2[r]) * inv_n);
            for ((e, &h), (&g, &b)) in dr.iter_mut().zip(hr).zip(gamma.iter().zip(beta)) {
                *e = rs * (dy(*e, h, g, b) * g - mg - h * mgh);
            }
        }
    }
}

/// [`layer_norm_generic`] on interleaved rows: the `stride` rows of a block are walked side by
/// side (the loops vectorize across them). `xhat` as `x`'s first blocks, `rstd` per row (both
/// may be empty).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn interleaved_rows<T: Real>(
    x: &mut [T],
    w: &[T],
    b: &[T],
    stride: usize,
    eps: f64,
    relu: bool,
    xhat: &mut [T],
    rstd_out: &mut [T],
) {
    let n = w.len();
    let zero = T::of(0.0);
    let inv_n = T::of(1.0 / n as f64);
    let (mut mean, mut rstd) = (vec![zero; stride], vec![zero; stride]);
    for (k, block) in x.chunks_exact_mut(n * stride).enumerate() {
        mean.fill(zero);
        rstd.fill(zero);
        for row in block.chunks_exact(stride) {
            for (m, &e) in mean.iter_mut().zip(row) {
                *m = *m + e;
            }
        }
        mean.iter_mut().for_each(|m| *m = *m * inv_n);
        for row in block.chunks_exact(stride) {
            for ((v, &m), &e) in rstd.iter_mut().zip(&mean).zip(row) {
                *v = *v + (e - m) * (e - m);
            }
        }
        rstd.iter_mut().for_each(|v| *v = T::of(1.0 / ((*v * inv_n).to_f64() + eps).sqrt()));
        if let Some(out) = rstd_out.get_mut(k * stride..(k + 1) * stride) {
            out.copy_from_slice(&rstd);
        }
        let mut hb = xhat.get_mut(k * n * stride..(k + 1) * n * stride);
        for (i, row) in block.chunks_exact_mut(stride).enumerate() {
            let (wi, bi) = (w[i], b[i]);
            match hb.as_deref_mut() {
                Some(hb) => {
                    for (((e, h), &m), &r) in
                        row.iter_mut().zip(&mut hb[i * stride..(i + 1) * stride]).zip(&mean).zip(&rstd)
                    {
                        *h = (*e - m) * r;
                        let y = *h * wi + bi;
                        *e = if !relu || y > zero { y } else { zero };
                    }
                }
                None => {
                    for ((e, &m), &r) in row.iter_mut().zip(&mean).zip(&rstd) {
                        let y = (*e - m) * r * wi + bi;
                        *e = if !relu || y > zero { y } else { zero };
                    }
                }
            }
        }
    }
}

/// [`layer_norm_backward_generic`] on interleaved rows (as [`interleaved_rows`]: blocks of
/// `gamma.len()` rows of `stride` elements, a row per unit, a column per normalized row), the
/// loops across the `stride` columns; `rstd` one per column, in order.
#[inline(always)]
fn interleaved_backward<T: Real>(
    d: &mut [T],
    xhat: &[T],
    rstd: &[T],
    (gamma, beta): (&[T], &[T]),
    relu: bool,
    (dgamma, dbeta): (&mut [T], &mut [T]),
    stride: usize,
) {
    let n = gamma.len();
    let (zero, inv_n) = (T::of(0.0), T::of(1.0 / n as f64));
    let dy = |e: T, h: T, g: T, b: T| if !relu || h * g + b > zero { e } else { zero };
    // Column sums over the blocks first, one accumulator per element of a block; each unit's
    // row of them summed at the end.
    let (mut dg, mut db) = (vec![zero; n * stride], vec![zero; n * stride]);
    let (mut s1, mut s2) = (vec![zero; stride], vec![zero; stride]);
    let blocks = d.chunks_exact_mut(n * stride).zip(xhat.chunks_exact(n * stride)).zip(rstd.chunks_exact(stride));
    for ((dbk, hbk), rs) in blocks {
        s1.fill(zero);
        s2.fill(zero);
        for (i, (dr, hr)) in dbk.chunks_exact(stride).zip(hbk.chunks_exact(stride)).enumerate() {
            let (g, b) = (gamma[i], beta[i]);
            let (dgr, dbr) = (&mut dg[i * stride..(i + 1) * stride], &mut db[i * stride..(i + 1) * stride]);
            for (((((&e, &h), a1), a2), dgk), dbk) in
                dr.iter().zip(hr).zip(s1.iter_mut()).zip(s2.iter_mut()).zip(dgr.iter_mut()).zip(dbr.iter_mut())
            {
                let e = dy(e, h, g, b);
                *dgk = *dgk + e * h;
                *dbk = *dbk + e;
                *a1 = *a1 + e * g;
                *a2 = *a2 + e * g * h;
            }
        }
        for (i, (dr, hr)) in dbk.chunks_exact_mut(stride).zip(hbk.chunks_exact(stride)).enumerate() {
            let (g, b) = (gamma[i], beta[i]);
            for ((((e, &h), &a1), &a2), &r) in dr.iter_mut().zip(hr).zip(&s1).zip(&s2).zip(rs) {
                *e = r * (dy(*e, h, g, b) * g - a1 * inv_n - h * (a2 * inv_n));
            }
        }
    }
    for ((g, b), (dgr, dbr)) in
        dgamma.iter_mut().zip(dbeta.iter_mut()).zip(dg.chunks_exact(stride).zip(db.chunks_exact(stride)))
    {
        *g = lane_total(lanes(dgr, |e| e));
        *b = lane_total(lanes(dbr, |e| e));
    }
}

crate::kernels::dispatch!(layer_norm, layer_norm_generic, (x: &mut [T], gamma: &[T], beta: &[T], eps: f64, relu: bool, xhat: &mut [T], rstd: &mut [T], stride: usize) -> ());
crate::kernels::dispatch!(layer_norm_backward, layer_norm_backward_generic, (d: &mut [T], xhat: &[T], rstd: &[T], affine: (&[T], &[T]), relu: bool, daffine: (&mut [T], &mut [T]), stride: usize) -> ());
