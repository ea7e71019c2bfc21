//! Weight normalization (Salimans & Kingma 2016): `w = g v / ||v||` with the norm over every axis
//! but the output axis (eq. 2); `g` has one entry per output unit, `v` the shape of `w`; init
//! `v ~ N(0, 0.05²)`, `g = 1`, `b = 0`; with the data-dependent init of Section 3
//! ([`Layer::data_init`]). With fixed norms ([`LayerConfig::project`](crate::normalization::LayerConfig)):
//! the initial norms are kept as a non-trainable variable and every row of `v` is scaled back
//! to them after each optimizer step ([`Layer::project`]). Mean-only batch norm after it:
//! [`super::mean_only_bn`].
//!
//! Two paths: tensor ops (the output scaled by `g / ||v||` with the norm held constant in
//! autograd, `dL/dv` completed by the paper's eq. 3 in the optimizer's pass), and for small CPU
//! layers the loops below around a plain pass ([`super::materialized`]).

use tch::Tensor;

use super::Layer;
use crate::kernels::{dispatch, dot, Real};

impl Layer {
    /// The per-unit output scale: `g / ||v||` (weight norm), `1 / sigma` (spectral norm, no
    /// power iteration), None for a plain layer.
    pub fn wn_scale(&self) -> Option<Tensor> {
        match &self.g {
            Some(g) => Some(g / self.v_norm()),
            None => self.spectral_scale(),
        }
    }

    /// The training-time scale `g / ||v||` with `||v||` held constant for autograd, and that
    /// norm. Backpropagating through it gives the exact `dL/dg` but only the `(g/||v||) dL/dw`
    /// part of `dL/dv`; the optimizer removes the rest as it steps (`Optimizer::project_rows`,
    /// with [`Layer::v_grad_dots`]).
    ///
    /// Why: autograd through `||v||` (norm backward, a mask for zero norms, and accumulating two
    /// gradients into `v`) costs several passes over every weight; for the Nature network that
    /// was 40% of the whole backward pass (13.0 vs 7.9 ms per update for plain, 2 CPU threads).
    ///
    /// `known` is `||v||` where the caller has it already (the optimizer's last step summed it:
    /// `Optimizer::row_norms`), else it is computed here.
    pub fn wn_scale_const_norm(&self, known: Option<Tensor>) -> Option<(Tensor, Tensor)> {
        self.g.as_ref().map(|g| {
            let norm = known.unwrap_or_else(|| tch::no_grad(|| self.v_norm()));
            (g / &norm, norm)
        })
    }

    /// What finishes `dL/dv` after a backward pass through [`Layer::wn_scale_const_norm`]'s
    /// scale. The paper's eq. 3, `dL/dv = (g/||v||) dL/dw - (g dL/dg / ||v||^2) v`: autograd
    /// has left the first term in `v.grad`, and the second removes that term's component along
    /// each row of `v`, whose size is known without a pass over `v`: `v.grad . v = g dL/dg` row
    /// by row. Returns those products `g dL/dg` (one per output unit), for the optimizer's
    /// projection (`Optimizer::project_rows`); None for a plain layer or before a backward pass.
    pub fn v_grad_dots(&self) -> Option<Tensor> {
        let g = self.g.as_ref()?;
        let (gg, vg) = (g.grad(), self.weight.grad());
        if !gg.defined() || !vg.defined() {
            return None;
        }
        Some(tch::no_grad(|| gg * g.detach()))
    }

    /// Finish `dL/dv` now, in one pass over `v` (see [`Layer::v_grad_dots`]): the tests' check
    /// of the optimizer's projection against autograd.
    #[cfg(test)]
    pub fn complete_v_grad(&self, norm: &Tensor) {
        if let Some(dots) = self.v_grad_dots() {
            tch::no_grad(|| {
                let coef = -(dots / norm.square());
                let _ = self.weight.grad().addcmul_(&self.weight.detach(), &self.unit_view(&coef));
            });
        }
    }

    /// `||v||` per output unit (weight norm only), shape `[out]`.
    pub fn v_norm(&self) -> Tensor {
        self.weight.norm_scalaropt_dim(2.0, self.norm_dims(), false)
    }

    /// Projected weight norm: scale every row of `v` back to its initial norm, after an
    /// optimizer step; `now` is `||v||` row by row where the caller knows it. No-op elsewhere.
    pub fn project(&self, now: Option<Tensor>) {
        if let Some(n0) = &self.norm0 {
            if let Some(m) = &self.materialized {
                m.project(&self.weight, n0);
                return;
            }
            tch::no_grad(|| {
                let now = now.unwrap_or_else(|| self.v_norm());
                let _ = self.weight.shallow_clone().g_mul_(&self.unit_view(&(n0 / now)));
            });
        }
    }

    /// Projected weight norm's target norms (None elsewhere).
    pub fn initial_norms(&self) -> Option<&Tensor> {
        self.norm0.as_ref()
    }
}

/// Weight norm: `out[r] = v[r] * (g[r] / ||v[r]||)`, the norms into `norms` (or taken from
/// it, when `known`).
#[inline(always)]
fn wn_forward_generic<T: Real>(v: &[T], g: &[T], out: &mut [T], norms: &mut [f64], known: bool) {
    let k = v.len() / g.len();
    for (((vr, wr), &gi), n) in v.chunks_exact(k).zip(out.chunks_exact_mut(k)).zip(g).zip(norms) {
        if !known {
            *n = dot(vr, vr).sqrt();
        }
        let s = T::of(gi.to_f64() / *n);
        for (w, &x) in wr.iter_mut().zip(vr) {
            *w = x * s;
        }
    }
}

/// Weight norm's gradients from the effective weight's `gw` (eq. 3), row by row:
/// `dg = gw . v / n`, `dv = s gw - (s dg / n) v` with `s = g / n`.
#[inline(always)]
fn wn_backward_generic<T: Real>(v: &[T], g: &[T], gw: &[T], dv: &mut [T], dg: &mut [T], norms: &[f64]) {
    let k = v.len() / g.len();
    let rows = v.chunks_exact(k).zip(gw.chunks_exact(k)).zip(dv.chunks_exact_mut(k));
    for ((((vr, gr), dvr), (&gi, dgi)), &n) in rows.zip(g.iter().zip(dg.iter_mut())).zip(norms) {
        let d = dot(gr, vr) / n;
        let s = gi.to_f64() / n;
        let (s_t, c_t) = (T::of(s), T::of(s * d / n));
        for ((o, &gx), &vx) in dvr.iter_mut().zip(gr).zip(vr) {
            *o = s_t * gx - c_t * vx;
        }
        *dgi = T::of(d);
    }
}

/// Every row of `v` scaled to its norm in `n0`.
#[inline(always)]
fn project_generic<T: Real>(v: &mut [T], n0: &[T]) {
    let k = v.len() / n0.len();
    for (r, &t) in v.chunks_exact_mut(k).zip(n0) {
        let s = T::of(t.to_f64() / dot(r, r).sqrt());
        for x in r {
            *x = *x * s;
        }
    }
}

dispatch!(wn_forward, wn_forward_generic, (v: &[T], g: &[T], out: &mut [T], norms: &mut [f64], known: bool) -> ());
dispatch!(wn_backward, wn_backward_generic, (v: &[T], g: &[T], gw: &[T], dv: &mut [T], dg: &mut [T], norms: &[f64]) -> ());
dispatch!(project, project_generic, (v: &mut [T], n0: &[T]) -> ());
