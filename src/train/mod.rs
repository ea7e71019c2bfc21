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
pub mod learner;
pub mod monitor;
pub mod pace;
pub mod replay;
pub mod shared;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use crossbeam::channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use tch::Device;
use wndqn_agents::dqn::Dqn;
use wndqn_agents::policy::Policy;
use wndqn_agents::qnet::QNetConfig;
use wndqn_agents::replay::AnyMemory;
use wndqn_envs::{make_env, EnvConfig, EnvId, ObsKind};

use crate::config::Config;
use crate::run::dir::{self as run_dir, Resume, RunDir};
use crate::run::summary;
use crate::seeds::{self, Stream};
use crate::tensorboard::{Board, HParam};
use monitor::{Mark, Monitor};
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

/// What a run is made of before its threads start.
struct Parts {
    cfg: Config,
    cfg_text: String,
    envs: Vec<Box<dyn wndqn_envs::Env>>,
    eval_env: Box<dyn wndqn_envs::Env>,
    kind: ObsKind,
    net: QNetConfig,
    dqn: Dqn,
    memory: Arc<AnyMemory>,
    shared: Arc<Shared>,
    /// Seed of this segment (a resumed segment draws fresh streams from the same seed).
    gseed: u64,
    generation: u64,
    /// See [`pace::Pace::step_origin`].
    step_origin: u64,
    update_origin: u64,
    wall_before: f64,
    returns: Vec<f64>,
}

/// Environments, networks and the replay memory (environments first: a bad ROM fails before any
/// file is written).
fn build(cfg: Config, env_id: &EnvId, device: Device, generation: u64) -> Result<Parts> {
    let n = cfg.actors.num_actors;
    let gseed = seeds::segment(cfg.run.seed, generation);
    let envs = (0..n).map(|_| make_env(env_id, &cfg.env)).collect::<Result<Vec<_>, _>>()?;
    let eval_env = make_env(env_id, &EnvConfig { episodic_life: false, ..cfg.env.clone() })?;
    let kind = envs[0].obs_kind();
    let net = cfg.net_config(kind, envs[0].num_actions());
    tch::manual_seed(seeds::derive(gseed, Stream::NetworkInit) as i64);
    let mut dqn = Dqn::new(&net, cfg.agent.dqn(), device);
    dqn.set_compute(cfg.learner.precision.enable(device)?);
    let memory = Arc::new(new_memory(&cfg, kind));
    let shared = Arc::new(Shared::default());
    shared.actors_running.store(n as u64, Ordering::SeqCst);
    let cfg_text = cfg.to_toml();
    Ok(Parts {
        cfg,
        cfg_text,
        envs,
        eval_env,
        kind,
        net,
        dqn,
        memory,
        shared,
        gseed,
        generation,
        step_origin: 0,
        update_origin: 0,
        wall_before: 0.0,
        returns: Vec::new(),
    })
}

/// An empty replay memory for this config.
fn new_memory(cfg: &Config, kind: ObsKind) -> AnyMemory {
    let (bytes, obs_len, stack) = kind.storage();
    AnyMemory::new(cfg.replay.capacity, cfg.actors.num_actors, bytes, obs_len, stack)
}

/// Continue from a checkpoint: networks, optimizer, counters, returns, the replay memory when it
/// was saved; events logged after the checkpoint are dropped so every curve continues.
fn restore(p: &mut Parts, run: &RunDir, r: &Resume) -> Result<()> {
    crate::run::checkpoint::utf8_dir(&r.ckpt, |d| p.dqn.load(d))
        .with_context(|| format!("loading {}", r.ckpt.display()))?;
    let st = &r.state;
    let replay_loaded = st.has_replay && {
        let path = r.ckpt.join("replay.bin");
        let loaded =
            std::fs::File::open(&path).and_then(|f| p.memory.load(&mut std::io::BufReader::with_capacity(1 << 22, f)));
        if let Err(e) = &loaded {
            say!("warning: cannot load {} ({e}); the replay memory refills instead", path.display());
            p.memory = Arc::new(new_memory(&p.cfg, p.kind));
        }
        loaded.is_ok()
    };
    if !replay_loaded {
        (p.step_origin, p.update_origin) = (st.env_steps, st.updates);
    }
    for c in [&p.shared.env_steps, &p.shared.inserted] {
        c.store(st.env_steps, Ordering::SeqCst);
    }
    p.shared.updates.store(st.updates, Ordering::SeqCst);
    p.shared.episodes.store(st.episodes, Ordering::SeqCst);
    p.returns = st.recent_returns.clone();
    p.wall_before = st.wall_secs;
    let dropped = crate::tensorboard::reader::truncate_after(&run.path, st.env_steps, &mut |w| say!("{w}"))?;
    // From here on the run is running again: no summary until this segment ends.
    run.remove(summary::FILE)?;
    run.write("config.toml", p.cfg_text.as_bytes())?;
    say!(
        "resuming {} from {} ({} env steps, {} updates{}; {dropped} logged events after it dropped)",
        run.path.display(),
        r.ckpt.file_name().unwrap_or_default().to_string_lossy(),
        st.env_steps,
        st.updates,
        if replay_loaded { ", with its replay memory" } else { "; the replay memory refills first" }
    );
    Ok(())
}

