//! `wndqn train`: N actor threads, one replay thread, one learner thread, one evaluator, and
//! the main thread writing TensorBoard events and the progress bar.
//!
//! ```text
//! actors --(bounded channel: transitions)--> replay thread --(bounded: prefetched batches)--> learner
//!    ^                                                                                          |
//!    +------------------------------ weight slot (versioned CPU copies) <------------------------+
//! all threads --(events)--> main thread: TensorBoard, progress bar, evaluation triggers
//! ```

use crate::util::say;
pub mod actor;
mod build;
mod checkpointer;
mod evaluator;
pub mod learner;
pub mod monitor;
pub mod pace;
pub mod replay;
mod resume;
pub mod shared;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use tch::Device;
use wndqn_envs::EnvId;

use crate::config::Config;
use crate::run::dir as run_dir;
use crate::run::summary;
use crate::tensorboard::{Board, HParam};
pub use build::bench_dqn;
use build::{actor_spec, build, learner_spec, replay_spec, Parts};
use checkpointer::checkpointer;
use evaluator::{spawn_evaluator, EvalSpec};
use monitor::{Mark, Monitor};
use resume::{make_state, open_run, Start};
use shared::{Event, Shared};

pub use crate::run::Summary;

/// How a run behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// No progress bar.
    pub quiet: bool,
    /// Stop this many seconds after the first learner update (benchmarks).
    pub measure_secs: Option<f64>,
    /// Save the replay memory with the final checkpoint.
    pub save_replay: bool,
}

/// Where a run writes: the one place a run starts from.
#[derive(Debug, Clone)]
pub enum Target {
    /// A new folder under this parent.
    New(PathBuf),
    /// Exactly this folder: a new run when it holds no checkpoint (made if missing, emptied of
    /// a run that never checkpointed), else continued from its newest complete checkpoint, and
    /// nothing to do when it is complete (sweeps: whichever process gets to a run).
    At(PathBuf),
    /// Continue this run folder from its newest complete checkpoint.
    Resume(PathBuf),
}

/// A training run to do, typed: what `wndqn train`, `compare`, sweeps and benchmarks hand to
/// [`train`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The validated config (its `env` is resolved by `train`).
    pub cfg: Config,
    pub target: Target,
    /// The learner's device.
    pub device: Device,
    /// The ROM folder (Atari).
    pub rom_dir: Option<PathBuf>,
    pub opts: RunOptions,
}

/// Train. Returns the run's summary (also on Ctrl-C).
pub fn train(req: Request) -> Result<Summary> {
    crate::signals::install();
    let Request { mut cfg, target, device, rom_dir, opts } = req;
    match &target {
        Target::Resume(run) => run_dir::ensure_run_folder(run)?,
        Target::At(dir) => {
            // As `--resume`: a larger budget than the run reached continues it.
            let reached = |s: &Summary| s.env_steps >= cfg.run.total_env_steps || s.solved_at_step.is_some();
            if let Some(done) = summary::read(dir).ok().filter(|s| s.complete && reached(s)) {
                say!("{} is complete ({} env steps): nothing to do", done.run_dir.display(), done.env_steps);
                return Ok(done);
            }
        }
        Target::New(_) => {}
    }
    cfg.learner.precision.compute(device)?;
    let (env_id, env_cfg) = cfg.env.resolve(rom_dir.as_deref())?;
    cfg.env = env_cfg;
    let longest = match &target {
        // The longest name `RunDir::create` may give (`_999`: a thousandth run in the same second).
        Target::New(runs) => runs.join(format!(
            "{}__{}__s{}__{}_999",
            env_id.short_name(),
            cfg.agent.variant.name(),
            cfg.run.seed,
            crate::util::unix_now() as u64
        )),
        Target::At(p) | Target::Resume(p) => p.clone(),
    };
    crate::run::checkpoint::check_path_length(&longest)?;
    crate::memory::check(&cfg, 1)?;
    run_training(cfg, &env_id, device, target, opts)
}

