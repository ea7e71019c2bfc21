//! Optimizers on tch tensors whose state can be saved and restored exactly.
//!
//! tch's own optimizers hide their state (no save/load) and have no Adamax (the paper's
//! optimizer), so these are written here, following PyTorch's update rules to the letter
//! (`torch.optim.Adam`, `RMSprop(centered=True)`, `Adamax`); `tests` check them against PyTorch
//! trajectories produced by `tests/oracles/optim_reference.py`.

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

/// Which optimizer, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba 2015).
    Adam {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
    },
    /// Adamax (Kingma & Ba 2015, Section 7.1): infinity-norm Adam; the paper's optimizer.
    Adamax {
        /// First-moment decay (the paper's DQN used 0.5).
        beta1: f64,
        /// Infinity-norm decay.
        beta2: f64,
        /// Epsilon.
        eps: f64,
    },
    /// RMSProp as PyTorch writes it; `centered` as in Nature DQN.
    RmsProp {
        /// Squared-gradient decay.
        alpha: f64,
        /// Epsilon added to the root.
        eps: f64,
        /// Subtract the squared mean gradient.
        centered: bool,
        /// Momentum (0 = none).
        momentum: f64,
    },
}

/// One parameter's optimizer state, by name (the names key the saved file, as PyTorch names
/// them).
enum ParamState {
    Adam { exp_avg: Tensor, exp_avg_sq: Tensor },
    Adamax { exp_avg: Tensor, exp_inf: Tensor },
    RmsProp { square_avg: Tensor, grad_avg: Tensor, momentum_buffer: Tensor },
}

impl ParamState {
    /// Zero state for parameter `p`.
    fn new(kind: &OptimizerKind, p: &Tensor) -> ParamState {
        let z = || p.zeros_like().detach();
        match kind {
            OptimizerKind::Adam { .. } => ParamState::Adam { exp_avg: z(), exp_avg_sq: z() },
            OptimizerKind::Adamax { .. } => ParamState::Adamax { exp_avg: z(), exp_inf: z() },
            OptimizerKind::RmsProp { .. } => {
                ParamState::RmsProp { square_avg: z(), grad_avg: z(), momentum_buffer: z() }
            }
        }
    }

    /// Every buffer with its name, in a fixed order.
    fn named(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            ParamState::Adam { exp_avg, exp_avg_sq } => vec![("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)],
            ParamState::Adamax { exp_avg, exp_inf } => vec![("exp_avg", exp_avg), ("exp_inf", exp_inf)],
            ParamState::RmsProp { square_avg, grad_avg, momentum_buffer } => {
                vec![("square_avg", square_avg), ("grad_avg", grad_avg), ("momentum_buffer", momentum_buffer)]
            }
        }
    }
}

/// The step-dependent factors of one update, as host numbers (an eager step) or as scalars
/// computed on the device from the device step counter (a capturable step): the tensor-op path
/// ([`update_ops`]) reads both the same way.
struct Factors {
    /// `lr / (1 - beta1^t)` (Adam, Adamax; 1 for RMSProp, which has none).
    step_size: Tensor,
    /// `sqrt(1 - beta2^t)` (Adam; 1 otherwise).
    bc2_sqrt: Tensor,
}

impl Factors {
    /// The factors of step `t` (counted from 1), from the host's count.
    fn host(kind: OptimizerKind, lr: f64, t: f64) -> Factors {
        let (step_size, bc2_sqrt) = match kind {
            OptimizerKind::Adam { beta1, beta2, .. } => (lr / (1.0 - beta1.powf(t)), (1.0 - beta2.powf(t)).sqrt()),
            OptimizerKind::Adamax { beta1, .. } => (lr / (1.0 - beta1.powf(t)), 1.0),
            OptimizerKind::RmsProp { .. } => (1.0, 1.0),
        };
        Factors { step_size: Tensor::from(step_size), bc2_sqrt: Tensor::from(bc2_sqrt) }
    }

