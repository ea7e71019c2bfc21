//! `wndqn train`: N actor threads, one replay thread, one learner thread, one evaluator, and
//! the main thread writing TensorBoard events and the progress bar.
//!
//! ```text
//! actors --(bounded channel: transitions)--> replay thread --(bounded: prefetched batches)--> learner
//!    ^                                                                                          |
//!    +------------------------------ weight slot (versioned CPU copies) <------------------------+
//! all threads --(events)--> main thread: TensorBoard, progress bar, evaluation triggers
//! ```

pub mod actor;
pub mod eval;
pub mod learner;
pub mod shared;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam::channel::{bounded, unbounded, RecvTimeoutError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};
use wndqn_agents::dqn::{load_snapshot, Dqn};
use wndqn_agents::qnet::{QNetConfig, QNetwork};
use wndqn_agents::replay::AnyMemory;
use wndqn_envs::{make_env, EnvConfig, EnvId, ObsKind};

use crate::config::Config;
use crate::tb::{Board, HParam};
use shared::{Event, Shared};

/// Command-line settings of a training run.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// Config file; `None` with `resume` means the run's own config.toml.
    pub config: Option<PathBuf>,
    /// Continue this run folder from its newest complete checkpoint.
    pub resume: Option<PathBuf>,
    /// Also checkpoint the replay memory (at the end / on Ctrl-C).
    pub save_replay: bool,
    pub variant: Option<String>,
    pub sets: Vec<String>,
    pub seed: Option<u64>,
    pub runs_dir: PathBuf,
    pub quiet: bool,
    pub device: crate::device::DeviceArg,
    pub rom_dir: Option<PathBuf>,
}

/// What a finished (or interrupted) run reports; also written to `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub env: String,
    pub variant: String,
    pub seed: u64,
    pub env_steps: u64,
    pub updates: u64,
    pub episodes: u64,
    pub interrupted: bool,
    pub wall_secs: f64,
    pub env_steps_per_sec: f64,
    pub updates_per_sec: f64,
    pub last20_mean_return: f64,
    /// Best mean return over 20 consecutive training games.
    pub best20_mean_return: f64,
    /// Env step at which the 20-game mean first reached `run.stop_at_return` (if set and reached).
    pub solved_at_step: Option<u64>,
    pub actor_wait_frac: f64,
    pub learner_wait_frac: f64,
    pub learner_busy_frac: f64,
    pub final_eval_mean: Option<f64>,
    /// Rates from the first learner update to the end (steady state, warm-up excluded).
    pub measured: Option<Measured>,
}

/// Steady-state rates between two moments of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub secs: f64,
    pub env_steps_per_sec: f64,
    pub updates_per_sec: f64,
    /// Fraction of the actors' time spent waiting for the learner (replay-ratio throttle).
    pub actor_wait_frac: f64,
    /// Fraction of the learner's time spent waiting for data.
    pub learner_wait_frac: f64,
    /// Fraction of the learner's time spent in updates.
    pub learner_busy_frac: f64,
}

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

#[derive(Clone, Copy)]
struct Mark {
    t: Instant,
    steps: u64,
    updates: u64,
    actor_wait: u64,
    learner_wait: u64,
    learner_busy: u64,
}

impl Mark {
    fn now(s: &Shared) -> Mark {
        Mark {
            t: Instant::now(),
            steps: s.env_steps.load(Ordering::Acquire),
            updates: s.updates.load(Ordering::Acquire),
            actor_wait: s.actor_wait_ns.load(Ordering::Relaxed),
            learner_wait: s.learner_wait_ns.load(Ordering::Relaxed),
            learner_busy: s.learner_busy_ns.load(Ordering::Relaxed),
        }
    }
    fn since(&self, a: &Mark, actors: usize) -> Measured {
        let secs = self.t.duration_since(a.t).as_secs_f64().max(1e-9);
        Measured {
            secs,
            env_steps_per_sec: (self.steps - a.steps) as f64 / secs,
            updates_per_sec: (self.updates - a.updates) as f64 / secs,
            actor_wait_frac: (self.actor_wait - a.actor_wait) as f64 * 1e-9 / (secs * actors as f64),
            learner_wait_frac: (self.learner_wait - a.learner_wait) as f64 * 1e-9 / secs,
            learner_busy_frac: (self.learner_busy - a.learner_busy) as f64 * 1e-9 / secs,
        }
    }
}

