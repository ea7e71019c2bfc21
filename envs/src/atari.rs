//! An ALE game with the DQN preprocessing of Mnih et al. (2015) / Machado et al. (2018):
//! no-op starts, frame skip with max-pooling of the last two frames, FIRE on reset, episodic
//! life, 84x84 grayscale by area averaging, reward clipping, frame stacking. Each stage is a
//! field of [`EnvConfig`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::ale::{Ale, AleSettings, SCREEN_H, SCREEN_W};

/// ALE's `random_seed` for a user seed: any u64 mapped into 0..i32::MAX (ALE reads -1 as
/// "seed from the clock", and its setting is an `int`).
pub fn ale_seed(seed: u64) -> i32 {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 29);
    (mixed % i32::MAX as u64) as i32
}
use crate::env::{Env, EnvConfig, EnvError, EpisodeStats, Obs, ObsKind, Step};
use crate::pool::GrayPool;
use crate::resize::AreaResize;
use crate::roms::Rom;

const FIRE: i32 = 1;

/// A preprocessed Atari environment.
pub struct AtariEnv {
    ale: Ale,
    rom: Rom,
    cfg: EnvConfig,
    frameskip: u32,
    settings: AleSettings,
    actions: Vec<i32>,
    needs_fire: bool,
    rng: StdRng,
    /// The last two frames' screens as palette indices (`raw[1]` the newest).
    raw: [Vec<u8>; 2],
    /// Palette indices -> grayscale, max-pooled.
    gray: GrayPool,
    /// The newest grayscale frame (pooled), before the resize.
    frame: Vec<u8>,
    /// Whether `raw[0]` holds the second-to-last frame of the last skip (max-pool it).
    pooled: bool,
    resize: AreaResize,
    stack: Vec<u8>,
    frame_px: usize,
    lives: i32,
    game_over_pending: bool,
    ep_return: f64,
    ep_length: u64,
}

impl AtariEnv {
    /// Load `rom` with the (resolved) settings of `cfg`. The env is seeded with 0 until the first
    /// `reset(Some(seed))`.
    pub fn new(rom: &Rom, cfg: &EnvConfig) -> Result<Self, EnvError> {
        let frameskip = cfg.frameskip.unwrap_or(4);
        let sticky = cfg.repeat_action_probability.unwrap_or(0.0);
        let settings = AleSettings {
            seed: ale_seed(0),
            repeat_action_probability: sticky,
            max_episode_frames: cfg.max_episode_frames,
            mode: cfg.mode,
            difficulty: cfg.difficulty,
        };
        let ale = Ale::load(rom, settings)?;
        let actions = if cfg.full_action_space.unwrap_or(false) { ale.legal_actions() } else { ale.minimal_actions() };
        let needs_fire = actions.len() >= 3 && actions[1] == FIRE;
        let frame_px = cfg.frame_size * cfg.frame_size;
        let gray = GrayPool::new(ale.gray_palette());
        Ok(AtariEnv {
            ale,
            rom: rom.clone(),
            cfg: cfg.clone(),
            frameskip,
            settings,
            actions,
            needs_fire,
            rng: StdRng::seed_from_u64(0),
            raw: [vec![0; SCREEN_H * SCREEN_W], vec![0; SCREEN_H * SCREEN_W]],
            gray,
            frame: vec![0; SCREEN_H * SCREEN_W],
            pooled: false,
            resize: AreaResize::new(SCREEN_H, SCREEN_W, cfg.frame_size, cfg.frame_size),
            stack: vec![0; cfg.frame_stack * frame_px],
            frame_px,
            lives: 0,
            game_over_pending: true,
            ep_return: 0.0,
            ep_length: 0,
        })
    }

    /// Emulator frames played in the current game (no-ops and FIRE included).
    pub fn episode_frames(&self) -> i32 {
        self.ale.episode_frame_number()
    }

    /// The current 210x160 grayscale screen, as ALE renders it (before any preprocessing).
    pub fn grayscale_screen(&self) -> Vec<u8> {
        let mut v = vec![0; SCREEN_H * SCREEN_W];
        self.ale.screen_grayscale(&mut v);
        v
    }

    /// The current 210x160x3 RGB screen (for videos).
    pub fn rgb_screen(&self) -> Vec<u8> {
        let mut v = vec![0; SCREEN_H * SCREEN_W * 3];
        self.ale.screen_rgb(&mut v);
        v
    }

