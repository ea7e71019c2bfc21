//! The training pass of a small network on the CPU with its backward pass written out: the
//! matrix products stay libtorch's (`addmm`, `mm`: MKL), everything between them (bias and
//! mean-only BN, layer norm, ReLU, the dueling head, the TD loss and every backward step of
//! those) is a loop over the activations here, and no autograd graph is built.
//!
//! Why: a MinAtar or CartPole update is mostly libtorch's cost per op, not arithmetic. Through
//! autograd `perf` put about 45% of a MinAtar update in MKL's products and most of the rest in
//! per-op dispatch, autograd and allocation; written out, the products are about 57% and the
//! update is 1.3x faster (the MLP's 1.8x; AMD EPYC, one thread, docs/BENCHMARKS.md). And a
//! normalization costs what its loops cost: through autograd layer norm added ATen's layer
//! norm, its backward and two more parameters for autograd per layer.
//!
//! Which networks ([`crate::qnet::QNetwork::explicit_ready`]): dense layers, and a first
//! convolution computed as a product over patches (MinAtar's), every weight plain or made plain
//! for the pass ([`crate::reparam`]), f32 on the CPU. Others (the Nature network's oneDNN
//! convolutions, CUDA, bf16) take autograd. `QNetwork`'s test
//! `explicit_pass_gives_autograd_gradients` checks every variant against autograd, and the
//! PyTorch oracles check whole updates.

use tch::Tensor;

/// What a layer's explicit forward pass keeps for its backward pass.
#[derive(Debug)]
pub struct LayerTape {
    /// The matrix product's left operand: the layer's input `[B, in]`, or a convolution's
    /// patches `[B * positions, C * k * k]`.
    pub input: Tensor,
    /// Layer norm: the normalized pre-activation (in the layout it was normalized in) and
    /// `1 / sqrt(var + eps)` per normalized row.
    pub ln: Option<(Tensor, Vec<f32>)>,
}

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
pub(crate) fn sum8<T: crate::optim::fused::Real>(a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) -> f64 {
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

/// Mean-only BN's training forward in place on rows of `bias.len()` columns: every column's
/// mean over the rows subtracted, the bias added; returns the means.
pub(crate) fn mean_only_bn(x: &mut [f32], bias: &[f32]) -> Vec<f32> {
    let mut mean = vec![0f32; bias.len()];
    col_sums(x, &mut mean);
    let n = (x.len() / bias.len()) as f32;
    mean.iter_mut().for_each(|m| *m /= n);
    for row in x.chunks_exact_mut(bias.len()) {
        for ((e, &m), &b) in row.iter_mut().zip(&mean).zip(bias) {
            *e = *e - m + b;
        }
    }
    mean
}

/// Mean-only BN's backward in place: every column's mean subtracted (the gradient of
/// `x - mean(x)`).
pub(crate) fn sub_col_means(d: &mut [f32], cols: usize) {
    let mut mean = vec![0f32; cols];
    col_sums(d, &mut mean);
    let n = (d.len() / cols) as f32;
    for row in d.chunks_exact_mut(cols) {
        for (e, &m) in row.iter_mut().zip(&mean) {
            *e -= m / n;
        }
    }
}

/// Rows of layer norm's kernels taken side by side: each row's statistics are a chain of
/// dependent steps (sum, mean, squared deviations, variance, `1 / sqrt`), and one row's chain
/// alone leaves the CPU waiting; four in flight keep it busy (the forward kernel took 75 ns a
/// row of 128 one by one, 39 ns four by four; AMD EPYC, AVX2 build).
const LN_ROWS: usize = 4;

/// `sum_k f(a[k])` into eight lanes (the loop vectorizes), the tail folded into the first lanes.
#[inline(always)]
fn lanes<T: crate::optim::fused::Real>(a: &[T], f: impl Fn(T) -> T) -> [T; 8] {
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
fn lane_total<T: crate::optim::fused::Real>(a: [T; 8]) -> T {
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (b[0] + b[2]) + (b[1] + b[3])
}

/// Layer norm's forward in place over contiguous rows of `gamma.len()` elements, as
/// `torch.nn.functional.layer_norm` (biased variance, f32 statistics as ATen's): `x` becomes
/// `y = xhat * gamma + beta` with `xhat = (x - mean) * rstd`, or `max(y, 0)` with `relu`. The
/// first `xhat.len() / gamma.len()` rows' `xhat` go to `xhat` (none: a pass that needs no
/// backward; fewer rows than `x`: samples that only need their output), and `rstd` per row to
/// `rstd`.
#[inline(always)]
fn layer_norm_generic<T: crate::optim::fused::Real>(
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
/// store per element behind a branch, not vectorized), the second writes it.
#[inline(always)]
fn layer_norm_backward_generic<T: crate::optim::fused::Real>(
    d: &mut [T],
    xhat: &[T],
    rstd: &[T],
    (gamma, beta): (&[T], &[T]),
    relu: bool,
    (dgamma, dbeta): (&mut [T], &mut [T]),
) {
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

crate::optim::fused::dispatch!(layer_norm, layer_norm_generic, (x: &mut [T], gamma: &[T], beta: &[T], eps: f64, relu: bool, xhat: &mut [T], rstd: &mut [T]) -> ());
crate::optim::fused::dispatch!(layer_norm_backward, layer_norm_backward_generic, (d: &mut [T], xhat: &[T], rstd: &[T], affine: (&[T], &[T]), relu: bool, daffine: (&mut [T], &mut [T])) -> ());

/// The TD loss and its gradient: `q` `[B, A]`, `actions` `[B]`, `target` `[B]`; Huber (delta
/// one) or squared error, averaged over the batch. Returns the loss, `Q(s, a)` per sample and
/// `dL/dq` (`[B, A]`, zero but at the actions taken).
pub(crate) fn td_loss(q: &[f32], actions: &[i64], target: &[f32], huber: bool) -> (f64, Vec<f32>, Vec<f32>) {
    let b = actions.len();
    let a = q.len() / b;
    let mut dq = vec![0f32; q.len()];
    let mut q_sa = Vec::with_capacity(b);
    let mut loss = 0f64;
    for (i, (&act, &t)) in actions.iter().zip(target).enumerate() {
        let v = q[i * a + act as usize];
        q_sa.push(v);
        let d = v - t;
        let (l, g) = if !huber {
            (d * d, 2.0 * d)
        } else if d.abs() < 1.0 {
            (0.5 * d * d, d)
        } else {
            (d.abs() - 0.5, d.signum())
        };
        loss += l as f64;
        dq[i * a + act as usize] = g / b as f32;
    }
    (loss / b as f64, q_sa, dq)
}
