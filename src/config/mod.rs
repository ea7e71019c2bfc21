//! The run configuration: one TOML table per component, unknown keys rejected with file and
//! line. CLI flags (`--set section.key=value`, `--variant`, `--seed`) are applied on top, then
//! the whole thing is validated once, before any thread starts. Units are in each field's doc.

mod load;
mod validate;

pub use load::{apply_sets, from_table, load, load_run, migrate, toml_error};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use wndqn_agents::dqn::{DqnConfig, Loss, TargetUpdate};
use wndqn_agents::normalization::{LayerNormAxes, NormOptions, SpectralLayers, Variant};
use wndqn_agents::optim::OptimizerKind;
use wndqn_agents::qnet::Arch;
use wndqn_agents::schedule::{Exploration, LinearSchedule};
use wndqn_envs::EnvConfig;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Budget and seed.
    pub run: RunConfig,
    /// Environment and preprocessing (see `wndqn_envs::EnvConfig`).
    pub env: EnvConfig,
    /// Network and update rule.
    pub agent: AgentConfig,
    /// Replay memory.
    pub replay: ReplayConfig,
    /// Actor threads and exploration.
    pub actors: ActorsConfig,
    /// Learner thread.
    pub learner: LearnerConfig,
    /// Logging, evaluation, checkpoints.
    pub log: LogConfig,
}

/// `[run]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Total env steps over all actors (one env step = `env.frameskip` emulator frames).
    pub total_env_steps: u64,
    /// Master seed: env seeds, exploration, network init and replay sampling derive from it.
    pub seed: u64,
    /// Stop early once the mean return of 20 consecutive training games reaches this (absent =
    /// never; any number, negative ones included, as in Pong).
    pub stop_at_return: Option<f64>,
}
impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { total_env_steps: 10_000_000, seed: 1, stop_at_return: None }
    }
}

/// `[agent]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `plain`, `weight_norm` (WN + data-dependent init), `weight_norm_noinit`, `weight_norm_mobn`,
    /// `layer_norm`, `spectral_norm`, `weight_norm_projected`.
    pub variant: Variant,
    /// `layer_norm`: a convolution's layer norm over `channels` (per position) or `chw`.
    pub layer_norm_axes: LayerNormAxes,
    /// `spectral_norm`: on the `penultimate` dense layer(s) or on `all` layers.
    pub spectral_norm_layers: SpectralLayers,
    /// `nature` (CNN for frames) or `mlp` (vector observations).
    pub network: Arch,
    /// MLP hidden units per layer (mlp only).
    pub hidden: i64,
    /// Dueling head.
    pub dueling: bool,
    /// Data-dependent init: target std of every layer's pre-activations.
    pub init_scale: f64,
    /// Observations (env steps) used for the data-dependent init, taken from the warm-up.
    pub init_batch: usize,
    /// Discount per env step.
    pub gamma: f64,
    /// Double-DQN targets.
    pub double_dqn: bool,
    /// `huber` or `mse`.
    pub loss: Loss,
    /// Clip the global gradient L2 norm to this; 0 = off.
    pub grad_clip_norm: f64,
    /// Hard target copy every this many learner updates (0 = use `target_tau`).
    pub target_update_every: u64,
    /// Polyak factor per update when `target_update_every = 0`.
    pub target_tau: f64,
    /// Learning rate (every rule's step size).
    pub lr: f64,
    /// `[agent.optimizer]`: `rule = "adam"` (`beta1`, `beta2`, `eps`), `"adamax"` (the same) or
    /// `"rmsprop"` (`alpha`, `eps`, `centered`, `momentum`), each setting with its default; or
    /// `optimizer = "adam"` for a rule with every default ([`migrate`] reads the flat keys of
    /// older configs).
    pub optimizer: OptimizerKind,
}
impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            variant: Variant::WeightNorm,
            layer_norm_axes: LayerNormAxes::Channels,
            spectral_norm_layers: SpectralLayers::Penultimate,
            network: Arch::Nature,
            hidden: 128,
            dueling: false,
            init_scale: 1.0,
            init_batch: 256,
            gamma: 0.99,
            double_dqn: true,
            loss: Loss::Huber,
            grad_clip_norm: 10.0,
            target_update_every: 1000,
            target_tau: 0.005,
            lr: 1e-4,
            optimizer: OptimizerKind::default(),
        }
    }
}

