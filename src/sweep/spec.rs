//! A sweep spec (`configs/sweeps/*.toml`) and the plan it expands to.
//!
//! ```toml
//! [sweep]
//! base = "../cartpole.toml"        # the config every run starts from (relative to this file)
//! games = ["CartPole-v1"]          # env ids
//! variants = ["plain", "weight_norm"]
//! seeds = 5                        # seeds 1..=5, or a list: [1, 2, 7]
//! sets = ["run.total_env_steps=30000"]   # overrides for every run, as --set
//! save_replay = false              # checkpoints carry the replay memory (no refill on resume)
//!
//! [grid]                           # optional: any config key with a list of values
//! "agent.lr" = [1e-4, 2.5e-4, 6.25e-4]
//!
//! [normalize]                      # per non-Atari game: [random score, reference score]
//! "CartPole-v1" = [22.0, 500.0]
//!
//! [slurm]                          # optional: sbatch settings for --executor slurm
//! partition = "gpu"
//! time = "24:00:00"
//! cpus_per_task = 8
//! gpus_per_task = 1
//! mem = "40G"
//! max_parallel = 20
//! ```
//!
//! With a `[grid]`, every run has a point of it (one value per axis, [`grid`]) and its name
//! shows the point: `{game}__{variant}__lr2.5e-4__s{seed}`. With `test_seeds` too, the grid is
//! the **tuning** stage, on `seeds` (alias `tune_seeds`); once every tuning run is done, each
//! variant's point is chosen by the rule of `[select]` ([`super::select`]) and recorded in the
//! plan, and the **test** stage runs each variant at its chosen point on the held-out
//! `test_seeds`, which the report's comparison then uses alone.
//!
//! The plan (`DIR/sweep.toml`) is the spec with the base config resolved once (every key, the
//! overrides applied) and the grid written out; each run is `DIR/runs/NAME` with its config in
//! `DIR/configs/NAME.toml`. A sweep folder holds one plan: running another spec there is refused,
//! naming what differs (the `[slurm]` settings may change, and the choice of the tuning stage is
//! the folder's own).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use wndqn_agents::normalization::Variant;

use super::grid::Axis;
use crate::config::Config;

/// Seeds of a spec: a count (`5` = 1..=5) or a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Seeds {
    /// 1..=n.
    Count(u64),
    /// These seeds.
    List(Vec<u64>),
}

/// `[sweep]` of a spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SweepTable {
    /// The base config, relative to the spec file.
    pub base: PathBuf,
    /// Env ids.
    pub games: Vec<String>,
    /// Variant names.
    pub variants: Vec<String>,
    /// Seeds (of the tuning stage when `test_seeds` are given).
    #[serde(alias = "tune_seeds")]
    pub seeds: Seeds,
    /// Held-out seeds: each variant runs on them at the grid point chosen on `seeds`.
    #[serde(default)]
    pub test_seeds: Option<Seeds>,
    /// `section.key=value` overrides for every run.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Checkpoints carry the replay memory.
    #[serde(default)]
    pub save_replay: bool,
}

impl SweepTable {
    /// The seeds of the tuning (or only) stage and of the test stage, written out; refused when
    /// the runs would be more than a sweep may plan.
    fn expand(&self, grid: &[Axis]) -> std::result::Result<(Vec<u64>, Vec<u64>), String> {
        let count = |s: &Seeds| match s {
            Seeds::Count(n) => *n as u128,
            Seeds::List(v) => v.len() as u128,
        };
        let n_points: u128 = grid.iter().map(|a| a.values.len() as u128).product();
        let cells = self.games.len() as u128 * self.variants.len() as u128;
        let size = cells * (n_points * count(&self.seeds) + self.test_seeds.as_ref().map_or(0, count));
        if size > MAX_RUNS as u128 {
            return Err(format!(
                "the sweep has {} games x {} variants x ({n_points} grid points x {} seeds{}) = {size} runs, more than the {MAX_RUNS} a sweep may plan: split it into several sweeps",
                self.games.len(),
                self.variants.len(),
                count(&self.seeds),
                self.test_seeds.as_ref().map(|t| format!(" + {} test seeds", count(t))).unwrap_or_default()
            ));
        }
        let list = |s: &Seeds| -> Vec<u64> {
            match s {
                Seeds::Count(n) => (1..=*n).collect(),
                Seeds::List(v) => v.clone(),
            }
        };
        Ok((list(&self.seeds), self.test_seeds.as_ref().map(list).unwrap_or_default()))
    }
}

