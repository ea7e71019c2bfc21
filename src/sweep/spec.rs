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
//! The plan (`DIR/sweep.toml`) is the spec with the base config resolved once (every key, the
//! overrides applied) and the grid written out; each run of the grid is
//! `DIR/runs/{game}__{variant}__s{seed}` with its config in `DIR/configs/`. A sweep folder holds
//! one plan: running another spec there is refused, naming what differs (the `[slurm]` settings
//! may change).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use wndqn_agents::qnet::Variant;

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
    /// Seeds.
    pub seeds: Seeds,
    /// `section.key=value` overrides for every run.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Checkpoints carry the replay memory.
    #[serde(default)]
    pub save_replay: bool,
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
    /// Score ranges of non-Atari games for the report.
    #[serde(default)]
    pub normalize: BTreeMap<String, ScoreRange>,
    /// Slurm settings.
    #[serde(default)]
    pub slurm: SlurmTable,
}

/// One run of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// `{game}__{variant}__s{seed}`: its folder and config name.
    pub name: String,
    /// The env id as the spec gives it.
    pub game: String,
    /// The game's short name (`Pong`).
    pub game_name: String,
    /// Variant name.
    pub variant: String,
    /// Seed.
    pub seed: u64,
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
    pub variants: Vec<String>,
    /// Seeds, written out.
    pub seeds: Vec<u64>,
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
    /// unknown game or variant (with suggestions), an empty grid, a duplicate run, a key the base
    /// config does not have, a run whose config cannot work.
    pub fn from_spec(path: &Path) -> Result<Plan> {
        let text = crate::util::read_text_file(path, "sweep spec")?;
        let spec: Spec = toml::from_str(&text).map_err(|e| crate::config::toml_error(path, &text, &e))?;
        let s = &spec.sweep;
        let at = |what: String| anyhow!("{}: {what}", path.display());
        let base_path = path.parent().unwrap_or(Path::new(".")).join(&s.base);
        let base =
            crate::config::load(&base_path, &s.sets).map_err(|e| at(format!("sweep.base / sweep.sets: {e:#}")))?;
        let n_seeds = match &s.seeds {
            Seeds::Count(n) => *n as u128,
            Seeds::List(v) => v.len() as u128,
        };
        let size = s.games.len() as u128 * s.variants.len() as u128 * n_seeds;
        if size > MAX_RUNS as u128 {
            return Err(at(format!(
                "the sweep has {} games x {} variants x {} seeds = {size} runs, more than the {MAX_RUNS} a sweep may plan: split it into several sweeps",
                s.games.len(),
                s.variants.len(),
                n_seeds
            )));
        }
        let seeds: Vec<u64> = match &s.seeds {
            Seeds::Count(n) => (1..=*n).collect(),
            Seeds::List(v) => v.clone(),
        };
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
        let known: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        for v in &s.variants {
            if Variant::from_name(v).is_none() {
                let near = wndqn_envs::roms::suggestions(v, known.iter().copied());
                let hint = if near.is_empty() { String::new() } else { format!(" Did you mean: {}?", near.join(", ")) };
                return Err(at(format!("sweep.variants: unknown variant `{v}`.{hint} Variants: {}", known.join(", "))));
            }
        }
        for (what, list) in [("games", &s.games), ("variants", &s.variants)] {
            if let Some(d) = list.iter().enumerate().find(|(i, x)| list[..*i].contains(x)) {
                return Err(at(format!("sweep.{what} lists `{}` twice", d.1)));
            }
        }
        if let Some(d) = seeds.iter().enumerate().find(|(i, x)| seeds[..*i].contains(x)) {
            return Err(at(format!("sweep.seeds lists {} twice", d.1)));
        }
        spec.slurm.validate().map_err(|e| at(format!("[slurm] {e}")))?;
        for g in spec.normalize.keys() {
            if !s.games.contains(g) {
                return Err(at(format!("normalize.\"{g}\" is not one of sweep.games")));
            }
        }
        let plan = Plan {
            name: path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            games: s.games.clone(),
            variants: s.variants.clone(),
            seeds,
            sets: s.sets.clone(),
            save_replay: s.save_replay,
            normalize: spec.normalize.clone(),
            slurm: spec.slurm.clone(),
            base,
        };
        for r in plan.runs() {
            plan.config(&r).map_err(|e| at(format!("run {}: {e:#}", r.name)))?;
        }
        Ok(plan)
    }

    /// The runs, seed by seed (a partly finished sweep then has every game and variant of its
    /// first seeds), each seed game by game, variant by variant.
    pub fn runs(&self) -> Vec<RunSpec> {
        let mut out = Vec::new();
        for &seed in &self.seeds {
            for game in &self.games {
                let game_name = wndqn_envs::ids::short_name(game).unwrap_or_else(|_| game.clone());
                for variant in &self.variants {
                    let name = format!("{game_name}__{variant}__s{seed}");
                    out.push(RunSpec {
                        name,
                        game: game.clone(),
                        game_name: game_name.clone(),
                        variant: variant.clone(),
                        seed,
                    });
                }
            }
        }
        out
    }

    /// The config of one run: the base with its game, variant and seed, validated.
    pub fn config(&self, r: &RunSpec) -> Result<Config> {
        let mut c = self.base.clone();
        c.env.id = r.game.clone();
        c.agent.variant = Variant::from_name(&r.variant).ok_or_else(|| anyhow!("unknown variant {}", r.variant))?;
        c.run.seed = r.seed;
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
        toml::from_str(&text).map_err(|e| crate::config::toml_error(&p, &text, &e))
    }

    /// The keys in which two plans differ (the Slurm settings aside).
    pub fn differences(&self, other: &Plan) -> Result<Vec<String>> {
        let flat = |p: &Plan| -> Result<BTreeMap<String, String>> {
            let mut v = Vec::new();
            let mut p = p.clone();
            p.slurm = SlurmTable::default();
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
    /// or runs of another config.
    pub fn install(&self, dir: &Path, rom_dir: Option<&Path>) -> Result<()> {
        self.check_same(dir, "Use another --dir, or run that sweep's own spec")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        std::fs::copy(crate::config::presets_dir().join("cartpole.toml"), d.path().join("base.toml")).unwrap();
        let p = d.path().join("s.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
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