impl Precision {
    /// What the learner computes in on `device`, or why this precision cannot run there. Changes
    /// nothing: `device::enable_precision` switches the matrix units.
    pub fn compute(self, device: tch::Device) -> Result<wndqn_agents::layers::Compute> {
        use wndqn_agents::layers::Compute;
        match (self, device.is_cuda()) {
            (Precision::Fp32, _) | (Precision::Tf32, true) => Ok(Compute::F32),
            (Precision::Tf32, false) => {
                bail!("learner.precision = \"tf32\" is a CUDA precision (TF32 matrix units); on the CPU use \"fp32\" or \"bf16\"")
            }
            (Precision::Bf16, true) => Ok(Compute::Bf16 { channels_last: true }),
            (Precision::Bf16, false) if wndqn_agents::ext::precision::cpu_has_native_bf16() => {
                Ok(Compute::Bf16 { channels_last: true })
            }
            (Precision::Bf16, false) => bail!(
                "learner.precision = \"bf16\" needs a CPU that computes bf16 natively (AVX512_BF16 or AMX-BF16), and this one does not: emulating it would be slower than fp32. Use learner.precision = \"fp32\""
            ),
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Tf32 => "tf32",
        }
    }
}

impl AgentConfig {
    /// The update settings for `wndqn_agents::dqn`.
    pub fn dqn(&self) -> DqnConfig {
        DqnConfig {
            gamma: self.gamma,
            double_dqn: self.double_dqn,
            loss: self.loss,
            grad_clip_norm: (self.grad_clip_norm > 0.0).then_some(self.grad_clip_norm),
            target_update: if self.target_update_every > 0 {
                TargetUpdate::Hard(self.target_update_every)
            } else {
                TargetUpdate::Polyak(self.target_tau)
            },
            optimizer: self.optimizer,
            lr: self.lr,
        }
    }
}

/// `[replay]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Transitions kept (each 84x84 frame stored once: ~7 KB per transition).
    pub capacity: usize,
    /// Env steps collected before learning starts.
    pub warmup_steps: u64,
    /// Transitions per learner update.
    pub batch_size: usize,
}
impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig { capacity: 1_000_000, warmup_steps: 50_000, batch_size: 32 }
    }
}

/// `[actors]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActorsConfig {
    /// Actor threads, each with its own environment and CPU copy of the policy.
    pub num_actors: usize,
    /// Epsilon at env step 0.
    pub epsilon_start: f64,
    /// Final epsilon.
    pub epsilon_end: f64,
    /// Env steps (all actors together) over which epsilon decays linearly.
    pub epsilon_decay_steps: u64,
    /// Ape-X style: actor i uses `apex_base^(1 + apex_alpha * i / (n-1))` instead of the schedule.
    pub apex: bool,
    /// Ape-X base epsilon.
    pub apex_base: f64,
    /// Ape-X exponent spread.
    pub apex_alpha: f64,
    /// Transitions an actor sends per message to the replay writer (batching; 1 = each step).
    pub send_batch: usize,
}
impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            num_actors: 2,
            epsilon_start: 1.0,
            epsilon_end: 0.01,
            epsilon_decay_steps: 1_000_000,
            apex: false,
            apex_base: 0.4,
            apex_alpha: 7.0,
            send_batch: 16,
        }
    }
}

