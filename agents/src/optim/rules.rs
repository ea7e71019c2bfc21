//! The update rules, one type each behind [`Rule`]: what a rule's state is and how one step
//! changes a parameter, in tensor ops (every device, eager or capturable) and, where it has one,
//! as a one-pass CPU kernel ([`super::fused`]) or ATen's multi-tensor kernel. The
//! [`super::Optimizer`] around them holds the parameters, the gradients' clipping and
//! projections, the step count and the saved state, the same for every rule.
//!
//! Each follows `torch.optim` to the letter; the optimizer's tests check the trajectories of
//! every rule on every path against PyTorch's.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::fused::{AdamStep, AdamaxStep, Pass, RmsPropStep};

/// The step an update is for: counted on the host (an eager step) or held by a counter on the
/// device (a capturable step, whose launches read no host value).
#[derive(Clone, Copy)]
pub(crate) enum Count<'a> {
    /// Step `t` (from 1), known on the host.
    Host(f64),
    /// The step a device scalar holds (already advanced for this step).
    Device(&'a Tensor),
}

impl Count<'_> {
    /// `lr / (1 - beta^t)` as a scalar tensor, in f64 (the bias-corrected step size).
    fn corrected(self, lr: f64, beta: f64) -> Tensor {
        match self {
            Count::Host(t) => Tensor::from(lr / (1.0 - beta.powf(t))),
            Count::Device(t) => (Tensor::pow_scalar(beta, &t.to_kind(Kind::Double)).neg() + 1.0).reciprocal() * lr,
        }
    }

    /// `sqrt(1 - beta^t)` as a scalar tensor, in f64.
    fn root_correction(self, beta: f64) -> Tensor {
        match self {
            Count::Host(t) => Tensor::from((1.0 - beta.powf(t)).sqrt()),
            Count::Device(t) => (Tensor::pow_scalar(beta, &t.to_kind(Kind::Double)).neg() + 1.0).sqrt(),
        }
    }
}

/// The step-dependent scalars of one step, computed once for all parameters (what each holds is
/// its rule's).
#[derive(Default)]
pub(crate) struct Factors(Vec<Tensor>);

/// One update rule.
pub(crate) trait Rule {
    /// The state buffers each parameter has, by their `torch.optim` names (they key the saved
    /// file), in the order [`Rule::update`] receives them.
    fn state_names(&self) -> &'static [&'static str];

    /// The step-dependent scalars of step `count` (bias corrections), for [`Rule::update`].
    fn factors(&self, lr: f64, count: Count<'_>) -> Factors;

    /// One update of `p` with gradient `g` and `state` (as [`Rule::state_names`] orders it), in
    /// tensor ops.
    fn update(&self, lr: f64, p: &mut Tensor, g: &Tensor, state: &mut [Tensor], f: &Factors);

    /// Step `t` (from 1) as the one-pass CPU kernel takes it, where the rule has one (it sees
    /// up to three state buffers).
    fn fused(&self, _lr: f64, _t: f64) -> Option<Pass> {
        None
    }

    /// A capturable step of every parameter at once with ATen's multi-tensor kernel, where the
    /// rule has one: `state[i]` is parameter `i`'s, `step` the device counter (already
    /// advanced). None: take [`Rule::update`] per parameter.
    fn multi_tensor(
        &self,
        _lr: f64,
        _params: &[Tensor],
        _grads: &[Tensor],
        _state: &[&[Tensor]],
        _step: &Tensor,
    ) -> Option<anyhow::Result<()>> {
        None
    }
}

/// Adam (Kingma & Ba 2015), `torch.optim.Adam`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Adam {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

/// DQN's Atari settings (Rainbow, Dopamine): eps 1.5e-4, not PyTorch's 1e-8.
impl Default for Adam {
    fn default() -> Self {
        Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 }
    }
}

