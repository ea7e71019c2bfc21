//! The vocabulary every environment and every user of one shares: [`Env`] (Gymnasium's
//! reset/step semantics), its observations and steps, [`EnvConfig`] (the `[env]` table) and
//! [`EnvError`]. Nothing here names a particular environment; [`crate::make`] builds them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The id names no environment we know.
    #[error("unknown environment id `{id}`.{}\n  {hint}", fmt_suggestions(.suggestions))]
    UnknownId {
        /// What the user typed.
        id: String,
        /// Close matches.
        suggestions: Vec<String>,
        /// What ids look like.
        hint: String,
    },
    /// A supported game whose ROM is not in the ROM folder.
    #[error("no ROM for {game}: `{file}` is not in {dir}.\n  ROMs come with the `ale-py` wheel (`make setup` installs it into .venv);\n  or point `--rom-dir` / WNDQN_ROM_DIR at a folder holding `{file}`.", dir = .dir.display())]
    MissingRom {
        /// Game id.
        game: String,
        /// Expected file name.
        file: String,
        /// Folder searched.
        dir: PathBuf,
    },
    /// No ROM folder at all.
    #[error("no ROM folder found. Searched:\n    {}\n  Run `make setup` (installs ale-py, which ships the ROMs into .venv), or set --rom-dir / WNDQN_ROM_DIR.", .searched.join("\n    "))]
    NoRomDir {
        /// Folders tried, with their source.
        searched: Vec<String>,
    },
    /// A ROM exists but the ALE compiled in has no settings for it.
    #[error("`{game}` has a ROM but ALE 0.12.1 cannot play it; `wndqn games` lists the playable games")]
    UnsupportedGame {
        /// The game name.
        game: String,
    },
    /// A ROM file that cannot be used.
    #[error("cannot use ROM file {}: {why}", .path.display())]
    BadRom {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A setting that cannot work.
    #[error("invalid env setting: {0}")]
    Invalid(String),
    /// The emulator failed.
    #[error("emulator error: {0}")]
    Emulator(String),
}

fn fmt_suggestions(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" Did you mean: {}?", s.join(", "))
    }
}

/// The `[env]` table of a config: which environment and how it is preprocessed.
/// `None` means "the id family's default" (see [`ids`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// Environment id: `Pong`, `ALE/Pong-v5`, `PongNoFrameskip-v4`, `CartPole-v1`.
    pub id: String,
    /// Emulator frames per env step (the action is repeated). Default: the id family's.
    pub frameskip: Option<u32>,
    /// Sticky actions: per-frame probability of repeating the previous action. Default: family's
    /// (Atari v5 0.25, NoFrameskip-v4 0, MinAtar 0.1).
    pub repeat_action_probability: Option<f32>,
    /// Use every action (Atari 18, MinAtar 6) instead of the game's minimal set. Default: false,
    /// except MinAtar's `-v0` ids (MinAtar's `-v1` ids are its minimal sets).
    pub full_action_space: Option<bool>,
    /// MinAtar only: make the game harder as it goes (the package's `difficulty_ramping`).
    /// Default: true.
    pub difficulty_ramping: Option<bool>,
    /// ALE game mode; `None` = the game's default. A mode the game lacks is an error listing its modes.
    pub mode: Option<u32>,
    /// ALE game difficulty; `None` = the game's default.
    pub difficulty: Option<u32>,
    /// Up to this many no-op frames after a reset (random count, 0 = off).
    pub noop_max: u32,
    /// Max-pool the last two frames of each frame skip (removes sprite flicker).
    pub max_pool: bool,
    /// Press FIRE after reset (and after a lost life) in games that need it to start.
    pub fire_reset: bool,
    /// Training signal: a lost life ends the episode for learning; returns stay whole-game.
    pub episodic_life: bool,
    /// Side of the square grayscale observation, in pixels.
    pub frame_size: usize,
    /// Clip rewards to their sign (-1, 0, +1) for learning; logged returns stay unclipped.
    pub clip_rewards: bool,
    /// Number of most recent frames stacked into one observation.
    pub frame_stack: usize,
    /// Truncate a game after this many emulator frames (108,000 = 30 minutes at 60 Hz); ALE's
    /// own `max_num_frames_per_episode`.
    pub max_episode_frames: u32,
    /// CartPole only: truncate after this many steps (CartPole-v1: 500).
    pub max_episode_steps: u32,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            id: "Pong".into(),
            frameskip: None,
            repeat_action_probability: None,
            full_action_space: None,
            difficulty_ramping: None,
            mode: None,
            difficulty: None,
            noop_max: 30,
            max_pool: true,
            fire_reset: true,
            episodic_life: true,
            frame_size: 84,
            clip_rewards: true,
            frame_stack: 4,
            max_episode_frames: 108_000,
            max_episode_steps: 500,
        }
    }
}

/// The most no-op frames a reset may play (about 3 minutes of a game; DQN uses 30).
pub const MAX_NOOPS: u32 = 10_000;