    /// The factors of the step the device counter `t` holds, computed on its device (in f64, as
    /// the host computes them).
    fn device(kind: OptimizerKind, lr: f64, t: &Tensor) -> Factors {
        let t = t.to_kind(Kind::Double);
        let one_minus_pow = |beta: f64| Tensor::pow_scalar(beta, &t).neg() + 1.0;
        let one = || t.ones_like();
        match kind {
            OptimizerKind::Adam { beta1, beta2, .. } => {
                Factors { step_size: one_minus_pow(beta1).reciprocal() * lr, bc2_sqrt: one_minus_pow(beta2).sqrt() }
            }
            OptimizerKind::Adamax { beta1, .. } => {
                Factors { step_size: one_minus_pow(beta1).reciprocal() * lr, bc2_sqrt: one() }
            }
            OptimizerKind::RmsProp { .. } => Factors { step_size: one(), bc2_sqrt: one() },
        }
    }
}

/// One update of parameter `p` with gradient `g` in tensor ops: the rules of `torch.optim`, once
/// for every device and for the eager and the capturable step alike.
fn update_ops(kind: OptimizerKind, lr: f64, p: &mut Tensor, g: &Tensor, st: &mut ParamState, f: &Factors) {
    match (kind, st) {
        (OptimizerKind::Adam { beta1, beta2, eps }, ParamState::Adam { exp_avg, exp_avg_sq }) => {
            let _ = exp_avg.lerp_(g, 1.0 - beta1);
            let _ = exp_avg_sq.lerp_(&g.square(), 1.0 - beta2);
            let denom = exp_avg_sq.sqrt() / &f.bc2_sqrt + eps;
            let _ = p.g_sub_(&(&*exp_avg / denom * &f.step_size));
        }
        (OptimizerKind::Adamax { beta1, beta2, eps }, ParamState::Adamax { exp_avg, exp_inf }) => {
            let _ = exp_avg.lerp_(g, 1.0 - beta1);
            let _ = exp_inf.g_mul_scalar_(beta2);
            let _ = exp_inf.maximum_out(&*exp_inf, &(g.abs() + eps));
            let _ = p.g_sub_(&(&*exp_avg / &*exp_inf * &f.step_size));
        }
        (
            OptimizerKind::RmsProp { alpha, eps, centered, momentum },
            ParamState::RmsProp { square_avg, grad_avg, momentum_buffer },
        ) => {
            let _ = square_avg.lerp_(&g.square(), 1.0 - alpha);
            let mut avg = if centered {
                let _ = grad_avg.lerp_(g, 1.0 - alpha);
                (&*square_avg - grad_avg.square()).sqrt()
            } else {
                square_avg.sqrt()
            };
            let _ = avg.g_add_scalar_(eps);
            if momentum > 0.0 {
                let _ = momentum_buffer.g_mul_scalar_(momentum);
                let _ = momentum_buffer.addcdiv_(g, &avg);
                let _ = p.g_add_(&(&*momentum_buffer * -lr));
            } else {
                let _ = p.g_sub_(&(g / avg * lr));
            }
        }
        _ => unreachable!("a parameter's state is of its optimizer's kind"),
    }
}

/// An optimizer over a fixed, named list of parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    state: Vec<ParamState>,
    step: i64,
    /// The step counter on the parameters' device (f32, as PyTorch keeps it; exact to 2^24
    /// steps, and the bias corrections are 1 long before), once [`Optimizer::make_capturable`]
    /// made it: [`Optimizer::step_on_device`] reads and advances it there, so that a step needs
    /// no value from the host and can be captured in a CUDA graph. `step` stays the host's count.
    step_t: Option<Tensor>,
    /// In the on-device path, use ATen's multi-tensor kernels ([`crate::ext::multi_tensor`]:
    /// fused Adam, foreach clipping) instead of per-tensor ops. On by default; both paths are
    /// tested.
    pub multi_tensor: bool,
    /// Use the one-pass CPU kernels of [`crate::fused`] where they apply (CPU, f32/f64,
    /// contiguous; Adam and Adamax). On by default; off runs the tensor-op path everywhere.
    pub fused: bool,
}

impl Optimizer {
    /// An optimizer for `params` (name, tensor). Names key the saved state.
    pub fn new(kind: OptimizerKind, lr: f64, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let state = params.iter().map(|(_, p)| ParamState::new(&kind, p)).collect();
        let (names, params) = params.into_iter().unzip();
        Optimizer { kind, lr, names, params, state, step: 0, step_t: None, multi_tensor: true, fused: true }
    }

    /// Updates taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Keep the step counter on the device too, for [`Optimizer::step_on_device`] (call before
    /// capturing; allocating it during a capture would copy from the host).
    pub fn make_capturable(&mut self) {
        if self.step_t.is_none() {
            let device = self.params.first().map_or(tch::Device::Cpu, |p| p.device());
            self.step_t = Some(Tensor::from(self.step as f32).to_device(device));
        }
    }