/// Resolve the config from the file and flags (one validated config before any thread starts).
pub fn resolve_config(args: &TrainArgs) -> Result<Config> {
    let path = match (&args.config, &args.resume) {
        (Some(p), _) => p.clone(),
        (None, Some(run)) => run.join("config.toml"),
        (None, None) => PathBuf::from("configs/pong.toml"),
    };
    let mut sets = args.sets.clone();
    if let Some(v) = &args.variant {
        if wndqn_agents::qnet::Variant::from_name(v).is_none() {
            let names: Vec<_> = wndqn_agents::qnet::Variant::ALL.iter().map(|v| v.name()).collect();
            bail!("unknown variant `{v}`; expected one of {}", names.join(", "));
        }
        sets.push(format!("agent.variant=\"{v}\""));
    }
    if let Some(s) = args.seed {
        sets.push(format!("run.seed={s}"));
    }
    crate::config::load(&path, &sets)
}

/// Keys that may change when a run is resumed: budgets, logging and thread counts. Anything
/// else (environment, network, optimizer, replay, exploration) would make it another run.
const SAFE_ON_RESUME: &[&str] = &["run.total_env_steps", "run.stop_at_return", "learner.threads", "learner.prefetch", "learner.exclusive_cpu", "log."];

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Keys whose values differ between two configs.
fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &toml::Value::try_from(old)?, &mut a);
    flatten("", &toml::Value::try_from(new)?, &mut b);
    let a: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    Ok(a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect())
}

/// A run folder to continue.
pub struct Resume {
    pub run_dir: PathBuf,
    pub ckpt: PathBuf,
    pub state: crate::checkpoint::State,
}

/// Network settings for an environment.
pub fn net_config(cfg: &Config, kind: ObsKind, num_actions: usize) -> QNetConfig {
    QNetConfig { arch: cfg.agent.network, variant: cfg.agent.variant, dueling: cfg.agent.dueling, obs_shape: kind.shape(), num_actions: num_actions as i64, hidden: cfg.agent.hidden }
}

fn mix(seed: u64, k: u64) -> u64 {
    let mut x = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// A new, unique run folder `runs/{env}__{variant}__s{seed}__{unix_time}/`.
fn new_run_dir(runs: &Path, env: &str, variant: &str, seed: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for k in 0..1000 {
        let name = if k == 0 { format!("{env}__{variant}__s{seed}__{t}") } else { format!("{env}__{variant}__s{seed}__{t}_{k}") };
        let p = runs.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
        }
    }
    bail!("cannot find a free run folder name in {}", runs.display())
}

fn hparams(cfg: &Config) -> Vec<(String, HParam)> {
    let a = &cfg.agent;
    vec![
        ("variant".into(), HParam::Str(a.variant.name().into())),
        ("env".into(), HParam::Str(cfg.env.id.clone())),
        ("seed".into(), HParam::Num(cfg.run.seed as f64)),
        ("optimizer".into(), HParam::Str(format!("{:?}", a.optimizer).to_lowercase())),
        ("lr".into(), HParam::Num(a.lr)),
        ("gamma".into(), HParam::Num(a.gamma)),
        ("double_dqn".into(), HParam::Bool(a.double_dqn)),
        ("dueling".into(), HParam::Bool(a.dueling)),
        ("init_scale".into(), HParam::Num(a.init_scale)),
        ("batch_size".into(), HParam::Num(cfg.replay.batch_size as f64)),
        ("replay_ratio".into(), HParam::Num(cfg.learner.replay_ratio)),
        ("num_actors".into(), HParam::Num(cfg.actors.num_actors as f64)),
        ("total_env_steps".into(), HParam::Num(cfg.run.total_env_steps as f64)),
    ]
}

