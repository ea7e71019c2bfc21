//! CartPole-v1 through `gymnasium-rs`, adapted to [`Env`].
//!
//! Gaps of gymnasium-rs 0.1.1 worked around here (each checked against its source):
//! - its CartPole gives reward 0 on the terminating step (Gymnasium gives 1): we give 1 on every
//!   step, as Gymnasium's CartPole-v1 does, so returns match the 195/500 conventions;
//! - its `TimeLimitWrapper` borrows the env (`&mut dyn Env`, not `Send`, cannot live in an actor
//!   thread): the 500-step limit is counted here instead;
//! - its `Space` has no u8 image boxes (irrelevant for CartPole; Atari has its own [`ObsKind`]);
//! - `CartPole::new()` seeds from entropy: we always reset with an explicit seed first.

use gymnasium_rs::core::Env as GymEnv;
use gymnasium_rs::envs::cartpole::CartPole;
use std::collections::HashMap;

use crate::env::{Env, EnvConfig, EnvError, EpisodeStats, Obs, ObsKind, Step};

/// CartPole-v1 (4 floats, 2 actions, 500-step limit).
pub struct CartPoleEnv {
    inner: CartPole,
    state: [f32; 4],
    max_steps: u32,
    next_seed: u64,
    ep_return: f64,
    ep_length: u64,
}

impl CartPoleEnv {
    /// A CartPole with `cfg.max_episode_steps`.
    pub fn new(cfg: &EnvConfig) -> Self {
        CartPoleEnv {
            inner: CartPole::new(),
            state: [0.0; 4],
            max_steps: cfg.max_episode_steps,
            next_seed: 0,
            ep_return: 0.0,
            ep_length: 0,
        }
    }
}

impl Env for CartPoleEnv {
    fn obs_kind(&self) -> ObsKind {
        ObsKind::Vector(4)
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<Obs<'_>, EnvError> {
        // gymnasium-rs re-seeds only when given a seed; keep a deterministic chain of seeds so
        // episodes differ but the run is reproducible.
        let s = match seed {
            Some(s) => s,
            None => self.next_seed,
        };
        self.next_seed = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (obs, _) = self.inner.reset(Some(s as i32), HashMap::new());
        self.state.copy_from_slice(obs.as_slice().expect("contiguous"));
        self.ep_return = 0.0;
        self.ep_length = 0;
        Ok(self.obs())
    }
    fn step(&mut self, action: usize) -> Step {
        let (obs, _r, terminated, _trunc, _) = self.inner.step(action as i32);
        self.state.copy_from_slice(obs.as_slice().expect("contiguous"));
        self.ep_return += 1.0;
        self.ep_length += 1;
        let truncated = !terminated && self.ep_length >= self.max_steps as u64;
        Step {
            reward: 1.0,
            raw_reward: 1.0,
            terminated,
            truncated,
            lives: 0,
            episode: (terminated || truncated).then_some(EpisodeStats { ret: self.ep_return, length: self.ep_length }),
        }
    }
    fn obs(&self) -> Obs<'_> {
        Obs::Vector(&self.state)
    }
    fn rgb_frame(&self) -> Option<(usize, usize, Vec<u8>)> {
        None // gymnasium-rs's CartPole cannot render (its `render` is unimplemented!()).
    }
}
