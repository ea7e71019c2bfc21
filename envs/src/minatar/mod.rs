//! MinAtar (Young & Tian 2019): Asterix, Breakout, Freeway, Seaquest and Space Invaders on 10 x 10
//! grids of C boolean channels, written here from the games' published rules and held step for
//! step against the `minatar` package (1.0.15) in `envs/tests/minatar_parity.rs`.
//!
//! As in the package: sticky actions (the previous action is repeated with probability
//! `repeat_action_probability`, default 0.1, drawn before every action, also after the end),
//! difficulty ramping (default on), six actions `no-op, left, up, right, down, fire` or the
//! game's minimal set, and one MT19937 stream ([`rng::RandomState`], numpy's legacy
//! `RandomState`) shared by the sticky draw and the game's own draws. `reset(Some(seed))` is the
//! package's `seed(seed); reset()`; `reset(None)` continues the stream, and the last action
//! carries over resets, as the package's does.
//!
//! Observations are `C x 10 x 10` u8, 255 where a channel is on and 0 elsewhere, so that the
//! frame path's `x / 255` gives the network the package's 0/1 floats.

mod asterix;
mod breakout;
mod freeway;
pub mod rng;
mod seaquest;
mod space_invaders;

use crate::env::{EnvConfig, EnvError, EpisodeStats, Obs, ObsKind, Step};
use rng::RandomState;

/// The package's defaults: sticky-action probability and difficulty ramping.
pub const STICKY: f32 = 0.1;
/// See [`STICKY`].
pub const RAMPING: bool = true;

/// Side of the grid.
pub const SIZE: usize = 10;

/// The six MinAtar actions, in the package's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Do nothing.
    Noop = 0,
    /// Move left.
    Left = 1,
    /// Move up.
    Up = 2,
    /// Move right.
    Right = 3,
    /// Move down.
    Down = 4,
    /// Fire.
    Fire = 5,
}

const ALL_ACTIONS: [Action; 6] = [Action::Noop, Action::Left, Action::Up, Action::Right, Action::Down, Action::Fire];

/// The five games: (package name, id name, channels).
pub const GAMES: [(&str, &str, usize); 5] = [
    ("asterix", "Asterix", 4),
    ("breakout", "Breakout", 4),
    ("freeway", "Freeway", 7),
    ("seaquest", "Seaquest", 10),
    ("space_invaders", "SpaceInvaders", 6),
];

/// The number a `reset(Some(seed))` seeds the package's `RandomState` with (the run's 64-bit
/// seeds mixed down to 31 bits, as for ALE).
pub fn package_seed(seed: u64) -> u32 {
    crate::atari::ale_seed(seed) as u32
}

/// The channels, channel-major (`c * 100 + y * 10 + x`), as u8 0/255.
pub(crate) struct Grid<'a>(&'a mut [u8]);

impl Grid<'_> {
    fn set(&mut self, c: usize, y: i32, x: i32) {
        self.0[c * SIZE * SIZE + y as usize * SIZE + x as usize] = 255;
    }
}

/// One game's rules.
trait Game: Send {
    fn channels(&self) -> usize;
    fn minimal_actions(&self) -> &'static [Action];
    /// A new game (the package's `reset`).
    fn reset(&mut self, rng: &mut RandomState);
    /// One frame: reward and whether the game is over (then nothing changes any more).
    fn act(&mut self, a: Action, rng: &mut RandomState) -> (f32, bool);
    /// Set the cells that are on (the grid comes cleared).
    fn render(&self, g: &mut Grid);
}

fn new_game(name: &str, ramping: bool) -> Option<Box<dyn Game>> {
    Some(match name {
        "asterix" => Box::new(asterix::Asterix::new(ramping)),
        "breakout" => Box::<breakout::Breakout>::default(),
        "freeway" => Box::<freeway::Freeway>::default(),
        "seaquest" => Box::new(seaquest::Seaquest::new(ramping)),
        "space_invaders" => Box::new(space_invaders::SpaceInvaders::new(ramping)),
        _ => return None,
    })
}

/// The size of a game's minimal action set (`game`: the package's name).
pub fn minimal_action_count(game: &str) -> usize {
    new_game(game, true).map_or(0, |g| g.minimal_actions().len())
}

/// A MinAtar game behind [`crate::env::Env`].
pub struct MinAtarEnv {
    game: Box<dyn Game>,
    rng: RandomState,
    actions: Vec<Action>,
    sticky: f64,
    last_action: Action,
    obs: Vec<u8>,
    clip_rewards: bool,
    max_steps: u64,
    ep_return: f64,
    ep_length: u64,
}