/// `[slurm]`: what `--executor slurm` asks sbatch for. Unset fields: the cluster's defaults, or
/// (cpus, memory) what the run's config needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SlurmTable {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time` (e.g. `24:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task` (default: actors + 2).
    pub cpus_per_task: Option<u32>,
    /// `--gpus-per-task` (default: none).
    pub gpus_per_task: Option<u32>,
    /// `--mem` (default: the run's memory estimate plus 2 GB).
    pub mem: Option<String>,
    /// Array tasks running at once (`--array=...%K`; default: all).
    pub max_parallel: Option<u32>,
    /// `--signal` (default `B:USR1@120`: two minutes before the time limit the task script
    /// stops the run cleanly and requeues itself).
    pub signal: Option<String>,
    /// Further sbatch options, as written on its command line.
    #[serde(default)]
    pub extra: Vec<String>,
}

impl SlurmTable {
    /// Every value that reaches the task script's `#SBATCH` lines must be one word in Slurm's own
    /// syntax: no spaces, quotes, `$`, backticks, `;` or control characters can reach sbatch or
    /// bash from a spec.
    pub fn validate(&self) -> Result<()> {
        let word = |c: char| c.is_ascii_alphanumeric() || "_.,+-".contains(c);
        let check = |key: &str, v: &Option<String>, ok: &dyn Fn(&str) -> bool, form: &str| -> Result<()> {
            match v {
                Some(v) if v.is_empty() || v.len() > 200 || !ok(v) => {
                    bail!("{key} = {:?} is not {form}", v.chars().take(80).collect::<String>())
                }
                _ => Ok(()),
            }
        };
        let name = |v: &str| v.chars().all(word);
        check("partition", &self.partition, &name, "a partition name (letters, digits, _ . , + -)")?;
        check("account", &self.account, &name, "an account name (letters, digits, _ . , + -)")?;
        check("qos", &self.qos, &name, "a QOS name (letters, digits, _ . , + -)")?;
        let time = |v: &str| v.chars().all(|c| c.is_ascii_digit() || c == ':' || c == '-');
        check("time", &self.time, &time, "a Slurm time (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)")?;
        let mem = |v: &str| {
            let digits = v.trim_end_matches(['K', 'M', 'G', 'T']);
            !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && v.len() - digits.len() <= 1
        };
        check("mem", &self.mem, &mem, "a memory size (a number with an optional K, M, G or T)")?;
        let signal = |v: &str| {
            let body = v.strip_prefix("B:").or_else(|| v.strip_prefix("R:")).unwrap_or(v);
            let (sig, at) = body.split_once('@').unwrap_or((body, "0"));
            !sig.is_empty() && sig.chars().all(|c| c.is_ascii_alphanumeric()) && at.chars().all(|c| c.is_ascii_digit())
        };
        check("signal", &self.signal, &signal, "a Slurm signal spec like B:USR1@120")?;
        for e in &self.extra {
            let (flag, value) = e.split_once('=').unwrap_or((e, ""));
            let flag_ok = flag.starts_with("--")
                && flag.len() > 2
                && flag[2..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let value_ok = value.chars().all(|c| word(c) || ":=@%/&|!*".contains(c));
            if !flag_ok || !value_ok || e.len() > 200 {
                bail!(
                    "extra = {:?}: each entry is one sbatch option `--name` or `--name=value` (value: letters, digits and _ . , + - : = @ % / & | ! *; no spaces, quotes, $ or ;)",
                    e.chars().take(80).collect::<String>()
                );
            }
        }
        Ok(())
    }
}

/// A non-Atari game's score range for the report: `[random, reference]`, or `[random, "best
/// plain"]`, where the reference is the best score of the sweep's `plain` runs on that game (for
/// games without a published reference; the report says so).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ScoreRange {
    /// Both ends given.
    Fixed([f64; 2]),
    /// The random score, and the best plain-DQN score of the sweep.
    BestPlain(f64, BestPlain),
}

/// The word `"best plain"` in a [`ScoreRange`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub enum BestPlain {
    /// `"best plain"`.
    #[serde(rename = "best plain")]
    BestPlain,
}

/// A sweep spec file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The grid.
    pub sweep: SweepTable,
    /// Grid axes: config keys with lists of values.
    #[serde(default)]
    pub grid: toml::Table,
    /// How the tuning stage chooses each variant's point.
    #[serde(default)]
    pub select: Select,
    /// Score ranges of non-Atari games for the report.
    #[serde(default)]
    pub normalize: BTreeMap<String, ScoreRange>,
    /// Slurm settings.
    #[serde(default)]
    pub slurm: SlurmTable,
}

