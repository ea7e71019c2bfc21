//! Actor threads: each owns its environment and a CPU copy of the policy, plays epsilon-greedy,
//! and sends its transitions to the replay thread in small batches over a bounded channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use crossbeam::channel::Sender;
use rand::rngs::StdRng;
use rand::SeedableRng;
use wndqn_agents::policy::{Observation, Policy};
use wndqn_agents::qnet::QNetConfig;
use wndqn_agents::schedule::{apex_epsilon, LinearSchedule};
use wndqn_envs::{Env, Obs};

use super::shared::{Event, Shared};

/// One observation as the replay memory stores it (the newest frame, or the vector).
pub enum Item {
    /// First observation of an episode.
    Start(ObsBuf),
    /// A step from the previous observation.
    Step { action: u8, reward: f32, terminated: bool, truncated: bool, next: ObsBuf },
}

/// Owned observation data.
pub enum ObsBuf {
    /// Newest frame.
    Frame(Vec<u8>),
    /// Vector.
    Vector(Vec<f32>),
}

impl ObsBuf {
    fn latest(o: Obs<'_>) -> ObsBuf {
        match o {
            Obs::Frames { latest, .. } => ObsBuf::Frame(latest.to_vec()),
            Obs::Vector(v) => ObsBuf::Vector(v.to_vec()),
        }
    }
    /// Borrow for the memory.
    pub fn as_ref(&self) -> wndqn_agents::replay::ObsRef<'_> {
        match self {
            ObsBuf::Frame(f) => wndqn_agents::replay::ObsRef::Frame(f),
            ObsBuf::Vector(v) => wndqn_agents::replay::ObsRef::Vector(v),
        }
    }
}

/// A batch of items from one actor.
pub struct ActorMsg {
    /// Which actor (= replay shard).
    pub actor: usize,
    /// Items in order.
    pub items: Vec<Item>,
    /// Env steps in `items`.
    pub steps: u64,
}

/// Everything an actor needs.
pub struct ActorSpec {
    pub index: usize,
    pub num_actors: usize,
    pub env: Box<dyn Env>,
    pub env_seed: u64,
    pub rng_seed: u64,
    pub net: QNetConfig,
    pub schedule: LinearSchedule,
    pub apex: Option<(f64, f64)>,
    pub total_steps: u64,
    pub warmup: u64,
    /// See `LearnerSpec::step_origin`.
    pub step_origin: u64,
    pub update_origin: u64,
    pub replay_ratio: f64,
    pub send_batch: usize,
    /// Run at idle CPU priority (`learner.exclusive_cpu`).
    pub idle_priority: bool,
}

/// An environment's observation as the policy's input.
pub fn observation(o: Obs<'_>) -> Observation<'_> {
    match o {
        Obs::Frames { stack, .. } => Observation::Frames(stack),
        Obs::Vector(v) => Observation::Vector(v),
    }
}

/// The actor loop.
pub fn run(mut spec: ActorSpec, shared: Arc<Shared>, tx: Sender<ActorMsg>, events: Sender<Event>) -> Result<()> {
    crate::threads::limit_current_thread(1);
    if spec.idle_priority {
        crate::threads::background();
    }
    let mut policy = Policy::new(&spec.net);
    let mut rng = StdRng::seed_from_u64(spec.rng_seed);
    let mut version = 0u64;
    let mut pending: Vec<Item> = Vec::with_capacity(spec.send_batch + 1);
    let mut pending_steps = 0u64;
    let flush = |pending: &mut Vec<Item>, steps: &mut u64| -> Result<()> {
        if !pending.is_empty() {
            let msg = ActorMsg { actor: spec.index, items: std::mem::take(pending), steps: *steps };
            *steps = 0;
            tx.send(msg).map_err(|_| anyhow::anyhow!("replay thread stopped"))?;
        }
        Ok(())
    };
    let first = spec.env.reset(Some(spec.env_seed))?;
    pending.push(Item::Start(ObsBuf::latest(first)));
    // Allowed lead of the actors over the learner, in env steps.
    let slack = (spec.num_actors * spec.send_batch) as u64 + (1.0 / spec.replay_ratio).ceil() as u64;
    loop {
        if shared.stopping() {
            break;
        }
        let claimed = shared.env_steps.fetch_add(1, Ordering::SeqCst);
        if claimed >= spec.total_steps {
            shared.env_steps.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        // Replay ratio: do not run ahead of the learner.
        loop {
            let updates = shared.updates.load(Ordering::Acquire).saturating_sub(spec.update_origin) as f64;
            let allowed = spec.step_origin + spec.warmup + ((updates + 1.0) / spec.replay_ratio) as u64 + slack;
            if claimed < allowed || shared.stopping() {
                break;
            }
            flush(&mut pending, &mut pending_steps)?;
            shared.gate.wait(&shared.actor_wait_ns);
        }
        if shared.weights.version() > version {
            (version, _) = shared.weights.read(|snap| policy.load_snapshot(snap));
        }
        let eps = match spec.apex {
            Some((base, alpha)) => apex_epsilon(spec.index, spec.num_actors, base, alpha),
            None => spec.schedule.value(claimed),
        };
        let action = policy.act(observation(spec.env.obs()), eps, &mut rng);
        let step = spec.env.step(action);
        pending.push(Item::Step {
            action: action as u8,
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
            next: ObsBuf::latest(spec.env.obs()),
        });
        pending_steps += 1;
        if let Some(ep) = step.episode {
            shared.episodes.fetch_add(1, Ordering::Relaxed);
            let _ = events.send(Event::Episode { step: claimed + 1, ret: ep.ret, length: ep.length });
        }
        if step.terminated || step.truncated {
            let o = spec.env.reset(None)?;
            pending.push(Item::Start(ObsBuf::latest(o)));
        }
        if pending.len() >= spec.send_batch {
            flush(&mut pending, &mut pending_steps)?;
        }
    }
    flush(&mut pending, &mut pending_steps)?;
    Ok(())
}
