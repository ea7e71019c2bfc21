//! Validation: every key's bounds, checked once before anything starts, all failures listed by
//! key (what `wndqn check` and every run do).

use wndqn_agents::optim::{Adam, Adamax, OptimizerKind, RmsProp};
use wndqn_agents::qnet::Arch;

use anyhow::{bail, Result};

use super::{flatten, Config};
use crate::threads::cores;

/// The largest `log.diagnostics_batch`: its forward pass and feature matrix stay a small part of
/// a run's memory (the Nature network: about 0.8 GB of activations at 4,096).
pub const MAX_DIAGNOSTICS_BATCH: usize = 4096;

/// Bounds of the optimizer's settings.
fn check_optimizer(o: &OptimizerKind, check: &mut impl FnMut(bool, String)) {
    let unit = |k: &str, x: f64| {
        (x.is_finite() && (0.0..1.0).contains(&x), format!("agent.optimizer.{k} = {x} must be in [0, 1)"))
    };
    let eps = |x: f64| (x > 0.0 && x <= 1.0, format!("agent.optimizer.eps = {x} must be in (0, 1]"));
    let rules = match o {
        OptimizerKind::Adam(Adam { beta1, beta2, eps: e }) | OptimizerKind::Adamax(Adamax { beta1, beta2, eps: e }) => {
            vec![unit("beta1", *beta1), unit("beta2", *beta2), eps(*e)]
        }
        OptimizerKind::RmsProp(RmsProp { alpha, eps: e, momentum, .. }) => {
            vec![unit("alpha", *alpha), unit("momentum", *momentum), eps(*e)]
        }
    };
    for (ok, why) in rules {
        check(ok, why);
    }
}

