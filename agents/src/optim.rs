//! Optimizers on tch tensors whose state can be saved and restored exactly.
//!
//! tch's own optimizers hide their state (no save/load) and have no Adamax (the paper's
//! optimizer), so these are written here, following PyTorch's update rules to the letter
//! (`torch.optim.Adam`, `RMSprop(centered=True)`, `Adamax`); `tests` check them against PyTorch
//! trajectories produced by `scripts/optim_reference.py`.

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

impl OptimizerKind {
    fn state_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Adamax { .. } => &["exp_avg", "exp_inf"],
            OptimizerKind::RmsProp { .. } => &["square_avg", "grad_avg", "momentum_buffer"],
        }
    }
}

/// An optimizer over a fixed, named list of parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    state: Vec<Vec<Tensor>>,
    step: i64,
    /// The step counter on the parameters' device (f32, as PyTorch keeps it; exact to 2^24
    /// steps, and the bias corrections are 1 long before), once [`Optimizer::make_capturable`]
    /// made it: [`Optimizer::step_on_device`] reads and advances it there, so that a step needs
    /// no value from the host and can be captured in a CUDA graph. `step` stays the host's count.
    step_t: Option<Tensor>,
    /// In the on-device path, use ATen's multi-tensor kernels ([`crate::multi_tensor`]: fused
    /// Adam, foreach clipping) instead of per-tensor ops. On by default; both paths are tested.
    pub multi_tensor: bool,
    /// Use the one-pass CPU kernels of [`crate::fused`] where they apply (CPU, f32/f64,
    /// contiguous; Adam and Adamax). On by default; off runs the tensor-op path everywhere.
    pub fused: bool,
}

