//! The run configuration: one TOML table per component, unknown keys rejected with file and
//! line. CLI flags (`--set section.key=value`, `--variant`, `--seed`) are applied on top, then
//! the whole thing is validated once, before any thread starts. Units are in each field's doc.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use wndqn_agents::dqn::{DqnConfig, Loss, TargetUpdate};
use wndqn_agents::normalization::{LayerNormAxes, NormOptions, SpectralLayers, Variant};
use wndqn_agents::optim::{Adam, Adamax, OptimizerKind, RmsProp};
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
    /// nothing: [`Precision::enable`] switches the matrix units.
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

    /// [`Precision::compute`], with the process's CUDA matrix units set for it: TF32 on for
    /// `tf32`, off otherwise (a global libtorch switch; the one place that sets it).
    pub fn enable(self, device: tch::Device) -> Result<wndqn_agents::layers::Compute> {
        let compute = self.compute(device)?;
        if device.is_cuda() {
            wndqn_agents::ext::precision::allow_tf32(self == Precision::Tf32)?;
        }
        Ok(compute)
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

/// Older configs' optimizer keys under `[agent]`, by the rules that read them.
const LEGACY_OPTIMIZER_KEYS: [(&str, &str, &[&str]); 6] = [
    ("beta1", "beta1", &["adam", "adamax"]),
    ("beta2", "beta2", &["adam", "adamax"]),
    ("eps", "eps", &["adam", "adamax", "rmsprop"]),
    ("rms_alpha", "alpha", &["rmsprop"]),
    ("rms_centered", "centered", &["rmsprop"]),
    ("rms_momentum", "momentum", &["rmsprop"]),
];

/// A config table in today's form: `agent.optimizer = "name"` becomes `[agent.optimizer]
/// rule = "name"`, and the flat optimizer keys of older configs (`agent.beta1`, `agent.eps`,
/// `agent.rms_alpha`, ...) move into it as the rule's settings (a key the rule did not read is
/// dropped: it had no effect). Returns whether anything changed. Every config, run config,
/// checkpoint and sweep plan is read through it, so those written before the optimizer table
/// load as they trained.
pub fn migrate(table: &mut toml::Table) -> bool {
    let Some(agent) = table.get_mut("agent").and_then(|a| a.as_table_mut()) else { return false };
    let legacy = LEGACY_OPTIMIZER_KEYS.iter().any(|(k, _, _)| agent.contains_key(*k));
    let name = match agent.get("optimizer") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) if !legacy => return false,
        Some(toml::Value::Table(t)) => t.get("rule").and_then(|r| r.as_str()).unwrap_or("adam").to_string(),
        Some(_) => return false,
        None if legacy => "adam".to_string(),
        None => return false,
    };
    let mut opt = match agent.remove("optimizer") {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    opt.insert("rule".into(), toml::Value::String(name.clone()));
    for (old, new, rules) in LEGACY_OPTIMIZER_KEYS {
        if let Some(v) = agent.remove(old) {
            // Never beside the table in an older file: there, from a `--set`, which wins.
            if rules.contains(&name.as_str()) {
                opt.insert(new.to_string(), v);
            }
        }
    }
    agent.insert("optimizer".into(), toml::Value::Table(opt));
    true
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

/// A TOML error as `file:line:column: message`, with the offending line cut to 120 characters
/// (the toml crate quotes the whole line, which can be megabytes long).
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    // The message can quote a whole value (a megabyte-long string): it is cut too.
    let message = crate::util::clip(e.message(), 300);
    let Some(span) = e.span() else { return anyhow!("{}: {message}", path.display()) };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let col = text[line_start..start].chars().count() + 1;
    let from = col.saturating_sub(60).min(line.chars().count());
    let shown: String = line.chars().skip(from).take(120).collect();
    let (pre, post) = (if from > 0 { "…" } else { "" }, if line.chars().count() > from + 120 { "…" } else { "" });
    // The table the line belongs to names the key when the line alone does not (`a = 1` under
    // `[agent.loss]`).
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| format!(" in `{}`", crate::util::clip(h, 60)))
        .unwrap_or_default();
    anyhow!("{}:{line_no}:{col}: {message} (line {line_no}{table}: `{pre}{shown}{post}`)", path.display())
}

