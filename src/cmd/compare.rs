//! `wndqn compare`: launch variants over seeds and/or compare finished runs side by side.
//!
//! Per variant (over its seeds): final return (mean of the games that ended in the last 10% of
//! each run's env steps) with a 95% bootstrap confidence interval over seeds (over the final games
//! where a variant has one seed: the game-to-game noise), the interquartile
//! mean (IQM, Agarwal et al. 2021) of those final games pooled over seeds, the normalized area
//! under the return curve (mean return over training), env steps to reach a threshold (20-game
//! mean), updates/s and wall time. Written as Markdown and CSV tables and a PNG of the mean
//! curves with 95% bands, into `runs/comparisons/{env}__{time}/` (or, when launched, the
//! comparison's folder's `report/`). Launched runs go through the sweep's local executor.

use crate::util::{out, say};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use wndqn_agents::normalization::Variant;

use crate::plot::{line_plot, Series, PALETTE};
use crate::results::{self, RunResult};

/// `wndqn compare` flags.
#[derive(Debug, Args)]
pub struct CompareCmd {
    /// Finished run folders to compare (or none, with --config, to launch the runs first).
    pub runs: Vec<PathBuf>,
    /// Launch: the config every run uses.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Launch: comma-separated variants.
    #[arg(long, value_enum, default_value = "plain,weight_norm", value_delimiter = ',')]
    pub variants: Vec<Variant>,
    /// Launch: seeds per variant (run.seed, run.seed + 1, ...).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Launch: config overrides for every run (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Launch: parent folder of the comparison folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Launch: the comparison's folder, a sweep folder (`runs/NAME/` per run): the same command
    /// continues it after a stop. Default: RUNS_DIR/comparisons/{config stem}.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Launch: runs at once (default: from the cores and the memory, as `sweep run`).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Return the 20-game mean must reach for "steps to threshold" (default: 195 on CartPole).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Compare runs of different environments anyway (their returns are not comparable).
    #[arg(long)]
    pub allow_mixed_envs: bool,
    /// Also compare runs that did not finish (interrupted or failed), marked as such; they are
    /// refused otherwise (finish them with `wndqn train --resume RUN`).
    #[arg(long)]
    pub allow_unfinished: bool,
    /// Output folder (default: the comparison's folder's report/ when launched, else
    /// comparisons/{env}__{time} beside the first run folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also plot this scalar tag per variant over training, with the return's bands
    /// (`diag/feature_rank`, `diag/relative_update/fc1`, `losses/td_loss`, ...; repeatable):
    /// `tag_<tag>.png` and `tags.csv`.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Launch: no progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

use crate::results::{binned, mean_curve, BINS};
use crate::stats::{avg as mean, mean_interval};

fn final_window(r: &RunResult) -> Vec<f64> {
    crate::results::final_window(&r.returns, r.total_steps)
}

fn steps_to(r: &RunResult, t: f64) -> Option<u64> {
    (20..=r.returns.len())
        .find(|&i| mean(&r.returns[i - 20..i].iter().map(|x| x.1).collect::<Vec<_>>()) >= t)
        .map(|i| r.returns[i - 1].0)
}

/// Train every variant x seed of `--config` as a sweep of one game in `--dir` (the sweep's local
/// executor: `--jobs` runs at a time, resumable, failures recorded); returns the finished run
/// folders (fewer after a Ctrl-C) and the comparison's folder.
fn launch(
    cmd: &CompareCmd,
    cfg: &Path,
    device: crate::device::DeviceArg,
    rom_dir: Option<&Path>,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    use crate::sweep::{local, spec::Plan};
    let base = crate::config::load(cfg, &cmd.sets)?;
    let stem = cfg.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let plan = Plan {
        name: format!("compare-{stem}"),
        games: vec![base.env.id.clone()],
        variants: cmd.variants.clone(),
        seeds: (base.run.seed..base.run.seed + cmd.seeds).collect(),
        test_seeds: Vec::new(),
        grid: Vec::new(),
        select: Default::default(),
        chosen: Vec::new(),
        sets: cmd.sets.clone(),
        save_replay: false,
        normalize: Default::default(),
        slurm: Default::default(),
        base,
    };
    for r in plan.runs() {
        plan.config(&r).with_context(|| format!("run {}", r.name))?;
    }
    let dir = cmd.dir.clone().unwrap_or_else(|| cmd.runs_dir.join("comparisons").join(&stem));
    let plan = plan.install(&dir, rom_dir)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let opts = local::LocalOptions {
        jobs: cmd.jobs,
        retry_failed: false,
        quiet: cmd.quiet,
        device,
        rom_dir: rom_dir.map(Path::to_path_buf),
    };
    local::run(&dir, &plan, &opts)?;
    let done: Vec<PathBuf> = plan
        .runs()
        .iter()
        .map(|r| dir.join("runs").join(&r.name))
        .filter(|d| crate::run::summary::read(d).is_ok_and(|s| s.complete))
        .collect();
    if crate::signals::interrupted() {
        say!("interrupted: comparing the {} finished run(s)", done.len());
    }
    Ok((done, Some(dir)))
}

/// One variant's numbers over its seeds.
struct Row {
    seeds: usize,
    mean: f64,
    ci: (f64, f64),
    iqm: f64,
    auc: f64,
    /// Steps to the threshold of each seed that reached it.
    reached: Vec<u64>,
    updates_per_sec: f64,
    wall_secs: f64,
    curve: Series,
}

impl Row {
    fn new(label: &str, color: [u8; 3], rs: &[&RunResult], total: u64, threshold: Option<f64>) -> Row {
        let finals: Vec<f64> = rs.iter().map(|r| mean(&final_window(r))).collect();
        let pooled: Vec<f64> = rs.iter().flat_map(|r| final_window(r)).collect();
        let games: Vec<Vec<Vec<f64>>> = rs.iter().map(|r| binned(&r.returns, total)).collect();
        // Each run's return curve: the mean return of the games ending in each bin.
        let curves: Vec<Vec<f64>> = games.iter().map(|g| g.iter().map(|b| mean(b)).collect()).collect();
        // One seed has no spread over seeds: its interval and band are then over its games (the
        // game-to-game noise), as the table's header says.
        let by_seed: Vec<Vec<f64>>;
        let (ci_of, band_of): (&[f64], &[Vec<f64>]) = match games.as_slice() {
            [one] => (&pooled, one),
            _ => {
                by_seed = (0..BINS).map(|b| curves.iter().map(|c| c[b]).collect()).collect();
                (&finals, &by_seed)
            }
        };
        let finite_mean = |c: &Vec<f64>| mean(&c.iter().copied().filter(|x| x.is_finite()).collect::<Vec<_>>());
        let mut reached: Vec<u64> =
            threshold.map(|t| rs.iter().filter_map(|r| steps_to(r, t)).collect()).unwrap_or_default();
        reached.sort();
        Row {
            seeds: rs.len(),
            mean: mean(&finals),
            ci: mean_interval(ci_of, 7),
            iqm: if pooled.is_empty() { f64::NAN } else { crate::stats::trim_mean(&pooled, 0.25) },
            auc: mean(&curves.iter().map(finite_mean).collect::<Vec<_>>()),
            reached,
            updates_per_sec: mean(&rs.iter().map(|r| r.updates_per_sec).collect::<Vec<_>>()),
            wall_secs: mean(&rs.iter().map(|r| r.wall_secs).collect::<Vec<_>>()),
            curve: mean_curve(
                format!("{label} ({} seed{})", rs.len(), if rs.len() == 1 { "" } else { "s" }),
                color,
                band_of,
                total,
            ),
        }
    }

