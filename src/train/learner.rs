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
use wndqn_agents::dqn::Dqn;
use wndqn_agents::replay::{AnyMemory, TensorBatch};

use super::shared::{backoff, Event, Shared};

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
    pub obs_shape: Vec<i64>,
    pub seed: u64,
}

/// What the learner hands back at the end (for the final checkpoint).
pub struct LearnerOutcome {
    pub dqn: Dqn,
}

struct Acc {
    n: u64,
    loss: f64,
    q: f64,
    grad: f64,
    since: Instant,
    updates_at: u64,
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
    // Wait for the warm-up.
    while shared.inserted.load(Ordering::Acquire) < spec.step_origin + spec.warmup {
        let actors_done = shared.actors_running.load(Ordering::Acquire) == 0
            && shared.inserted.load(Ordering::Acquire) >= shared.env_steps.load(Ordering::Acquire);
        if shared.stopping() || actors_done {
            return Ok(LearnerOutcome { dqn });
        }
        backoff(&shared.learner_wait_ns);
    }
    if dqn.updates() == 0 {
        if let Some((n, scale)) = spec.data_init {
            let mut rng = StdRng::seed_from_u64(spec.seed ^ 0xDA7A);
            if let Some(b) = memory.sample_tensors(n, &mut rng, &spec.obs_shape, spec.device, false) {
                dqn.data_init(&b.obs, scale);
                let _ = events.send(Event::Note(format!("data-dependent init on {n} warm-up observations")));
            }
        }
    }
    shared.weights.publish(dqn.snapshot());
    let mut acc = Acc { n: 0, loss: 0.0, q: 0.0, grad: 0.0, since: Instant::now(), updates_at: dqn.updates() };
    let mut next_log = (shared.env_steps.load(Ordering::Acquire) / spec.scalars_every + 1) * spec.scalars_every;
    let mut next_hist =
        (shared.env_steps.load(Ordering::Acquire) / spec.histograms_every.max(1) + 1) * spec.histograms_every.max(1);
    loop {
        if shared.stopping() {
            break;
        }
        // Replay ratio: one update per 1/ratio inserted env steps after the warm-up.
        let inserted = shared.inserted.load(Ordering::Acquire);
        let due = spec.update_origin
            + ((inserted.saturating_sub(spec.step_origin + spec.warmup)) as f64 * spec.replay_ratio) as u64;
        if dqn.updates() >= due {
            let actors_done = shared.actors_running.load(Ordering::Acquire) == 0;
            if actors_done && inserted >= shared.env_steps.load(Ordering::Acquire) {
                break;
            }
            shared.gate.wait(&shared.learner_wait_ns);
            continue;
        }
        let batch = match batches.recv_timeout(Duration::from_millis(50)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let t0 = Instant::now();
        let batch = if spec.device == Device::Cpu { batch } else { to_device(batch, spec.device) };
        let st = dqn.update(&batch);
        shared.learner_busy_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let updates = dqn.updates();
        shared.updates.store(updates, Ordering::Release);
        shared.gate.notify();
        acc.n += 1;
        acc.loss += st.loss;
        acc.q += st.q_mean;
        acc.grad += st.grad_norm;
        if updates.is_multiple_of(spec.publish_every) {
            shared.weights.publish(dqn.snapshot());
        }
        on_update(&dqn)?;
        let step = shared.env_steps.load(Ordering::Acquire);
        if step >= next_log && acc.n > 0 {
            let dt = acc.since.elapsed().as_secs_f64();
            let n = acc.n as f64;
            let _ = events.send(Event::Learner {
                step,
                updates,
                loss: acc.loss / n,
                q: acc.q / n,
                grad_norm: acc.grad / n,
                updates_per_sec: (updates - acc.updates_at) as f64 / dt.max(1e-9),
            });
            acc = Acc { n: 0, loss: 0.0, q: 0.0, grad: 0.0, since: Instant::now(), updates_at: updates };
            next_log = (step / spec.scalars_every + 1) * spec.scalars_every;
        }
        if spec.histograms_every > 0 && step >= next_hist {
            let layers = dqn
                .online
                .scales()
                .into_iter()
                .filter_map(|(n, g)| {
                    Vec::<f32>::try_from(g.to_device(Device::Cpu).to_kind(Kind::Float)).ok().map(|v| (n, v))
                })
                .collect::<Vec<_>>();
            if !layers.is_empty() {
                let _ = events.send(Event::Scales { step, layers });
            }
            next_hist = (step / spec.histograms_every + 1) * spec.histograms_every;
        }
    }
    shared.weights.publish(dqn.snapshot());
    Ok(LearnerOutcome { dqn })
}

fn to_device(b: TensorBatch, d: Device) -> TensorBatch {
    TensorBatch {
        obs: b.obs.to_device(d),
        next_obs: b.next_obs.to_device(d),
        actions: b.actions.to_device(d),
        rewards: b.rewards.to_device(d),
        terminated: b.terminated.to_device(d),
    }
}