/// The run's hyper-parameters for TensorBoard's HPARAMS tab: every config key, as `config.toml`
/// holds it (`agent.lr`, `agent.variant`, `env.id`, ...), so that any key a sweep's grid varies
/// is there.
fn hparams(cfg: &Config) -> Vec<(String, HParam)> {
    let mut flat = Vec::new();
    if let Ok(v) = toml::Value::try_from(cfg) {
        crate::config::flatten("", &v, &mut flat);
    }
    flat.iter().map(|(k, v)| (k.clone(), HParam::from_toml(v))).collect()
}

fn spawn<T: Send + 'static>(
    name: &str,
    shared: &Arc<Shared>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let shared = shared.clone();
    let tname = name.to_string();
    Ok(std::thread::Builder::new().name(name.into()).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let r = match r {
            Ok(r) => r,
            Err(p) => Err(anyhow!("thread {tname} failed: {}", crate::util::panic_message(p.as_ref()))),
        };
        if r.is_err() {
            shared.request_stop();
        }
        r
    })?)
}

fn join<T>(h: JoinHandle<Result<T>>, errors: &mut Vec<anyhow::Error>) -> Option<T> {
    match h.join() {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            errors.push(e);
            None
        }
        Err(_) => {
            errors.push(anyhow!("a thread panicked"));
            None
        }
    }
}

/// The threads of a run.
struct Threads {
    replay: JoinHandle<Result<()>>,
    learner: JoinHandle<Result<learner::LearnerOutcome>>,
    actors: Vec<JoinHandle<Result<()>>>,
    evaluator: JoinHandle<Result<()>>,
}

/// Start the replay, learner, actor and evaluator threads.
fn start_threads(
    mut p: Parts,
    run: &Path,
    recent: Arc<std::sync::Mutex<Vec<f64>>>,
    started: Instant,
    ev_tx: Sender<Event>,
    eval_rx: Receiver<monitor::EvalJob>,
) -> Result<Threads> {
    let device = p.dqn.online_vs.device();
    let (act_tx, act_rx) = bounded(4 * p.cfg.actors.num_actors);
    let (batch_tx, batch_rx) = bounded(p.cfg.learner.prefetch);
    let shared = p.shared.clone();
    let (m, s, spec) = (p.memory.clone(), shared.clone(), replay_spec(&p, device));
    let replay = spawn("replay", &shared, move || replay::replay_thread(m, s, act_rx, batch_tx, spec))?;
    let mut actors = Vec::new();
    for (i, env) in std::mem::take(&mut p.envs).into_iter().enumerate() {
        let (spec, s, tx, ev) = (actor_spec(&p, i, env), shared.clone(), act_tx.clone(), ev_tx.clone());
        actors.push(spawn(&format!("actor{i}"), &shared, move || {
            let r = actor::run(spec, s.clone(), tx, ev);
            s.actors_running.fetch_sub(1, Ordering::SeqCst);
            r
        })?);
    }
    let (spec, on_update) = (learner_spec(&p, device), checkpointer(&p, run, recent, started, ev_tx.clone()));
    let (m, s) = (p.memory.clone(), shared.clone());
    let eval =
        EvalSpec { net: p.net.clone(), log: p.cfg.log.clone(), idle: p.cfg.learner.exclusive_cpu, gseed: p.gseed };
    let evaluator = spawn_evaluator(&shared, eval, p.eval_env, ev_tx.clone(), eval_rx)?;
    let learner =
        spawn("learner", &shared, move || learner::learner_thread(p.dqn, spec, m, s, batch_rx, ev_tx, on_update))?;
    Ok(Threads { replay, learner, actors, evaluator })
}

/// Join every thread that has ended, waiting for the others until the stop deadline; a thread
/// still running then is abandoned (named in `errors`; the process must then end with `_exit`).
fn join_all(t: Threads, deadline: Option<Instant>, errors: &mut Vec<anyhow::Error>) -> Option<learner::LearnerOutcome> {
    fn wait<T>(h: &JoinHandle<T>, deadline: Option<Instant>) -> bool {
        while !h.is_finished() && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(20));
        }
        h.is_finished()
    }
    let mut outcome = None;
    let mut abandoned = Vec::new();
    for (i, a) in t.actors.into_iter().enumerate() {
        if wait(&a, deadline) {
            join(a, errors);
        } else {
            abandoned.push(format!("actor{i}"));
        }
    }
    if wait(&t.replay, deadline) {
        join(t.replay, errors);
    } else {
        abandoned.push("replay".into());
    }
    if wait(&t.learner, deadline) {
        outcome = join(t.learner, errors);
    } else {
        abandoned.push("learner".into());
    }
    if wait(&t.evaluator, deadline) {
        join(t.evaluator, errors);
    } else {
        abandoned.push("evaluator".into());
    }
    if !abandoned.is_empty() {
        crate::signals::set_abandoned();
        errors.push(anyhow!(
            "thread(s) {} did not stop within {}s of the stop request; abandoned",
            abandoned.join(", "),
            monitor::STOP_GRACE.as_secs()
        ));
    }
    outcome
}

