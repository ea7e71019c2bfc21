//! `wndqn-envs`: the environments wndqn trains on. No torch here.
//!
//! - [`atari::AtariEnv`]: an ALE game (through [`ale`], the one module that touches the
//!   emulator: ALE 0.12.1's C++ core, compiled in by `build.rs`)
//!   with the standard DQN preprocessing, each stage switchable in [`EnvConfig`].
//! - [`minatar::MinAtarEnv`]: the five MinAtar games (10 x 10 grids of boolean channels), with
//!   the `minatar` package's sticky actions, ramping and random draws.
//! - [`cartpole::CartPoleEnv`]: classic control through `gymnasium-rs`, so the whole training
//!   stack can be exercised in seconds.
//! - [`ids`]: the ids users type (`Pong`, `ALE/Pong-v5`, `PongNoFrameskip-v4`,
//!   `MinAtar/Breakout-v1`, `CartPole-v1`);
//!   [`roms`]: where ROMs are found and which games exist.
//!
//! Both environments follow Gymnasium's semantics: `reset(seed)` gives an observation, `step`
//! gives reward, `terminated` (a true end: bootstrapping stops) and `truncated` (a time limit:
//! bootstrapping goes on), and episode statistics when a whole game ends.
#![deny(missing_docs)]

pub mod ale;
pub mod atari;
pub mod cartpole;
mod env;
pub mod ids;
mod make;
pub mod minatar;
mod pool;
pub mod resize;
pub mod roms;

pub use env::{Env, EnvConfig, EnvError, EpisodeStats, Obs, ObsKind, Step, MAX_NOOPS};
pub use ids::{EnvId, Family};
pub use make::make_env;