    fn median_reach(&self) -> Option<u64> {
        self.reached.get(self.reached.len() / 2).copied().filter(|_| !self.reached.is_empty())
    }

    fn markdown(&self, v: &str, threshold: Option<f64>) -> String {
        let reach = match (threshold, self.median_reach()) {
            (None, _) => "-".to_string(),
            (Some(_), None) => format!("not reached (0/{})", self.seeds),
            (Some(_), Some(s)) => format!("{s} ({}/{})", self.reached.len(), self.seeds),
        };
        let (m, (lo, hi)) = (self.mean, self.ci);
        format!(
            "| {v} | {} | {m:.2} | [{lo:.2}, {hi:.2}] | {:.2} | {:.2} | {reach} | {:.1} | {:.0}s |\n",
            self.seeds, self.iqm, self.auc, self.updates_per_sec, self.wall_secs
        )
    }

    fn csv(&self, v: &str) -> String {
        let reach = self.median_reach().map(|s| s.to_string()).unwrap_or_default();
        let (m, (lo, hi)) = (self.mean, self.ci);
        format!(
            "{v},{},{m},{lo},{hi},{},{},{reach},{},{},{}\n",
            self.seeds,
            self.iqm,
            self.auc,
            self.reached.len(),
            self.updates_per_sec,
            self.wall_secs
        )
    }
}

/// One figure per `--tag` (every variant that has the tag, its band over seeds) and their
/// points in `tags.csv`; returns the files' names for the listing.
fn write_tags(
    out: &Path,
    tags: &[String],
    env_name: &str,
    runs: &[RunResult],
    by_variant: &BTreeMap<String, Vec<&RunResult>>,
    total: u64,
) -> Result<String> {
    if tags.is_empty() {
        return Ok(String::new());
    }
    let mut csv = String::from("tag,variant,env_step,mean,band_low,band_high\n");
    let mut files = String::from(", tags.csv");
    for tag in tags {
        let curves: Vec<(&String, Series)> = by_variant
            .iter()
            .enumerate()
            .filter_map(|(i, (v, rs))| {
                results::tag_curve(v, PALETTE[i % PALETTE.len()], rs, tag, total).map(|c| (v, c))
            })
            .collect();
        if curves.is_empty() {
            return Err(results::unknown_tag(tag, &runs.iter().collect::<Vec<_>>()));
        }
        for (v, s) in &curves {
            for (((x, m), lo), hi) in s.x.iter().zip(&s.mean).zip(&s.lo).zip(&s.hi) {
                csv.push_str(&format!("{tag},{v},{x:.0},{m},{lo},{hi}\n"));
            }
        }
        let series: Vec<Series> = curves.into_iter().map(|(_, s)| s).collect();
        let file = format!("tag_{}.png", results::tag_file(tag));
        let title = format!("{env_name}: {tag} (mean over seeds, 95% band)");
        line_plot(&out.join(&file), &title, "env steps", tag, &series)?;
        files.push_str(&format!(", {file}"));
    }
    std::fs::write(out.join("tags.csv"), csv)?;
    Ok(files)
}

/// The environment name of the runs (refusing a mix unless allowed).
fn common_env(runs: &[RunResult], allow_mixed: bool) -> Result<String> {
    let envs: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.env.as_str()).collect();
    if envs.len() > 1 {
        let list = envs.iter().copied().collect::<Vec<_>>().join(", ");
        if !allow_mixed {
            bail!("these runs are on different environments ({list}); their returns are not comparable (pass --allow-mixed-envs to compare anyway)");
        }
        say!("warning: comparing runs on different environments ({list})");
    }
    Ok(envs.iter().next().copied().unwrap_or("runs").replace('/', "_"))
}