impl Config {
    /// Check every value that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let mut errs: Vec<String> = Vec::new();
        // One message per key: the first that names it (`agent.lr = inf must be ...`).
        let mut check = |ok: bool, msg: String| {
            let key = msg.split_whitespace().next().unwrap_or("").to_string();
            if !ok && !errs.iter().any(|e| e.split_whitespace().next() == Some(key.as_str())) {
                errs.push(msg)
            }
        };
        check(self.run.total_env_steps > 0, "run.total_env_steps must be > 0".into());
        check(
            self.run.total_env_steps > self.replay.warmup_steps,
            format!(
                "run.total_env_steps = {} must be larger than replay.warmup_steps = {}: the run would end before its first update",
                self.run.total_env_steps, self.replay.warmup_steps
            ),
        );
        check(
            self.run.seed <= i64::MAX as u64,
            format!("run.seed = {} must be at most {} (TOML integers are 64-bit signed)", self.run.seed, i64::MAX),
        );
        for key in self.non_finite() {
            check(false, format!("{key} must be a finite number"));
        }
        self.check_agent(&mut check);
        self.check_replay_and_actors(&mut check);
        self.check_learner_and_log(&mut check);
        self.check_env(&mut check);
        if errs.is_empty() {
            Ok(())
        } else {
            bail!("invalid configuration:\n  - {}", errs.join("\n  - "))
        }
    }

    fn check_agent(&self, check: &mut impl FnMut(bool, String)) {
        let a = &self.agent;
        check((0.0..=1.0).contains(&a.gamma), format!("agent.gamma = {} must be in [0, 1]", a.gamma));
        check(a.lr > 0.0 && a.lr <= 1.0, format!("agent.lr = {} must be in (0, 1]", a.lr));
        check_optimizer(&a.optimizer, check);
        check(
            a.init_scale > 0.0 && a.init_scale <= 100.0,
            format!("agent.init_scale = {} must be in (0, 100]", a.init_scale),
        );
        check(a.grad_clip_norm >= 0.0, "agent.grad_clip_norm must be >= 0 (0 = off)".into());
        check(
            a.target_update_every > 0 || (a.target_tau > 0.0 && a.target_tau <= 1.0),
            "agent.target_update_every = 0 needs agent.target_tau in (0, 1]".into(),
        );
        check((1..=16_384).contains(&a.hidden), format!("agent.hidden = {} must be 1..=16384 units", a.hidden));
        check(
            a.target_tau > 0.0 && a.target_tau <= 1.0,
            format!("agent.target_tau = {} must be in (0, 1]", a.target_tau),
        );
        check(
            a.network != Arch::Nature || self.env.frame_size >= 36,
            format!(
                "env.frame_size = {} is too small for the Nature CNN (its three convolutions need at least 36 pixels)",
                self.env.frame_size
            ),
        );
        check(
            (2..=4096).contains(&a.init_batch),
            format!("agent.init_batch = {} must be 2..=4096 (a std over one sample is 0)", a.init_batch),
        );
    }

    fn check_replay_and_actors(&self, check: &mut impl FnMut(bool, String)) {
        let a = &self.agent;
        let r = &self.replay;
        check(r.batch_size > 0, "replay.batch_size must be positive".into());
        check(
            r.capacity >= r.batch_size.max(64),
            format!("replay.capacity = {} must hold at least a batch (and 64 transitions)", r.capacity),
        );
        check(
            r.warmup_steps as usize >= r.batch_size,
            format!("replay.warmup_steps = {} must be >= replay.batch_size = {}", r.warmup_steps, r.batch_size),
        );
        check(
            r.warmup_steps as usize <= r.capacity,
            format!("replay.warmup_steps = {} exceeds replay.capacity = {}", r.warmup_steps, r.capacity),
        );
        check(
            !self.agent.variant.data_init() || a.init_batch as u64 <= r.warmup_steps,
            format!(
                "agent.init_batch = {} must be <= replay.warmup_steps = {} (the data init uses warm-up observations)",
                a.init_batch, r.warmup_steps
            ),
        );
        let ac = &self.actors;
        check(
            ac.num_actors >= 1 && ac.num_actors <= 256,
            format!("actors.num_actors = {} must be 1..=256", ac.num_actors),
        );
        for (k, v) in
            [("epsilon_start", ac.epsilon_start), ("epsilon_end", ac.epsilon_end), ("apex_base", ac.apex_base)]
        {
            check((0.0..=1.0).contains(&v), format!("actors.{k} = {v} must be in [0, 1]"));
        }
        check(
            ac.send_batch >= 1 && ac.send_batch <= 4096,
            format!("actors.send_batch = {} must be 1..=4096", ac.send_batch),
        );
        check(
            (0.0..=100.0).contains(&ac.apex_alpha),
            format!("actors.apex_alpha = {} must be in [0, 100]", ac.apex_alpha),
        );
        check(
            ac.num_actors == 0 || r.capacity / ac.num_actors >= 64,
            "replay.capacity / actors.num_actors must be >= 64 (each actor has its own ring)".into(),
        );
    }

    fn check_learner_and_log(&self, check: &mut impl FnMut(bool, String)) {
        let l = &self.learner;
        check(
            l.replay_ratio > 0.0 && l.replay_ratio <= 64.0,
            format!("learner.replay_ratio = {} must be in (0, 64]", l.replay_ratio),
        );
        check(l.publish_every >= 1, "learner.publish_every must be >= 1".into());
        check(l.prefetch >= 1 && l.prefetch <= 256, format!("learner.prefetch = {} must be 1..=256", l.prefetch));
        let cores = cores();
        check(
            l.threads <= 4 * cores,
            format!(
                "learner.threads = {} is far beyond this machine's {cores} CPU threads (at most {}; 0 = one per core)",
                l.threads,
                4 * cores
            ),
        );
        let g = &self.log;
        check(g.scalars_every >= 1, "log.scalars_every must be >= 1".into());
        check(
            (1..=10_000).contains(&g.eval_episodes),
            format!("log.eval_episodes = {} must be 1..=10000", g.eval_episodes),
        );
        check((0.0..=1.0).contains(&g.eval_epsilon), "log.eval_epsilon must be in [0, 1]".into());
        check(g.eval_max_steps >= 1, "log.eval_max_steps must be >= 1 (env steps per evaluation game)".into());
        check(g.keep_checkpoints >= 1, "log.keep_checkpoints must be >= 1".into());
        check(
            (1..=MAX_DIAGNOSTICS_BATCH).contains(&g.diagnostics_batch),
            format!(
                "log.diagnostics_batch = {} must be 1..={MAX_DIAGNOSTICS_BATCH} (observations of each diagnostic's forward pass and feature rank)",
                g.diagnostics_batch
            ),
        );
    }

    fn check_env(&self, check: &mut impl FnMut(bool, String)) {
        use wndqn_envs::ids::IdKind;
        if self.env.id.trim().is_empty() {
            check(
                false,
                "env.id is empty: name an environment (`wndqn games` lists them), e.g. env.id = \"Pong\"".into(),
            );
            return;
        }
        // The id first: a typo must read as an unknown id, not as a network mismatch.
        let kind = wndqn_envs::ids::classify(&self.env.id);
        match &kind {
            Err(e) => check(false, format!("env.id: {e}")),
            Ok(kind) => {
                let (want, what) = match kind {
                    IdKind::CartPole => (Arch::Mlp, "vector"),
                    IdKind::Atari => (Arch::Nature, "frame"),
                    IdKind::MinAtar => (Arch::Minatar, "10 x 10 grid"),
                };
                check(
                    self.agent.network == want,
                    format!(
                        "env.id = {} has {what} observations: set agent.network = \"{}\"",
                        self.env.id,
                        want.name()
                    ),
                );
            }
        }
        if let Err(e) = self.env.validate(matches!(kind, Ok(IdKind::MinAtar))) {
            check(false, e.to_string());
        }
        if matches!(kind, Ok(IdKind::MinAtar | IdKind::CartPole)) {
            for (key, value) in self.env.atari_settings() {
                check(
                    false,
                    format!("env.{key} = {value} is an Atari setting, with no effect on {}: remove it", self.env.id),
                );
            }
        }
    }

    /// Keys whose values are not finite numbers (`inf`, `nan` are valid TOML).
    fn non_finite(&self) -> Vec<String> {
        let mut flat = Vec::new();
        let mut probe = self.clone();
        probe.run.seed = 0; // a seed beyond TOML's range is reported on its own
        if let Ok(v) = toml::Value::try_from(&probe) {
            flatten("", &v, &mut flat);
        }
        flat.into_iter().filter(|(_, v)| matches!(v, toml::Value::Float(x) if !x.is_finite())).map(|(k, _)| k).collect()
    }
}
