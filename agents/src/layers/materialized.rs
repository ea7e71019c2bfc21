//! Weight norm and spectral norm as a plain weight for a training pass on the CPU: the effective
//! weight is written by one loop before the pass (`w = g v / ||v||`, or `W / sigma` after the
//! power iteration), the pass runs as a plain layer's with that weight as a leaf of autograd,
//! and one loop after the backward pass turns its gradient into the parameters' (`dL/dg`,
//! `dL/dv` by the paper's eq. 3; `dL/dW` with sigma's share).
//!
//! Why: on a small layer the cost of the normalization is the number of libtorch ops it adds,
//! not arithmetic. Computed with tensor ops, weight norm adds about fifteen per layer and
//! update (the scale, its product with the output, their backward nodes, the gradient
//! completion) and spectral norm about thirty-five (the power iteration's mat-vecs and
//! normalizations, the scale, the rank-one completion), a few microseconds each: on the
//! CartPole MLP (batch 32, one thread) that was 45% (weight norm) and 38% (spectral norm, one
//! layer) over plain's 290 us. A loop over a 128 x 128 weight takes a few microseconds.
//! On a large weight the loops' passes over memory cost more than the ops they save (the
//! tensor-op path there folds the scale into the output and the `dL/dv` completion into the
//! optimizer's pass), so a layer is made plain this way only up to [`MAX_WEIGHTS`] weights
//! ([`crate::layers::Layer::materialize`]); CUDA always takes the tensor-op path, which a CUDA
//! graph can capture.
//!
//! The arithmetic is the tensor-op path's (reductions in f64); `QNetwork`'s test
//! `train_scales_give_autograd_gradients` checks both paths against autograd through the
//! norms, and the PyTorch oracles check whole updates.

use std::cell::RefCell;
use tch::{Kind, Tensor};

use super::spectral::{sn_backward, sn_forward};
use super::weight_norm::{project, wn_backward, wn_forward};
use crate::kernels::{data, data_mut, Real};

/// The largest weight (elements) made plain per training pass. Measured, one layer at a time
/// over plain (`bench learner --vs plain`, AMD EPYC): MinAtar's fc1 (1,600 x 128 = 205k
/// weights, one thread) by the loops 1.035x for weight norm and 1.051x for spectral norm,
/// by tensor ops 1.065x and 1.126x; the Nature network's fc1 (3,136 x 512 = 1.6M, two threads)
/// by the loops 1.068x and 1.082x, by tensor ops 1.030x and 1.048x.
pub const MAX_WEIGHTS: usize = 1 << 18;

/// What the loop before the pass saved for the loop after it.
#[derive(Debug, Default)]
struct Saved {
    /// Weight norm: `||v||` per row; spectral norm: `[sigma]`.
    norm: Vec<f64>,
}

/// A layer's weight made plain for the training passes of one update.
#[derive(Debug)]
pub struct Materialized {
    /// The effective weight (the parameter's shape), a leaf of autograd.
    pub w: Tensor,
    /// Gradient buffers given to the parameters (`v` or `W`, and `g`), written by
    /// [`Materialized::backward`].
    grads: Vec<Tensor>,
    saved: RefCell<Saved>,
}

/// The parameters of a normalized weight, as [`Materialized`] reads them.
pub enum Weights<'a> {
    /// `w = g v / ||v||` row by row.
    WeightNorm {
        /// `v`, `[out, ...]`.
        v: &'a Tensor,
        /// `g`, `[out]`.
        g: &'a Tensor,
        /// `||v||` per row where it is known without a pass over `v` (projected weight norm
        /// keeps it at its initial value, as the tensor-op path takes it too).
        norms: Option<&'a Tensor>,
    },
    /// `w = W / sigma`, one power iteration on `(u, v)` per training pass.
    Spectral {
        /// `W`, `[out, ...]`.
        w: &'a Tensor,
        /// Left singular vector estimate, `[out]`.
        u: &'a Tensor,
        /// Right singular vector estimate, `[fan_in]`.
        v: &'a Tensor,
        /// The power iteration's epsilon.
        eps: f64,
    },
}

impl Weights<'_> {
    pub(super) fn params(&self) -> Vec<&Tensor> {
        match self {
            Weights::WeightNorm { v, g, .. } => vec![v, g],
            Weights::Spectral { w, .. } => vec![w],
        }
    }

    pub(super) fn weight(&self) -> &Tensor {
        match self {
            Weights::WeightNorm { v, .. } => v,
            Weights::Spectral { w, .. } => w,
        }
    }
}

/// Contiguous CPU f32 or f64, the kernels' element types.
fn fits(t: &Tensor) -> bool {
    t.device() == tch::Device::Cpu && t.is_contiguous() && matches!(t.kind(), Kind::Float | Kind::Double)
}

impl Materialized {
    /// Set up for `p`, or None where the loops do not apply (not a contiguous CPU weight of
    /// f32 or f64, or more than [`MAX_WEIGHTS`]). Gives the parameters gradient buffers of
    /// their own (autograd no longer reaches them).
    pub fn new(p: &Weights) -> Option<Materialized> {
        let params = p.params();
        let kind = p.weight().kind();
        if p.weight().numel() > MAX_WEIGHTS || !params.iter().all(|t| fits(t) && t.kind() == kind) {
            return None;
        }
        if let Weights::Spectral { u, v, .. } = p {
            if !fits(u) || !fits(v) || u.kind() != kind || v.kind() != kind {
                return None;
            }
        }
        let w = tch::no_grad(|| p.weight().zeros_like()).set_requires_grad(true);
        let grads: Vec<Tensor> = params.iter().map(|t| t.zeros_like()).collect();
        for (t, g) in params.iter().zip(&grads) {
            crate::ext::multi_tensor::set_grad(t, Some(g)).ok()?;
        }
        Some(Materialized { w, grads, saved: RefCell::default() })
    }