/// The table of the rows as Markdown (with what each column means) and as CSV.
fn tables(env_name: &str, rows: &[(String, Row)], threshold: Option<f64>) -> (String, String) {
    let mut md = format!("Env: {env_name}; final return = mean of the games ending in the last 10% of env steps; 95% bootstrap CI over seeds (over the final games where a variant has one seed); IQM of those games pooled over seeds; AUC = mean return over training{}\n\n", threshold.map(|t| format!("; threshold = 20-game mean >= {t}")).unwrap_or_default());
    md.push_str("| variant | seeds | final return | 95% CI | IQM | AUC | steps to threshold | updates/s | wall time |\n|---|---|---|---|---|---|---|---|---|\n");
    let mut csv = String::from("variant,seeds,final_return_mean,ci95_low,ci95_high,iqm,auc,steps_to_threshold_median,reached,updates_per_sec,wall_secs\n");
    for (v, row) in rows {
        md.push_str(&row.markdown(v, threshold));
        csv.push_str(&row.csv(v));
    }
    (md, csv)
}

/// Run `wndqn compare`.
pub fn run(cmd: CompareCmd, device: crate::device::DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    let (dirs, launched) = match &cmd.config {
        Some(_) if !cmd.runs.is_empty() => bail!("give either run folders or --config (to launch runs), not both"),
        Some(cfg) => launch(&cmd, cfg, device, rom_dir)?,
        None => (cmd.runs.clone(), None),
    };
    if dirs.is_empty() {
        bail!("nothing to compare: give run folders, or --config with --variants and --seeds");
    }
    let dirs = results::distinct(&dirs);
    let runs: Vec<RunResult> = dirs.iter().map(|d| results::load(d, cmd.allow_unfinished)).collect::<Result<_>>()?;
    for (i, a) in runs.iter().enumerate() {
        if let Some(b) = runs[..i].iter().find(|b| (&b.env, b.arm(), b.seed) == (&a.env, a.arm(), a.seed)) {
            say!(
                "warning: {} and {} are both {} seed {} (a copy of one run?): seeds of a comparison should differ",
                b.dir.display(),
                a.dir.display(),
                a.arm(),
                a.seed
            );
        }
    }
    let env_name = common_env(&runs, cmd.allow_mixed_envs)?;
    if let Some(t) = cmd.tags.iter().find(|t| !runs.iter().any(|r| r.scalars.contains_key(*t))) {
        return Err(results::unknown_tag(t, &runs.iter().collect::<Vec<_>>()));
    }
    if let Some(r) = runs.iter().find(|r| r.returns.is_empty()) {
        bail!("{} has no finished training game: nothing to compare", r.dir.display());
    }
    let threshold = cmd.threshold.or_else(|| wndqn_envs::ids::is_cartpole(&env_name).then_some(195.0));
    let mut by_variant: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in &runs {
        by_variant.entry(r.arm()).or_default().push(r);
    }
    let total = runs.iter().map(|r| r.total_steps).max().unwrap_or(1);
    let rows: Vec<(String, Row)> = by_variant
        .iter()
        .enumerate()
        .map(|(i, (v, rs))| (v.clone(), Row::new(v, PALETTE[i % PALETTE.len()], rs, total, threshold)))
        .collect();
    let (md, csv) = tables(&env_name, &rows, threshold);
    let parent = match dirs[0].parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("runs"),
    };
    let out = cmd.out.clone().or_else(|| launched.map(|d| d.join("report"))).unwrap_or_else(|| {
        let t = crate::util::unix_now() as u64;
        parent.join("comparisons").join(format!("{env_name}__{t}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("table.md"), &md)?;
    std::fs::write(out.join("table.csv"), &csv)?;
    let listing: String = runs
        .iter()
        .map(|r| format!("{}\t{}{}\n", r.arm(), r.dir.display(), if r.complete { "" } else { "\t(unfinished)" }))
        .collect();
    std::fs::write(out.join("runs.txt"), listing)?;
    let mut curves = String::from("variant,env_step,mean_return,band_low,band_high\n");
    for (v, row) in &rows {
        let c = &row.curve;
        for (((x, m), lo), hi) in c.x.iter().zip(&c.mean).zip(&c.lo).zip(&c.hi) {
            curves.push_str(&format!("{v},{x:.0},{m},{lo},{hi}\n"));
        }
    }
    std::fs::write(out.join("curves.csv"), curves)?;
    let series: Vec<Series> = rows.into_iter().map(|(_, r)| r.curve).collect();
    let title = format!("{env_name}: episodic return (mean over seeds, 95% band; of one seed: over its games)");
    line_plot(&out.join("curves.png"), &title, "env steps", "return", &series)?;
    let tag_files = write_tags(&out, &cmd.tags, &env_name, &runs, &by_variant, total)?;
    out!("{md}");
    out!("written: {}/{{table.md, table.csv, curves.png, curves.csv, runs.txt{tag_files}}}", out.display());
    out!(
        "side by side in TensorBoard (HPARAMS tab, variant column): .venv/bin/tensorboard --logdir {}",
        crate::util::shell_quote(&parent.display().to_string())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_bands_never_leave_the_values_of_the_seeds() {
        // Two seeds at 500 and 100 in every bin: a normal band reached 700+ and below 0.
        let bins = vec![vec![500.0, 100.0]; BINS];
        let s = mean_curve("x".into(), [0, 0, 0], &bins, 1000);
        assert!(s.lo.iter().chain(&s.hi).all(|&v| (100.0..=500.0).contains(&v)), "{:?} {:?}", s.lo, s.hi);
        assert!(s.mean.iter().all(|&m| m == 300.0));
    }

    fn run(seed: u64, returns: Vec<(u64, f64)>) -> RunResult {
        RunResult {
            dir: PathBuf::from(format!("r{seed}")),
            env: "PongNoFrameskip-v4".into(),
            variant: wndqn_agents::normalization::Variant::WeightNorm,
            precision: crate::config::Precision::Fp32,
            seed,
            total_steps: 1000,
            returns,
            evals: vec![],
            scalars: [("diag/feature_rank".to_string(), vec![(100, seed as f64), (600, 10.0 * seed as f64)])].into(),
            updates_per_sec: 1.0,
            wall_secs: 1.0,
            complete: true,
        }
    }

    #[test]
    fn a_tag_curve_is_the_mean_of_the_seeds_with_a_band_inside_their_values() {
        let (a, b) = (run(1, vec![(5, 1.0)]), run(3, vec![(5, 1.0)]));
        let c = results::tag_curve("x", [0, 0, 0], &[&a, &b], "diag/feature_rank", 1000).unwrap();
        assert_eq!(c.label, "x (2 runs)");
        // Bins before step 600 hold 1 and 3, after it 10 and 30 (carried to the end).
        assert_eq!((c.mean[10], c.mean[49]), (2.0, 20.0));
        assert!(c.lo[49] >= 10.0 && c.hi[49] <= 30.0 && c.lo[49] < c.hi[49]);
        assert!(c.mean[0].is_nan(), "no value before the first point");
        assert!(results::tag_curve("x", [0, 0, 0], &[&a], "diag/dormant_fraction", 1000).is_none());
        let e = results::unknown_tag("diag/feature_rnk", &[&a]).to_string();
        assert!(e.contains("Did you mean: diag/feature_rank"), "{e}");
    }

    #[test]
    fn one_seed_is_judged_by_its_games_and_several_by_their_means() {
        // Final games (last 10% of 1000 steps) alternate -21 and -15: one seed's interval spans
        // the game-to-game noise, and its curve has a band wherever games ended.
        let games = |seed| run(seed, (0..100).map(|i| (i * 10 + 5, if i % 2 == 0 { -21.0 } else { -15.0 })).collect());
        let one = games(1);
        let row = Row::new("x", [0, 0, 0], &[&one], 1000, None);
        assert!(row.ci.0 < -18.0 && -18.0 < row.ci.1 && row.ci.0 >= -21.0 && row.ci.1 <= -15.0, "{:?}", row.ci);
        assert!(row.curve.lo.iter().zip(&row.curve.hi).all(|(l, h)| l < h), "{:?}", row.curve.lo);
        // Two seeds with the same final mean: no spread over seeds, whatever their games do.
        let two = games(2);
        let row = Row::new("x", [0, 0, 0], &[&one, &two], 1000, None);
        assert_eq!(row.ci, (-18.0, -18.0));
        assert!(row.curve.lo.iter().zip(&row.curve.hi).all(|(l, h)| l == h));
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        let (lo, hi) = mean_interval(&v, 1);
        assert!(lo < mean(&v) && mean(&v) < hi && lo >= 1.0 && hi <= 10.0, "{lo} {hi}");
    }
}