impl ActorsConfig {
    /// How the actors explore: the shared epsilon schedule, or Ape-X's per-actor epsilons.
    pub fn exploration(&self) -> Exploration {
        if self.apex {
            Exploration::ApeX { base: self.apex_base, alpha: self.apex_alpha, actors: self.num_actors }
        } else {
            Exploration::Schedule(LinearSchedule {
                start: self.epsilon_start,
                end: self.epsilon_end,
                decay_steps: self.epsilon_decay_steps,
            })
        }
    }
}

/// `[learner]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// Learner updates per env step (classic DQN: one update every 4 steps = 0.25). Enforced:
    /// actors wait when the learner falls behind, the learner waits for data.
    pub replay_ratio: f64,
    /// Publish fresh weights to the actors every this many updates.
    pub publish_every: u64,
    /// Intra-op CPU threads for the learner's libtorch (0 = one per core).
    pub threads: usize,
    /// Batches sampled ahead by the prefetch thread.
    pub prefetch: usize,
    /// Give the learner first claim on the CPU: actors, the replay thread and the evaluator run
    /// at idle priority (`SCHED_IDLE`) and only use cores the learner leaves free. Faster on a
    /// machine dedicated to one run with a heavy CPU learner (Atari presets); with other busy
    /// processes on the machine those threads can starve, so it is off by default.
    pub exclusive_cpu: bool,
    /// On a CUDA learner, capture the update once as a CUDA graph and replay it for every update
    /// (agents/src/graphed.rs); `false` runs the eager update, the reference. No effect on
    /// the CPU.
    pub cuda_graph: bool,
    /// What the learner's forward and backward passes compute in: `fp32`; `bf16` (convolutions
    /// and matrix products in bf16, as autocast; weights, optimizer state, weight-norm scales,
    /// loss and targets stay f32; a CPU needs AVX512_BF16 or AMX, CUDA any GPU); `tf32` (CUDA
    /// only: f32 with TF32 matrix units). Checkpoints are f32 whatever it is.
    pub precision: Precision,
}

/// `learner.precision`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    Fp32,
    /// bf16 convolutions and matrix products, f32 weights and optimizer.
    Bf16,
    /// CUDA only: f32 with TF32 matrix units.
    Tf32,
}
impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            replay_ratio: 0.25,
            publish_every: 50,
            threads: 0,
            prefetch: 4,
            exclusive_cpu: false,
            cuda_graph: true,
            precision: Precision::Fp32,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Write learner scalars every this many env steps.
    pub scalars_every: u64,
    /// Write weight-norm scale histograms every this many env steps.
    pub histograms_every: u64,
    /// Diagnostics (weight norms, effective step sizes, dormant units, feature rank) every
    /// this many learner updates (0 = off).
    pub diagnostics_every: u64,
    /// Observations in the diagnostics' probe batch (drawn once from the replay memory).
    pub diagnostics_batch: usize,
    /// Greedy evaluation every this many env steps (0 = off).
    pub eval_every: u64,
    /// Episodes per evaluation.
    pub eval_episodes: usize,
    /// Epsilon during evaluation.
    pub eval_epsilon: f64,
    /// Cap on env steps per evaluation episode (guards against a policy that never ends a game).
    pub eval_max_steps: u64,
    /// Write a checkpoint every this many learner updates (0 = only at the end / on Ctrl-C).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            scalars_every: 1000,
            histograms_every: 50_000,
            diagnostics_every: 1000,
            diagnostics_batch: 256,
            eval_every: 250_000,
            eval_episodes: 5,
            eval_epsilon: 0.001,
            eval_max_steps: 27_000,
            checkpoint_every: 50_000,
            keep_checkpoints: 3,
        }
    }
}

impl Config {
    /// The Q-network of this config for an environment's observations and actions.
    pub fn net_config(&self, kind: wndqn_envs::ObsKind, num_actions: usize) -> wndqn_agents::qnet::QNetConfig {
        wndqn_agents::qnet::QNetConfig {
            arch: self.agent.network,
            variant: self.agent.variant,
            dueling: self.agent.dueling,
            obs_shape: kind.shape(),
            num_actions: num_actions as i64,
            hidden: self.agent.hidden,
            norm: NormOptions {
                layer_norm_axes: self.agent.layer_norm_axes,
                spectral_layers: self.agent.spectral_norm_layers,
            },
        }
    }

