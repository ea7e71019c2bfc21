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
use wndqn_agents::graphed::GraphedUpdate;

/// How the learner runs its updates (also `bench learner`'s, so it measures this path).
pub(crate) enum Updater {
    /// Eager tch ops, statistics read after every update (CPU, or `learner.cuda_graph = false`).
    Eager,
    /// CUDA graph wanted, captured on the first batch.
    GraphPending,
    /// Replaying the captured update.
    Graphed(GraphedUpdate),
}

impl Updater {
    /// Graphed on a CUDA device when `cuda_graph`, else eager.
    pub(crate) fn new(cuda_graph: bool, device: Device) -> Updater {
        if cuda_graph && device.is_cuda() {
            Updater::GraphPending
        } else {
            Updater::Eager
        }
    }

    /// One update on `b` (as the replay thread prepared it); statistics go into `acc` now
    /// (eager) or when [`Updater::flush_stats`] reads them (graphed).
    pub(crate) fn update(
        &mut self,
        dqn: &mut Dqn,
        b: TensorBatch,
        prep: &BatchPrep,
        acc: &mut Acc,
        events: &Sender<Event>,
        step: u64,
    ) -> Result<()> {
        if let Updater::GraphPending = self {
            let captured = GraphedUpdate::new(dqn, &b).and_then(|mut g| {
                // The warm-up updates' statistics, then the first replay against an eager update.
                if let Some((n, st)) = g.take_stats() {
                    acc.add(n, &st);
                }
                let replay = b.shallow_clone();
                let check = dqn.check_against_eager(
                    &prep.to_learner(b.shallow_clone()),
                    |d| {
                        g.update(d, &replay)?;
                        Ok(g.take_stats().map(|s| s.1).unwrap_or_default())
                    },
                    GRAPH_TOLERANCE,
                )?;
                Ok((g, check))
            });
            *self = match adopt_graph(captured, step, events) {
                Some(g) => Updater::Graphed(g),
                None => Updater::Eager,
            };
            // The warm-up updates and the eager update of the check were this batch's updates.
            return Ok(());
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
    pub(crate) fn flush_stats(&mut self, acc: &mut Acc) {
        if let Updater::Graphed(g) = self {
            if let Some((n, st)) = g.take_stats() {
                acc.add(n, &st);
            }
        }
    }

    /// Whether the updates replay a captured CUDA graph.
    pub(crate) fn graphed(&self) -> bool {
        matches!(self, Updater::Graphed(_))
    }
}

/// How far the first replayed CUDA-graph update may be from the eager update of the same state
/// and batch (relative to each quantity's scale): the same kernels in another order, and the
/// clipping factor and bias corrections computed on the device, differ in the last bits.
pub const GRAPH_TOLERANCE: f64 = 1e-4;

/// Keep a captured update whose check passed; otherwise warn (stderr and TensorBoard text) and
/// let the learner go on with eager updates. `captured`: the capture and its check.
fn adopt_graph<G: Staged>(captured: Result<(G, Result<f64, String>)>, step: u64, events: &Sender<Event>) -> Option<G> {
    let warn = |text: String| {
        let _ = events.send(Event::Warning { step, text });
    };
    match captured {
        Ok((g, Ok(diff))) => {
            let how = if g.staged() { "batches staged on a copy stream" } else { "no copy stream" };
            let _ = events.send(Event::Note(format!(
                "learner: updates captured as a CUDA graph ({how}); its first update matches an eager one (largest relative difference {diff:.1e})"
            )));
            Some(g)
        }
        Ok((_, Err(why))) => {
            warn(format!("the CUDA-graph update does not match the eager update from the same state ({why}): eager updates from here; please report it (learner.cuda_graph = false skips the attempt)"));
            None
        }
        Err(e) => {
            warn(format!("CUDA graph capture failed, eager updates from here ({e:#}); set learner.cuda_graph = false to skip the attempt"));
            None
        }
    }
}

/// What [`adopt_graph`] needs of a captured update.
trait Staged {
    fn staged(&self) -> bool;
}

impl Staged for GraphedUpdate {
    fn staged(&self) -> bool {
        GraphedUpdate::staged(self)
    }
}

/// Learner settings.
pub struct LearnerSpec {
    pub device: Device,
    pub pace: super::pace::Pace,
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
pub(crate) struct Acc {
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
    pub(crate) fn new(updates: u64) -> Acc {
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
    while shared.inserted.load(Ordering::Acquire) < spec.pace.warm_at() {
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
    let inserted = shared.inserted.load(Ordering::Acquire);
    if dqn.updates() < spec.pace.updates_due(inserted) {
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
    let mut updater = Updater::new(spec.cuda_graph, spec.device);
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
        let t_wait = Instant::now();
        let got = batches.recv_timeout(Duration::from_millis(50));
        shared.learner_wait_ns.fetch_add(t_wait.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let batch = match got {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let t0 = Instant::now();
        updater.update(&mut dqn, batch, &prep, &mut acc, &events, shared.env_steps.load(Ordering::Acquire))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};
    use wndqn_agents::normalization::Variant;
    use wndqn_agents::qnet::Arch;

    fn dqn() -> Dqn {
        tch::manual_seed(0);
        let cfg = crate::config::load(&crate::config::presets_dir().join("minatar.toml"), &[]).unwrap();
        crate::train::bench_dqn(Arch::Minatar, Variant::WeightNorm, cfg.agent.dqn(), Device::Cpu, None).unwrap().0
    }

    fn batch() -> TensorBatch {
        let o = || Tensor::rand([32, 4, 10, 10], (Kind::Float, Device::Cpu)).lt(0.3).to_kind(Kind::Uint8) * 255;
        TensorBatch {
            obs: o(),
            next_obs: o(),
            actions: Tensor::randint(6, [32], (Kind::Int64, Device::Cpu)),
            rewards: Tensor::randn([32], (Kind::Float, Device::Cpu)),
            terminated: Tensor::zeros([32], (Kind::Float, Device::Cpu)),
        }
    }

    /// The device-side update (what a CUDA graph replays), optionally with a wrong result.
    fn device_update(d: &mut Dqn, b: &TensorBatch, break_it: bool) -> anyhow::Result<UpdateStats> {
        let sums = Tensor::zeros([wndqn_agents::dqn::STAT_SUMS], (Kind::Double, Device::Cpu));
        d.make_capturable();
        d.update_on_device(b, &sums)?;
        d.finish_device_update();
        if break_it {
            tch::no_grad(|| {
                let _ = d.online_vs.variables()["fc1.v"].shallow_clone().g_mul_scalar_(1.01);
            });
        }
        Ok(wndqn_agents::dqn::stats_from_sums(&sums, 1))
    }

    struct Fake;
    impl Staged for Fake {
        fn staged(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_graphed_update_is_kept_only_when_it_matches_the_eager_one() {
        let b = batch();
        // A faithful update passes, and the network ends as the eager update leaves it.
        let mut a = dqn();
        let mut reference = dqn();
        let check = a.check_against_eager(&b, |d| device_update(d, &b, false), GRAPH_TOLERANCE).unwrap();
        assert!(check.is_ok(), "{check:?}");
        reference.update(&b);
        for (n, t) in a.online_vs.variables() {
            assert!(t.equal(&reference.online_vs.variables()[&n]), "{n}: not the eager update's result");
        }
        assert_eq!(a.updates(), 1);
        let (tx, rx) = crossbeam::channel::unbounded();
        assert!(adopt_graph(Ok((Fake, check)), 7, &tx).is_some());
        assert!(matches!(rx.try_recv(), Ok(Event::Note(n)) if n.contains("matches an eager one")));

        // An injected mismatch (1% on one weight) is caught, names the weight, and falls back.
        let mut c = dqn();
        let check = c.check_against_eager(&b, |d| device_update(d, &b, true), GRAPH_TOLERANCE).unwrap();
        let why = check.clone().unwrap_err();
        assert!(why.contains("fc1.v"), "{why}");
        for (n, t) in c.online_vs.variables() {
            assert!(
                t.equal(&reference.online_vs.variables()[&n]),
                "{n}: the fallback does not go on from the eager update"
            );
        }
        assert!(adopt_graph(Ok((Fake, check)), 7, &tx).is_none());
        match rx.try_recv() {
            Ok(Event::Warning { step: 7, text }) => {
                assert!(text.contains("does not match") && text.contains("fc1.v"), "{text}")
            }
            other => panic!("no warning: {:?}", other.is_ok()),
        }
        // A capture error falls back with a warning too.
        assert!(adopt_graph::<Fake>(Err(anyhow::anyhow!("no graphs here")), 9, &tx).is_none());
        assert!(matches!(rx.try_recv(), Ok(Event::Warning { step: 9, text }) if text.contains("no graphs here")));
    }
}