impl Optimizer {
    /// An optimizer for `params` (name, tensor). Names key the saved state.
    pub fn new(kind: OptimizerKind, lr: f64, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let state =
            params.iter().map(|(_, p)| kind.state_names().iter().map(|_| p.zeros_like().detach()).collect()).collect();
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

    /// Global L2 norm of the gradients; if `max_norm` is given and exceeded, scale them down to
    /// it (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
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
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
            if self.multi_tensor {
                return crate::multi_tensor::clip_grad_norm(&grads, max_norm);
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
            let with_grad: Vec<usize> = (0..self.params.len()).filter(|&i| self.params[i].grad().defined()).collect();
            let pick = |f: &dyn Fn(usize) -> Tensor| with_grad.iter().map(|&i| f(i)).collect::<Vec<Tensor>>();
            return tch::no_grad(|| {
                crate::multi_tensor::fused_adam(
                    &pick(&|i| self.params[i].shallow_clone()),
                    &pick(&|i| self.params[i].grad()),
                    &pick(&|i| self.state[i][0].shallow_clone()),
                    &pick(&|i| self.state[i][1].shallow_clone()),
                    &pick(&|_| t.shallow_clone()),
                    crate::multi_tensor::AdamHyper { lr, beta1, beta2, eps },
                )
            });
        }
        // 1 - beta^t, as a device scalar (in f64, as the host path computes it).
        let t = t.to_kind(Kind::Double);
        let one_minus_pow = |beta: f64| Tensor::pow_scalar(beta, &t).neg() + 1.0;
        tch::no_grad(|| {
            let factors = match self.kind {
                OptimizerKind::Adam { beta1, beta2, .. } => {
                    Some((one_minus_pow(beta1).reciprocal() * lr, Some(one_minus_pow(beta2).sqrt())))
                }
                OptimizerKind::Adamax { beta1, .. } => Some((one_minus_pow(beta1).reciprocal() * lr, None)),
                OptimizerKind::RmsProp { .. } => None,
            };
            for (p, st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match (self.kind, &factors) {
                    (OptimizerKind::Adam { beta1, beta2, eps }, Some((step_size, Some(bc2_sqrt)))) => {
                        let _ = st[0].lerp_(&g, 1.0 - beta1);
                        let _ = st[1].lerp_(&g.square(), 1.0 - beta2);
                        let denom = st[1].sqrt() / bc2_sqrt + eps;
                        let _ = p.g_sub_(&(&st[0] / denom * step_size));
                    }
                    (OptimizerKind::Adamax { beta1, beta2, eps }, Some((clr, _))) => {
                        let _ = st[0].lerp_(&g, 1.0 - beta1);
                        let _ = st[1].g_mul_scalar_(beta2);
                        let _ = st[1].maximum_out(&st[1], &(g.abs() + eps));
                        let _ = p.g_sub_(&(&st[0] / &st[1] * clr));
                    }
                    (OptimizerKind::RmsProp { alpha, eps, centered, momentum }, _) => {
                        rmsprop(p, &g, st, lr, alpha, eps, centered, momentum)
                    }
                    _ => unreachable!("factors match the kind"),
                }
            }
        });
        Ok(())
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
                && st.iter().all(|t| ok(t, kind))
        })
    }

    fn step_fused(&mut self, grads: &[Tensor], gscale: f64) {
        use crate::fused::{adam, adamax, AdamStep, AdamaxStep};
        self.step += 1;
        self.advance_device_step();
        let t = self.step as f64;
        for ((p, g), st) in self.params.iter().zip(grads).zip(&self.state) {
            macro_rules! run {
                ($ty:ty) => {
                    match self.kind {
                        OptimizerKind::Adam { beta1, beta2, eps } => {
                            let s = AdamStep {
                                gscale,
                                beta1,
                                beta2,
                                step_size: self.lr / (1.0 - beta1.powf(t)),
                                bc2_sqrt: (1.0 - beta2.powf(t)).sqrt(),
                                eps,
                            };
                            // SAFETY: `fusable` checked that every tensor is a contiguous CPU
                            // tensor of `$ty`; a parameter, its gradient and its two state
                            // buffers are four distinct storages, and nothing else touches
                            // them during the step.
                            unsafe { adam::<$ty>(data_mut(p), data(g), data_mut(&st[0]), data_mut(&st[1]), s) }
                        }
                        OptimizerKind::Adamax { beta1, beta2, eps } => {
                            let s = AdamaxStep { gscale, beta1, beta2, clr: self.lr / (1.0 - beta1.powf(t)), eps };
                            // SAFETY: as for Adam above.
                            unsafe { adamax::<$ty>(data_mut(p), data(g), data_mut(&st[0]), data_mut(&st[1]), s) }
                        }
                        OptimizerKind::RmsProp { .. } => unreachable!("not fusable"),
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
        let t = self.step as f64;
        let lr = self.lr;
        tch::no_grad(|| {
            for (p, st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.kind {
                    OptimizerKind::Adam { beta1, beta2, eps } => {
                        // In place, two temporaries per parameter (g^2 and the denominator).
                        let _ = st[0].lerp_(&g, 1.0 - beta1);
                        let _ = st[1].lerp_(&g.square(), 1.0 - beta2);
                        let bc1 = 1.0 - beta1.powf(t);
                        let bc2 = 1.0 - beta2.powf(t);
                        let mut denom = st[1].sqrt();
                        let _ = denom.g_div_scalar_(bc2.sqrt());
                        let _ = denom.g_add_scalar_(eps);
                        // p += m / (denom * -bc1/lr)  ==  p -= (lr/bc1) m / denom
                        let _ = denom.g_mul_scalar_(-bc1 / lr);
                        let _ = p.addcdiv_(&st[0], &denom);
                    }
                    OptimizerKind::Adamax { beta1, beta2, eps } => {
                        let _ = st[0].lerp_(&g, 1.0 - beta1);
                        let mut a = g.abs();
                        let _ = a.g_add_scalar_(eps);
                        let _ = st[1].g_mul_scalar_(beta2);
                        let _ = st[1].maximum_out(&st[1], &a);
                        let clr = lr / (1.0 - beta1.powf(t));
                        // p += m / (u * -1/clr)  ==  p -= clr m / u
                        let d = &st[1] * (-1.0 / clr);
                        let _ = p.addcdiv_(&st[0], &d);
                    }
                    OptimizerKind::RmsProp { alpha, eps, centered, momentum } => {
                        rmsprop(p, &g, st, lr, alpha, eps, centered, momentum)
                    }
                }
            }
        });
    }

    /// Every state tensor by `param/state` name, plus the step counter as `__step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("__step".to_string(), Tensor::from_slice(&[self.step]))];
        for (name, st) in self.names.iter().zip(&self.state) {
            for (sn, t) in self.kind.state_names().iter().zip(st) {
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
            for (name, st) in self.names.iter().zip(self.state.iter_mut()) {
                for (sn, t) in self.kind.state_names().iter().zip(st.iter_mut()) {
                    let key = format!("{name}/{sn}");
                    let src = loaded
                        .get(&key)
                        .ok_or_else(|| anyhow::anyhow!("optimizer state {} lacks {key}", path.display()))?;
                    t.copy_(src);
                }
            }
            Ok(())
        })
    }
}

/// One RMSProp update of `p` (PyTorch's rule); it has no step-dependent factor, so the eager
/// and the on-device paths share it.
#[allow(clippy::too_many_arguments)]
fn rmsprop(
    p: &mut Tensor,
    g: &Tensor,
    st: &mut [Tensor],
    lr: f64,
    alpha: f64,
    eps: f64,
    centered: bool,
    momentum: f64,
) {
    let _ = st[0].lerp_(&g.square(), 1.0 - alpha);
    let mut avg = if centered {
        let _ = st[1].lerp_(g, 1.0 - alpha);
        let mut c = st[1].square();
        let _ = c.neg_();
        let _ = c.g_add_(&st[0]);
        let _ = c.sqrt_();
        c
    } else {
        st[0].sqrt()
    };
    let _ = avg.g_add_scalar_(eps);
    if momentum > 0.0 {
        let _ = st[2].g_mul_scalar_(momentum);
        let _ = st[2].addcdiv_(g, &avg);
        let _ = p.g_add_(&(&st[2] * -lr));
    } else {
        let _ = avg.g_mul_scalar_(-1.0 / lr);
        let _ = p.addcdiv_(g, &avg);
    }
}

/// A contiguous CPU tensor's elements.
///
/// # Safety
/// `t` must be a contiguous CPU tensor whose elements are `T`, and no one may write its storage
/// while the slice lives.
unsafe fn data<T>(t: &Tensor) -> &[T] {
    std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel())
}

/// A contiguous CPU tensor's elements, writable through a shared `&Tensor` (tch hands out
/// storage only that way).
///
/// # Safety
/// As for [`data`], and no other slice or tensor op may read or write the same storage while
/// this one lives (the caller guarantees the storages it views are pairwise distinct).
#[allow(clippy::mut_from_ref)]
unsafe fn data_mut<T>(t: &Tensor) -> &mut [T] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel())
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

    /// The same deterministic problem as scripts/optim_reference.py: 2 parameters, gradients
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
            .arg(root.join("scripts/optim_reference.py"))
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
