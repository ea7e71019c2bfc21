//! Spectral normalization (Miyato et al. 2018): `y = (W / sigma(W)) x + b`, `sigma` estimated
//! by power iteration on `W` reshaped to `[out, rest]`, with the left and right vectors `u`, `v`
//! kept as non-trainable variables (checkpointed, copied with the target network). As PyTorch's
//! `parametrizations.spectral_norm`: `u`, `v` start normalized from `N(0, 1)` and 15 iterations
//! on the initial `W`; one iteration `u <- W v / ||W v||`, `v <- W^T u / ||W^T u||` (eps 1e-12)
//! per training pass ([`Layer::train_operands`]), none in other passes; `sigma = u . W v`, with
//! the gradient through `W` and `u`, `v` held constant.
//!
//! Two paths: tensor ops (any device: `1/sigma` held constant in autograd, sigma's share of
//! `dL/dW` added after the backward pass as one rank-one update), and for small CPU layers the
//! loops below around a plain pass ([`super::materialized`]).

use tch::{Kind, Tensor};

use super::Layer;
use crate::kernels::{dispatch, dot, Real};

/// Epsilon of the power iteration's normalizations (PyTorch's `spectral_norm`).
pub const SPECTRAL_EPS: f64 = 1e-12;
/// Power iterations on the initial weight (PyTorch's `spectral_norm`).
pub const SPECTRAL_INIT_ITERS: usize = 15;

/// `x / max(||x||, eps)`, as `F.normalize`.
pub(super) fn normalize(x: &Tensor) -> Tensor {
    x / x.norm().clamp_min(SPECTRAL_EPS)
}

impl Layer {
    /// Whether the weight is spectrally normalized.
    pub fn is_spectral(&self) -> bool {
        self.spectral.is_some()
    }

    /// One power iteration on `W` (spectral norm only), in place on `u` and `v`
    /// (`u <- W v / ||W v||`, `v <- W^T u / ||W^T u||`); returns the new `sigma = u . W v`,
    /// which is `||W^T u||`, outside autograd. None for other layers.
    pub(super) fn power_iteration(&self) -> Option<Tensor> {
        let (u, v) = self.spectral.as_ref()?;
        Some(tch::no_grad(|| {
            let w = self.weight.detach().flatten(1, -1);
            u.shallow_clone().copy_(&normalize(&w.mv(v)));
            let wtu = w.tr().mv(u);
            let sigma = wtu.norm();
            v.shallow_clone().copy_(&(&wtu / sigma.clamp_min(SPECTRAL_EPS)));
            sigma
        }))
    }

    /// Spectral norm's `sigma = u . W v` (differentiable in `W`), None for other layers.
    pub fn sigma(&self) -> Option<Tensor> {
        let (u, v) = self.spectral.as_ref()?;
        Some(u.dot(&self.weight.flatten(1, -1).mv(v)))
    }

    /// The output scale of a spectral layer, `1 / sigma` for every unit.
    pub(super) fn spectral_scale(&self) -> Option<Tensor> {
        let out = self.weight.size()[0];
        self.sigma().map(|s| s.reciprocal().repeat([out]))
    }

    /// Spectral norm's training scale: one power iteration ([`Layer::power_iteration`]), then
    /// `1 / sigma` for every unit as a leaf of autograd, with `sigma` known from the iteration. Backpropagating through it gives
    /// `dL/dW` without sigma's share, which [`Layer::complete_spectral_grad`] adds as one
    /// rank-one update. Why: autograd through `u . W v` passes over `W` three more times (its
    /// product, the outer product of its backward and the sum into `W`'s gradient); on the
    /// Nature network's fc1 (1.6M weights) that was a tenth of the update. None for other
    /// layers.
    pub(super) fn spectral_train_scale(&self) -> Option<Tensor> {
        let sigma = self.power_iteration()?;
        let out = self.weight.size()[0];
        Some(tch::no_grad(|| sigma.reciprocal().repeat([out])).set_requires_grad(true))
    }