impl Rule for Adam {
    fn state_names(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    fn factors(&self, lr: f64, count: Count<'_>) -> Factors {
        Factors(vec![count.corrected(lr, self.beta1), count.root_correction(self.beta2)])
    }

    fn update(&self, _lr: f64, p: &mut Tensor, g: &Tensor, state: &mut [Tensor], f: &Factors) {
        let ([exp_avg, exp_avg_sq], [step_size, bc2_sqrt]) = (state, f.0.as_slice()) else {
            unreachable!("Adam's two buffers and two factors")
        };
        let _ = exp_avg.lerp_(g, 1.0 - self.beta1);
        let _ = exp_avg_sq.lerp_(&g.square(), 1.0 - self.beta2);
        let denom = exp_avg_sq.sqrt() / bc2_sqrt + self.eps;
        let _ = p.g_sub_(&(&*exp_avg / denom * step_size));
    }

    fn fused(&self, lr: f64, t: f64) -> Option<Pass> {
        let Adam { beta1, beta2, eps } = *self;
        let step_size = lr / (1.0 - beta1.powf(t));
        Some(Pass::Adam(AdamStep { gscale: 1.0, beta1, beta2, step_size, bc2_sqrt: (1.0 - beta2.powf(t)).sqrt(), eps }))
    }

    fn multi_tensor(
        &self,
        lr: f64,
        params: &[Tensor],
        grads: &[Tensor],
        state: &[&[Tensor]],
        step: &Tensor,
    ) -> Option<anyhow::Result<()>> {
        let column = |k: usize| state.iter().map(|s| s[k].shallow_clone()).collect::<Vec<_>>();
        let steps: Vec<Tensor> = params.iter().map(|_| step.shallow_clone()).collect();
        let hyper = crate::ext::multi_tensor::AdamHyper { lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps };
        Some(crate::ext::multi_tensor::fused_adam(params, grads, &column(0), &column(1), &steps, hyper))
    }
}

/// Adamax (Kingma & Ba 2015, Section 7.1), `torch.optim.Adamax`: infinity-norm Adam; the weight
/// norm paper's optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Adamax {
    /// First-moment decay (the paper's DQN used 0.5).
    pub beta1: f64,
    /// Infinity-norm decay.
    pub beta2: f64,
    /// Epsilon.
    pub eps: f64,
}

/// As [`Adam`]'s (the paper's DQN sets beta1 = 0.5 itself).
impl Default for Adamax {
    fn default() -> Self {
        Adamax { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 }
    }
}

impl Rule for Adamax {
    fn state_names(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_inf"]
    }

    fn factors(&self, lr: f64, count: Count<'_>) -> Factors {
        Factors(vec![count.corrected(lr, self.beta1)])
    }

    fn update(&self, _lr: f64, p: &mut Tensor, g: &Tensor, state: &mut [Tensor], f: &Factors) {
        let ([exp_avg, exp_inf], [step_size]) = (state, f.0.as_slice()) else {
            unreachable!("Adamax's two buffers and one factor")
        };
        let _ = exp_avg.lerp_(g, 1.0 - self.beta1);
        let _ = exp_inf.g_mul_scalar_(self.beta2);
        let _ = exp_inf.maximum_out(&*exp_inf, &(g.abs() + self.eps));
        let _ = p.g_sub_(&(&*exp_avg / &*exp_inf * step_size));
    }

    fn fused(&self, lr: f64, t: f64) -> Option<Pass> {
        let Adamax { beta1, beta2, eps } = *self;
        Some(Pass::Adamax(AdamaxStep { gscale: 1.0, beta1, beta2, clr: lr / (1.0 - beta1.powf(t)), eps }))
    }
}

/// RMSProp as `torch.optim.RMSprop` writes it; `centered` as in Nature DQN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmsProp {
    /// Squared-gradient decay.
    pub alpha: f64,
    /// Epsilon added to the root.
    pub eps: f64,
    /// Subtract the squared mean gradient.
    pub centered: bool,
    /// Momentum (0 = none).
    pub momentum: f64,
}

/// Nature DQN's: centered, alpha 0.95, no momentum (eps as [`Adam`]'s; Nature's 0.01 is set
/// by the presets that want it).
impl Default for RmsProp {
    fn default() -> Self {
        RmsProp { alpha: 0.95, eps: 1.5e-4, centered: true, momentum: 0.0 }
    }
}

impl Rule for RmsProp {
    fn state_names(&self) -> &'static [&'static str] {
        &["square_avg", "grad_avg", "momentum_buffer"]
    }

    fn factors(&self, _lr: f64, _count: Count<'_>) -> Factors {
        Factors::default()
    }

    fn update(&self, lr: f64, p: &mut Tensor, g: &Tensor, state: &mut [Tensor], _f: &Factors) {
        let [square_avg, grad_avg, momentum_buffer] = state else { unreachable!("RMSProp's three buffers") };
        let _ = square_avg.lerp_(&g.square(), 1.0 - self.alpha);
        let mut avg = if self.centered {
            let _ = grad_avg.lerp_(g, 1.0 - self.alpha);
            // Clamped at 0 as the CPU kernel does (`fused::variance`: rounding, flushed denormals).
            (&*square_avg - grad_avg.square()).clamp_min(0.0).sqrt()
        } else {
            square_avg.sqrt()
        };
        let _ = avg.g_add_scalar_(self.eps);
        if self.momentum > 0.0 {
            let _ = momentum_buffer.g_mul_scalar_(self.momentum);
            let _ = momentum_buffer.addcdiv_(g, &avg);
            let _ = p.g_add_(&(&*momentum_buffer * -lr));
        } else {
            let _ = p.g_sub_(&(g / avg * lr));
        }
    }

    fn fused(&self, lr: f64, _t: f64) -> Option<Pass> {
        let RmsProp { alpha, eps, centered, momentum } = *self;
        Some(Pass::RmsProp(RmsPropStep { gscale: 1.0, alpha, eps, lr, centered, momentum }))
    }
}