/// A run about to start: a new folder to create under this parent or at this path, or a
/// resumed run folder (locked) with the checkpoint to continue from (checked against the config).
enum Start {
    New(PathBuf),
    /// Exactly this folder, new.
    At(PathBuf),
    Resume(RunDir, Resume),
}

impl Start {
    /// Lock and check a resumed run before anything is built (its segment number seeds it). A
    /// run that reached its budget but has no summary is done here: only its summary was left
    /// to write ([`ControlFlow::Break`]).
    fn of(target: Target, cfg: &Config, env_id: &EnvId) -> Result<ControlFlow<Summary, Start>> {
        let path = match target {
            Target::New(runs) => return Ok(ControlFlow::Continue(Start::New(runs))),
            Target::At(path) if crate::run::checkpoint::list(&path).is_empty() => {
                return Ok(ControlFlow::Continue(Start::At(path)))
            }
            Target::At(path) | Target::Resume(path) => path,
        };
        let run = RunDir::open(&path)?;
        Ok(match run_dir::resume_point(&run.path, cfg)? {
            (resume, false) => ControlFlow::Continue(Start::Resume(run, resume)),
            (resume, true) => ControlFlow::Break(finish(&run, &resume, cfg, env_id)?),
        })
    }

    /// 0 for a new run, the checkpoint's segment + 1 for a resumed one.
    fn generation(&self) -> u64 {
        match self {
            Start::New(_) | Start::At(_) => 0,
            Start::Resume(_, r) => r.state.generation + 1,
        }
    }
}

/// The run folder, locked: a new one, or the resumed one with its checkpoint restored.
fn open_run(p: &mut Parts, env_id: &EnvId, start: Start) -> Result<(RunDir, Board)> {
    let new = matches!(start, Start::New(_) | Start::At(_));
    let run = match start {
        Start::New(runs) => {
            let run = RunDir::create(&runs, &env_id.short_name(), p.cfg.agent.variant.name(), p.cfg.run.seed)?;
            run.write("config.toml", p.cfg_text.as_bytes())?;
            run
        }
        Start::At(path) => {
            let run = RunDir::create_at(&path)?;
            run.write("config.toml", p.cfg_text.as_bytes())?;
            run
        }
        Start::Resume(run, resume) => {
            restore(p, &run, &resume)?;
            run
        }
    };
    let mut board = Board::new(&run.path)?;
    if new {
        let group = run.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        board.hparams(&group, &hparams(&p.cfg), crate::util::unix_now());
        board.text("config", &format!("```toml\n{}\n```", p.cfg_text), 0);
    }
    board.flush();
    board.check()?;
    Ok((run, board))
}

/// The checkpoint state of a run at this moment.
fn make_state(
    cfg: &Config,
    shared: &Shared,
    generation: u64,
    recent: Vec<f64>,
    wall: f64,
    has_replay: bool,
) -> crate::run::checkpoint::State {
    let steps = shared.inserted.load(Ordering::Acquire);
    crate::run::checkpoint::State {
        env_steps: steps,
        updates: shared.updates.load(Ordering::Acquire),
        episodes: shared.episodes.load(Ordering::Acquire),
        recent_returns: recent,
        epsilon: cfg.actors.exploration().epsilon(0, steps),
        seed: cfg.run.seed,
        generation,
        wall_secs: wall,
        has_replay,
    }
}

/// The threads of a run.
struct Threads {
    replay: JoinHandle<Result<()>>,
    learner: JoinHandle<Result<learner::LearnerOutcome>>,
    actors: Vec<JoinHandle<Result<()>>>,
    evaluator: JoinHandle<Result<()>>,
}

/// The replay thread's settings.
fn replay_spec(p: &Parts, device: Device) -> replay::ReplaySpec {
    replay::ReplaySpec {
        batch_size: p.cfg.replay.batch_size,
        warmup: p.cfg.replay.warmup_steps,
        obs_shape: p.kind.shape(),
        seed: seeds::derive(p.gseed, Stream::ReplaySampling),
        prep: wndqn_agents::replay::BatchPrep::for_device(device).computing(p.dqn.online.compute()),
        idle_priority: p.cfg.learner.exclusive_cpu,
    }
}

/// The replay ratio's accounting of this segment.
fn pace(p: &Parts) -> pace::Pace {
    pace::Pace {
        ratio: p.cfg.learner.replay_ratio,
        warmup: p.cfg.replay.warmup_steps,
        step_origin: p.step_origin,
        update_origin: p.update_origin,
    }
}

