//! Sweeps: games x variants x seeds, run on this machine (a pool of `wndqn train` processes) or
//! a Slurm cluster (one job array), resumable, and reported with the statistics the field trusts.
//!
//! - [`spec`]: the spec file and the plan it expands to (`DIR/sweep.toml`, `DIR/configs/`);
//! - [`grid`]: grid axes (any config key with a list of values) and run names;
//! - [`state`]: where each run stands, from its folder (and Slurm's queue);
//! - [`local`], [`slurm`]: the executors;
//! - [`record`]: a finished run reduced to what judging it needs (a line of an archive);
//! - [`scoring`]: the runs' scores, normalized per game;
//! - [`tuning`]: the tuning stage's choice and the sensitivity statistics;
//! - [`report`]: aggregates with intervals, profiles, curves, sensitivity, files;
//! - [`archive`]: the finished runs as records, one line each.
//!
//! A sweep folder: `sweep.toml` (the plan), `configs/NAME.toml`, `runs/NAME/` (ordinary run
//! folders), `logs/NAME.log` (each run's output), `failed/NAME` (exit status and log tail of a
//! failed run), `slurm/` (the task script, its index and job ids), `report/`; an archive also
//! `runs.jsonl`.

pub mod archive;
pub mod atari_scores;
pub mod grid;
pub mod local;
pub mod record;
pub mod report;
pub mod scoring;
pub mod slurm;
pub mod spec;
pub mod state;
pub mod tuning;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::json;

use crate::util::{out, say, shell_quote};
use spec::{Plan, RunSpec};
use state::State;

/// Where the runs of a sweep are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    /// Child processes on this machine, `--jobs` at a time.
    Local,
    /// A Slurm job array (sbatch).
    Slurm,
}

/// `sweep run` settings.
pub struct RunOptions {
    /// The executor.
    pub executor: Executor,
    /// Print the plan (and, for Slurm, the job script) and write nothing.
    pub dry_run: bool,
    /// With `dry_run`: measure each variant this many seconds and estimate the cost.
    pub estimate: Option<f64>,
    /// The local pool's settings.
    pub local: local::LocalOptions,
}

/// The ROM folder every game of the plan is found in (checked before anything starts).
fn rom_folder(plan: &Plan, rom_dir: Option<&Path>) -> Result<Option<PathBuf>> {
    let mut folder = None;
    for g in &plan.games {
        let env = wndqn_envs::EnvConfig { id: g.clone(), ..plan.base.env.clone() };
        let (id, _) = env.resolve(rom_dir)?;
        if let wndqn_envs::EnvId::Atari { game, .. } = id {
            folder = game.rom.path.parent().map(|p| p.canonicalize().unwrap_or(p.to_path_buf()));
        }
    }
    Ok(folder)
}

/// `wndqn sweep run SPEC --dir DIR`.
pub fn run(spec: &Path, dir: &Path, mut opts: RunOptions) -> Result<()> {
    let plan = Plan::from_spec(spec)?;
    let roms = rom_folder(&plan, opts.local.rom_dir.as_deref())?;
    // The memory of `--jobs` runs at once, before anything is written (also for --dry-run).
    let jobs = match opts.executor {
        Executor::Local => Some(local::jobs(&plan, &opts.local)?),
        Executor::Slurm => None,
    };
    if opts.dry_run {
        if let Some(j) = jobs {
            let each = crate::memory::estimate(&plan.base).total();
            out!("{j} run(s) at once on this machine, about {} of memory each", crate::memory::gb(each));
        }
        return dry_run(&plan, dir, &opts, roms.as_deref());
    }
    if opts.executor == Executor::Slurm {
        slurm::available()?;
        slurm::check_folder(&std::path::absolute(dir).unwrap_or(dir.to_path_buf()))?;
    }
    let rom_dir = roms.clone().or(opts.local.rom_dir.clone());
    let plan = plan.install(dir, rom_dir.as_deref())?;
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    write_experiment(&dir, &plan)?;
    let plan = choose_if_ready(&dir, plan, rom_dir.as_deref())?;
    match opts.executor {
        Executor::Local => {
            opts.local.rom_dir = rom_dir;
            local::run(&dir, &plan, &opts.local)
        }
        Executor::Slurm => {
            slurm::submit(&dir, &plan, opts.local.retry_failed, roms.as_deref(), false)?;
            if plan.needs_choice() {
                say!(
                    "the test stage starts once the tuning runs are done: run the same `sweep run` command again then"
                );
            }
            Ok(())
        }
    }
}

