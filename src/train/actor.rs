//! Actor threads: each owns its environment and a CPU copy of the policy, plays epsilon-greedy,
//! and sends its transitions to the replay thread in small batches over a bounded channel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use crossbeam::channel::Sender;
use rand::rngs::StdRng;
use rand::SeedableRng;
use wndqn_agents::policy::Policy;
use wndqn_agents::qnet::QNetConfig;
use wndqn_agents::replay::ObsRef;
use wndqn_agents::schedule::Exploration;

use super::pace::Pace;
use wndqn_envs::{Env, Obs};

use super::shared::{Event, Shared};
use crate::play::observation;

/// What happened at one observation of an actor.
pub enum Item {
    /// The first observation of an episode.
    Start,
    /// A step from the previous observation to this one.
    Step { action: u8, reward: f32, terminated: bool, truncated: bool },
}

/// A batch of one actor's items, in order, each with the observation the replay memory stores
/// (the newest frame, or the vector). The observations are packed into one buffer, so a message
/// costs a few allocations, not one per step.
pub struct ActorMsg {
    /// Which actor (= replay shard).
    pub actor: usize,
    items: Vec<Item>,
    frames: Vec<u8>,
    vectors: Vec<f32>,
    /// Env steps in the message.
    pub steps: u64,
}

impl ActorMsg {
    fn new(actor: usize, capacity: usize) -> ActorMsg {
        ActorMsg { actor, items: Vec::with_capacity(capacity), frames: Vec::new(), vectors: Vec::new(), steps: 0 }
    }

    fn push(&mut self, item: Item, o: Obs<'_>) {
        match o {
            Obs::Frames { latest, .. } => self.frames.extend_from_slice(latest),
            Obs::Vector(v) => self.vectors.extend_from_slice(v),
        }
        self.steps += u64::from(matches!(item, Item::Step { .. }));
        self.items.push(item);
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Each item with its observation.
    pub fn iter(&self) -> impl Iterator<Item = (&Item, ObsRef<'_>)> {
        let n = self.items.len().max(1);
        let frames = self.frames.chunks_exact((self.frames.len() / n).max(1)).map(ObsRef::Frame);
        let vectors = self.vectors.chunks_exact((self.vectors.len() / n).max(1)).map(ObsRef::Vector);
        self.items.iter().zip(frames.chain(vectors))
    }
}

/// Fault injection for the robustness tests, in a build with the `fault-injection` feature only
/// (`make test`'s): with `WNDQN_FAULT=stall-actor<i>` in the environment, actor `i` stops
/// answering (as a thread stuck in an emulator would), so that a test can check that a stop
/// request still ends the process within the grace period.
#[cfg(feature = "fault-injection")]
fn stall_if_asked(index: usize) {
    if std::env::var("WNDQN_FAULT").is_ok_and(|v| v == format!("stall-actor{index}")) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
fn stall_if_asked(_: usize) {}

/// Everything an actor needs.
pub struct ActorSpec {
    pub index: usize,
    pub num_actors: usize,
    pub env: Box<dyn Env>,
    pub env_seed: u64,
    pub rng_seed: u64,
    pub net: QNetConfig,
    pub exploration: Exploration,
    pub total_steps: u64,
    pub pace: Pace,
    pub send_batch: usize,
    /// Run at idle CPU priority (`learner.exclusive_cpu`).
    pub idle_priority: bool,
}

/// The actor loop.
pub fn run(mut spec: ActorSpec, shared: Arc<Shared>, tx: Sender<ActorMsg>, events: Sender<Event>) -> Result<()> {
    crate::threads::limit_current_thread(1);
    let mut background = crate::threads::Background::new(spec.idle_priority);
    let mut policy = Policy::new(&spec.net);
    let mut rng = StdRng::seed_from_u64(spec.rng_seed);
    let mut version = 0u64;
    let (index, cap) = (spec.index, spec.send_batch + 1);
    let mut pending = ActorMsg::new(index, cap);
    let flush = |pending: &mut ActorMsg| -> Result<()> {
        if pending.len() > 0 {
            let msg = std::mem::replace(pending, ActorMsg::new(index, cap));
            tx.send(msg).map_err(|_| anyhow::anyhow!("replay thread stopped"))?;
        }
        Ok(())
    };
    let first = spec.env.reset(Some(spec.env_seed))?;
    pending.push(Item::Start, first);
    stall_if_asked(spec.index);
    // Allowed lead of the actors over the learner, in env steps.
    let slack = (spec.num_actors * spec.send_batch) as u64 + spec.pace.steps_per_update();
    loop {
        if shared.stopping() {
            break;
        }
        background.poll(shared.updates.load(Ordering::Relaxed) > 0);
        let claimed = shared.env_steps.fetch_add(1, Ordering::SeqCst);
        if claimed >= spec.total_steps {
            shared.env_steps.fetch_sub(1, Ordering::SeqCst);
            break;
        }
        // Replay ratio: do not run ahead of the learner.
        loop {
            let allowed = spec.pace.steps_allowed(shared.updates.load(Ordering::Acquire), slack);
            if claimed < allowed || shared.stopping() {
                break;
            }
            flush(&mut pending)?;
            shared.gate.wait(&shared.actor_wait_ns);
        }
        if shared.weights.version() > version {
            (version, _) = shared.weights.read(|snap| policy.load_snapshot(snap));
        }
        let eps = spec.exploration.epsilon(spec.index, claimed);
        let action = policy.act(observation(spec.env.obs()), eps, &mut rng);
        let step = spec.env.step(action);
        let item = Item::Step {
            action: action as u8,
            reward: step.reward,
            terminated: step.terminated,
            truncated: step.truncated,
        };
        pending.push(item, spec.env.obs());
        if let Some(ep) = step.episode {
            shared.episodes.fetch_add(1, Ordering::Relaxed);
            let _ = events.send(Event::Episode { step: claimed + 1, ret: ep.ret, length: ep.length });
        }
        if step.terminated || step.truncated {
            let o = spec.env.reset(None)?;
            pending.push(Item::Start, o);
        }
        if pending.len() >= spec.send_batch {
            flush(&mut pending)?;
        }
    }
    flush(&mut pending)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_pairs_each_item_with_its_own_observation() {
        let mut m = ActorMsg::new(3, 4);
        let f = |k: u8| [k; 4];
        m.push(Item::Start, Obs::Frames { stack: &[], latest: &f(1) });
        let step = |r| Item::Step { action: 2, reward: r, terminated: false, truncated: false };
        m.push(step(0.5), Obs::Frames { stack: &[], latest: &f(2) });
        m.push(step(1.0), Obs::Frames { stack: &[], latest: &f(3) });
        assert_eq!((m.len(), m.steps, m.actor), (3, 2, 3));
        let seen: Vec<(bool, u8)> = m
            .iter()
            .map(|(i, o)| match o {
                ObsRef::Frame(px) => (matches!(i, Item::Start), px[0]),
                ObsRef::Vector(_) => unreachable!(),
            })
            .collect();
        assert_eq!(seen, vec![(true, 1), (false, 2), (false, 3)]);
        let mut v = ActorMsg::new(0, 2);
        v.push(Item::Start, Obs::Vector(&[1.0, 2.0]));
        v.push(step(0.0), Obs::Vector(&[3.0, 4.0]));
        let vs: Vec<Vec<f32>> =
            v.iter().map(|(_, o)| if let ObsRef::Vector(x) = o { x.to_vec() } else { vec![] }).collect();
        assert_eq!(vs, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }
}
