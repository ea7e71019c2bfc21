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

impl LayerTape {
    /// The tape of the first `keep` of the pass's `batch` samples (a pass over more samples
    /// than the loss uses: [`crate::qnet::QNetwork::explicit_forward`]).
    pub fn first(self, keep: i64, batch: i64) -> LayerTape {
        if keep == batch {
            return self;
        }
        let rows = |t: &Tensor| t.narrow(0, 0, t.size()[0] / batch * keep);
        LayerTape {
            input: rows(&self.input),
            ln: self.ln.map(|(xhat, mut rstd)| {
                rstd.truncate(rstd.len() / batch as usize * keep as usize);
                (rows(&xhat), rstd)
            }),
        }
    }
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

/// Layer norm's forward in place over contiguous rows of `gamma.len()` elements, as
/// `torch.nn.functional.layer_norm` (biased variance): `x` becomes `xhat * gamma + beta` with
/// `xhat = (x - mean) * rstd`, which goes to `xhat` (unless it is empty: a pass that needs no
/// backward), and `rstd` per row to `rstd`.
#[inline(always)]
fn layer_norm_generic<T: crate::optim::fused::Real>(
    x: &mut [T],
    gamma: &[T],
    beta: &[T],
    eps: f64,
    xhat: &mut [T],
    rstd: &mut [T],
) {
    let n = gamma.len();
    for (i, (xr, r)) in x.chunks_exact_mut(n).zip(rstd.iter_mut()).enumerate() {
        let m = T::of(sum8(xr, xr, xr, |x, _, _| x) / n as f64);
        let v = sum8(xr, xr, xr, |x, _, _| (x - m) * (x - m)) / n as f64;
        *r = T::of(1.0 / (v + eps).sqrt());
        if xhat.is_empty() {
            for ((e, &g), &b) in xr.iter_mut().zip(gamma).zip(beta) {
                *e = (*e - m) * *r * g + b;
            }
        } else {
            for ((e, h), (&g, &b)) in xr.iter_mut().zip(&mut xhat[i * n..(i + 1) * n]).zip(gamma.iter().zip(beta)) {
                *h = (*e - m) * *r;
                *e = *h * g + b;
            }
        }
    }
}

/// Layer norm's backward in place over rows of `gamma.len()` elements: `d` holds `dL/dy` and
/// becomes `dL/dx = rstd (g - mean(g) - xhat mean(g xhat))` with `g = dL/dy * gamma`;
/// `dgamma` and `dbeta` get the column sums of `dL/dy * xhat` and `dL/dy`.
#[inline(always)]
fn layer_norm_backward_generic<T: crate::optim::fused::Real>(
    d: &mut [T],
    xhat: &[T],
    rstd: &[T],
    gamma: &[T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) {
    let n = gamma.len();
    let zero = T::of(0.0);
    dgamma.fill(zero);
    dbeta.fill(zero);
    for ((dr, hr), &r) in d.chunks_exact_mut(n).zip(xhat.chunks_exact(n)).zip(rstd) {
        for (((dg, db), &dy), &h) in dgamma.iter_mut().zip(dbeta.iter_mut()).zip(dr.iter()).zip(hr) {
            *dg = *dg + dy * h;
            *db = *db + dy;
        }
        let mg = T::of(sum8(dr, gamma, hr, |d, g, _| d * g) / n as f64);
        let mgh = T::of(sum8(dr, gamma, hr, |d, g, h| d * g * h) / n as f64);
        for ((e, &h), &g) in dr.iter_mut().zip(hr).zip(gamma) {
            *e = r * (*e * g - mg - h * mgh);
        }
    }
}

crate::optim::fused::dispatch!(layer_norm, layer_norm_generic, (x: &mut [T], gamma: &[T], beta: &[T], eps: f64, xhat: &mut [T], rstd: &mut [T]) -> ());
crate::optim::fused::dispatch!(layer_norm_backward, layer_norm_backward_generic, (d: &mut [T], xhat: &[T], rstd: &[T], gamma: &[T], dgamma: &mut [T], dbeta: &mut [T]) -> ());

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