/// Read a config file: TOML syntax and unknown keys are reported with the file and line. An
/// older form is read too ([`migrate`]).
pub fn load_file(path: &Path) -> Result<toml::Table> {
    let text = crate::util::read_text_file(path, "config")?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    if migrate(&mut table) {
        Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            anyhow!("{}: {}", path.display(), crate::util::clip(&e.to_string().replace('\n', " "), 300))
        })?;
    } else {
        // Type and unknown-key errors, still with the file's line numbers.
        toml::from_str::<Config>(&text).map_err(|e| toml_error(path, &text, &e))?;
    }
    Ok(table)
}

/// Digits (with an optional sign and `_` separators) that TOML cannot hold as an integer.
fn is_integer_beyond_toml(raw: &str) -> bool {
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw).replace('_', "");
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && raw.replace('_', "").parse::<i64>().is_err()
}

/// Apply `section.key=value` overrides (value parsed as TOML, else taken as a string); keys
/// may go deeper (`agent.optimizer.eps=1e-8`).
pub fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for s in sets {
        let (key, raw) = s.split_once('=').ok_or_else(|| anyhow!("--set {s}: expected section.key=value"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            bail!("--set {s}: expected section.key=value (e.g. agent.lr=3e-4)");
        }
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) if is_integer_beyond_toml(raw.trim()) => {
                bail!("--set {s}: {} is beyond the integers a config holds ({} to {})", raw.trim(), i64::MIN, i64::MAX)
            }
            Err(_) => toml::Value::String(raw.trim().to_string()),
        };
        if let (["agent", k], Some((_, new, _))) =
            (path.as_slice(), LEGACY_OPTIMIZER_KEYS.iter().find(|(old, _, _)| path.get(1) == Some(old)))
        {
            bail!("--set {s}: agent.{k} is the optimizer's: --set agent.optimizer.{new}={}", raw.trim());
        }
        let (last, parents) = path.split_last().expect("two parts at least");
        let mut t = &mut *table;
        for (i, p) in parents.iter().enumerate() {
            let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::String(name) = entry {
                // `agent.optimizer = "adam"` is a table of one key (`migrate`).
                if i == 1 && parents[0] == "agent" && *p == "optimizer" {
                    let mut o = toml::Table::new();
                    o.insert("rule".into(), toml::Value::String(name.clone()));
                    *entry = toml::Value::Table(o);
                }
            }
            t = entry.as_table_mut().ok_or_else(|| anyhow!("--set {s}: `{}` is not a table", path[..=i].join(".")))?;
        }
        t.insert(last.to_string(), value);
    }
    Ok(())
}

/// Turn a table into a validated config.
pub fn from_table(mut table: toml::Table, origin: &str) -> Result<Config> {
    migrate(&mut table);
    let cfg: Config = Config::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow!("{origin}: {}", crate::util::clip(&e.to_string().replace('\n', " "), 300)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Load `path`, apply the overrides, validate.
pub fn load(path: &Path, sets: &[String]) -> Result<Config> {
    let mut t = load_file(path)?;
    apply_sets(&mut t, sets)?;
    let origin =
        if sets.is_empty() { path.display().to_string() } else { format!("{} with --set overrides", path.display()) };
    from_table(t, &origin)
}

/// A run's config: `path`, then the overrides, then the variant and seed on the typed config
/// (`--variant`, `--seed`); validated.
pub fn load_run(path: &Path, sets: &[String], variant: Option<Variant>, seed: Option<u64>) -> Result<Config> {
    let mut cfg = load(path, sets)?;
    if let Some(v) = variant {
        cfg.agent.variant = v;
    }
    if let Some(s) = seed {
        cfg.run.seed = s;
    }
    cfg.validate()?;
    Ok(cfg)
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
            (0, _) => cores(),
            (t, _) => t,
        }
    }

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

    /// The resolved config as TOML (what `config.toml` in a run folder holds). A validated
    /// config always serializes (its seed fits TOML's integers).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# this config cannot be written as TOML: {e}\n"))
    }
}

/// The largest `log.diagnostics_batch`: its forward pass and feature matrix stay a small part of
/// a run's memory (the Nature network: about 0.8 GB of activations at 4,096).
pub const MAX_DIAGNOSTICS_BATCH: usize = 4096;

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

/// CPU threads of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Every preset in `configs/`.
#[cfg(test)]
pub fn presets_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

#[cfg(test)]
mod tests {
    use super::*;

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
