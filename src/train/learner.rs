//! The learner thread: data-dependent init, updates at the replay ratio, target sync, weight
//! publishing to the actors, learner statistics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Device, Kind};
use wndqn_agents::diagnostics::Diagnostics;
use wndqn_agents::dqn::{Dqn, UpdateStats};
use wndqn_agents::replay::{AnyMemory, BatchPrep, TensorBatch};

use super::shared::{backoff, next_multiple, Event, Shared};
use wndqn_agents::ext::graphed::GraphedUpdate;

/// How the learner runs its updates.
enum Updater {
    /// Eager tch ops, statistics read after every update (CPU, or `learner.cuda_graph = false`).
    Eager,
    /// CUDA graph wanted, captured on the first batch.
    GraphPending,
    /// Replaying the captured update.
    Graphed(GraphedUpdate),
}

impl Updater {
    fn new(spec: &LearnerSpec) -> Updater {
        if spec.cuda_graph && spec.device.is_cuda() {
            Updater::GraphPending
        } else {
            Updater::Eager
        }
    }

    /// One update on `b` (as the replay thread prepared it); statistics go into `acc` now
    /// (eager) or when [`Updater::flush_stats`] reads them (graphed).
    fn update(
        &mut self,
        dqn: &mut Dqn,
        b: TensorBatch,
        prep: &BatchPrep,
        acc: &mut Acc,
        events: &Sender<Event>,
    ) -> Result<()> {
        if let Updater::GraphPending = self {
            match GraphedUpdate::new(dqn, &b) {
                Ok(g) => {
                    let how = if g.staged() { "batches staged on a copy stream" } else { "no copy stream" };
                    let _ = events.send(Event::Note(format!("learner: updates captured as a CUDA graph ({how})")));
                    *self = Updater::Graphed(g);
                    // The warm-up updates were this batch's update.
                    return Ok(());
                }
                Err(e) => {
                    let _ = events.send(Event::Note(format!(
                        "learner: CUDA graph capture failed, eager updates from here ({e:#}); set learner.cuda_graph = false to skip the attempt"
                    )));
                    *self = Updater::Eager;
                }
            }
        }
        match self {
            Updater::Graphed(g) => g.update(dqn, &b),
            _ => {
                acc.add(1, &dqn.update(&prep.to_learner(b)));
                Ok(())
            }
        }
    }

    /// Read the graphed updates' statistics into `acc` (waits for the GPU).
    fn flush_stats(&mut self, acc: &mut Acc) {
        if let Updater::Graphed(g) = self {
            if let Some((n, st)) = g.take_stats() {
                acc.add(n, &st);
            }
        }
    }
}

/// Learner settings.
pub struct LearnerSpec {
    pub device: Device,
    pub warmup: u64,
    /// Env steps and updates at which this segment's replay-ratio accounting starts (0, 0 for a
    /// fresh run or a resume with the replay memory; the checkpoint's counters otherwise, so
    /// the emptied memory is refilled with `warmup` steps first).
    pub step_origin: u64,
    pub update_origin: u64,
    pub replay_ratio: f64,
    pub publish_every: u64,
    pub threads: usize,
    pub data_init: Option<(usize, f64)>,
    pub scalars_every: u64,
    pub histograms_every: u64,
    /// Diagnostics every this many updates, on a probe batch of this many observations.
    pub diagnostics: Option<(u64, usize)>,
    pub obs_shape: Vec<i64>,
    pub seed: u64,
    /// Capture the update as a CUDA graph (CUDA learners only; `learner.cuda_graph`).
    pub cuda_graph: bool,
}

/// What the learner hands back at the end (for the final checkpoint).
pub struct LearnerOutcome {
    pub dqn: Dqn,
}

/// Learner statistics accumulated between two `Event::Learner` reports.
struct Acc {
    n: u64,
    loss: f64,
    q: f64,
    grad: f64,
    since: Instant,
    updates_at: u64,
    /// The first statistics that were not finite: training diverged.
    diverged: Option<UpdateStats>,
}