/// The sweep folder's TensorBoard HPARAMS experiment: its table and parallel-coordinates views
/// show the games, variants, seeds and every grid axis of the runs, against their final score
/// (each run writes its hyper-parameters and `score/final`). Written once, in the folder's own
/// event file; the plan cannot change under it (another plan is refused).
fn write_experiment(dir: &Path, plan: &Plan) -> Result<()> {
    use crate::tensorboard::HParam;
    if !crate::tensorboard::reader::files(dir).is_empty() {
        return Ok(());
    }
    let seeds = plan.seeds.iter().chain(&plan.test_seeds).map(|&s| HParam::Num(s as f64)).collect();
    let mut params: Vec<(String, Vec<HParam>)> = vec![
        ("env.id".into(), plan.games.iter().map(|g| HParam::Str(g.clone())).collect()),
        ("agent.variant".into(), plan.variants.iter().map(|v| HParam::Str(v.name().into())).collect()),
        ("run.seed".into(), seeds),
    ];
    for a in &plan.grid {
        params.push((a.key.clone(), a.values.iter().map(HParam::from_toml).collect()));
    }
    let mut board = crate::tensorboard::Board::new(dir)?;
    board.experiment(&params, &["score/final"]);
    board.flush();
    board.check()
}

/// The plan with the tuning stage's choices made and recorded (`sweep.toml`, the test runs'
/// configs) when it has a test stage still to choose for and every tuning run is done; as it
/// is otherwise.
pub fn choose_if_ready(dir: &Path, plan: Plan, rom_dir: Option<&Path>) -> Result<Plan> {
    if !plan.needs_choice() {
        return Ok(plan);
    }
    let f = state::Folders::new(dir);
    let none = Default::default();
    if plan.runs().iter().any(|r| state::status(&f, &plan, r, &none).state != State::Done) {
        return Ok(plan);
    }
    let (found, _) = scoring::records(dir, &plan, &|_| false)?;
    let sr = scoring::score(&plan, found, scoring::ScoreKind::Final, scoring::Normalize::Auto)?;
    let mut plan = plan;
    plan.chosen = tuning::choose(&plan, &sr.scored)?;
    for c in &plan.chosen {
        say!(
            "chosen for {}{}: {} (IQM of the normalized score on the tuning seeds {:.3})",
            c.variant.name(),
            c.game.as_deref().map(|g| format!(" on {g}")).unwrap_or_default(),
            grid::sets(&plan.grid, &c.point).join(", "),
            c.score
        );
    }
    plan.write(dir, rom_dir)?;
    Ok(plan)
}

fn dry_run(plan: &Plan, dir: &Path, opts: &RunOptions, roms: Option<&Path>) -> Result<()> {
    let runs = plan.runs();
    let points = grid::points(&plan.grid).len();
    let tests = plan.games.len() * plan.variants.len() * plan.test_seeds.len();
    out!(
        "sweep {}: {} games x {} variants x {}{} seeds = {} runs{} of {} env steps, into {}/runs/",
        plan.name,
        plan.games.len(),
        plan.variants.len(),
        if plan.grid.is_empty() { String::new() } else { format!("{points} grid points x ") },
        plan.seeds.len(),
        plan.games.len() * plan.variants.len() * points * plan.seeds.len(),
        if tests > 0 {
            format!(
                ", then {tests} test runs ({} held-out seeds at each variant's chosen point)",
                plan.test_seeds.len()
            )
        } else {
            String::new()
        },
        plan.base.run.total_env_steps,
        dir.display()
    );
    for a in &plan.grid {
        out!("  axis {}: {}", a.key, a.values.iter().map(grid::show).collect::<Vec<_>>().join(", "));
    }
    let existing = plan.check_same(dir, "")?.map(|old| Plan { chosen: old.chosen.clone(), ..plan.clone() });
    let none = Default::default();
    let folders = state::Folders::new(dir);
    let runs = existing.as_ref().map(|p| p.runs()).unwrap_or(runs);
    for r in &runs {
        let st = existing.as_ref().map(|p| state::status(&folders, p, r, &none).state);
        out!("  {}{}", r.name, st.map(|s| format!("  ({})", s.name())).unwrap_or_default());
    }
    if tests > 0 && existing.as_ref().is_none_or(|p| p.needs_choice()) {
        out!("  (then the test stage: {tests} runs, named once the tuning stage has chosen)");
    }
    if opts.executor == Executor::Slurm {
        let abs = std::path::absolute(dir).unwrap_or(dir.to_path_buf());
        slurm::submit(&abs, plan, opts.local.retry_failed, roms, true)?;
    }
    if let Some(secs) = opts.estimate {
        estimate(plan, dir, &runs, opts, roms, secs)?;
    }
    out!("(--dry-run: nothing written)");
    Ok(())
}