    /// After a backward pass through [`Layer::spectral_train_scale`]'s `scale`: add sigma's
    /// share of `dL/dW`, `(dL/dsigma) u v^T` with `dL/dsigma = -sum(dL/dscale) / sigma^2`, in
    /// place and without a host read (a captured update runs it too). No-op for other layers or
    /// before a backward pass.
    pub(super) fn complete_spectral_grad(&self, scale: &Tensor) {
        let Some((u, v)) = &self.spectral else { return };
        let (sg, wg) = (scale.grad(), self.weight.grad());
        if !sg.defined() || !wg.defined() {
            return;
        }
        tch::no_grad(|| {
            let inv = scale.detach().select(0, 0);
            let coef = -(sg.sum(Kind::Float) * &inv * &inv);
            let _ = wg.view([self.weight.size()[0], -1]).addr_(&(u * coef), v);
        });
    }
}

/// Spectral norm: one power iteration on `w` (`[u.len(), v.len()]`), `u <- W v / ||W v||`,
/// `v <- W^T u / ||W^T u||` (norms clamped at `eps`), then `out = W / sigma` with
/// `sigma = ||W^T u||`, returned.
#[inline(always)]
fn sn_forward_generic<T: Real>(w: &[T], u: &mut [T], v: &mut [T], out: &mut [T], eps: f64) -> f64 {
    let k = v.len();
    let mut t: Vec<f64> = w.chunks_exact(k).map(|r| dot(r, v)).collect();
    let n = t.iter().map(|x| x * x).sum::<f64>().sqrt().max(eps);
    for (ui, x) in u.iter_mut().zip(&mut t) {
        *ui = T::of(*x / n);
    }
    let mut wtu = vec![T::of(0.0); k];
    for (r, &ui) in w.chunks_exact(k).zip(u.iter()) {
        for (acc, &x) in wtu.iter_mut().zip(r) {
            *acc = *acc + x * ui;
        }
    }
    let sigma = dot(&wtu, &wtu).sqrt();
    let inv_v = T::of(1.0 / sigma.max(eps));
    for (vi, &x) in v.iter_mut().zip(&wtu) {
        *vi = x * inv_v;
    }
    let inv = T::of(1.0 / sigma);
    for (o, &x) in out.iter_mut().zip(w) {
        *o = x * inv;
    }
    sigma
}

/// Spectral norm's `dL/dW = (gw - (gw . W / sigma) u v^T) / sigma`.
#[inline(always)]
fn sn_backward_generic<T: Real>(w: &[T], u: &[T], v: &[T], gw: &[T], dw: &mut [T], sigma: f64) {
    let c = dot(gw, w) / (sigma * sigma);
    let inv = T::of(1.0 / sigma);
    let k = v.len();
    for ((gr, dr), &ui) in gw.chunks_exact(k).zip(dw.chunks_exact_mut(k)).zip(u) {
        let cu = T::of(c * ui.to_f64());
        for ((d, &gx), &vx) in dr.iter_mut().zip(gr).zip(v) {
            *d = inv * gx - cu * vx;
        }
    }
}

/// Spectral norm folded into the weight in place (an acting copy's): `W <- W / sigma` with
/// `sigma = u . W v` for the current `u`, `v` (no power iteration), as
/// [`Layer::effective_weight`] computes it by tensor ops, but for the rounding of a product by
/// `1 / sigma` (a division per weight took most of the fold's time).
#[inline(always)]
fn sn_fold_generic<T: Real>(w: &mut [T], u: &[T], v: &[T]) {
    let sigma: f64 = w.chunks_exact(v.len()).zip(u).map(|(r, &ui)| ui.to_f64() * dot(r, v)).sum();
    let inv = T::of(1.0 / sigma);
    for x in w.iter_mut() {
        *x = *x * inv;
    }
}

dispatch!(sn_fold, sn_fold_generic, (w: &mut [T], u: &[T], v: &[T]) -> ());
dispatch!(sn_forward, sn_forward_generic, (w: &[T], u: &mut [T], v: &mut [T], out: &mut [T], eps: f64) -> f64);
dispatch!(sn_backward, sn_backward_generic, (w: &[T], u: &[T], v: &[T], gw: &[T], dw: &mut [T], sigma: f64) -> ());