impl Acc {
    fn new(updates: u64) -> Acc {
        Acc { n: 0, loss: 0.0, q: 0.0, grad: 0.0, since: Instant::now(), updates_at: updates, diverged: None }
    }

    /// Add `n` updates whose mean statistics are `st`.
    fn add(&mut self, n: u64, st: &UpdateStats) {
        let w = n as f64;
        if !(st.loss.is_finite() && st.q_mean.is_finite() && st.grad_norm.is_finite()) && self.diverged.is_none() {
            self.diverged = Some(*st);
        }
        self.n += n;
        self.loss += st.loss * w;
        self.q += st.q_mean * w;
        self.grad += st.grad_norm * w;
    }

    /// An error when training diverged: the loss or the Q values stopped being numbers. The
    /// run stops; its checkpoints from before stay the newest (no checkpoint of these weights).
    fn check(&self, updates: u64, step: u64) -> Result<()> {
        match &self.diverged {
            None => Ok(()),
            Some(st) => anyhow::bail!(
                "training diverged: the TD loss became {} (mean Q {}, gradient norm {}) by update {updates}, env step {step}. The last checkpoint before it is kept; lower agent.lr, keep agent.grad_clip_norm on, or check agent.init_scale and the optimizer settings",
                st.loss,
                st.q_mean,
                st.grad_norm
            ),
        }
    }

    /// The interval's means, and a fresh accumulator.
    fn report(&mut self, step: u64, updates: u64) -> Event {
        let (n, dt) = (self.n as f64, self.since.elapsed().as_secs_f64());
        let e = Event::Learner {
            step,
            updates,
            loss: self.loss / n,
            q: self.q / n,
            grad_norm: self.grad / n,
            updates_per_sec: (updates - self.updates_at) as f64 / dt.max(1e-9),
        };
        *self = Acc::new(updates);
        e
    }
}

/// Wait until the warm-up is in the memory; false when the run ends first.
fn wait_for_warmup(spec: &LearnerSpec, shared: &Shared) -> bool {
    while shared.inserted.load(Ordering::Acquire) < spec.step_origin + spec.warmup {
        let actors_done = shared.actors_running.load(Ordering::Acquire) == 0
            && shared.inserted.load(Ordering::Acquire) >= shared.env_steps.load(Ordering::Acquire);
        if shared.stopping() || actors_done {
            return false;
        }
        backoff(&shared.learner_wait_ns);
    }
    true
}

/// The paper's data-dependent init on warm-up observations, before the first update.
fn data_init(dqn: &mut Dqn, spec: &LearnerSpec, memory: &AnyMemory, prep: &BatchPrep, events: &Sender<Event>) {
    let Some((n, scale)) = spec.data_init.filter(|_| dqn.updates() == 0) else { return };
    let mut rng = StdRng::seed_from_u64(crate::seeds::derive(spec.seed, crate::seeds::Stream::DataInit));
    if let Some(b) = memory.sample_tensors(n, &mut rng, &spec.obs_shape, prep) {
        dqn.data_init(&prep.to_learner(b).obs, scale);
        let _ = events.send(Event::Note(format!("data-dependent init on {n} warm-up observations")));
    }
}

/// Whether the replay ratio allows another update; `None` when no more data will come.
fn update_due(dqn: &Dqn, spec: &LearnerSpec, shared: &Shared) -> Option<bool> {
    // One update per 1/ratio inserted env steps after the warm-up.
    let inserted = shared.inserted.load(Ordering::Acquire);
    let due = spec.update_origin
        + ((inserted.saturating_sub(spec.step_origin + spec.warmup)) as f64 * spec.replay_ratio) as u64;
    if dqn.updates() < due {
        return Some(true);
    }
    let actors_done = shared.actors_running.load(Ordering::Acquire) == 0;
    (!(actors_done && inserted >= shared.env_steps.load(Ordering::Acquire))).then_some(false)
}

/// The weight-norm scales of every layer, for the histograms.
fn scales_event(dqn: &Dqn, step: u64) -> Option<Event> {
    let layers = dqn
        .online
        .scales()
        .into_iter()
        .filter_map(|(n, g)| Vec::<f32>::try_from(g.to_device(Device::Cpu).to_kind(Kind::Float)).ok().map(|v| (n, v)))
        .collect::<Vec<_>>();
    (!layers.is_empty()).then_some(Event::Scales { step, layers })
}

