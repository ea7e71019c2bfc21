//! The replay thread: the one writer of the replay memory. It drains the actors' channel (each
//! actor's transitions go to that actor's ring) and keeps a queue of prefetched batches full for
//! the learner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use wndqn_agents::replay::{AnyMemory, TensorBatch, Transition};

use super::actor::{ActorMsg, Item};
use super::shared::Shared;

/// Replay thread settings.
pub struct ReplaySpec {
    /// Transitions per batch.
    pub batch_size: usize,
    /// Env steps inserted before batches are sampled.
    pub warmup: u64,
    /// Shape of one observation.
    pub obs_shape: Vec<i64>,
    /// Seed of the sampling RNG.
    pub seed: u64,
    /// How batches are prepared for the learner's device.
    pub prep: wndqn_agents::replay::BatchPrep,
    /// Run at idle CPU priority (`learner.exclusive_cpu`).
    pub idle_priority: bool,
}

/// The replay thread: drains the actors' channel into the memory and keeps `batches` full.
/// Ends when every actor has hung up.
pub fn replay_thread(
    memory: Arc<AnyMemory>,
    shared: Arc<Shared>,
    rx: Receiver<ActorMsg>,
    batches: Sender<TensorBatch>,
    spec: ReplaySpec,
) -> Result<()> {
    let mut background = crate::threads::Background::new(spec.idle_priority);
    let ReplaySpec { batch_size, warmup, obs_shape, seed, prep, .. } = spec;
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        background.poll(shared.updates.load(Ordering::Relaxed) > 0);
        match rx.recv_timeout(Duration::from_millis(2)) {
            Ok(msg) => {
                for (item, obs) in msg.iter() {
                    match *item {
                        Item::Start => memory.start_episode(msg.actor, obs),
                        Item::Step { action, reward, terminated, truncated } => {
                            let t = Transition { action: action as usize, reward, terminated, truncated, next: obs };
                            memory.record_step(msg.actor, t)
                        }
                    }
                }
                shared.inserted.fetch_add(msg.steps, Ordering::AcqRel);
                shared.gate.notify();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Keep the prefetch queue full once learning can start.
        while shared.inserted.load(Ordering::Acquire) >= warmup && !batches.is_full() && rx.is_empty() {
            let Some(b) = memory.sample_tensors(batch_size, &mut rng, &obs_shape, &prep) else {
                break;
            };
            match batches.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }
}