/// The learner thread's settings.
fn learner_spec(p: &Parts, device: Device) -> learner::LearnerSpec {
    let cfg = &p.cfg;
    learner::LearnerSpec {
        device,
        pace: pace(p),
        publish_every: cfg.learner.publish_every,
        threads: cfg.learner_threads(),
        data_init: cfg.agent.variant.data_init().then_some((cfg.agent.init_batch, cfg.agent.init_scale)),
        scalars_every: cfg.log.scalars_every,
        histograms_every: cfg.log.histograms_every,
        diagnostics: (cfg.log.diagnostics_every > 0).then_some((cfg.log.diagnostics_every, cfg.log.diagnostics_batch)),
        obs_shape: p.kind.shape(),
        seed: p.gseed,
        cuda_graph: cfg.learner.cuda_graph,
    }
}

/// What the learner calls after each update: a checkpoint every `log.checkpoint_every` updates.
fn checkpointer(
    p: &Parts,
    run: &Path,
    recent: Arc<std::sync::Mutex<Vec<f64>>>,
    started: Instant,
    ev: Sender<Event>,
) -> impl FnMut(&Dqn) -> Result<()> + Send + 'static {
    let (every, keep, wall_before, generation) =
        (p.cfg.log.checkpoint_every, p.cfg.log.keep_checkpoints, p.wall_before, p.generation);
    let (dir, cfg, text, shared) = (run.to_path_buf(), p.cfg.clone(), p.cfg_text.clone(), p.shared.clone());
    move |dqn: &Dqn| -> Result<()> {
        if every > 0 && dqn.updates().is_multiple_of(every) {
            let r = recent.lock().map(|r| r.clone()).unwrap_or_default();
            let wall = wall_before + started.elapsed().as_secs_f64();
            let st = make_state(&cfg, &shared, generation, r, wall, false);
            let path = crate::run::checkpoint::write(&dir, dqn, &st, &text, None, keep)?;
            let _ = ev.send(Event::Note(format!("checkpoint {}", path.display())));
        }
        Ok(())
    }
}

/// Actor `i`'s settings, with its environment.
fn actor_spec(p: &Parts, i: usize, env: Box<dyn wndqn_envs::Env>) -> actor::ActorSpec {
    let cfg = &p.cfg;
    actor::ActorSpec {
        index: i,
        num_actors: cfg.actors.num_actors,
        env,
        env_seed: seeds::derive(p.gseed, Stream::ActorEnv(i)),
        rng_seed: seeds::derive(p.gseed, Stream::ActorExploration(i)),
        net: p.net.clone(),
        exploration: cfg.actors.exploration(),
        total_steps: cfg.run.total_env_steps,
        pace: pace(p),
        send_batch: cfg.actors.send_batch,
        idle_priority: cfg.learner.exclusive_cpu,
    }
}

/// The evaluator thread's settings.
struct EvalSpec {
    net: QNetConfig,
    log: crate::config::LogConfig,
    idle: bool,
    gseed: u64,
}

/// The evaluator thread: plays greedy games with each snapshot it is sent.
fn spawn_evaluator(
    shared: &Arc<Shared>,
    spec: EvalSpec,
    mut env: Box<dyn wndqn_envs::Env>,
    ev: Sender<Event>,
    jobs: Receiver<monitor::EvalJob>,
) -> Result<JoinHandle<Result<()>>> {
    let s = shared.clone();
    spawn("evaluator", shared, move || {
        crate::threads::limit_current_thread(1);
        let mut background = crate::threads::Background::new(spec.idle);
        let mut policy = Policy::new(&spec.net);
        let log = &spec.log;
        for (step, snap) in jobs.iter() {
            background.poll(true);
            policy.load_snapshot(&snap);
            let seed = seeds::derive(spec.gseed, Stream::Evaluation(step));
            let returns = crate::play::evaluate(
                env.as_mut(),
                &policy,
                log.eval_episodes,
                log.eval_epsilon,
                log.eval_max_steps,
                seed,
                |_, _| !s.stopping(),
            )?;
            if s.stopping() {
                break;
            }
            let _ = ev.send(Event::Eval { step, returns });
        }
        Ok(())
    })
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

/// Write the summary of a run that reached its budget before its process could (see
/// [`summary::from_checkpoint`]).
fn finish(run: &RunDir, r: &Resume, cfg: &Config, env_id: &EnvId) -> Result<Summary> {
    crate::tensorboard::reader::truncate_after(&run.path, r.state.env_steps, &mut |w| say!("{w}"))?;
    let s = summary::from_checkpoint(
        &run.path,
        &r.state,
        &env_id.short_name(),
        cfg.agent.variant.name(),
        cfg.run.stop_at_return,
    )?;
    run.write(summary::FILE, serde_json::to_string_pretty(&s)?.as_bytes())?;
    say!(
        "{} had reached its budget ({} env steps) without a summary; wrote it from {}",
        run.path.display(),
        r.state.env_steps,
        r.ckpt.display()
    );
    Ok(s)
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
        variant: cfg.agent.variant.name().into(),
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
