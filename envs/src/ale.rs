//! The one place that touches `ale-sys` (ALE 0.6.0 through its C API).
//!
//! Why a wrapper: ALE's C API takes raw pointers and C strings, calls `exit(1)` on a missing or
//! unsupported ROM, prints a banner unless the logger is silenced, and reads `random_seed = 0` as
//! "seed from the clock". [`Ale::load`] checks the ROM before ALE sees it, maps every user seed to
//! a non-zero ALE seed, and the handle is `Send` so that each actor thread can own its emulator.

use std::ffi::CString;
use std::path::Path;
use std::sync::Once;

use crate::roms::Rom;
use crate::EnvError;

/// Screen height of the Atari 2600 as ALE renders it.
pub const SCREEN_H: usize = 210;
/// Screen width of the Atari 2600 as ALE renders it.
pub const SCREEN_W: usize = 160;

/// Settings applied before the ROM is loaded.
#[derive(Debug, Clone, Copy)]
pub struct AleSettings {
    /// Seed of ALE's own RNG (sticky actions); any value, mapped to ALE's non-zero range.
    pub seed: u64,
    /// Probability that the previous action is repeated instead of the new one, per frame.
    pub repeat_action_probability: f32,
}

/// An owned ALE emulator with one loaded game.
pub struct Ale {
    ptr: *mut ale_sys::ALEInterface,
}

// SAFETY: an ALEInterface is a self-contained C++ object; ALE 0.6 keeps no thread-local state and
// instances in different threads are independent (checked with 4 threads, see the tests). The
// handle is only ever used from the one thread that owns it (no `Sync`).
unsafe impl Send for Ale {}

static SILENCE: Once = Once::new();

fn key(k: &str) -> CString {
    CString::new(k).expect("ALE setting names hold no NUL")
}

/// ALE 0.6 treats `random_seed = 0` as "use the clock": map any u64 to 1..=i32::MAX.
pub fn ale_seed(seed: u64) -> i32 {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 29);
    ((mixed % (i32::MAX as u64 - 1)) + 1) as i32
}

impl Ale {
    /// Create an emulator and load `rom` with `settings`.
    pub fn load(rom: &Rom, settings: AleSettings) -> Result<Self, EnvError> {
        SILENCE.call_once(|| unsafe { ale_sys::setLoggerMode(2) });
        rom.check_readable()?;
        let ptr = unsafe { ale_sys::ALE_new() };
        if ptr.is_null() {
            return Err(EnvError::Emulator("ALE_new returned null".into()));
        }
        let mut ale = Ale { ptr };
        ale.reload(&rom.path, settings)?;
        Ok(ale)
    }

    /// Re-seed and reload the ROM (a full power-cycle, as ale-py does on `reset(seed=...)`).
    pub fn reload(&mut self, rom_path: &Path, settings: AleSettings) -> Result<(), EnvError> {
        let path = CString::new(rom_path.to_string_lossy().as_bytes())
            .map_err(|_| EnvError::Emulator("ROM path holds a NUL byte".into()))?;
        unsafe {
            ale_sys::setInt(self.ptr, key("random_seed").as_ptr(), ale_seed(settings.seed));
            ale_sys::setFloat(
                self.ptr,
                key("repeat_action_probability").as_ptr(),
                settings.repeat_action_probability,
            );
            ale_sys::setInt(self.ptr, key("frame_skip").as_ptr(), 1);
            ale_sys::setInt(self.ptr, key("max_num_frames_per_episode").as_ptr(), 0);
            ale_sys::loadROM(self.ptr, path.as_ptr());
        }
        Ok(())
    }

    /// Play one emulator frame; returns the raw (unclipped) reward.
    #[inline]
    pub fn act(&mut self, action: i32) -> i32 {
        unsafe { ale_sys::act(self.ptr, action) }
    }
    /// Whether the game is over.
    #[inline]
    pub fn game_over(&self) -> bool {
        unsafe { ale_sys::game_over(self.ptr) }
    }
    /// Reset the game (no reload, no re-seed).
    pub fn reset_game(&mut self) {
        unsafe { ale_sys::reset_game(self.ptr) }
    }
    /// Lives left, as the game's RAM says.
    #[inline]
    pub fn lives(&self) -> i32 {
        unsafe { ale_sys::lives(self.ptr) }
    }
    /// Frames played since the last reset.
    #[inline]
    pub fn episode_frame_number(&self) -> i32 {
        unsafe { ale_sys::getEpisodeFrameNumber(self.ptr) }
    }
    /// The game's minimal action set (ALE action codes).
    pub fn minimal_actions(&self) -> Vec<i32> {
        let n = unsafe { ale_sys::getMinimalActionSize(self.ptr) } as usize;
        let mut v = vec![0i32; n];
        unsafe { ale_sys::getMinimalActionSet(self.ptr, v.as_mut_ptr()) };
        v
    }
    /// All 18 legal actions.
    pub fn legal_actions(&self) -> Vec<i32> {
        let n = unsafe { ale_sys::getLegalActionSize(self.ptr) } as usize;
        let mut v = vec![0i32; n];
        unsafe { ale_sys::getLegalActionSet(self.ptr, v.as_mut_ptr()) };
        v
    }
    /// Write the 210x160 grayscale screen into `out`.
    #[inline]
    pub fn screen_grayscale(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_H * SCREEN_W);
        unsafe { ale_sys::getScreenGrayscale(self.ptr, out.as_mut_ptr()) }
    }
    /// Write the 210x160x3 RGB screen into `out`.
    pub fn screen_rgb(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_H * SCREEN_W * 3);
        unsafe { ale_sys::getScreenRGB(self.ptr, out.as_mut_ptr()) }
    }
}

impl Drop for Ale {
    fn drop(&mut self) {
        unsafe { ale_sys::ALE_del(self.ptr) }
    }
}

/// ALE's action names, indexed by ALE action code.
pub const ACTION_NAMES: [&str; 18] = [
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE",
    "DOWNLEFTFIRE",
];