/// `[select]`: how each variant's point of the grid is chosen on the tuning seeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// The statistic maximized: `iqm`, the IQM of the normalized final score of the tuning runs
    /// over all games (rliable's aggregate IQM).
    #[serde(default)]
    pub rule: SelectRule,
    /// Choose per game instead of one point shared across games.
    #[serde(default)]
    pub per_game: bool,
}

/// The statistic a point is chosen by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectRule {
    /// The IQM of the normalized final scores, pooled over the games (and tuning seeds).
    #[default]
    Iqm,
}

/// Which stage a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The grid on the (tuning) seeds.
    Tune,
    /// A variant at its chosen point on a held-out seed.
    Test,
}

/// A choice of the tuning stage: a variant's point (on one game, or all).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// The variant.
    pub variant: Variant,
    /// The game it was chosen for (none: shared by all games).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game: Option<String>,
    /// The point, one value per axis.
    pub point: Vec<toml::Value>,
    /// Its statistic on the tuning seeds.
    pub score: f64,
}

/// One run of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// `{game}__{variant}[__{point}]__s{seed}`: its folder and config name.
    pub name: String,
    /// The env id as the spec gives it.
    pub game: String,
    /// The game's short name (`Pong`).
    pub game_name: String,
    /// Variant.
    pub variant: Variant,
    /// Its point of the grid (empty without one).
    pub point: Vec<toml::Value>,
    /// Seed.
    pub seed: u64,
    /// Its stage.
    pub stage: Stage,
}

/// `DIR/sweep.toml`: the spec expanded, with the base config resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The sweep's name (the spec file's stem).
    pub name: String,
    /// Env ids.
    pub games: Vec<String>,
    /// Variants.
    pub variants: Vec<Variant>,
    /// Seeds, written out (of the tuning stage when there are test seeds).
    pub seeds: Vec<u64>,
    /// Held-out seeds of the test stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_seeds: Vec<u64>,
    /// Grid axes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grid: Vec<Axis>,
    /// The tuning stage's rule.
    #[serde(default, skip_serializing_if = "is_default")]
    pub select: Select,
    /// The tuning stage's choices, once made (the folder's own: not part of the spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chosen: Vec<Choice>,
    /// The overrides the base config got.
    pub sets: Vec<String>,
    /// Checkpoints carry the replay memory.
    pub save_replay: bool,
    /// Score ranges of non-Atari games.
    #[serde(default)]
    pub normalize: BTreeMap<String, ScoreRange>,
    /// Slurm settings.
    #[serde(default)]
    pub slurm: SlurmTable,
    /// The base config, resolved (every key).
    pub base: Config,
}

/// The most runs one sweep may plan (the Atari-57 x 4 variants x 40 seeds fit).
pub const MAX_RUNS: usize = 10_000;

/// The file of a sweep folder's plan.
pub const PLAN: &str = "sweep.toml";