/// The diagnostics of the learner: a probe batch drawn once from the replay memory (on the
/// learner's device), and each layer's weight from the last measurement.
struct Probe {
    obs: Option<tch::Tensor>,
    diag: Diagnostics,
}

impl Probe {
    fn measure(
        &mut self,
        dqn: &Dqn,
        spec: &LearnerSpec,
        memory: &AnyMemory,
        prep: &BatchPrep,
        step: u64,
    ) -> Option<Event> {
        let (_, n) = spec.diagnostics?;
        if self.obs.is_none() {
            let mut rng =
                StdRng::seed_from_u64(crate::seeds::derive(spec.seed, crate::seeds::Stream::DiagnosticsProbe));
            self.obs = memory.sample_tensors(n, &mut rng, &spec.obs_shape, prep).map(|b| prep.to_learner(b).obs);
        }
        let report = self.diag.measure(&dqn.online, self.obs.as_ref()?);
        Some(Event::Diagnostics { step, report })
    }
}

/// The learner loop.
pub fn learner_thread(
    mut dqn: Dqn,
    spec: LearnerSpec,
    memory: Arc<AnyMemory>,
    shared: Arc<Shared>,
    batches: Receiver<TensorBatch>,
    events: Sender<Event>,
    mut on_update: impl FnMut(&Dqn) -> Result<()>,
) -> Result<LearnerOutcome> {
    if spec.threads > 0 {
        tch::set_num_threads(spec.threads as i32);
    }
    let prep = BatchPrep::for_device(spec.device);
    // A resumed run's actors act with its trained policy while the memory refills.
    if dqn.updates() > 0 {
        shared.weights.publish(dqn.snapshot());
    }
    if !wait_for_warmup(&spec, &shared) {
        return Ok(LearnerOutcome { dqn });
    }
    data_init(&mut dqn, &spec, &memory, &prep, &events);
    shared.weights.publish(dqn.snapshot());
    let mut acc = Acc::new(dqn.updates());
    let mut updater = Updater::new(&spec);
    let mut probe = Probe { obs: None, diag: Diagnostics::default() };
    let start = shared.env_steps.load(Ordering::Acquire);
    let (mut next_log, mut next_hist) =
        (next_multiple(start, spec.scalars_every), next_multiple(start, spec.histograms_every));
    while !shared.stopping() {
        match update_due(&dqn, &spec, &shared) {
            None => break,
            Some(false) => {
                shared.gate.wait(&shared.learner_wait_ns);
                continue;
            }
            Some(true) => {}
        }
        let batch = match batches.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let t0 = Instant::now();
        updater.update(&mut dqn, batch, &prep, &mut acc, &events)?;
        shared.learner_busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let updates = dqn.updates();
        acc.check(updates, shared.env_steps.load(Ordering::Acquire))?;
        shared.updates.store(updates, Ordering::Release);
        shared.gate.notify();
        if updates.is_multiple_of(spec.publish_every) {
            shared.weights.publish(dqn.snapshot());
        }
        on_update(&dqn)?;
        let step = shared.env_steps.load(Ordering::Acquire);
        if spec.diagnostics.is_some_and(|(every, _)| updates.is_multiple_of(every)) {
            let t0 = Instant::now();
            if let Some(e) = probe.measure(&dqn, &spec, &memory, &prep, step) {
                let _ = events.send(e);
            }
            shared.diagnostics_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        if step >= next_log {
            updater.flush_stats(&mut acc);
            acc.check(updates, step)?;
            let _ = events.send(acc.report(step, updates));
            next_log = next_multiple(step, spec.scalars_every);
        }
        if step >= next_hist {
            if let Some(e) = scales_event(&dqn, step) {
                let _ = events.send(e);
            }
            next_hist = next_multiple(step, spec.histograms_every);
        }
    }
    shared.weights.publish(dqn.snapshot());
    Ok(LearnerOutcome { dqn })
}
