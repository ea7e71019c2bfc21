//! The one module that touches the emulator: ALE 0.12.1's C++ core, compiled by `build.rs`, through
//! the small C shim in `csrc/ale_shim.cpp`.
//!
//! Why a wrapper: ALE is C++ (exceptions, `std::exit` on a ROM it cannot wrap, a banner on
//! stderr). The shim turns all of that into return codes and messages; this module turns those
//! into [`EnvError`]s and owns the handle. Everything Gymnasium's Atari semantics need comes
//! from ALE itself: sticky actions per frame (`repeat_action_probability`), seeding
//! (`random_seed`), game modes and difficulties, the full or minimal action set, and truncation
//! after `max_num_frames_per_episode`. A ROM whose MD5 ALE does not know is refused before ALE
//! loads it (a random-bytes file named `pong.bin` would otherwise run as Pong's settings on
//! garbage code).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::Once;

use crate::env::EnvError;
use crate::roms::Rom;

/// Screen height of the Atari 2600 as ALE renders it.
pub const SCREEN_H: usize = 210;
/// Screen width of the Atari 2600 as ALE renders it.
pub const SCREEN_W: usize = 160;

mod ffi {
    use super::*;
    extern "C" {
        pub fn wale_quiet();
        pub fn wale_version() -> *const c_char;
        pub fn wale_identify(
            path: *const c_char,
            name: *mut c_char,
            name_cap: usize,
            md5: *mut c_char,
            err: *mut c_char,
            err_cap: usize,
        ) -> c_int;
        pub fn wale_new(
            path: *const c_char,
            seed: c_int,
            sticky: f32,
            max_frames: c_int,
            mode: c_int,
            difficulty: c_int,
            err: *mut c_char,
            err_cap: usize,
        ) -> *mut c_void;
        pub fn wale_delete(ale: *mut c_void);
        pub fn wale_act(ale: *mut c_void, action: c_int) -> c_int;
        pub fn wale_game_over(ale: *mut c_void) -> bool;
        pub fn wale_truncated(ale: *mut c_void) -> bool;
        pub fn wale_reset(ale: *mut c_void);
        pub fn wale_lives(ale: *mut c_void) -> c_int;
        pub fn wale_episode_frame(ale: *mut c_void) -> c_int;
        pub fn wale_actions(ale: *mut c_void, minimal: bool, out: *mut c_int, cap: c_int) -> c_int;
        pub fn wale_modes(ale: *mut c_void, difficulties: bool, out: *mut c_int, cap: c_int) -> c_int;
        pub fn wale_mode(ale: *mut c_void, difficulty: bool) -> c_int;
        pub fn wale_screen_size(ale: *mut c_void, height: *mut c_int, width: *mut c_int);
        pub fn wale_screen(ale: *mut c_void, rgb: bool, out: *mut u8);
        pub fn wale_screen_indices(ale: *mut c_void, out: *mut u8);
        pub fn wale_gray_palette(ale: *mut c_void, out: *mut u8);
    }
}

/// Settings applied when the ROM is loaded (ALE reads them at load time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AleSettings {
    /// ALE's `random_seed` (sticky actions and ALE's own reset randomness); -1 = from the clock.
    pub seed: i32,
    /// Probability that the previous action is repeated instead of the new one, per frame.
    pub repeat_action_probability: f32,
    /// ALE's `max_num_frames_per_episode`: truncate a game after this many frames (0 = never).
    pub max_episode_frames: u32,
    /// Game mode; `None` = the game's default.
    pub mode: Option<u32>,
    /// Game difficulty; `None` = the game's default.
    pub difficulty: Option<u32>,
}

impl Default for AleSettings {
    fn default() -> Self {
        AleSettings { seed: 0, repeat_action_probability: 0.0, max_episode_frames: 0, mode: None, difficulty: None }
    }
}