impl MinAtarEnv {
    /// `game` is the package's name (`breakout`, `space_invaders`); the action set is the six
    /// actions or the minimal one, `cfg.repeat_action_probability` the sticky probability,
    /// `cfg.difficulty_ramping` the ramping, `cfg.max_episode_frames` a time limit in steps.
    pub fn new(game: &str, cfg: &EnvConfig) -> Result<MinAtarEnv, EnvError> {
        cfg.validate(true)?;
        let ramping = cfg.difficulty_ramping.unwrap_or(RAMPING);
        let game = new_game(game, ramping).ok_or_else(|| EnvError::Invalid(format!("no MinAtar game `{game}`")))?;
        let sticky = cfg.repeat_action_probability.unwrap_or(STICKY) as f64;
        let actions =
            if cfg.full_action_space.unwrap_or(true) { ALL_ACTIONS.to_vec() } else { game.minimal_actions().to_vec() };
        let obs = vec![0; game.channels() * SIZE * SIZE];
        let mut env = MinAtarEnv {
            game,
            rng: RandomState::new(0),
            actions,
            sticky,
            last_action: Action::Noop,
            obs,
            clip_rewards: cfg.clip_rewards,
            max_steps: cfg.max_episode_frames as u64,
            ep_return: 0.0,
            ep_length: 0,
        };
        env.game.reset(&mut env.rng);
        env.draw();
        Ok(env)
    }

    /// The game's actions (indices of the six) in the order the agent numbers them.
    pub fn action_set(&self) -> Vec<usize> {
        self.actions.iter().map(|&a| a as usize).collect()
    }

    /// One frame with the package's raw `(reward, terminal)`, `action` an index of the action set.
    pub fn act(&mut self, action: usize) -> (f32, bool) {
        let mut a = self.actions[action];
        if self.rng.rand() < self.sticky {
            a = self.last_action;
        }
        self.last_action = a;
        let r = self.game.act(a, &mut self.rng);
        self.draw();
        r
    }

    fn draw(&mut self) {
        self.obs.fill(0);
        self.game.render(&mut Grid(&mut self.obs));
    }

    /// Channels of the observation.
    pub fn channels(&self) -> usize {
        self.game.channels()
    }
}

/// RGB of each channel in videos: black background, one distinct colour per channel.
const PALETTE: [[u8; 3]; 10] = [
    [255, 224, 64],
    [64, 160, 255],
    [120, 120, 120],
    [232, 72, 72],
    [96, 216, 96],
    [200, 112, 232],
    [255, 150, 40],
    [64, 224, 224],
    [240, 240, 240],
    [160, 200, 80],
];

/// Pixels per grid cell in videos.
const CELL_PX: usize = 16;

impl crate::env::Env for MinAtarEnv {
    fn obs_kind(&self) -> ObsKind {
        ObsKind::Grid { channels: self.game.channels(), size: SIZE }
    }
    fn num_actions(&self) -> usize {
        self.actions.len()
    }
    fn reset(&mut self, seed: Option<u64>) -> Result<Obs<'_>, EnvError> {
        if let Some(s) = seed {
            self.rng = RandomState::new(package_seed(s));
        }
        self.game.reset(&mut self.rng);
        self.draw();
        self.ep_return = 0.0;
        self.ep_length = 0;
        Ok(self.obs())
    }
    fn step(&mut self, action: usize) -> Step {
        let (raw, terminated) = self.act(action);
        self.ep_return += raw as f64;
        self.ep_length += 1;
        let truncated = !terminated && self.ep_length >= self.max_steps;
        Step {
            reward: if self.clip_rewards { raw.signum() * (raw != 0.0) as u8 as f32 } else { raw },
            raw_reward: raw,
            terminated,
            truncated,
            lives: 0,
            episode: (terminated || truncated).then_some(EpisodeStats { ret: self.ep_return, length: self.ep_length }),
        }
    }
    fn obs(&self) -> Obs<'_> {
        Obs::Frames { stack: &self.obs, latest: &self.obs }
    }
    fn rgb_frame(&self) -> Option<(usize, usize, Vec<u8>)> {
        // A cell takes the colour of its highest channel that is on, as the package draws it.
        let side = SIZE * CELL_PX;
        let mut rgb = vec![0u8; side * side * 3];
        for y in 0..SIZE {
            for x in 0..SIZE {
                let top = (0..self.channels()).rev().find(|&c| self.obs[c * SIZE * SIZE + y * SIZE + x] != 0);
                let Some(c) = top else { continue };
                for py in y * CELL_PX..(y + 1) * CELL_PX - 1 {
                    for px in x * CELL_PX..(x + 1) * CELL_PX - 1 {
                        rgb[(py * side + px) * 3..][..3].copy_from_slice(&PALETTE[c]);
                    }
                }
            }
        }
        Some((side, side, rgb))
    }
}