fn spawn<T: Send + 'static>(name: &str, shared: &Arc<Shared>, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<JoinHandle<Result<T>>> {
    let shared = shared.clone();
    let tname = name.to_string();
    Ok(std::thread::Builder::new().name(name.into()).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let r = match r {
            Ok(r) => r,
            Err(p) => {
                let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                Err(anyhow!("thread {tname} failed: {msg}"))
            }
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

/// Train. Returns the run's summary (also on Ctrl-C).
pub fn train(args: &TrainArgs) -> Result<Summary> {
    let resume = match &args.resume {
        None => None,
        Some(run) => {
            if !run.join("config.toml").is_file() || crate::events::files(run).is_empty() {
                bail!("{} is not a wndqn run folder (it needs config.toml and an event file written by `wndqn train`)", run.display());
            }
            let stored = crate::config::load(&run.join("config.toml"), &[])?;
            let wanted = resolve_config(args)?;
            let unsafe_changes: Vec<String> = changed_keys(&stored, &wanted)?
                .into_iter()
                .filter(|k| !SAFE_ON_RESUME.iter().any(|s| k == s || (s.ends_with('.') && k.starts_with(s))))
                .collect();
            if !unsafe_changes.is_empty() {
                bail!(
                    "cannot resume {} with a different {}: these keys are fixed for a run (only {} may change). Start a new run instead.",
                    run.display(),
                    unsafe_changes.join(", "),
                    SAFE_ON_RESUME.join(", ").replace("log.", "log.*")
                );
            }
            let (ckpt, state) = crate::checkpoint::find(run, None, &mut |w| eprintln!("{w}"))?;
            Some((wanted, Resume { run_dir: run.clone(), ckpt, state }))
        }
    };
    let (cfg, resume) = match resume {
        Some((c, r)) => (c, Some(r)),
        None => (resolve_config(args)?, None),
    };
    let device = args.device.resolve()?;
    crate::signals::install();
    let (env_id, env_cfg) = cfg.env.resolve(args.rom_dir.as_deref())?;
    let mut cfg = cfg;
    cfg.env = env_cfg.clone();
    let opts = RunOptions { quiet: args.quiet, measure_secs: None, save_replay: args.save_replay };
    run_training(cfg, &env_id, device, &args.runs_dir, opts, resume)
}

/// Train on a resolved config.
pub fn run_training(cfg: Config, env_id: &EnvId, device: Device, runs_dir: &Path, opts: RunOptions, resume: Option<Resume>) -> Result<Summary> {
    let started = Instant::now();
    let n = cfg.actors.num_actors;
    let seed = cfg.run.seed;
    let generation = resume.as_ref().map_or(0, |r| r.state.generation + 1);
    // Each segment of a resumed run draws fresh random streams (same seed, next generation).
    let gseed = if generation == 0 { seed } else { mix(seed, 0x5E60_0000 + generation) };
    // Environments first: a bad ROM fails before any file is written.
    let mut envs = Vec::with_capacity(n);
    for _ in 0..n {
        envs.push(make_env(env_id, &cfg.env)?);
    }
    let eval_cfg = EnvConfig { episodic_life: false, ..cfg.env.clone() };
    let eval_env = make_env(env_id, &eval_cfg)?;
    let kind = envs[0].obs_kind();
    let net = net_config(&cfg, kind, envs[0].num_actions());
    tch::manual_seed(mix(gseed, 0xC0FFEE) as i64);
    let mut dqn = Dqn::new(&net, cfg.agent.dqn(), device);
    let memory = Arc::new(AnyMemory::new(cfg.replay.capacity, n, matches!(kind, ObsKind::Frames { .. }), &kind.shape()));
    let shared = Arc::new(Shared::default());
    shared.actors_running.store(n as u64, Ordering::SeqCst);
    let (mut step_origin, mut update_origin, mut wall_before) = (0u64, 0u64, 0.0);
    let mut returns: Vec<f64> = Vec::new();
    let cfg_text = cfg.to_toml();
    let run_dir = match &resume {
        None => {
            let d = new_run_dir(runs_dir, &env_id.short_name(), cfg.agent.variant.name(), seed)?;
            std::fs::write(d.join("config.toml"), &cfg_text)?;
            d
        }
        Some(r) => {
            dqn.load(&r.ckpt).with_context(|| format!("loading {}", r.ckpt.display()))?;
            let st = &r.state;
            if st.has_replay {
                let f = std::fs::File::open(r.ckpt.join("replay.bin"))?;
                memory.load(&mut std::io::BufReader::with_capacity(1 << 22, f)).with_context(|| format!("loading {}/replay.bin", r.ckpt.display()))?;
            } else {
                (step_origin, update_origin) = (st.env_steps, st.updates);
            }
            for c in [&shared.env_steps, &shared.inserted] {
                c.store(st.env_steps, Ordering::SeqCst);
            }
            shared.updates.store(st.updates, Ordering::SeqCst);
            shared.episodes.store(st.episodes, Ordering::SeqCst);
            returns = st.recent_returns.clone();
            wall_before = st.wall_secs;
            let dropped = crate::events::truncate_after(&r.run_dir, st.env_steps)?;
            std::fs::write(r.run_dir.join("config.toml"), &cfg_text)?;
            eprintln!(
                "resuming {} from {} ({} env steps, {} updates{}; {dropped} logged events after it dropped)",
                r.run_dir.display(),
                r.ckpt.file_name().unwrap_or_default().to_string_lossy(),
                st.env_steps,
                st.updates,
                if st.has_replay { ", with its replay memory" } else { "; the replay memory refills first" }
            );
            r.run_dir.clone()
        }
    };
    // tensorboard-rs names event files by the second: never reuse a name in a resumed run.
    while resume.is_some() && crate::events::files(&run_dir).iter().any(|f| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        f.to_string_lossy().contains(&format!("tfevents.{now:010}."))
    }) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut board = Board::new(&run_dir);
    if resume.is_none() {
        let start_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        board.hparams(&run_dir.file_name().unwrap_or_default().to_string_lossy(), &hparams(&cfg), start_secs);
        board.text("config", &format!("```toml\n{cfg_text}\n```"), 0);
    }
    board.flush();
    let start_step = shared.env_steps.load(Ordering::SeqCst);
    let shared_start_updates = shared.updates.load(Ordering::SeqCst);
    let make_state = {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        move |recent: Vec<f64>, wall: f64, has_replay: bool| crate::checkpoint::State {
            env_steps: shared.inserted.load(Ordering::Acquire),
            updates: shared.updates.load(Ordering::Acquire),
            episodes: shared.episodes.load(Ordering::Acquire),
            recent_returns: recent,
            epsilon: cfg.actors.schedule().value(shared.inserted.load(Ordering::Acquire)),
            seed,
            generation,
            wall_secs: wall,
            has_replay,
        }
    };
    let recent = Arc::new(std::sync::Mutex::new(returns.iter().rev().take(100).rev().copied().collect::<Vec<f64>>()));
    let (act_tx, act_rx) = bounded(4 * n);
    let (batch_tx, batch_rx) = bounded(cfg.learner.prefetch);
    let (ev_tx, ev_rx) = unbounded::<Event>();
    let (eval_tx, eval_rx) = bounded::<(u64, Vec<(String, Tensor)>)>(1);

    let replay = {
        let (m, s, bs, w, shape) = (memory.clone(), shared.clone(), cfg.replay.batch_size, cfg.replay.warmup_steps, kind.shape());
        let (scale, idle) = (device == Device::Cpu, cfg.learner.exclusive_cpu);
        spawn("replay", &shared, move || learner::replay_thread(m, s, act_rx, batch_tx, bs, w, shape, mix(gseed, 2), scale, idle))?
    };
    let learner = {
        let spec = learner::LearnerSpec {
            device,
            warmup: cfg.replay.warmup_steps,
            step_origin,
            update_origin,
            replay_ratio: cfg.learner.replay_ratio,
            publish_every: cfg.learner.publish_every,
            threads: if cfg.learner.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { cfg.learner.threads },
            data_init: cfg.agent.variant.data_init().then_some((cfg.agent.init_batch, cfg.agent.init_scale)),
            scalars_every: cfg.log.scalars_every,
            histograms_every: cfg.log.histograms_every,
            obs_shape: kind.shape(),
            seed: gseed,
        };
        let (m, s, ev) = (memory.clone(), shared.clone(), ev_tx.clone());
        let every = cfg.log.checkpoint_every;
        let (ck_dir, ck_cfg, keep, recent, make_state) = (run_dir.clone(), cfg_text.clone(), cfg.log.keep_checkpoints, recent.clone(), make_state.clone());
        let ev2 = ev_tx.clone();
        let on_update = move |dqn: &Dqn| -> Result<()> {
            if every > 0 && dqn.updates() % every == 0 {
                let r = recent.lock().map(|r| r.clone()).unwrap_or_default();
                let st = make_state(r, wall_before + started.elapsed().as_secs_f64(), false);
                let p = crate::checkpoint::write(&ck_dir, dqn, &st, &ck_cfg, None, keep)?;
                let _ = ev2.send(Event::Note(format!("checkpoint {}", p.display())));
            }
            Ok(())
        };
        spawn("learner", &shared, move || learner::learner_thread(dqn, spec, m, s, batch_rx, ev, on_update))?
    };
    let mut actors = Vec::new();
    for (i, env) in envs.into_iter().enumerate() {
        let spec = actor::ActorSpec {
            index: i,
            num_actors: n,
            env,
            env_seed: mix(gseed, 100 + i as u64),
            rng_seed: mix(gseed, 200 + i as u64),
            net: net.clone(),
            schedule: cfg.actors.schedule(),
            apex: cfg.actors.apex.then_some((cfg.actors.apex_base, cfg.actors.apex_alpha)),
            total_steps: cfg.run.total_env_steps,
            warmup: cfg.replay.warmup_steps,
            step_origin,
            update_origin,
            replay_ratio: cfg.learner.replay_ratio,
            send_batch: cfg.actors.send_batch,
            idle_priority: cfg.learner.exclusive_cpu,
        };
        let (s, tx, ev) = (shared.clone(), act_tx.clone(), ev_tx.clone());
        let s2 = shared.clone();
        actors.push(spawn(&format!("actor{i}"), &shared, move || {
            let r = actor::run(spec, s, tx, ev);
            s2.actors_running.fetch_sub(1, Ordering::SeqCst);
            r
        })?);
    }
    drop(act_tx);
    let evaluator = {
        let (ev, net, log, idle) = (ev_tx.clone(), net.clone(), cfg.log.clone(), cfg.learner.exclusive_cpu);
        let mut env = eval_env;
        spawn("evaluator", &shared, move || {
            crate::threads::limit_current_thread(1);
            if idle {
                crate::threads::background();
            }
            let vs = nn::VarStore::new(Device::Cpu);
            let q = QNetwork::new(&vs.root(), &net);
            for (step, snap) in eval_rx.iter() {
                load_snapshot(&vs, &snap);
                let returns = eval::evaluate(env.as_mut(), &q, log.eval_episodes, log.eval_epsilon, log.eval_max_steps, mix(gseed, 300 + step), |_, _| {})?;
                let _ = ev.send(Event::Eval { step, returns });
            }
            Ok(())
        })?
    };
    drop(ev_tx);

    // The main thread: events -> TensorBoard, progress bar, evaluation triggers.
    let total = cfg.run.total_env_steps;
    let pb = if opts.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
        pb.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} steps  {per_sec}  ETA {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb
    };
    let mut last_eval: Option<f64> = None;
    let mut last_log = (Instant::now(), start_step);
    let mut next_scalars = (start_step / cfg.log.scalars_every + 1) * cfg.log.scalars_every;
    let mut next_eval = if cfg.log.eval_every > 0 { (start_step / cfg.log.eval_every + 1) * cfg.log.eval_every } else { u64::MAX };
    let mut eval_sent_final = false;
    let mut eval_tx = Some(eval_tx);
    let mut latest_loss = f64::NAN;
    let mut best20 = f64::NAN;
    let mut solved_at: Option<u64> = None;
    let mut learn_start: Option<Mark> = None;
    let mut measured_end: Option<Mark> = None;
    loop {
        if crate::signals::interrupted() && !shared.stopping() {
            shared.request_stop();
        }
        match ev_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Episode { step, ret, length }) => {
                board.scalar("charts/episodic_return", ret, step);
                board.scalar("charts/episodic_length", length as f64, step);
                returns.push(ret);
                if let Ok(mut r) = recent.lock() {
                    r.push(ret);
                    if r.len() > 100 {
                        r.remove(0);
                    }
                }
                if returns.len() >= 20 {
                    let m = returns[returns.len() - 20..].iter().sum::<f64>() / 20.0;
                    best20 = best20.max(m);
                    if cfg.run.stop_at_return > 0.0 && m >= cfg.run.stop_at_return && solved_at.is_none() {
                        solved_at = Some(step);
                        pb.println(format!("the 20-game mean return reached {m:.1} at {step} steps: stopping (run.stop_at_return)"));
                        shared.request_stop();
                    }
                }
            }
            Ok(Event::Learner { step, updates, loss, q, grad_norm, updates_per_sec }) => {
                board.scalar("losses/td_loss", loss, step);
                board.scalar("losses/q_values", q, step);
                board.scalar("learner/grad_norm", grad_norm, step);
                board.scalar("learner/updates_per_sec", updates_per_sec, step);
                board.scalar("learner/updates", updates as f64, step);
                latest_loss = loss;
            }
            Ok(Event::Scales { step, layers }) => {
                for (name, g) in layers {
                    let mean = g.iter().map(|&x| x as f64).sum::<f64>() / g.len().max(1) as f64;
                    board.scalar(&format!("weight_norm/g_mean/{name}"), mean, step);
                    board.histogram(&format!("weight_norm/g/{name}"), &g, step);
                }
            }
            Ok(Event::Eval { step, returns: r }) => {
                let [mean, _, std, _, _] = eval::stats(&r);
                board.scalar("eval/episodic_return", mean, step);
                board.scalar("eval/episodic_return_std", std, step);
                last_eval = Some(mean);
                pb.println(format!("eval @ {step} steps: mean return {mean:.1} ± {std:.1} over {} games", r.len()));
            }
            Ok(Event::Note(s)) => pb.println(s),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if learn_start.is_none() && shared.updates.load(Ordering::Acquire) > 0 {
            learn_start = Some(Mark::now(&shared));
        }
        if let (Some(m), Some(limit), None) = (learn_start, opts.measure_secs, measured_end) {
            if m.t.elapsed().as_secs_f64() >= limit {
                measured_end = Some(Mark::now(&shared));
                shared.request_stop();
            }
        }
        let step = shared.env_steps.load(Ordering::Acquire);
        if step >= next_scalars {
            let (t, s0) = last_log;
            let sps = (step - s0) as f64 / t.elapsed().as_secs_f64().max(1e-9);
            board.scalar("charts/sps", sps, step);
            board.scalar("charts/epsilon", if cfg.actors.apex { wndqn_agents::schedule::apex_epsilon(0, n, cfg.actors.apex_base, cfg.actors.apex_alpha) } else { cfg.actors.schedule().value(step) }, step);
            board.scalar("replay/size", memory.len() as f64, step);
            last_log = (Instant::now(), step);
            next_scalars = (step / cfg.log.scalars_every + 1) * cfg.log.scalars_every;
        }
        let learner_done = learner.is_finished();
        if step >= next_eval || (learner_done && !eval_sent_final && cfg.log.eval_every > 0 && !shared.stopping()) {
            if shared.weights.version() > 0 {
                if let Some(tx) = &eval_tx {
                    let (_, snap) = shared.weights.read(|s| s.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>());
                    if tx.try_send((step, snap)).is_ok() && learner_done {
                        eval_sent_final = true;
                    }
                }
            }
            if step >= next_eval {
                next_eval = (step / cfg.log.eval_every + 1) * cfg.log.eval_every;
            }
        }
        if learner_done && (eval_sent_final || cfg.log.eval_every == 0 || shared.stopping()) {
            eval_tx = None; // lets the evaluator finish its last job and exit
        }
        let last = returns.last().map(|r| format!("return {r:.1}")).unwrap_or_default();
        pb.set_position(step.min(total));
        pb.set_message(format!("{last}  upd {}  loss {latest_loss:.4}", shared.updates.load(Ordering::Relaxed)));
        if shared.stopping() {
            eval_tx = None;
        }
    }
    drop(eval_tx);
    let mut errors = Vec::new();
    for a in actors {
        join(a, &mut errors);
    }
    join(replay, &mut errors);
    let outcome = join(learner, &mut errors);
    join(evaluator, &mut errors);
    pb.finish_and_clear();
    if let Some(out) = outcome {
        if out.dqn.updates() > 0 {
            let r = recent.lock().map(|r| r.clone()).unwrap_or_default();
            let st = make_state(r, wall_before + started.elapsed().as_secs_f64(), opts.save_replay);
            let replay = opts.save_replay.then_some(memory.as_ref());
            match crate::checkpoint::write(&run_dir, &out.dqn, &st, &cfg_text, replay, cfg.log.keep_checkpoints) {
                Ok(p) => {
                    if !opts.quiet {
                        eprintln!("checkpoint {}", p.display());
                    }
                }
                Err(e) => errors.push(e.context("writing the final checkpoint")),
            }
        }
    }
    let end_mark = measured_end.unwrap_or_else(|| Mark::now(&shared));
    let measured = learn_start.map(|a| end_mark.since(&a, n));

    let wall = started.elapsed().as_secs_f64();
    let steps = shared.env_steps.load(Ordering::Acquire);
    let updates = shared.updates.load(Ordering::Acquire);
    let ns = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64 * 1e-9;
    let tail = &returns[returns.len().saturating_sub(20)..];
    let summary = Summary {
        run_dir: run_dir.clone(),
        env: env_id.short_name(),
        variant: cfg.agent.variant.name().into(),
        seed,
        env_steps: steps,
        updates,
        episodes: shared.episodes.load(Ordering::Acquire),
        interrupted: crate::signals::interrupted(),
        wall_secs: wall,
        env_steps_per_sec: (steps - start_step) as f64 / wall,
        updates_per_sec: (updates - shared_start_updates) as f64 / wall,
        last20_mean_return: if tail.is_empty() { f64::NAN } else { tail.iter().sum::<f64>() / tail.len() as f64 },
        best20_mean_return: best20,
        solved_at_step: solved_at,
        actor_wait_frac: ns(&shared.actor_wait_ns) / (wall * n as f64),
        learner_wait_frac: ns(&shared.learner_wait_ns) / wall,
        learner_busy_frac: ns(&shared.learner_busy_ns) / wall,
        final_eval_mean: last_eval,
        measured,
    };
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    board.hparams_end(end, steps);
    board.flush();
    drop(board);
    std::fs::write(run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context(format!("run {} stopped", run_dir.display())));
    }
    Ok(summary)
}
