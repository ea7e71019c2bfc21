//! The acting side of a Q-network: a CPU copy that loads weights (a learner snapshot or a
//! checkpoint file) and picks epsilon-greedy actions for one observation at a time. The actors,
//! the periodic evaluation and `wndqn eval` all act through it.
//!
//! Weight norm is baked into its weights at every load ([`QNetwork::fold_weight_norm`]): a
//! batch-of-one forward pass then costs what a plain network's does, instead of recomputing
//! `g/‖v‖` (a pass over all 1.7M weights) or scaling every layer's output at every step.
//! The greedy step then runs [`crate::acting`]'s loops on those weights where the network
//! allows, else the network's tensor ops.

use rand::Rng;
use tch::{nn, Device, Tensor};

use crate::acting::ActingNet;
use crate::dqn::load_snapshot;
use crate::qnet::{QNetConfig, QNetwork};
use crate::replay::ObsRef;

/// An epsilon-greedy policy on the CPU.
pub struct Policy {
    vs: nn::VarStore,
    net: QNetwork,
    scales: Vec<Option<Tensor>>,
    /// The loops' forward pass on `net`'s weights ([`QNetwork::acting`]).
    acting: Option<ActingNet>,
    shape: Vec<i64>,
    num_actions: usize,
    loaded: bool,
}

impl Policy {
    /// A policy with freshly initialized weights; it acts uniformly at random until weights are
    /// loaded.
    pub fn new(cfg: &QNetConfig) -> Policy {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNetwork::new(&vs.root(), cfg);
        net.fold_weight_norm();
        let scales = net.plain_scales();
        let acting = net.acting();
        let mut shape = vec![1];
        shape.extend_from_slice(&cfg.obs_shape);
        Policy { vs, net, scales, acting, shape, num_actions: cfg.num_actions as usize, loaded: false }
    }

    fn loaded_now(&mut self) {
        self.net.fold_weight_norm();
        if let Some(a) = &mut self.acting {
            a.refresh();
        }
        self.loaded = true;
    }

    /// Take the learner's weights (a `Dqn::snapshot`).
    pub fn load_snapshot(&mut self, snap: &[(String, Tensor)]) {
        load_snapshot(&self.vs, snap);
        self.loaded_now();
    }

    /// Take the weights of a saved online network (`online.safetensors` of a checkpoint).
    pub fn load_file(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
        self.vs.load(path)?;
        self.loaded_now();
        Ok(())
    }

    /// Number of actions.
    pub fn num_actions(&self) -> usize {
        self.num_actions
    }

    /// The action with the highest Q value for one observation (a frame stack or a vector).
    pub fn greedy(&self, obs: ObsRef<'_>) -> usize {
        match &self.acting {
            Some(a) => a.greedy(obs),
            None => self.greedy_by_tensor_ops(obs),
        }
    }

    /// [`Policy::greedy`] by the network's tensor ops, whether or not the loops take the
    /// network: the reference the loops are tested and timed against (`wndqn bench acting`).
    pub fn greedy_by_tensor_ops(&self, obs: ObsRef<'_>) -> usize {
        let x = match obs {
            ObsRef::Frame(f) => Tensor::from_slice(f),
            ObsRef::Vector(v) => Tensor::from_slice(v),
        }
        .view(self.shape.as_slice());
        tch::no_grad(|| self.net.forward_scaled(&x, false, &self.scales).argmax(1, false).int64_value(&[0]) as usize)
    }