/// The cost of the runs still to do, from steady-state env steps per second measured on this
/// machine ([`steady`]): each variant on the plan's first game, and each other game with the
/// first variant (a run's rate is its variant's times its game's relative to the first game's);
/// one run at a time, and the local pool's wall time with its jobs side by side, each at
/// [`SIDE_BY_SIDE`] of a lone run's measured speed.
fn estimate(
    plan: &Plan,
    dir: &Path,
    runs: &[RunSpec],
    opts: &RunOptions,
    roms: Option<&Path>,
    secs: f64,
) -> Result<()> {
    let device = opts.local.device.resolve()?;
    let cpu = crate::util::cpu_model();
    out!("cost, measured on {cpu} ({} cores), {secs:.0} s after the warm-up each:", crate::threads::cores());
    let f = state::Folders::new(dir);
    let existing = Plan::read(&f.dir).ok();
    let none = Default::default();
    let first = runs.first().ok_or_else(|| anyhow::anyhow!("no run to estimate"))?;
    let rate = |r: &RunSpec| -> Result<f64> {
        let (_, m) = crate::train::measure(steady(plan.config(r)?), device, roms, secs)?;
        if crate::signals::interrupted() {
            bail!("interrupted: no estimate");
        }
        out!(
            "  {} on {}: {:.0} env steps/s ({:.0} updates/s)",
            r.variant.name(),
            r.game,
            m.env_steps_per_sec,
            m.updates_per_sec
        );
        Ok(m.env_steps_per_sec)
    };
    let mut variant_rate = std::collections::BTreeMap::new();
    for &v in &plan.variants {
        let r = runs.iter().find(|r| r.variant == v && r.game == first.game);
        if let Some(r) = r.or_else(|| runs.iter().find(|r| r.variant == v)) {
            variant_rate.insert(v.name(), rate(r)?);
        }
    }
    let base_rate = variant_rate.get(first.variant.name()).copied().unwrap_or(1.0);
    let mut game_factor = std::collections::BTreeMap::new();
    for g in &plan.games {
        let factor = match runs.iter().find(|r| &r.game == g && r.variant == first.variant) {
            Some(r) if *g != first.game => rate(r)? / base_rate,
            _ => 1.0,
        };
        game_factor.insert(g.clone(), factor);
    }
    let secs_of = |r: &RunSpec| -> f64 {
        let steps = plan.config(r).map(|c| c.run.total_env_steps).unwrap_or(0) as f64;
        let v = variant_rate.get(r.variant.name()).copied().unwrap_or(base_rate);
        steps / (v * game_factor.get(&r.game).copied().unwrap_or(1.0))
    };
    let todo = runs.iter().filter(|r| {
        let done = existing.as_ref().map(|p| state::status(&f, p, r, &none).state);
        !matches!(done, Some(State::Done))
    });
    let mut total_secs: f64 = todo.map(secs_of).sum();
    if existing.as_ref().is_none_or(|p| p.needs_choice()) {
        // The test stage's runs, not named yet: every game and variant's held-out seeds.
        for v in variant_rate.values() {
            for g in game_factor.values() {
                total_secs += plan.base.run.total_env_steps as f64 / (v * g) * plan.test_seeds.len() as f64;
            }
        }
    }
    let jobs = local::jobs(plan, &opts.local)?;
    let wall = total_secs / (jobs as f64 * if jobs > 1 { SIDE_BY_SIDE } else { 1.0 });
    out!(
        "  runs to do (test stage included): {} of one run at a time; with --jobs {jobs} about {} here",
        duration(total_secs),
        duration(wall)
    );
    Ok(())
}