/// An owned ALE emulator with one loaded game.
pub struct Ale {
    ptr: *mut c_void,
}

// SAFETY: an ALEInterface is a self-contained C++ object with no thread-local or shared mutable
// state (ale-py's vector environment runs one per thread too; our tests play 4 in parallel). The
// handle is used only from the thread that owns it (no `Sync`).
unsafe impl Send for Ale {}

static QUIET: Once = Once::new();

fn path_c(p: &Path) -> Result<CString, EnvError> {
    CString::new(p.to_string_lossy().as_bytes())
        .map_err(|_| EnvError::BadRom { path: p.to_path_buf(), why: "the path holds a NUL byte".into() })
}

fn c_text(buf: &[u8]) -> String {
    CStr::from_bytes_until_nul(buf).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The version of the ALE compiled in (`0.12.1`).
pub fn version() -> &'static str {
    // SAFETY: a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::wale_version()) }.to_str().unwrap_or("?")
}

/// What ALE makes of a ROM file: its canonical game name (`pong`) when ALE knows the file's
/// MD5, and the MD5.
pub fn identify(path: &Path) -> Result<(Option<String>, String), EnvError> {
    let c = path_c(path)?;
    let (mut name, mut md5, mut err) = ([0u8; 128], [0u8; 33], [0u8; 512]);
    // SAFETY: every buffer is passed with its capacity; the shim writes NUL-terminated text.
    let rc = unsafe {
        ffi::wale_identify(
            c.as_ptr(),
            name.as_mut_ptr().cast(),
            name.len(),
            md5.as_mut_ptr().cast(),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if rc != 0 {
        return Err(EnvError::BadRom { path: path.to_path_buf(), why: c_text(&err) });
    }
    let name = c_text(&name);
    Ok(((!name.is_empty()).then_some(name), c_text(&md5)))
}

impl Ale {
    /// Create an emulator and load `rom` with `settings`. A ROM that ALE does not know, or a
    /// mode/difficulty the game does not have, is an error naming the file.
    pub fn load(rom: &Rom, settings: AleSettings) -> Result<Self, EnvError> {
        // SAFETY: sets ALE's global log level once.
        QUIET.call_once(|| unsafe { ffi::wale_quiet() });
        rom.check_readable()?;
        let c = path_c(&rom.path)?;
        let mut err = [0u8; 1024];
        let as_int = |v: Option<u32>| v.map_or(-1, |m| m.min(i32::MAX as u32) as c_int);
        // SAFETY: valid C strings and an error buffer with its capacity.
        let ptr = unsafe {
            ffi::wale_new(
                c.as_ptr(),
                settings.seed,
                settings.repeat_action_probability,
                settings.max_episode_frames.min(i32::MAX as u32) as c_int,
                as_int(settings.mode),
                as_int(settings.difficulty),
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if ptr.is_null() {
            let why = c_text(&err);
            if why.starts_with("env.") {
                return Err(EnvError::Invalid(why));
            }
            return Err(EnvError::BadRom {
                path: rom.path.clone(),
                why: format!("{why}; the ROMs ALE supports come with the ale-py wheel (`make setup`)"),
            });
        }
        let ale = Ale { ptr };
        let (mut h, mut w) = (0, 0);
        // SAFETY: `ptr` is a live emulator.
        unsafe { ffi::wale_screen_size(ale.ptr, &mut h, &mut w) };
        if (h as usize, w as usize) != (SCREEN_H, SCREEN_W) {
            return Err(EnvError::Emulator(format!(
                "{}: a {w}x{h} screen, expected {SCREEN_W}x{SCREEN_H}",
                rom.path.display()
            )));
        }
        Ok(ale)
    }

    /// Play one emulator frame; returns the raw (unclipped) reward.
    #[inline]
    pub fn act(&mut self, action: i32) -> i32 {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_act(self.ptr, action) }
    }
    /// Whether the game is over (a real end, not a truncation).
    #[inline]
    pub fn game_over(&self) -> bool {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_game_over(self.ptr) }
    }
    /// Whether the game reached `max_episode_frames`.
    #[inline]
    pub fn truncated(&self) -> bool {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_truncated(self.ptr) }
    }
    /// Reset the game (ALE's own reset: its no-op frames and starting actions).
    pub fn reset_game(&mut self) {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_reset(self.ptr) }
    }
    /// Lives left, as the game's RAM says.
    #[inline]
    pub fn lives(&self) -> i32 {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_lives(self.ptr) }
    }
    /// Frames played since the last reset.
    #[inline]
    pub fn episode_frame_number(&self) -> i32 {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { ffi::wale_episode_frame(self.ptr) }
    }
    fn list(&self, f: unsafe extern "C" fn(*mut c_void, bool, *mut c_int, c_int) -> c_int, flag: bool) -> Vec<i32> {
        let mut v = vec![0i32; 64];
        // SAFETY: `ptr` is a live emulator owned by this handle; the buffer has the length the call writes (checked above).
        let n = unsafe { f(self.ptr, flag, v.as_mut_ptr(), v.len() as c_int) } as usize;
        v.truncate(n.min(64));
        v
    }
    /// The game's minimal action set (ALE action codes).
    pub fn minimal_actions(&self) -> Vec<i32> {
        self.list(ffi::wale_actions, true)
    }
    /// All 18 legal actions.
    pub fn legal_actions(&self) -> Vec<i32> {
        self.list(ffi::wale_actions, false)
    }
    /// The game's modes.
    pub fn modes(&self) -> Vec<i32> {
        self.list(ffi::wale_modes, false)
    }
    /// The game's difficulties.
    pub fn difficulties(&self) -> Vec<i32> {
        self.list(ffi::wale_modes, true)
    }
    /// The current `(mode, difficulty)`.
    pub fn mode_and_difficulty(&self) -> (i32, i32) {
        // SAFETY: `ptr` is a live emulator owned by this handle.
        unsafe { (ffi::wale_mode(self.ptr, false), ffi::wale_mode(self.ptr, true)) }
    }
    /// Write the 210x160 grayscale screen into `out`.
    #[inline]
    pub fn screen_grayscale(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_H * SCREEN_W);
        // SAFETY: `ptr` is a live emulator owned by this handle; the buffer has the length the call writes (checked above).
        unsafe { ffi::wale_screen(self.ptr, false, out.as_mut_ptr()) }
    }
    /// Write the 210x160 screen as palette indices (what the TIA emits, before the palette) into
    /// `out`: a copy, where [`Ale::screen_grayscale`] is a table lookup per pixel.
    #[inline]
    pub fn screen_indices(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_H * SCREEN_W);
        // SAFETY: `ptr` is a live emulator owned by this handle; the buffer has the length the call writes (checked above).
        unsafe { ffi::wale_screen_indices(self.ptr, out.as_mut_ptr()) }
    }
    /// ALE's grayscale value of each palette index: `screen_grayscale` is `screen_indices`
    /// mapped through this table.
    pub fn gray_palette(&self) -> [u8; 256] {
        let mut t = [0u8; 256];
        // SAFETY: `ptr` is a live emulator owned by this handle; the buffer has the length the call writes (checked above).
        unsafe { ffi::wale_gray_palette(self.ptr, t.as_mut_ptr()) };
        t
    }
    /// Write the 210x160x3 RGB screen into `out`.
    pub fn screen_rgb(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SCREEN_H * SCREEN_W * 3);
        // SAFETY: `ptr` is a live emulator owned by this handle; the buffer has the length the call writes (checked above).
        unsafe { ffi::wale_screen(self.ptr, true, out.as_mut_ptr()) }
    }
}

impl Drop for Ale {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `wale_new` and is freed once.
        unsafe { ffi::wale_delete(self.ptr) }
    }
}