    /// A uniformly random action with probability `epsilon` (always, before any weights were
    /// loaded), else the greedy one. Draws from `rng` in that order, so runs are reproducible.
    pub fn act(&self, obs: ObsRef<'_>, epsilon: f64, rng: &mut impl Rng) -> usize {
        if !self.loaded || rng.gen::<f64>() < epsilon {
            rng.gen_range(0..self.num_actions)
        } else {
            self.greedy(obs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalization::{LayerNormAxes, NormOptions, Variant};
    use crate::qnet::Arch;
    use rand::SeedableRng;

    fn cfg() -> QNetConfig {
        QNetConfig {
            arch: Arch::Mlp,
            variant: Variant::WeightNorm,
            dueling: false,
            obs_shape: vec![4],
            num_actions: 3,
            hidden: 16,
            norm: Default::default(),
        }
    }

    #[test]
    fn greedy_follows_the_loaded_weights_and_refreshes_the_scales() {
        let src = Policy::new(&cfg());
        let mut p = Policy::new(&cfg());
        let obs = [0.3f32, -1.0, 0.5, 2.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        // Before a load: random actions, no greedy ones.
        let acts: std::collections::BTreeSet<usize> =
            (0..50).map(|_| p.act(ObsRef::Vector(&obs), 0.0, &mut rng)).collect();
        assert!(acts.len() > 1, "{acts:?}");
        // After loading another network's weights, greedy equals that network's argmax.
        let snap: Vec<(String, Tensor)> = src.vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
        p.load_snapshot(&snap);
        assert_eq!(p.greedy(ObsRef::Vector(&obs)), src.greedy(ObsRef::Vector(&obs)));
        let x = Tensor::from_slice(&obs).view([1, 4]);
        let want = tch::no_grad(|| src.net.forward_t(&x, false).argmax(1, false).int64_value(&[0]) as usize);
        assert_eq!(p.greedy(ObsRef::Vector(&obs)), want, "cached scales must match a fresh forward");
        assert!((0..20).all(|_| p.act(ObsRef::Vector(&obs), 0.0, &mut rng) == want));
    }

    /// The loops' pass ([`crate::acting`]) gives the Q-values of the network's tensor ops on the
    /// same (loaded, folded) weights, and of the unfolded network that they came from: every
    /// variant, architecture, head and layer-norm axis, every parameter off its initial value,
    /// on sparse frames as MinAtar's and dense ones; and the greedy action where the best two
    /// Q-values are apart by more than rounding.
    #[test]
    fn acting_pass_gives_the_networks_q_values() {
        tch::manual_seed(3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut checked = 0;
        for arch in [Arch::Mlp, Arch::Minatar, Arch::Nature] {
            let obs_shape = match arch {
                Arch::Mlp => vec![6],
                Arch::Minatar => vec![4, 10, 10],
                Arch::Nature => vec![4, 84, 84],
            };
            for variant in Variant::ALL {
                let axes: &[LayerNormAxes] = if variant == Variant::LayerNorm && arch != Arch::Mlp {
                    &[LayerNormAxes::Channels, LayerNormAxes::Chw]
                } else {
                    &[LayerNormAxes::Channels]
                };
                for (&layer_norm_axes, dueling) in axes.iter().flat_map(|a| [(a, false), (a, true)]) {
                    let norm = NormOptions { layer_norm_axes, ..Default::default() };
                    let cfg = QNetConfig {
                        arch,
                        variant,
                        dueling,
                        obs_shape: obs_shape.clone(),
                        num_actions: 5,
                        hidden: 32,
                        norm,
                    };
                    let what = format!("{arch:?} {variant:?} dueling {dueling} {layer_norm_axes:?}");
                    let vs = nn::VarStore::new(Device::Cpu);
                    let src = QNetwork::new(&vs.root(), &cfg);
                    // Off their initial values: unit scales, zero shifts and running means.
                    tch::no_grad(|| {
                        for (name, t) in vs.variables() {
                            if !name.contains("sn_") && !name.contains("norm0") {
                                let _ = t.shallow_clone().g_add_(&(t.randn_like() * 0.1));
                            }
                        }
                    });
                    let snap: Vec<(String, Tensor)> =
                        vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
                    let mut p = Policy::new(&cfg);
                    p.load_snapshot(&snap);
                    let acting = p.acting.as_ref().unwrap_or_else(|| panic!("{what}: no acting pass"));
                    if arch == Arch::Minatar && !dueling {
                        // A checkpoint's weights, loaded from a file, reach the loops too.
                        let file =
                            std::env::temp_dir().join(format!("wndqn-acting-{}.safetensors", std::process::id()));
                        vs.save(&file).unwrap();
                        let mut from_file = Policy::new(&cfg);
                        from_file.load_file(&file).unwrap();
                        let _ = std::fs::remove_file(&file);
                        let obs = vec![255u8; obs_shape.iter().product::<i64>() as usize];
                        let q = |p: &Policy| p.acting.as_ref().unwrap().q_values(ObsRef::Frame(&obs));
                        assert_eq!(q(&from_file), q(&p), "{what}: loaded from a file");
                    }
                    for dense in [false, true] {
                        let (obs_f, obs_u): (Vec<f32>, Vec<u8>) = if arch == Arch::Mlp {
                            ((0..6).map(|_| rng.gen_range(-2.0..2.0)).collect(), vec![])
                        } else {
                            let n = obs_shape.iter().product::<i64>() as usize;
                            let zero = if dense { 0.1 } else { 0.9 };
                            (vec![], (0..n).map(|_| if rng.gen::<f64>() < zero { 0 } else { rng.gen() }).collect())
                        };
                        let (obs, x) = if arch == Arch::Mlp {
                            (ObsRef::Vector(&obs_f), Tensor::from_slice(&obs_f))
                        } else {
                            (ObsRef::Frame(&obs_u), Tensor::from_slice(&obs_u))
                        };
                        let x = x.view(p.shape.as_slice());
                        let got = Tensor::from_slice(&acting.q_values(obs)).view([1, 5]);
                        let folded = tch::no_grad(|| p.net.forward_scaled(&x, false, &p.scales));
                        let unfolded = tch::no_grad(|| src.forward_t(&x, false));
                        let scale = 1.0 + f64::try_from(folded.abs().max()).unwrap();
                        for (want, tol) in [(&folded, 2e-5), (&unfolded, 1e-4)] {
                            let diff = f64::try_from((&got - want).abs().max()).unwrap();
                            assert!(diff <= tol * scale, "{what}: differs by {diff} (scale {scale})\n{got}\n{want}");
                        }
                        let top: Vec<f64> = Vec::<f64>::try_from(folded.view([-1]).sort(0, true).0).unwrap();
                        if top[0] - top[1] > 1e-4 * scale {
                            assert_eq!(
                                p.greedy(obs),
                                i64::try_from(folded.argmax(1, false)).unwrap() as usize,
                                "{what}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * (7 + 8 + 8), "every case ran");
    }
}
