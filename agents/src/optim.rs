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
        Optimizer { kind, lr, names, params, state, step: 0, fused: true }
    }

    /// Updates taken so far.
    pub fn steps(&self) -> i64 {
        self.step
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
                        let _ = st[0].lerp_(&g.square(), 1.0 - alpha);
                        let mut avg = if centered {
                            let _ = st[1].lerp_(&g, 1.0 - alpha);
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
                            let _ = st[2].addcdiv_(&g, &avg);
                            let _ = p.g_add_(&(&st[2] * -lr));
                        } else {
                            let _ = avg.g_mul_scalar_(-1.0 / lr);
                            let _ = p.addcdiv_(&g, &avg);
                        }
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

    /// The same deterministic problem as scripts/optim_reference.py: 2 parameters, gradients
    /// `sin(0.37 * i + t) * (1 + 0.1 * p)` (depends on the parameter, so trajectories diverge
    /// if an update rule is off).
    fn run(kind: OptimizerKind, lr: f64, steps: usize, fused: bool) -> Vec<f64> {
        let a = Tensor::from_slice(&[0.5f64, -1.0, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.1f64, 0.3]).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, lr, vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())]);
        opt.fused = fused;
        for t in 0..steps {
            opt.zero_grad();
            for p in [&a, &b] {
                let n = p.size()[0];
                let i = Tensor::arange(n, (Kind::Double, Device::Cpu));
                let coef = (i * 0.37 + t as f64).sin();
                // loss = sum(coef * (p + 0.05 p^2)) -> grad = coef * (1 + 0.1 p)
                (coef * (p + p.square() * 0.05)).sum(Kind::Double).backward();
            }
            opt.step();
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
        // Both paths: the one-pass kernels (Adam, Adamax) and the tensor ops (everything).
        for fused in [true, false] {
            for (name, kind, lr) in kinds() {
                let ours = run(kind, lr, 25, fused);
                let theirs = &reference[name];
                for (a, b) in ours.iter().zip(theirs) {
                    assert!(
                        (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                        "{name} (fused: {fused}): ours {ours:?} torch {theirs:?}"
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
                let runs: Vec<(Tensor, f64)> = [(true, true), (true, false), (false, false)]
                    .into_iter()
                    .map(|(combined, fused)| {
                        let p = init.copy().set_requires_grad(true);
                        let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
                        opt.fused = fused;
                        let mut norm = 0.0;
                        for t in 0..10 {
                            opt.zero_grad();
                            ((&p * (t as f64 + 1.0)).sin() * 3.0).sum(Kind::Float).backward();
                            norm = if combined {
                                opt.clip_and_step(max_norm)
                            } else {
                                let n = opt.clip_grad_norm(max_norm);
                                opt.step();
                                n
                            };
                        }
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