    /// Repeat `code` for `frameskip` frames; sum raw rewards; leave the max of the last two
    /// frames' screens (palette indices) in `raw`.
    fn skip(&mut self, code: i32) -> i32 {
        let mut reward = 0;
        let n = self.frameskip;
        let mut grabbed_second_last = false;
        for i in 0..n {
            reward += self.ale.act(code);
            let over = self.ale.game_over() || self.ale.truncated();
            if self.cfg.max_pool && n > 1 && i + 2 == n && !over {
                self.ale.screen_indices(&mut self.raw[0]);
                grabbed_second_last = true;
            }
            if over || i + 1 == n {
                self.ale.screen_indices(&mut self.raw[1]);
                break;
            }
        }
        self.pooled = grabbed_second_last;
        reward
    }

    /// Resize the newest screen (max-pooled with the one before when `skip` grabbed both).
    fn resize_into_last(&mut self) {
        let px = self.frame_px;
        let n = self.stack.len();
        let second = if self.pooled { Some(&self.raw[0][..]) } else { None };
        self.gray.apply(&self.raw[1], second, &mut self.frame);
        self.resize.apply(&self.frame, &mut self.stack[n - px..]);
    }

    fn push_frame(&mut self) {
        self.stack.copy_within(self.frame_px.., 0);
        self.resize_into_last();
    }

    fn fill_stack(&mut self) {
        let px = self.frame_px;
        let n = self.stack.len();
        self.resize_into_last();
        let (head, last) = self.stack.split_at_mut(n - px);
        for chunk in head.chunks_exact_mut(px) {
            chunk.copy_from_slice(last);
        }
    }

    /// A new game: reset, random no-ops, FIRE.
    fn hard_reset(&mut self) {
        self.ale.reset_game();
        if self.cfg.noop_max > 0 {
            let noops = self.rng.gen_range(1..=self.cfg.noop_max);
            for _ in 0..noops {
                self.ale.act(0);
                if self.ale.game_over() {
                    self.ale.reset_game();
                }
            }
        }
        self.ep_return = 0.0;
        self.ep_length = 0;
        self.ale.screen_indices(&mut self.raw[1]);
        self.pooled = false;
        self.fire();
    }

    fn fire(&mut self) {
        if self.cfg.fire_reset && self.needs_fire {
            for code in [FIRE, self.actions[2]] {
                let r = self.skip(code);
                self.ep_return += r as f64;
                if self.ale.game_over() {
                    self.ale.reset_game();
                    self.ale.screen_indices(&mut self.raw[1]);
                    self.pooled = false;
                }
            }
        }
    }
}

impl Env for AtariEnv {
    fn obs_kind(&self) -> ObsKind {
        ObsKind::Frames { stack: self.cfg.frame_stack, size: self.cfg.frame_size }
    }

    fn num_actions(&self) -> usize {
        self.actions.len()
    }

    fn reset(&mut self, seed: Option<u64>) -> Result<Obs<'_>, EnvError> {
        if let Some(seed) = seed {
            // A full power-cycle with the new seed, as ale-py does on `reset(seed=...)`.
            self.ale = Ale::load(&self.rom, AleSettings { seed: ale_seed(seed), ..self.settings })?;
            self.rng = StdRng::seed_from_u64(seed);
            self.game_over_pending = true;
        }
        if self.game_over_pending || !self.cfg.episodic_life {
            self.hard_reset();
        } else {
            // Episodic life: the same game goes on after a lost life (one no-op step, as in
            // Mnih et al.'s set-up), then FIRE where the game needs it.
            let r = self.skip(0);
            self.ep_return += r as f64;
            self.ep_length += 1;
            self.fire();
        }
        self.game_over_pending = false;
        self.lives = self.ale.lives();
        self.fill_stack();
        Ok(self.obs())
    }

    fn step(&mut self, action: usize) -> Step {
        let raw = self.skip(self.actions[action]) as f32;
        self.push_frame();
        self.ep_return += raw as f64;
        self.ep_length += 1;
        let lives = self.ale.lives();
        let game_over = self.ale.game_over();
        let truncated = !game_over && self.ale.truncated();
        let life_lost = self.cfg.episodic_life && lives < self.lives && lives > 0;
        self.lives = lives;
        let ended = game_over || truncated;
        if ended {
            self.game_over_pending = true;
        }
        Step {
            reward: if self.cfg.clip_rewards { raw.signum() * (raw != 0.0) as i32 as f32 } else { raw },
            raw_reward: raw,
            terminated: game_over || life_lost,
            truncated,
            lives,
            episode: ended.then_some(EpisodeStats { ret: self.ep_return, length: self.ep_length }),
        }
    }

    fn rgb_frame(&self) -> Option<(usize, usize, Vec<u8>)> {
        Some((SCREEN_W, SCREEN_H, self.rgb_screen()))
    }

    fn obs(&self) -> Obs<'_> {
        let n = self.stack.len();
        Obs::Frames { stack: &self.stack, latest: &self.stack[n - self.frame_px..] }
    }
}