    /// Before a training pass: write the effective weight into [`Materialized::w`] (spectral
    /// norm: after one power iteration, which moves `u` and `v`), and leave it without a
    /// gradient.
    pub fn forward(&self, p: &Weights) {
        if self.w.kind() == Kind::Double {
            self.forward_as::<f64>(p);
        } else {
            self.forward_as::<f32>(p);
        }
        let _ = crate::ext::multi_tensor::set_grad(&self.w, None);
    }

    pub(super) fn forward_as<T: Real>(&self, p: &Weights) {
        let mut saved = self.saved.borrow_mut();
        // Every block below: `new` checked every tensor is contiguous CPU `T`;
        // `self.w` is ours and in no autograd graph between updates; the parameters are not
        // written during the loop, spectral norm's `u` and `v` only by it (they are in no
        // graph); the slices are distinct tensors.
        match p {
            Weights::WeightNorm { v, g, norms } => {
                saved.norm.resize(g.numel(), 0.0);
                let known = norms.filter(|n| fits(n) && n.kind() == self.w.kind() && n.numel() == g.numel());
                if let Some(n) = known {
                    // SAFETY: as above (checked here: a contiguous CPU vector of `T`, one per row).
                    let n = unsafe { data::<T>(n) };
                    saved.norm.iter_mut().zip(n).for_each(|(s, k)| *s = k.to_f64());
                }
                // SAFETY: as above.
                let (v, g, out) = unsafe { (data::<T>(v), data::<T>(g), data_mut::<T>(&self.w)) };
                wn_forward(v, g, out, &mut saved.norm, known.is_some());
            }
            Weights::Spectral { w, u, v, eps } => {
                // SAFETY: as above.
                let (w, u, v, out) =
                    unsafe { (data::<T>(w), data_mut::<T>(u), data_mut::<T>(v), data_mut::<T>(&self.w)) };
                saved.norm = vec![sn_forward(w, u, v, out, *eps)];
            }
        }
    }

    /// After the backward pass: the parameters' gradients from the effective weight's `G`.
    /// Weight norm (eq. 3): `dL/dg = G . v / ||v||`, `dL/dv = s G - (s dL/dg / ||v||) v` with
    /// `s = g / ||v||`. Spectral norm: `dL/dW = (G - (G . W/sigma) u v^T) / sigma`. Nothing
    /// when the pass left no gradient (the parameters' gradients are then zero).
    pub fn backward(&self, p: &Weights) {
        let grad = self.w.grad();
        if !grad.defined() {
            for g in &self.grads {
                let _ = g.shallow_clone().zero_();
            }
            return;
        }
        let grad = grad.contiguous();
        if self.w.kind() == Kind::Double {
            self.backward_as::<f64>(p, &grad);
        } else {
            self.backward_as::<f32>(p, &grad);
        }
    }

    pub(super) fn backward_as<T: Real>(&self, p: &Weights, grad: &Tensor) {
        let saved = self.saved.borrow();
        // Both blocks: contiguous CPU `T` (checked in `new`, `grad` made contiguous);
        // the gradient buffers are ours and distinct from the rest; nothing else runs during
        // the loop.
        match p {
            Weights::WeightNorm { v, g, .. } => {
                // SAFETY: as above.
                let (v, g, gw, dv, dg) = unsafe {
                    (
                        data::<T>(v),
                        data::<T>(g),
                        data::<T>(grad),
                        data_mut::<T>(&self.grads[0]),
                        data_mut::<T>(&self.grads[1]),
                    )
                };
                wn_backward(v, g, gw, dv, dg, &saved.norm);
            }
            Weights::Spectral { w, u, v, .. } => {
                // SAFETY: as above.
                let (w, u, v, gw, dw) = unsafe {
                    (data::<T>(w), data::<T>(u), data::<T>(v), data::<T>(grad), data_mut::<T>(&self.grads[0]))
                };
                sn_backward(w, u, v, gw, dw, saved.norm[0]);
            }
        }
    }

    /// Projected weight norm's step after the optimizer's, in one loop: every row of `v`
    /// scaled back to its norm `n0` (`v[r] *= n0[r] / ||v[r]||`). Only for a materialized
    /// layer: the loop writes `v` without advancing its version counter, and the optimizer
    /// trusts that counter only for the norms of the tensor-op path's projections.
    pub fn project(&self, v: &Tensor, n0: &Tensor) {
        fn rows<T: Real>(v: &Tensor, n0: &Tensor) {
            // SAFETY: `Materialized::new` checked `v` (contiguous CPU `T`); `n0` is a vector of
            // `v`'s kind made with it; `v` is a parameter between updates, in no autograd graph.
            project(unsafe { data_mut::<T>(v) }, unsafe { data::<T>(n0) });
        }
        if self.w.kind() == Kind::Double {
            rows::<f64>(v, n0);
        } else {
            rows::<f32>(v, n0);
        }
    }
}