    /// Intra-op CPU threads for the learner: `learner.threads`, or by the work when 0. A small
    /// MLP (or MinAtar's network) gains nothing from an OpenMP team and a team suffers most from
    /// shared cores, so they get one thread; the Nature CNN gets one per core.
    pub fn learner_threads(&self) -> usize {
        match (self.learner.threads, self.agent.network) {
            (0, Arch::Mlp | Arch::Minatar) => 1,
            (0, _) => crate::threads::cores(),
            (t, _) => t,
        }
    }

    /// The resolved config as TOML (what `config.toml` in a run folder holds). A validated
    /// config always serializes (its seed fits TOML's integers).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# this config cannot be written as TOML: {e}\n"))
    }
}

/// Every `(key, value)` leaf of a TOML value, with dotted keys.
pub fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Every preset in `configs/`.
#[cfg(test)]
pub fn presets_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use wndqn_agents::optim::{Adam, Adamax, RmsProp};

    /// A run's `config.toml` as wndqn wrote it before the optimizer table: every optimizer key
    /// flat under `[agent]`, whatever the rule.
    const OLD_AGENT: &str = "[env]\nid = \"MinAtar/Breakout-v0\"\n[agent]\nvariant = \"plain\"\nnetwork = \"minatar\"\noptimizer = \"RULE\"\nlr = 0.00025\nbeta1 = 0.5\nbeta2 = 0.99\neps = 0.01\nrms_alpha = 0.9\nrms_centered = false\nrms_momentum = 0.95\n";

    #[test]
    fn configs_before_the_optimizer_table_load_as_they_trained() {
        let load = |rule: &str| {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("config.toml");
            std::fs::write(&p, OLD_AGENT.replace("RULE", rule)).unwrap();
            load(&p, &[]).unwrap().agent.optimizer
        };
        assert_eq!(
            load("rmsprop"),
            OptimizerKind::RmsProp(RmsProp { alpha: 0.9, eps: 0.01, centered: false, momentum: 0.95 })
        );
        assert_eq!(load("adamax"), OptimizerKind::Adamax(Adamax { beta1: 0.5, beta2: 0.99, eps: 0.01 }));
        assert_eq!(load("adam"), OptimizerKind::Adam(Adam { beta1: 0.5, beta2: 0.99, eps: 0.01 }));
        // A name alone is the rule with its defaults, in both readings.
        let mut t: toml::Table = toml::from_str("[agent]\noptimizer = \"adam\"\n").unwrap();
        assert!(migrate(&mut t));
        assert_eq!(from_table(t, "x").unwrap().agent.optimizer, OptimizerKind::Adam(Adam::default()));
        assert_eq!(Adam::default(), Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 }, "the old flat keys' defaults");
        // Today's form is left alone, and written as a table.
        let mut t: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
        assert!(!migrate(&mut t));
        assert!(Config::default().to_toml().contains("[agent.optimizer]\nrule = \"adam\""));
    }

    /// The sweep plans committed under docs/results (written before the optimizer table) load,
    /// and each of their runs' configs validates.
    #[test]
    fn committed_plans_load() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results");
        let mut n = 0;
        for e in std::fs::read_dir(&results).unwrap().flatten() {
            let dir = e.path().join("sweep");
            if dir.join("sweep.toml").is_file() {
                let plan = crate::sweep::spec::Plan::read(&dir).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
                for r in plan.runs() {
                    plan.config(&r).unwrap_or_else(|e| panic!("{}: {}: {e:#}", dir.display(), r.name));
                }
                n += 1;
            }
        }
        assert!(n >= 2, "the committed studies' plans");
    }

    #[test]
    fn every_preset_loads_and_validates() {
        let mut n = 0;
        for e in std::fs::read_dir(presets_dir()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 4, "expected the four presets, found {n}");
    }

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let (_d, p) = write("[agent]\nlr = 1e-4\nlearning_rat = 3\n");
        let e = format!("{:#}", load(&p, &[]).unwrap_err());
        assert!(e.contains("c.toml") && e.contains("line 3") && e.contains("learning_rat"), "{e}");
    }

    #[test]
    fn malformed_toml_names_line() {
        let (_d, p) = write("[agent]\nlr = = 2\n");
        let e = format!("{:#}", load(&p, &[]).unwrap_err());
        assert!(e.contains("c.toml") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn impossible_values_are_named() {
        let (_d, p) = write("[agent]\ngamma = 1.5\n[replay]\nwarmup_steps = 10\nbatch_size = 32\n");
        let e = format!("{:#}", load(&p, &[]).unwrap_err());
        assert!(e.contains("agent.gamma") && e.contains("replay.warmup_steps"), "{e}");
    }

    #[test]
    fn sets_override_and_are_checked() {
        let (_d, p) = write("[agent]\nlr = 1e-4\n");
        let c =
            load(&p, &["agent.lr=3e-4".into(), "agent.variant=plain".into(), "env.id=ALE/Breakout-v5".into()]).unwrap();
        assert_eq!(c.agent.lr, 3e-4);
        assert_eq!(c.agent.variant, Variant::Plain);
        assert_eq!(c.env.id, "ALE/Breakout-v5");
        let e = format!("{:#}", load(&p, &["agent.nope=1".into()]).unwrap_err());
        assert!(e.contains("nope") && e.contains("--set"), "{e}");
        assert!(load(&p, &["agent.variant=fancy".into()]).is_err());
    }

    #[test]
    fn a_long_bad_line_is_cut_in_the_error() {
        let (_d, p) = write(&format!("[agent]\nlr = 1e-4 {}\n", "x".repeat(100_000)));
        let e = format!("{:#}", load(&p, &[]).unwrap_err());
        assert!(
            e.contains("c.toml:2:") && e.contains("line 2") && e.len() < 600,
            "{} chars: {}",
            e.len(),
            &e[..e.len().min(300)]
        );
    }

    #[test]
    fn zero_actors_and_an_empty_id_are_named_not_panics() {
        let (_d, p) = write("[agent]\nlr = 1e-4\n");
        let e = format!("{:#}", load(&p, &["actors.num_actors=0".into()]).unwrap_err());
        assert!(e.contains("actors.num_actors = 0 must be 1..=256"), "{e}");
        let e = format!("{:#}", load(&p, &["env.id=\"\"".into()]).unwrap_err());
        assert!(e.contains("env.id is empty") && !e.contains("frame observations"), "{e}");
    }

    /// The fields of a table of the config, as serde lists them when it refuses an unknown
    /// one (every field, `Option`s included).
    fn fields(section: Option<&str>) -> Vec<String> {
        let text = match section {
            Some(s) => format!("[{s}]\nzz_unknown = 1\n"),
            None => "[zz_unknown]\n".to_string(),
        };
        let e = toml::from_str::<Config>(&text).unwrap_err().to_string();
        let list = e.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{e}"));
        list.lines().next().unwrap().split(", ").map(|f| f.trim_matches('`').to_string()).collect()
    }

    #[test]
    fn docs_config_lists_exactly_the_keys() {
        let mut keys = std::collections::BTreeSet::new();
        for section in fields(None) {
            for f in fields(Some(&section)) {
                keys.insert(format!("{section}.{f}"));
            }
        }
        assert!(keys.len() > 60 && keys.contains("env.mode") && keys.contains("run.stop_at_return"), "{keys:?}");
        let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md")).unwrap();
        let documented = crate::util::markdown_table_keys(&doc);
        let missing: Vec<_> = keys.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&keys).collect();
        assert!(missing.is_empty() && extra.is_empty(), "docs/CONFIG.md lacks {missing:?}, has unknown {extra:?}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = Config::default();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, back);
    }
}