/// The share of a lone run's measured env steps per second that each of two whole runs side by
/// side keeps (evaluations, logging and start-up included), measured on a 2-core AMD EPYC: a
/// 12-run slice of the MinAtar study's settings with `--jobs 2` took 12.2 minutes where the
/// estimate's lone rates summed to 18, 0.74 (docs/BENCHMARKS.md).
const SIDE_BY_SIDE: f64 = 0.74;

/// `secs` in hours, or in minutes below two hours.
fn duration(secs: f64) -> String {
    if secs < 7200.0 {
        format!("{:.0} minutes", secs / 60.0)
    } else {
        format!("{:.1} hours", secs / 3600.0)
    }
}

/// A run's config as it trains for most of its budget: exploration at its final epsilon (a
/// measurement of a few seconds after the warm-up would otherwise see the early, mostly random
/// actions, which skip the actor's forward pass).
fn steady(mut cfg: crate::config::Config) -> crate::config::Config {
    cfg.actors.epsilon_start = cfg.actors.epsilon_end;
    cfg
}

/// `wndqn sweep status DIR`.
pub fn status(dir: &Path, as_json: bool) -> Result<()> {
    let plan = Plan::read(dir)?;
    let queue = match slurm::queue(dir) {
        Ok(q) => q,
        Err(e) => {
            say!("warning: Slurm's queue cannot be read ({e:#}); states come from the run folders only");
            Default::default()
        }
    };
    let all = state::all(dir, &plan, &queue);
    let count = |s: State| all.iter().filter(|r| r.state == s).count();
    let states = [State::Done, State::Running, State::Failed, State::Interrupted, State::Queued];
    if as_json {
        let counts: serde_json::Map<String, serde_json::Value> =
            states.iter().map(|&s| (s.name().to_string(), json!(count(s)))).collect();
        out!("{}", json!({"sweep": plan.name, "dir": dir, "counts": counts, "runs": all}));
        return Ok(());
    }
    out!("sweep {} in {}: {} runs", plan.name, dir.display(), all.len());
    out!("{:<44} {:<12} {:>21} {:>12}  detail", "run", "state", "env steps", "return");
    for r in &all {
        let detail = [
            r.pid.map(|p| format!("pid {p}")),
            r.slurm.clone(),
            r.env_steps_per_sec.map(|s| format!("{s:.0} env steps/s")),
            r.failure.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        out!(
            "{:<44} {:<12} {:>21} {:>12}  {detail}",
            r.name,
            r.state.name(),
            format!("{}/{}", r.env_steps, r.total_env_steps),
            r.last_return.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
        );
    }
    out!("{}", states.iter().map(|&s| format!("{} {}", count(s), s.name())).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// `wndqn sweep cancel DIR`: stop every run of the sweep cleanly (each writes its checkpoint).
pub fn cancel(dir: &Path) -> Result<()> {
    let plan = Plan::read(dir)?;
    let mut asked = 0;
    if dir.join("slurm/jobs.txt").is_file() {
        let n = slurm::cancel(dir)?;
        say!("Slurm: pending tasks cancelled, {n} running task(s) asked to stop (each writes a checkpoint)");
        asked += n;
    }
    let f = state::Folders::new(dir);
    let mut pids: Vec<u32> = crate::run::dir::holder(dir).into_iter().collect();
    pids.extend(plan.runs().iter().filter_map(|r| crate::run::dir::holder(&f.run(&r.name))));
    for &pid in &pids {
        // SAFETY: kill(2) with a PID read from a lock this sweep's processes hold.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    }
    asked += pids.len();
    let t0 = std::time::Instant::now();
    while pids.iter().any(|&p| std::path::Path::new(&format!("/proc/{p}")).exists()) {
        if t0.elapsed().as_secs() > 120 {
            bail!("processes {pids:?} did not stop within 2 minutes of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    if asked == 0 {
        say!("nothing to cancel: no process of {} is running", dir.display());
    } else {
        say!(
            "stopped: continue with `wndqn sweep run SPEC --dir {}`, see `wndqn sweep status {}`",
            shell_quote(&dir.display().to_string()),
            shell_quote(&dir.display().to_string())
        );
    }
    Ok(())
}