/// Train `cfg` in a scratch folder (removed after) until `seconds` have passed after the
/// warm-up, with no evaluations and no checkpoints: its summary and its steady-state rates
/// (`bench e2e`, and the cost estimate of `sweep run --dry-run --estimate`).
pub fn measure(
    mut cfg: Config,
    device: Device,
    rom_dir: Option<&Path>,
    seconds: f64,
) -> Result<(Summary, crate::run::Measured)> {
    let runs_dir = std::env::temp_dir().join(format!("wndqn-bench-{}", std::process::id()));
    cfg.run.total_env_steps = 1_000_000_000;
    cfg.log.eval_every = 0;
    cfg.log.checkpoint_every = 0;
    let run = train(Request {
        cfg,
        target: Target::New(runs_dir.clone()),
        device,
        rom_dir: rom_dir.map(Path::to_path_buf),
        opts: RunOptions { quiet: true, measure_secs: Some(seconds), save_replay: false },
    });
    let _ = std::fs::remove_dir_all(&runs_dir);
    let s = run?;
    let m = s.measured.clone().ok_or_else(|| anyhow!("the run ended before learning started"))?;
    Ok((s, m))
}

/// Train on a resolved config.
fn run_training(cfg: Config, env_id: &EnvId, device: Device, target: Target, opts: RunOptions) -> Result<Summary> {
    let started = Instant::now();
    let start = match Start::of(target, &cfg, env_id)? {
        ControlFlow::Continue(start) => start,
        ControlFlow::Break(finished) => return Ok(finished),
    };
    let mut parts = build(cfg, env_id, device, start.generation())?;
    let (run, board) = open_run(&mut parts, env_id, start)?;
    let (cfg, shared, memory, generation, wall_before) =
        (parts.cfg.clone(), parts.shared.clone(), parts.memory.clone(), parts.generation, parts.wall_before);
    let start = Mark::now(&shared);
    let (ev_tx, ev_rx) = unbounded::<Event>();
    let (eval_tx, eval_rx) = bounded::<monitor::EvalJob>(1);
    let m2 = memory.clone();
    let mut mon = Monitor::new(
        &cfg,
        shared.clone(),
        board,
        std::mem::take(&mut parts.returns),
        eval_tx,
        &opts,
        Box::new(move || m2.len()),
    );
    let threads = start_threads(parts, &run.path, mon.recent.clone(), started, ev_tx, eval_rx)?;
    loop {
        if crate::signals::interrupted() && !shared.stopping() {
            shared.request_stop();
        }
        if shared.stopping() {
            // Idle-priority threads must get the CPU to wind down (`threads::background`; after
            // the first call there are none left to restore).
            crate::threads::release();
        }
        match ev_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => mon.handle(e),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Err(e) = mon.board.check() {
            mon.note(format!("error: {e:#}; stopping"));
            shared.request_stop();
        }
        mon.tick(threads.learner.is_finished());
        if mon.past_stop_deadline() {
            break;
        }
    }
    let mut errors = Vec::new();
    let deadline = shared.stopping().then(|| Instant::now() + Duration::from_secs(1));
    crate::threads::release();
    let outcome = join_all(threads, deadline, &mut errors);
    mon.finish_bar();
    if let Some(lost) = mon.lost.take() {
        // The folder is gone: nothing more can be written there, and nothing is re-created.
        return Err(lost);
    }
    // Also with no update yet (a stop during the warm-up or the data init): counters, seeds and
    // config are what a resume continues from; the replay memory refills (or comes back from
    // replay.bin with --save-replay). A learner that failed (a diverged loss) leaves no outcome,
    // so the checkpoints before it stay the newest.
    if let Some(out) = outcome {
        let wall = wall_before + started.elapsed().as_secs_f64();
        let st = make_state(&cfg, &shared, generation, mon.recent_returns(), wall, opts.save_replay);
        let replay = opts.save_replay.then_some(memory.as_ref());
        match crate::run::checkpoint::write(&run.path, &out.dqn, &st, &cfg.to_toml(), replay, cfg.log.keep_checkpoints)
        {
            Ok(p) if !opts.quiet => say!("checkpoint {}", p.display()),
            Ok(_) => {}
            Err(e) => errors.push(e.context("writing the final checkpoint")),
        }
    }
    let env_steps = shared.env_steps.load(Ordering::Acquire);
    let reached = errors.is_empty() && env_steps >= cfg.run.total_env_steps;
    if let Err(e) = end_board(&mut mon.board, &run.path, env_steps, reached) {
        errors.insert(0, e);
    }
    let times = Times { started, wall_before };
    let mut summary = summarize(&mon, &cfg, env_id, &run.path, &shared, &start, times, errors.is_empty());
    summary.error = errors.first().map(|e| format!("{e:#}"));
    if let Err(e) = run.write(summary::FILE, serde_json::to_string_pretty(&summary)?.as_bytes()) {
        errors.push(e);
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context(format!("run {} stopped", run.path.display())));
    }
    Ok(summary)
}