impl Plan {
    /// Read and check a spec, and expand it. Errors name the spec file and what is wrong: an
    /// unknown game or variant (with suggestions), an empty grid, a duplicate run, a bad axis, a
    /// key the base config does not have, a run whose config cannot work.
    pub fn from_spec(path: &Path) -> Result<Plan> {
        let text = crate::util::read_text_file(path, "sweep spec")?;
        let spec: Spec = toml::from_str(&text).map_err(|e| crate::config::toml_error(path, &text, &e))?;
        let s = &spec.sweep;
        let at = |what: String| anyhow!("{}: {what}", path.display());
        let base_path = path.parent().unwrap_or(Path::new(".")).join(&s.base);
        let base =
            crate::config::load(&base_path, &s.sets).map_err(|e| at(format!("sweep.base / sweep.sets: {e:#}")))?;
        let grid = super::grid::axes(&spec.grid).map_err(|e| at(format!("{e:#}")))?;
        let (seeds, test_seeds) = s.expand(&grid).map_err(at)?;
        if s.games.is_empty() || s.variants.is_empty() || seeds.is_empty() {
            return Err(at(
                "the sweep has no runs: sweep.games, sweep.variants and sweep.seeds must each name at least one".into(),
            ));
        }
        let mut names = BTreeMap::new();
        for g in &s.games {
            let short = wndqn_envs::ids::short_name(g).map_err(|e| at(format!("sweep.games: {e}")))?;
            if let Some(other) = names.insert(short.clone(), g) {
                return Err(at(format!("sweep.games names {short} twice (`{other}` and `{g}`)")));
            }
        }
        let variants = parse_variants(&s.variants).map_err(|e| at(format!("{e:#}")))?;
        if let Some(d) = s.games.iter().enumerate().find(|(i, x)| s.games[..*i].contains(x)) {
            return Err(at(format!("sweep.games lists `{}` twice", d.1)));
        }
        for (what, list) in [("seeds", &seeds), ("test_seeds", &test_seeds)] {
            if let Some(d) = list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)) {
                return Err(at(format!("sweep.{what} lists {} twice", d.1)));
            }
        }
        check_stages(s, &grid, &seeds, &test_seeds, &spec.normalize).map_err(at)?;
        spec.slurm.validate().map_err(|e| at(format!("[slurm] {e}")))?;
        for g in spec.normalize.keys() {
            if !s.games.contains(g) {
                return Err(at(format!("normalize.\"{g}\" is not one of sweep.games")));
            }
        }
        let plan = Plan {
            name: path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            games: s.games.clone(),
            variants,
            seeds,
            sets: s.sets.clone(),
            save_replay: s.save_replay,
            test_seeds,
            grid,
            select: spec.select.clone(),
            chosen: Vec::new(),
            normalize: spec.normalize.clone(),
            slurm: spec.slurm.clone(),
            base,
        };
        // Each point once on the first game and variant: an axis value of the wrong type or out
        // of bounds is named with its axis; then every run.
        for point in super::grid::points(&plan.grid) {
            plan.config_at(&plan.games[0], plan.variants[0], &point, plan.seeds[0])
                .map_err(|e| at(format!("grid point {}: {e:#}", super::grid::sets(&plan.grid, &point).join(", "))))?;
        }
        for r in plan.runs() {
            plan.config(&r).map_err(|e| at(format!("run {}: {e:#}", r.name)))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(r) = plan.runs().into_iter().find(|r| !seen.insert(r.name.clone())) {
            return Err(at(format!(
                "two runs would be named {}: give the grid values that differ in their short form",
                r.name
            )));
        }
        Ok(plan)
    }

    /// The runs: the tuning stage seed by seed (a partly finished sweep then has every game,
    /// variant and point of its first seeds), each seed game by game, variant by variant, point
    /// by point; then, once the tuning stage has chosen, the test stage seed by seed.
    pub fn runs(&self) -> Vec<RunSpec> {
        let mut out = Vec::new();
        let points = super::grid::points(&self.grid);
        for &seed in &self.seeds {
            for game in &self.games {
                for &variant in &self.variants {
                    for point in &points {
                        out.push(self.run(game, variant, point.clone(), seed, Stage::Tune));
                    }
                }
            }
        }
        for &seed in &self.test_seeds {
            for game in &self.games {
                for &variant in &self.variants {
                    if let Some(c) = self.choice(variant, game) {
                        out.push(self.run(game, variant, c.point.clone(), seed, Stage::Test));
                    }
                }
            }
        }
        out
    }

    fn run(&self, game: &str, variant: Variant, point: Vec<toml::Value>, seed: u64, stage: Stage) -> RunSpec {
        let game_name = wndqn_envs::ids::short_name(game).unwrap_or_else(|_| game.to_string());
        let label = super::grid::label(&self.grid, &point);
        let at = if label.is_empty() { String::new() } else { format!("__{label}") };
        RunSpec {
            name: format!("{game_name}__{}{at}__s{seed}", variant.name()),
            game: game.to_string(),
            game_name,
            variant,
            point,
            seed,
            stage,
        }
    }

    /// The chosen point of `variant` on `game` (its own, or the one shared by all games).
    pub fn choice(&self, variant: Variant, game: &str) -> Option<&Choice> {
        let mine = |c: &&Choice| c.variant == variant;
        self.chosen
            .iter()
            .filter(mine)
            .find(|c| c.game.as_deref() == Some(game))
            .or_else(|| self.chosen.iter().filter(mine).find(|c| c.game.is_none()))
    }

    /// Whether the plan has a test stage whose points are still to be chosen.
    pub fn needs_choice(&self) -> bool {
        !self.test_seeds.is_empty() && self.chosen.is_empty()
    }

    /// The config of one run: the base with its game, variant, point and seed, validated.
    pub fn config(&self, r: &RunSpec) -> Result<Config> {
        self.config_at(&r.game, r.variant, &r.point, r.seed)
    }

    fn config_at(&self, game: &str, variant: Variant, point: &[toml::Value], seed: u64) -> Result<Config> {
        let mut c = if self.grid.is_empty() {
            self.base.clone()
        } else {
            let mut t = toml::Table::try_from(&self.base)?;
            crate::config::apply_sets(&mut t, &super::grid::sets(&self.grid, point))?;
            crate::config::from_table(t, "the grid point")?
        };
        c.env.id = game.to_string();
        c.agent.variant = variant;
        c.run.seed = seed;
        c.validate()?;
        Ok(c)
    }

    /// The plan as its file holds it.
    pub fn to_toml(&self) -> Result<String> {
        Ok(format!(
            "# The plan of this sweep folder, written by `wndqn sweep run`: the spec with its base config\n# resolved. Runs: runs/, their configs: configs/, their output: logs/.\n{}",
            toml::to_string_pretty(self)?
        ))
    }

    /// Read a sweep folder's plan.
    pub fn read(dir: &Path) -> Result<Plan> {
        let p = dir.join(PLAN);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "{} is not a sweep folder (no {PLAN}: make one with `wndqn sweep run SPEC --dir DIR`)",
                dir.display()
            )
        })?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| crate::config::toml_error(&p, &text, &e))?;
        // A plan written before the optimizer table (`config::migrate`).
        let migrated = table.get_mut("base").and_then(|b| b.as_table_mut()).is_some_and(crate::config::migrate);
        if migrated {
            Plan::deserialize(toml::Value::Table(table))
                .map_err(|e| anyhow!("{}: {}", p.display(), crate::util::clip(&e.to_string(), 300)))
        } else {
            toml::from_str(&text).map_err(|e| crate::config::toml_error(&p, &text, &e))
        }
    }

    /// The keys in which two plans differ (the Slurm settings and the tuning stage's choices
    /// aside).
    pub fn differences(&self, other: &Plan) -> Result<Vec<String>> {
        let flat = |p: &Plan| -> Result<BTreeMap<String, String>> {
            let mut v = Vec::new();
            let mut p = p.clone();
            p.slurm = SlurmTable::default();
            p.chosen.clear();
            crate::config::flatten("", &toml::Value::try_from(&p)?, &mut v);
            Ok(v.into_iter().map(|(k, v)| (k, v.to_string())).collect())
        };
        let (a, b) = (flat(self)?, flat(other)?);
        Ok(a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Every run folder already in `dir` was trained with this plan's config for it (up to the
    /// keys a resume may change): a folder whose plan file was removed or replaced must not have
    /// runs of another config counted as this plan's.
    /// A run folder holds its config as training resolved it (`env.resolve`: MinAtar's and
    /// Atari's ids set `env.full_action_space` and other family defaults), so the plan's config
    /// of the run is resolved the same way before the two are compared; `rom_dir` as for
    /// training.
    fn check_run_configs(&self, dir: &Path, rom_dir: Option<&Path>) -> Result<()> {
        use crate::run::dir::fixed_keys;
        let mut resolved: BTreeMap<String, wndqn_envs::EnvConfig> = BTreeMap::new();
        for r in self.runs() {
            let path = dir.join("runs").join(&r.name).join("config.toml");
            if !path.exists() {
                continue;
            }
            let trained = crate::config::load(&path, &[])
                .with_context(|| format!("{} holds run {} whose config cannot be read", dir.display(), r.name))?;
            let mut want = self.config(&r)?;
            if !resolved.contains_key(&r.game) {
                resolved.insert(r.game.clone(), want.env.resolve(rom_dir)?.1);
            }
            want.env = resolved[&r.game].clone();
            let fixed = fixed_keys(&trained, &want)?;
            if !fixed.is_empty() {
                bail!(
                    "{} holds run {} trained with another config than this sweep's: {} differ ({}). Use another --dir, or run the sweep that made it",
                    dir.display(),
                    r.name,
                    fixed.join(", "),
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// The plan `dir` holds when it is this one (none when `dir` holds no plan); an error naming
    /// the keys that differ (then `hint`) when it holds another sweep's, or one that cannot be read.
    pub fn check_same(&self, dir: &Path, hint: &str) -> Result<Option<Plan>> {
        match Plan::read(dir) {
            Ok(old) => {
                let diff = self.differences(&old)?;
                if !diff.is_empty() {
                    let hint = if hint.is_empty() { String::new() } else { format!(". {hint}") };
                    bail!(
                        "{} holds another sweep ({}): its plan differs in {}{hint}",
                        dir.display(),
                        old.name,
                        diff.join(", ")
                    );
                }
                Ok(Some(old))
            }
            Err(_) if dir.join(PLAN).exists() => {
                bail!("{}/{PLAN} cannot be read; it is not a plan of this wndqn", dir.display())
            }
            Err(_) => Ok(None),
        }
    }

    /// Write the plan and every run's config into `dir`; refuse a folder holding another plan,
    /// or runs of another config. The folder's choices of a tuning stage are kept: the plan
    /// returned has them.
    pub fn install(&self, dir: &Path, rom_dir: Option<&Path>) -> Result<Plan> {
        let mut plan = self.clone();
        if let Some(old) = self.check_same(dir, "Use another --dir, or run that sweep's own spec")? {
            plan.chosen = old.chosen;
        }
        plan.write(dir, rom_dir)?;
        Ok(plan)
    }

    /// Write the plan and every run's config into `dir` (checked by [`Plan::install`]).
    pub fn write(&self, dir: &Path, rom_dir: Option<&Path>) -> Result<()> {
        self.check_run_configs(dir, rom_dir)?;
        for sub in ["runs", "configs", "logs", "failed"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        for r in self.runs() {
            let text = self.config(&r)?.to_toml();
            crate::run::dir::write_atomic(&dir.join("configs").join(format!("{}.toml", r.name)), text.as_bytes())?;
        }
        crate::run::dir::write_atomic(&dir.join(PLAN), self.to_toml()?.as_bytes())
    }
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// Variant names, each known (with suggestions) and once.
fn parse_variants(names: &[String]) -> Result<Vec<Variant>> {
    let known: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
    let mut out = Vec::new();
    for v in names {
        let Some(variant) = Variant::from_name(v) else {
            let near = wndqn_envs::roms::suggestions(v, known.iter().copied());
            let hint = if near.is_empty() { String::new() } else { format!(" Did you mean: {}?", near.join(", ")) };
            bail!("sweep.variants: unknown variant `{v}`.{hint} Variants: {}", known.join(", "));
        };
        if out.contains(&variant) {
            bail!("sweep.variants lists `{v}` twice");
        }
        out.push(variant);
    }
    Ok(out)
}

/// A test stage needs a grid to choose from, seeds of its own, and fixed score ranges (a range
/// made from the sweep's own runs would move the choice whenever a run is added).
fn check_stages(
    s: &SweepTable,
    grid: &[Axis],
    seeds: &[u64],
    test_seeds: &[u64],
    normalize: &BTreeMap<String, ScoreRange>,
) -> std::result::Result<(), String> {
    if s.test_seeds.is_none() {
        return Ok(());
    }
    if test_seeds.is_empty() {
        return Err("sweep.test_seeds lists no seed: leave it out, or name the held-out seeds".into());
    }
    if grid.is_empty() {
        return Err(
            "sweep.test_seeds: a test stage judges the grid point chosen on sweep.seeds, and this spec has no [grid]"
                .into(),
        );
    }
    if let Some(x) = test_seeds.iter().find(|x| seeds.contains(x)) {
        return Err(format!(
            "seed {x} is in both sweep.seeds (tuning) and sweep.test_seeds (held out): the two must not share a seed"
        ));
    }
    for g in &s.games {
        let atari = wndqn_envs::ids::rom_name(g)
            .ok()
            .flatten()
            .is_some_and(|rom| super::atari_scores::random_human(&rom).is_some());
        match normalize.get(g) {
            Some(ScoreRange::Fixed(_)) => {}
            None if atari => {}
            Some(ScoreRange::BestPlain(..)) => {
                return Err(format!("normalize.\"{g}\": a sweep with test_seeds chooses by normalized scores, which need a fixed reference, not \"best plain\" (it moves whenever a run is added): write [random, reference]"));
            }
            None => {
                return Err(format!("normalize: {g} needs a fixed [random, reference] range: a sweep with test_seeds chooses by normalized scores"));
            }
        }
    }
    Ok(())
}

/// A spec file `s.toml` of `text` beside a copy of the preset `configs/{preset}` as `base.toml`.
#[cfg(test)]
pub fn test_spec(preset: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(crate::config::presets_dir().join(preset), d.path().join("base.toml")).unwrap();
    let p = d.path().join("s.toml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> (tempfile::TempDir, PathBuf) {
        test_spec("cartpole.toml", text)
    }

    const GOOD: &str = "[sweep]\nbase = \"base.toml\"\ngames = [\"CartPole-v1\"]\nvariants = [\"plain\", \"weight_norm\"]\nseeds = 3\nsets = [\"run.total_env_steps=5000\"]\n";

    #[test]
    fn a_spec_expands_to_runs_with_fixed_names_seed_by_seed() {
        let (_d, p) = spec(GOOD);
        let plan = Plan::from_spec(&p).unwrap();
        let names: Vec<String> = plan.runs().into_iter().map(|r| r.name).collect();
        assert_eq!(names[..3], ["CartPole__plain__s1", "CartPole__weight_norm__s1", "CartPole__plain__s2"]);
        assert_eq!(names.len(), 6);
        assert_eq!(plan.base.run.total_env_steps, 5000);
        let c = plan.config(&plan.runs()[3]).unwrap();
        assert_eq!((c.run.seed, c.agent.variant), (2, Variant::WeightNorm));
    }

    const GRID: &str = "[sweep]\nbase = \"base.toml\"\ngames = [\"CartPole-v1\"]\nvariants = [\"plain\", \"layer_norm\"]\ntune_seeds = [1, 2]\ntest_seeds = [3, 4, 5]\n\n[grid]\n\"agent.lr\" = [1e-4, 2.5e-4, 1e-3]\n\n[normalize]\n\"CartPole-v1\" = [22.0, 500.0]\n";

    #[test]
    fn a_grid_crosses_every_key_with_games_variants_and_seeds_and_the_test_stage_waits_for_the_choice() {
        let (_d, p) = spec(GRID);
        let mut plan = Plan::from_spec(&p).unwrap();
        let runs = plan.runs();
        assert_eq!(runs.len(), 2 * 3 * 2, "tuning runs only until the choice");
        assert_eq!(runs[1].name, "CartPole__plain__lr2.5e-4__s1");
        assert_eq!(runs[5].name, "CartPole__layer_norm__lr1e-3__s1");
        let c = plan.config(&runs[5]).unwrap();
        assert_eq!((c.agent.lr, c.agent.variant, c.run.seed), (1e-3, Variant::LayerNorm, 1));
        assert!(plan.needs_choice());
        plan.chosen = vec![
            Choice { variant: Variant::Plain, game: None, point: vec![toml::Value::Float(1e-4)], score: 0.5 },
            Choice { variant: Variant::LayerNorm, game: None, point: vec![toml::Value::Float(1e-3)], score: 0.7 },
        ];
        let runs = plan.runs();
        let test: Vec<&RunSpec> = runs.iter().filter(|r| r.stage == Stage::Test).collect();
        assert_eq!(test.len(), 2 * 3);
        assert_eq!(test[0].name, "CartPole__plain__lr1e-4__s3");
        assert_eq!(test[1].name, "CartPole__layer_norm__lr1e-3__s3");
        assert_eq!(plan.config(test[1]).unwrap().agent.lr, 1e-3);
        // The folder's choice is its own: the same spec again keeps it, and is the same plan.
        let dir = p.parent().unwrap().join("sweep");
        plan.write(&dir, None).unwrap();
        let again = Plan::from_spec(&p).unwrap().install(&dir, None).unwrap();
        assert_eq!(again.chosen, plan.chosen);
        assert!(dir.join("configs/CartPole__layer_norm__lr1e-3__s5.toml").is_file());
    }

    #[test]
    fn bad_grids_and_stages_are_named_errors() {
        for (text, want) in [
            (GRID.replace("[1e-4, 2.5e-4, 1e-3]", "[]"), "lists no value"),
            (GRID.replace("[1e-4, 2.5e-4, 1e-3]", "[1e-4, 1e-4]"), "lists 0.0001 twice"),
            (GRID.replace("\"agent.lr\"", "\"agent.lrr\""), "unknown field `lrr`"),
            (GRID.replace("\"agent.lr\"", "\"agnt.lr\""), "unknown field `agnt`"),
            (GRID.replace("[1e-4, 2.5e-4, 1e-3]", "[1e-4, \"fast\"]"), "invalid type: string \"fast\""),
            (GRID.replace("[1e-4, 2.5e-4, 1e-3]", "[1e-4, -1.0]"), "agent.lr"),
            (GRID.replace("\"agent.lr\"", "\"agent.variant\""), "sweep.variants"),
            (GRID.replace("test_seeds = [3, 4, 5]", "test_seeds = [2, 3]"), "seed 2 is in both"),
            (GRID.replace("test_seeds = [3, 4, 5]", "test_seeds = []"), "lists no seed"),
            (GRID.replace("[22.0, 500.0]", "[22.0, \"best plain\"]"), "fixed reference"),
            (GRID.replace("[grid]\n\"agent.lr\" = [1e-4, 2.5e-4, 1e-3]\n", ""), "has no [grid]"),
            (GRID.replace("[normalize]\n\"CartPole-v1\" = [22.0, 500.0]\n", ""), "needs a fixed [random, reference]"),
            (GRID.replace("[1e-4, 2.5e-4, 1e-3]", "[0.001, 1e-3]"), "twice"),
        ] {
            let (_d, p) = spec(&text);
            let e = format!("{:#}", Plan::from_spec(&p).expect_err(&text));
            assert!(e.contains(want) && e.contains("s.toml"), "expected `{want}` in: {e}");
        }
    }

    #[test]
    fn slurm_values_are_one_word_of_slurm_syntax_or_refused() {
        let good = [
            "partition = \"gpu,cpu\"",
            "time = \"1-00:00:00\"",
            "mem = \"16G\"",
            "signal = \"B:USR1@120\"",
            "extra = [\"--constraint=a100&nvlink\", \"--exclusive\"]",
            "qos = \"normal\"",
            "account = \"lab_1\"",
        ];
        for g in good {
            let (_d, p) = spec(&format!("{GOOD}\n[slurm]\n{g}\n"));
            assert!(Plan::from_spec(&p).is_ok(), "{g}: {:#}", Plan::from_spec(&p).unwrap_err());
        }
        let nasty = [
            "local\ntouch /tmp/PWNED",
            "a b",
            "$(touch x)",
            "`id`",
            "a;b",
            "'q'",
            "\"q\"",
            "../x",
            "x\ty",
            "\u{7}",
            "",
        ];
        for key in ["partition", "account", "qos", "time", "mem", "signal"] {
            for v in nasty.iter().map(|s| s.to_string()).chain(["a".repeat(300)]) {
                let text = format!("{GOOD}\n[slurm]\n{key} = {}\n", toml::Value::String(v.clone()));
                let (_d, p) = spec(&text);
                let e = format!("{:#}", Plan::from_spec(&p).expect_err(&format!("{key} = {v:?} accepted")));
                assert!(e.contains(&format!("[slurm] {key}")), "{key} = {v:?}: {e}");
            }
        }
        for v in ["--comment=a b", "--x=$(id)", "-x", "--output=\"q\"", "--a;b", "--x\n#SBATCH --y"] {
            let text = format!("{GOOD}\n[slurm]\nextra = [{}]\n", toml::Value::String(v.to_string()));
            let (_d, p) = spec(&text);
            let e = format!("{:#}", Plan::from_spec(&p).expect_err(&format!("extra {v:?} accepted")));
            assert!(e.contains("[slurm] extra"), "{v:?}: {e}");
        }
    }

    #[test]
    fn bad_specs_are_named_errors() {
        for (text, want) in [
            (GOOD.replace("\"plain\"", "\"plian\""), "unknown variant `plian`. Did you mean: plain"),
            (GOOD.replace("CartPole-v1", "CartPol-v1"), "Did you mean: CartPole-v1"),
            (GOOD.replace("seeds = 3", "seeds = []"), "the sweep has no runs"),
            (GOOD.replace("seeds = 3", "seeds = [1, 1]"), "sweep.seeds lists 1 twice"),
            (GOOD.replace("[\"CartPole-v1\"]", "[\"CartPole-v1\", \"CartPole\"]"), "names CartPole twice"),
            (GOOD.replace("run.total_env_steps=5000", "agent.lrr=1"), "unknown field `lrr`"),
            (GOOD.replace("[\"CartPole-v1\"]", "[\"Pong\"]"), "set agent.network"),
            (GOOD.to_string() + "bogus = 1\n", "unknown field `bogus`"),
        ] {
            let (_d, p) = spec(&text);
            let e = format!("{:#}", Plan::from_spec(&p).unwrap_err());
            assert!(e.contains(want) && e.contains("s.toml"), "expected `{want}` in: {e}");
        }
    }

    #[test]
    fn a_folder_keeps_its_plan_and_names_what_another_changes() {
        let (d, p) = spec(GOOD);
        let dir = d.path().join("sweep");
        let plan = Plan::from_spec(&p).unwrap();
        plan.install(&dir, None).unwrap();
        assert_eq!(Plan::read(&dir).unwrap(), plan);
        plan.install(&dir, None).expect("the same plan again");
        let mut slurm = plan.clone();
        slurm.slurm.time = Some("1:00:00".into());
        slurm.install(&dir, None).expect("Slurm settings may change");
        let (_d2, p2) = spec(&GOOD.replace("seeds = 3", "seeds = 4").replace("5000", "6000"));
        let e = format!("{:#}", Plan::from_spec(&p2).unwrap().install(&dir, None).unwrap_err());
        assert!(e.contains("seeds") && e.contains("base.run.total_env_steps") && !e.contains("slurm"), "{e}");
        assert!(dir.join("configs/CartPole__plain__s3.toml").is_file());
    }
}