    /// Count, on the host, a step that [`Optimizer::step_on_device`] took (directly or replayed
    /// from a CUDA graph, where no host code runs).
    pub fn count_step(&mut self) {
        self.step += 1;
    }

    fn advance_device_step(&self) {
        if let Some(t) = &self.step_t {
            let _ = t.shallow_clone().g_add_scalar_(1.0);
        }
    }

    /// Zero every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// The defined gradients, in parameter order.
    fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect()
    }

    /// Global L2 norm of the gradients; if `max_norm` is given and exceeded, scale them down to
    /// it (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        tch::no_grad(|| {
            let grads = self.grads();
            let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
            let total = f64::try_from(Tensor::stack(&sq, 0).sum(Kind::Float).sqrt()).unwrap_or(0.0);
            if let Some(m) = max_norm {
                let coef = m / (total + 1e-6);
                if coef < 1.0 {
                    for mut g in grads {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// [`Optimizer::clip_grad_norm`] without reading anything back: the norm stays a device
    /// scalar and the gradients are always multiplied by `min(1, max_norm / (norm + 1e-6))`, as
    /// `torch.nn.utils.clip_grad_norm_` does (the same values: a factor of 1 is exact).
    pub fn clip_grad_norm_on_device(&mut self, max_norm: Option<f64>) -> anyhow::Result<Tensor> {
        tch::no_grad(|| {
            let grads = self.grads();
            if self.multi_tensor {
                return crate::ext::multi_tensor::clip_grad_norm(&grads, max_norm);
            }
            let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
            let norm = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt();
            if let Some(m) = max_norm {
                let coef = ((&norm + 1e-6).reciprocal() * m).clamp_max(1.0);
                for mut g in grads {
                    let _ = g.g_mul_(&coef);
                }
            }
            Ok(norm)
        })
    }

    /// One update whose step-dependent factors (the bias corrections) are computed on the
    /// device from the device step counter: no host value changes between calls, so the launch
    /// sequence can be captured once and replayed. Same rules as [`Optimizer::step`] to float
    /// rounding. Needs [`Optimizer::make_capturable`]; the host count is the caller's
    /// ([`Optimizer::count_step`]).
    pub fn step_on_device(&mut self) -> anyhow::Result<()> {
        let t = self.step_t.as_ref().ok_or_else(|| anyhow::anyhow!("make_capturable() before step_on_device()"))?;
        self.advance_device_step();
        let lr = self.lr;
        if let (OptimizerKind::Adam { beta1, beta2, eps }, true) = (self.kind, self.multi_tensor) {
            let mut lists: [Vec<Tensor>; 5] = Default::default();
            for (p, st) in self.params.iter().zip(&self.state) {
                if let (ParamState::Adam { exp_avg, exp_avg_sq }, true) = (st, p.grad().defined()) {
                    for (list, t) in lists.iter_mut().zip([p, &p.grad(), exp_avg, exp_avg_sq, t]) {
                        list.push(t.shallow_clone());
                    }
                }
            }
            let [params, grads, exp_avg, exp_avg_sq, steps] = &lists;
            let hyper = crate::ext::multi_tensor::AdamHyper { lr, beta1, beta2, eps };
            return tch::no_grad(|| {
                crate::ext::multi_tensor::fused_adam(params, grads, exp_avg, exp_avg_sq, steps, hyper)
            });
        }
        let f = Factors::device(self.kind, lr, t);
        self.step_ops(&f);
        Ok(())
    }

    /// The tensor-op update of every parameter with a gradient.
    fn step_ops(&mut self, f: &Factors) {
        let (kind, lr) = (self.kind, self.lr);
        tch::no_grad(|| {
            for (p, st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if g.defined() {
                    update_ops(kind, lr, p, &g, st, f);
                }
            }
        });
    }

    /// Clip the gradients' global norm to `max_norm` and apply one update: the same result as
    /// [`Optimizer::clip_grad_norm`] then [`Optimizer::step`], with the clipping folded into
    /// the update's gradient read where the fused kernels apply. Returns the norm before
    /// clipping.
    pub fn clip_and_step(&mut self, max_norm: Option<f64>) -> f64 {
        if !self.fusable() {
            let norm = self.clip_grad_norm(max_norm);
            self.step();
            return norm;
        }
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        // SAFETY: `fusable` checked that every gradient is a contiguous CPU tensor of f32 or f64;
        // nothing writes them while their squares are summed.
        let sq: f64 = grads
            .iter()
            .map(|g| unsafe {
                match g.kind() {
                    Kind::Float => crate::fused::sum_sq(data::<f32>(g)),
                    _ => crate::fused::sum_sq(data::<f64>(g)),
                }
            })
            .sum();
        let norm = sq.sqrt();
        let coef = max_norm.map_or(1.0, |m| (m / (norm + 1e-6)).min(1.0));
        self.step_fused(&grads, coef);
        norm
    }

    /// Whether [`crate::fused`] can run this step: every parameter, gradient and state tensor
    /// on the CPU, contiguous, one float kind.
    fn fusable(&self) -> bool {
        if !self.fused || matches!(self.kind, OptimizerKind::RmsProp { .. }) {
            return false;
        }
        let ok = |t: &Tensor, kind: Kind| {
            t.defined() && t.device() == tch::Device::Cpu && t.kind() == kind && t.is_contiguous()
        };
        self.params.iter().zip(&self.state).all(|(p, st)| {
            let kind = p.kind();
            matches!(kind, Kind::Float | Kind::Double)
                && ok(p, kind)
                && ok(&p.grad(), kind)
                && st.named().iter().all(|(_, t)| ok(t, kind))
        })
    }

    /// The one-pass CPU update of every parameter, its gradients scaled by `gscale` as read.
    fn step_fused(&mut self, grads: &[Tensor], gscale: f64) {
        use crate::fused::{adam, adamax, AdamStep, AdamaxStep};
        self.step += 1;
        self.advance_device_step();
        let t = self.step as f64;
        let lr = self.lr;
        for ((p, g), st) in self.params.iter().zip(grads).zip(&self.state) {
            macro_rules! run {
                ($ty:ty) => {
                    match (self.kind, st) {
                        (OptimizerKind::Adam { beta1, beta2, eps }, ParamState::Adam { exp_avg, exp_avg_sq }) => {
                            let s = AdamStep {
                                gscale,
                                beta1,
                                beta2,
                                step_size: lr / (1.0 - beta1.powf(t)),
                                bc2_sqrt: (1.0 - beta2.powf(t)).sqrt(),
                                eps,
                            };
                            // SAFETY: `fusable` checked that every tensor is a contiguous CPU
                            // tensor of `$ty`; a parameter, its gradient and its two state
                            // buffers are four distinct storages, and nothing else touches
                            // them during the step.
                            unsafe { adam::<$ty>(data_mut(p), data(g), data_mut(exp_avg), data_mut(exp_avg_sq), s) }
                        }
                        (OptimizerKind::Adamax { beta1, beta2, eps }, ParamState::Adamax { exp_avg, exp_inf }) => {
                            let s = AdamaxStep { gscale, beta1, beta2, clr: lr / (1.0 - beta1.powf(t)), eps };
                            // SAFETY: as for Adam above.
                            unsafe { adamax::<$ty>(data_mut(p), data(g), data_mut(exp_avg), data_mut(exp_inf), s) }
                        }
                        _ => unreachable!("fusable: Adam or Adamax, with their own state"),
                    }
                };
            }
            match p.kind() {
                Kind::Float => run!(f32),
                _ => run!(f64),
            }
        }
    }

    /// Apply one update with the current gradients.
    pub fn step(&mut self) {
        if self.fusable() {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
            self.step_fused(&grads, 1.0);
            return;
        }
        self.step += 1;
        self.advance_device_step();
        let f = Factors::host(self.kind, self.lr, self.step as f64);
        self.step_ops(&f);
    }

    /// Every state tensor by `param/state` name, plus the step counter as `__step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("__step".to_string(), Tensor::from_slice(&[self.step]))];
        for (name, st) in self.names.iter().zip(&self.state) {
            for (sn, t) in st.named() {
                out.push((format!("{name}/{sn}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Save the state (safetensors).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let cpu: Vec<(String, Tensor)> =
            self.state_tensors().into_iter().map(|(n, t)| (n, t.to_device(tch::Device::Cpu))).collect();
        Tensor::write_safetensors(&cpu, path)?;
        Ok(())
    }

    /// Restore the state saved by [`Optimizer::save`]; every tensor must be present.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let loaded: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let step = loaded
            .get("__step")
            .ok_or_else(|| anyhow::anyhow!("optimizer state {} has no step counter", path.display()))?;
        self.step = step.int64_value(&[0]);
        if let Some(t) = &self.step_t {
            let _ = t.shallow_clone().fill_(self.step as f64);
        }
        tch::no_grad(|| -> anyhow::Result<()> {
            for (name, st) in self.names.iter().zip(&self.state) {
                for (sn, t) in st.named() {
                    let key = format!("{name}/{sn}");
                    let src = loaded
                        .get(&key)
                        .ok_or_else(|| anyhow::anyhow!("optimizer state {} lacks {key}", path.display()))?;
                    t.shallow_clone().copy_(src);
                }
            }
            Ok(())
        })
    }
}

/// A contiguous CPU tensor's elements.
///
/// # Safety
/// `t` must be a contiguous CPU tensor whose elements are `T`, and no one may write its storage
/// while the slice lives.
unsafe fn data<T>(t: &Tensor) -> &[T] {
    // SAFETY: the caller's contract: `numel` elements of `T` at `data_ptr`, not written meanwhile.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

/// A contiguous CPU tensor's elements, writable through a shared `&Tensor` (tch hands out
/// storage only that way).
///
/// # Safety
/// As for [`data`], and no other slice or tensor op may read or write the same storage while
/// this one lives (the caller guarantees the storages it views are pairwise distinct).
#[allow(clippy::mut_from_ref)]
unsafe fn data_mut<T>(t: &Tensor) -> &mut [T] {
    // SAFETY: the caller's contract: `numel` elements of `T` at `data_ptr`, no other view.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The ways to take a step: one-pass CPU kernels, eager tensor ops, and the capturable
    /// step with the step counter on the device, as tensor ops or ATen's multi-tensor kernels.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Path3 {
        Fused,
        Ops,
        OnDevice,
        OnDeviceMultiTensor,
    }

    /// The same deterministic problem as tests/oracles/optim_reference.py: 2 parameters, gradients
    /// `sin(0.37 * i + t) * (1 + 0.1 * p)` (depends on the parameter, so trajectories diverge
    /// if an update rule is off).
    fn run(kind: OptimizerKind, lr: f64, steps: usize, path: Path3) -> Vec<f64> {
        let a = Tensor::from_slice(&[0.5f64, -1.0, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.1f64, 0.3]).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, lr, vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())]);
        opt.fused = path == Path3::Fused;
        opt.multi_tensor = path == Path3::OnDeviceMultiTensor;
        let on_device = matches!(path, Path3::OnDevice | Path3::OnDeviceMultiTensor);
        if on_device {
            opt.make_capturable();
        }
        for t in 0..steps {
            opt.zero_grad();
            for p in [&a, &b] {
                let n = p.size()[0];
                let i = Tensor::arange(n, (Kind::Double, Device::Cpu));
                let coef = (i * 0.37 + t as f64).sin();
                // loss = sum(coef * (p + 0.05 p^2)) -> grad = coef * (1 + 0.1 p)
                (coef * (p + p.square() * 0.05)).sum(Kind::Double).backward();
            }
            if on_device {
                opt.step_on_device().unwrap();
                opt.count_step();
            } else {
                opt.step();
            }
        }
        let mut v = Vec::<f64>::try_from(a.detach()).unwrap();
        v.extend(Vec::<f64>::try_from(b.detach()).unwrap());
        v
    }

    fn kinds() -> Vec<(&'static str, OptimizerKind, f64)> {
        vec![
            ("adam", OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, 0.01),
            ("adamax", OptimizerKind::Adamax { beta1: 0.5, beta2: 0.999, eps: 1e-8 }, 0.01),
            (
                "rmsprop_centered",
                OptimizerKind::RmsProp { alpha: 0.95, eps: 0.01, centered: true, momentum: 0.0 },
                0.01,
            ),
            (
                "rmsprop_momentum",
                OptimizerKind::RmsProp { alpha: 0.99, eps: 1e-8, centered: false, momentum: 0.9 },
                0.001,
            ),
        ]
    }

    #[test]
    fn trajectories_match_pytorch() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let py = root.join(".venv/bin/python");
        let out = std::process::Command::new(&py)
            .arg(root.join("tests/oracles/optim_reference.py"))
            .output()
            .expect("the project venv (make setup) provides torch for the reference script");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reference: HashMap<String, Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
        // Every path: the one-pass kernels (Adam, Adamax), the tensor ops (everything), and the
        // capturable ops with bias corrections computed on the device (everything).
        for path in [Path3::Fused, Path3::Ops, Path3::OnDevice, Path3::OnDeviceMultiTensor] {
            for (name, kind, lr) in kinds() {
                let ours = run(kind, lr, 25, path);
                let theirs = &reference[name];
                for (a, b) in ours.iter().zip(theirs) {
                    assert!(
                        (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                        "{name} ({path:?}): ours {ours:?} torch {theirs:?}"
                    );
                }
                // And the problem really moves the parameters.
                assert!((ours[0] - 0.5).abs() > 1e-3, "{name}");
            }
        }
    }

    /// `clip_and_step` = `clip_grad_norm` + `step`, fused or not, clipping or not; in f32,
    /// the kernels' AVX2 loops agree with libtorch's ops to rounding.
    #[test]
    fn clip_and_step_equals_clip_then_step() {
        for (name, kind, lr) in kinds() {
            for max_norm in [None, Some(0.5), Some(1e6)] {
                tch::manual_seed(7);
                let init = Tensor::randn([1000], (Kind::Float, Device::Cpu));
                // clip_and_step fused and not, clip then step, and the same on the device (per-tensor
                // ops, then multi-tensor kernels).
                let runs: Vec<(Tensor, f64)> = [(0, true), (0, false), (1, false), (2, false), (2, true)]
                    .into_iter()
                    .map(|(how, fused)| {
                        let p = init.copy().set_requires_grad(true);
                        let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
                        opt.fused = fused;
                        opt.multi_tensor = fused;
                        opt.make_capturable();
                        let mut norm = 0.0;
                        for t in 0..10 {
                            opt.zero_grad();
                            ((&p * (t as f64 + 1.0)).sin() * 3.0).sum(Kind::Float).backward();
                            norm = match how {
                                0 => opt.clip_and_step(max_norm),
                                2 => {
                                    let n = opt.clip_grad_norm_on_device(max_norm).unwrap();
                                    opt.step_on_device().unwrap();
                                    opt.count_step();
                                    n.double_value(&[])
                                }
                                _ => {
                                    let n = opt.clip_grad_norm(max_norm);
                                    opt.step();
                                    n
                                }
                            };
                        }
                        let t = opt.step_t.as_ref().unwrap().double_value(&[]);
                        assert_eq!(t, opt.steps() as f64, "{name}: device and host step counts");
                        (p.detach(), norm)
                    })
                    .collect();
                for (p, n) in &runs[1..] {
                    let diff = f64::try_from((p - &runs[0].0).abs().max()).unwrap();
                    assert!(diff < 1e-5, "{name} {max_norm:?}: params differ by {diff}");
                    assert!((n - runs[0].1).abs() < 1e-4 * runs[0].1, "{name} {max_norm:?}: norm {n} vs {}", runs[0].1);
                }
                assert!(f64::try_from((&runs[0].0 - &init).abs().max()).unwrap() > 1e-4, "{name}: nothing moved");
            }
        }
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let dir = std::env::temp_dir().join(format!("wndqn-opt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, kind, lr) in kinds() {
            let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
            let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
            let grad_step = |opt: &mut Optimizer, p: &Tensor, t: f64| {
                opt.zero_grad();
                (p.square() * t.sin()).sum(Kind::Float).backward();
                opt.step();
            };
            for t in 0..5 {
                grad_step(&mut opt, &p, t as f64);
            }
            let path = dir.join(format!("{name}.safetensors"));
            opt.save(&path).unwrap();
            let p2 = p.detach().copy().set_requires_grad(true);
            let mut opt2 = Optimizer::new(kind, lr, vec![("p".into(), p2.shallow_clone())]);
            opt2.load(&path).unwrap();
            assert_eq!(opt2.steps(), 5);
            for ((n1, a), (_, b)) in opt.state_tensors().iter().zip(opt2.state_tensors().iter()) {
                assert!(a.equal(b), "{name} {n1}");
            }
            for t in 5..10 {
                grad_step(&mut opt, &p, t as f64);
                grad_step(&mut opt2, &p2, t as f64);
            }
            assert!(p.equal(&p2), "{name}: resumed trajectory differs");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
