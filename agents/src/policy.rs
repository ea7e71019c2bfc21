//! The acting side of a Q-network: a CPU copy that loads weights (a learner snapshot or a
//! checkpoint file) and picks epsilon-greedy actions for one observation at a time. The actors,
//! the periodic evaluation and `wndqn eval` all act through it.
//!
//! Weight norm is baked into its weights at every load ([`QNetwork::fold_weight_norm`]): a
//! batch-of-one forward pass then costs what a plain network's does, instead of recomputing
//! `g/‖v‖` (a pass over all 1.7M weights) or scaling every layer's output at every step.

use rand::Rng;
use tch::{nn, Device, Tensor};

use crate::dqn::load_snapshot;
use crate::qnet::{QNetConfig, QNetwork};
use crate::replay::ObsRef;

/// An epsilon-greedy policy on the CPU.
pub struct Policy {
    vs: nn::VarStore,
    net: QNetwork,
    scales: Vec<Option<Tensor>>,
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
        let mut shape = vec![1];
        shape.extend_from_slice(&cfg.obs_shape);
        Policy { vs, net, scales, shape, num_actions: cfg.num_actions as usize, loaded: false }
    }

    fn loaded_now(&mut self) {
        self.net.fold_weight_norm();
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
    use crate::normalization::Variant;
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
}