/// The segment's last events: where the run `reached` its budget, its final score for the
/// HPARAMS tab (`score/final`, from every segment's training returns, as a report scores the
/// run); the HPARAMS session's end; all flushed.
fn end_board(board: &mut Board, run: &Path, env_steps: u64, reached: bool) -> Result<()> {
    if reached {
        board.flush();
        if let Ok(returns) = crate::tensorboard::reader::scalars(run, "charts/episodic_return") {
            if let Some(score) = crate::results::final_score_of(&returns, env_steps) {
                board.scalar("score/final", score, env_steps);
            }
        }
    }
    board.hparams_end(crate::util::unix_now(), env_steps);
    board.flush();
    board.check()
}

/// When a segment started, and the training time of the segments before it.
struct Times {
    started: Instant,
    wall_before: f64,
}

/// The run's summary from the monitor's state and the counters; `ok`: the segment ended
/// without an error.
#[allow(clippy::too_many_arguments)]
fn summarize(
    mon: &Monitor,
    cfg: &Config,
    env_id: &EnvId,
    run: &Path,
    shared: &Shared,
    start: &Mark,
    times: Times,
    ok: bool,
) -> Summary {
    let n = cfg.actors.num_actors;
    let end = mon.measured_end.unwrap_or_else(|| Mark::now(shared));
    let whole = end.since(start, n);
    let env_steps = shared.env_steps.load(Ordering::Acquire);
    let segment = times.started.elapsed().as_secs_f64();
    Summary {
        run_dir: run.to_path_buf(),
        env: env_id.short_name(),
        variant: cfg.agent.variant,
        seed: cfg.run.seed,
        env_steps,
        updates: shared.updates.load(Ordering::Acquire),
        episodes: shared.episodes.load(Ordering::Acquire),
        interrupted: crate::signals::interrupted(),
        complete: ok && (env_steps >= cfg.run.total_env_steps || mon.solved_at.is_some()),
        wall_secs: times.wall_before + segment,
        segment_wall_secs: segment,
        env_steps_per_sec: whole.env_steps_per_sec,
        updates_per_sec: whole.updates_per_sec,
        last20_mean_return: summary::last20(&mon.returns),
        best20_mean_return: mon.best20,
        solved_at_step: mon.solved_at,
        actor_wait_frac: whole.actor_wait_frac,
        learner_wait_frac: whole.learner_wait_frac,
        learner_busy_frac: whole.learner_busy_frac,
        diagnostics_share: shared.diagnostics_ns.load(Ordering::Relaxed) as f64
            / shared.learner_busy_ns.load(Ordering::Relaxed).max(1) as f64,
        final_eval_mean: mon.last_eval,
        measured: mon.learn_start.map(|a| end.since(&a, n)),
        events: summary::event_listing(run),
        error: None,
    }
}