impl EnvConfig {
    /// The Atari-only settings (frame preprocessing, ALE's modes) this config sets to other than
    /// their defaults, as `(key, value)`: an error for a MinAtar or CartPole id, where they would
    /// be recorded in the run's config and do nothing.
    pub fn atari_settings(&self) -> Vec<(&'static str, String)> {
        let d = EnvConfig::default();
        let mut out = Vec::new();
        let mut differs = |key: &'static str, set: bool, value: String| {
            if set {
                out.push((key, value));
            }
        };
        differs("frameskip", self.frameskip.is_some(), format!("{:?}", self.frameskip.unwrap_or(0)));
        differs("mode", self.mode.is_some(), format!("{}", self.mode.unwrap_or(0)));
        differs("difficulty", self.difficulty.is_some(), format!("{}", self.difficulty.unwrap_or(0)));
        differs("noop_max", self.noop_max != d.noop_max, self.noop_max.to_string());
        differs("max_pool", self.max_pool != d.max_pool, self.max_pool.to_string());
        differs("fire_reset", self.fire_reset != d.fire_reset, self.fire_reset.to_string());
        differs("episodic_life", self.episodic_life != d.episodic_life, self.episodic_life.to_string());
        differs("frame_size", self.frame_size != d.frame_size, self.frame_size.to_string());
        differs("frame_stack", self.frame_stack != d.frame_stack, self.frame_stack.to_string());
        out
    }

    /// Check the values that do not depend on the id family (`minatar`: MinAtar allows a sticky
    /// probability of 1, as its package does).
    pub fn validate(&self, minatar: bool) -> Result<(), EnvError> {
        let bad = |m: String| Err(EnvError::Invalid(m));
        if let Some(f) = self.frameskip {
            if f == 0 || f > 64 {
                return bad(format!("env.frameskip = {f}: must be 1..=64"));
            }
        }
        if let Some(p) = self.repeat_action_probability {
            let ok = if minatar { (0.0..=1.0).contains(&p) } else { (0.0..1.0).contains(&p) };
            if !ok {
                let range = if minatar { "[0, 1]" } else { "[0, 1)" };
                return bad(format!("env.repeat_action_probability = {p}: must be in {range}"));
            }
        }
        if self.frame_size < 8 || self.frame_size > 160 {
            return bad(format!("env.frame_size = {}: must be 8..=160 pixels", self.frame_size));
        }
        if self.frame_stack == 0 || self.frame_stack > 16 {
            return bad(format!("env.frame_stack = {}: must be 1..=16", self.frame_stack));
        }
        if self.max_episode_frames == 0 || self.max_episode_steps == 0 {
            return bad("env.max_episode_frames and env.max_episode_steps must be positive".into());
        }
        if self.noop_max > MAX_NOOPS || self.noop_max >= self.max_episode_frames {
            return bad(format!(
                "env.noop_max = {}: must be at most {MAX_NOOPS} frames and below env.max_episode_frames = {} (every reset plays up to that many no-ops)",
                self.noop_max, self.max_episode_frames
            ));
        }
        Ok(())
    }
}

/// What an environment observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObsKind {
    /// `stack x size x size` u8 grayscale frames.
    Frames {
        /// Frames per observation.
        stack: usize,
        /// Square side in pixels.
        size: usize,
    },
    /// `channels x size x size` u8 cells (0 or 255), one observation per step, no stacking.
    Grid {
        /// Boolean channels.
        channels: usize,
        /// Square side in cells.
        size: usize,
    },
    /// A float vector of this length.
    Vector(usize),
}

impl ObsKind {
    /// How the replay memory stores it: bytes (u8) or floats per stored item, and how many
    /// stored items make one observation (frames are stacked at sampling, the rest are not).
    pub fn storage(&self) -> (bool, usize, usize) {
        match *self {
            ObsKind::Frames { stack, size } => (true, size * size, stack),
            ObsKind::Grid { channels, size } => (true, channels * size * size, 1),
            ObsKind::Vector(n) => (false, n, 1),
        }
    }

    /// Tensor shape of one observation.
    pub fn shape(&self) -> Vec<i64> {
        match *self {
            ObsKind::Frames { stack, size } => vec![stack as i64, size as i64, size as i64],
            ObsKind::Grid { channels, size } => vec![channels as i64, size as i64, size as i64],
            ObsKind::Vector(n) => vec![n as i64],
        }
    }
}

/// A borrowed observation.
#[derive(Debug, Clone, Copy)]
pub enum Obs<'a> {
    /// Stacked frames (oldest first) and the newest frame alone; for a MinAtar grid both are
    /// the whole grid.
    Frames {
        /// `stack * size * size` bytes, oldest frame first.
        stack: &'a [u8],
        /// The newest `size * size` frame.
        latest: &'a [u8],
    },
    /// A state vector.
    Vector(&'a [f32]),
}

/// Statistics of one whole game, reported on the step that ends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeStats {
    /// Sum of raw (unclipped) rewards over the whole game, all lives.
    pub ret: f64,
    /// Env steps in the game.
    pub length: u64,
}

/// What `step` returns besides the observation (read with [`Env::obs`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Reward for learning (clipped if configured).
    pub reward: f32,
    /// Raw reward from the game.
    pub raw_reward: f32,
    /// The episode ended for learning (game over, or a lost life with `episodic_life`).
    pub terminated: bool,
    /// Cut by a time limit: bootstrap through it.
    pub truncated: bool,
    /// Lives left (0 where the game has none).
    pub lives: i32,
    /// Set when a whole game ended on this step.
    pub episode: Option<EpisodeStats>,
}

/// The interface the actors use. Implementations: [`atari::AtariEnv`], [`minatar::MinAtarEnv`],
/// [`cartpole::CartPoleEnv`].
pub trait Env: Send {
    /// Observation layout.
    fn obs_kind(&self) -> ObsKind;
    /// Number of discrete actions.
    fn num_actions(&self) -> usize;
    /// Start a new episode. `Some(seed)` re-seeds everything (same seed, same trajectory).
    /// After a lost life under `episodic_life` this continues the same game.
    fn reset(&mut self, seed: Option<u64>) -> Result<Obs<'_>, EnvError>;
    /// Play one action (index into the action set).
    fn step(&mut self, action: usize) -> Step;
    /// The current observation.
    fn obs(&self) -> Obs<'_>;
    /// The screen as `(width, height, RGB bytes)` for videos; `None` where there is no screen.
    fn rgb_frame(&self) -> Option<(usize, usize, Vec<u8>)>;
}
