//! Where Atari ROMs come from and which games this build of ALE can play.
//!
//! ROMs are looked for, in order: the `--rom-dir` flag, the `WNDQN_ROM_DIR` environment variable,
//! `$VIRTUAL_ENV`'s `ale_py/roms/`, then `./.venv`'s (the `ale-py` wheel ships 108 ROMs there).
//! An application may hand its own default as the flag. ALE picks a game's settings by the ROM's
//! file name (`pong.bin`).

use std::path::{Path, PathBuf};

use crate::env::EnvError;

/// The variable that points at a folder of `<game>.bin` ROMs.
pub const ROM_DIR_ENV: &str = "WNDQN_ROM_DIR";

/// Games that ALE 0.12.1 (compiled in by `build.rs`) has reward/terminal settings for, by ROM
/// file stem: the `rom()` names of ALE 0.12.1's `src/ale/games/supported/` (103 games, the
/// Atari-57 among them). ALE itself checks each ROM's MD5 when it loads it (`ale::identify`).
pub const ALE_SUPPORTED: &[&str] = &[
    "adventure",
    "air_raid",
    "alien",
    "amidar",
    "assault",
    "asterix",
    "asteroids",
    "atlantis",
    "atlantis2",
    "backgammon",
    "bank_heist",
    "basic_math",
    "battle_zone",
    "beam_rider",
    "berzerk",
    "blackjack",
    "bowling",
    "boxing",
    "breakout",
    "carnival",
    "casino",
    "centipede",
    "chopper_command",
    "crazy_climber",
    "crossbow",
    "darkchambers",
    "defender",
    "demon_attack",
    "donkey_kong",
    "double_dunk",
    "earthworld",
    "elevator_action",
    "enduro",
    "entombed",
    "et",
    "fishing_derby",
    "flag_capture",
    "freeway",
    "frogger",
    "frostbite",
    "galaxian",
    "gopher",
    "gravitar",
    "hangman",
    "haunted_house",
    "hero",
    "human_cannonball",
    "ice_hockey",
    "jamesbond",
    "journey_escape",
    "kaboom",
    "kangaroo",
    "keystone_kapers",
    "king_kong",
    "klax",
    "koolaid",
    "krull",
    "kung_fu_master",
    "laser_gates",
    "lost_luggage",
    "mario_bros",
    "miniature_golf",
    "montezuma_revenge",
    "mr_do",
    "ms_pacman",
    "name_this_game",
    "othello",
    "pacman",
    "phoenix",
    "pitfall",
    "pitfall2",
    "pong",
    "pooyan",
    "private_eye",
    "qbert",
    "riverraid",
    "road_runner",
    "robotank",
    "seaquest",
    "sir_lancelot",
    "skiing",
    "solaris",
    "space_invaders",
    "space_war",
    "star_gunner",
    "superman",
    "surround",
    "tennis",
    "tetris",
    "tic_tac_toe_3d",
    "time_pilot",
    "trondead",
    "turmoil",
    "tutankham",
    "up_n_down",
    "venture",
    "video_chess",
    "video_cube",
    "video_pinball",
    "wizard_of_wor",
    "word_zapper",
    "yars_revenge",
    "zaxxon",
];

/// The Atari-57 benchmark set (Badia et al. 2020, Agent57), by ALE ROM name: every one is in
/// [`ALE_SUPPORTED`] (checked against ale-py by `tests/parity.rs`).
#[rustfmt::skip]
pub const ATARI_57: &[&str] = &[
    "alien", "amidar", "assault", "asterix", "asteroids", "atlantis",
    "bank_heist", "battle_zone", "beam_rider", "berzerk", "bowling", "boxing", "breakout",
    "centipede", "chopper_command", "crazy_climber",
    "defender", "demon_attack", "double_dunk",
    "enduro",
    "fishing_derby", "freeway", "frostbite",
    "gopher", "gravitar",
    "hero",
    "ice_hockey",
    "jamesbond",
    "kangaroo", "krull", "kung_fu_master",
    "montezuma_revenge", "ms_pacman",
    "name_this_game",
    "phoenix", "pitfall", "pong", "private_eye",
    "qbert",
    "riverraid", "road_runner", "robotank",
    "seaquest", "skiing", "solaris", "space_invaders", "star_gunner", "surround",
    "tennis", "time_pilot", "tutankham",
    "up_n_down",
    "venture", "video_pinball",
    "wizard_of_wor",
    "yars_revenge",
    "zaxxon",
];

/// A game's ROM on disk.
#[derive(Debug, Clone)]
pub struct Rom {
    /// ROM file stem as ALE knows it (`space_invaders`).
    pub name: String,
    /// Full path of the `.bin` file.
    pub path: PathBuf,
}

impl Rom {
    /// Check the file before ALE opens it (size and permissions; ALE then checks its MD5).
    pub fn check_readable(&self) -> Result<(), EnvError> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| EnvError::BadRom { path: self.path.clone(), why: e.to_string() })?;
        let len = meta.len();
        // Atari 2600 cartridges are 2 KiB to 64 KiB (bank-switched); ALE rejects anything else.
        if !meta.is_file() || !(2048..=512 * 1024).contains(&len) || len % 1024 != 0 {
            return Err(EnvError::BadRom {
                path: self.path.clone(),
                why: format!("{len} bytes is not the size of an Atari 2600 cartridge"),
            });
        }
        std::fs::File::open(&self.path)
            .map_err(|e| EnvError::BadRom { path: self.path.clone(), why: e.to_string() })?;
        Ok(())
    }
}

/// The folders searched for ROMs, in order, with where each came from.
pub fn candidate_dirs(flag: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    if let Some(d) = flag {
        dirs.push((d.to_path_buf(), "--rom-dir"));
        return dirs;
    }
    // An empty variable is unset (as a shell `export WNDQN_ROM_DIR=` leaves it).
    if let Some(d) = std::env::var_os(ROM_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push((PathBuf::from(d), ROM_DIR_ENV));
        return dirs;
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        dirs.extend(venv_roms(Path::new(&venv)).map(|p| (p, "$VIRTUAL_ENV")));
    }
    dirs.extend(venv_roms(Path::new(".venv")).map(|p| (p, "./.venv")));
    dirs
}

/// The `ale_py/roms` folder of the ale-py wheel in the Python venv at `venv`, if there is one.
pub fn venv_roms(venv: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/ale_py/roms"))
        .filter(|p| p.is_dir())
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The ROM folder in use: the first candidate that exists.
pub fn rom_dir(flag: Option<&Path>) -> Result<PathBuf, EnvError> {
    let cands = candidate_dirs(flag);
    for (d, _) in &cands {
        if d.is_dir() {
            return Ok(d.clone());
        }
    }
    Err(EnvError::NoRomDir { searched: cands.into_iter().map(|(d, s)| format!("{} ({s})", d.display())).collect() })
}

/// One playable game: supported by ALE 0.12.1 and with a ROM present.
#[derive(Debug, Clone)]
pub struct Game {
    /// The id users type (`SpaceInvaders`).
    pub id: String,
    /// The ROM.
    pub rom: Rom,
}

/// CamelCase id of a ROM stem, as Gymnasium names games (`space_invaders` -> `SpaceInvaders`).
pub fn game_id(stem: &str) -> String {
    stem.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The games found in `dir` that ALE 0.12.1 supports, sorted by id.
pub fn available_games(dir: &Path) -> Vec<Game> {
    let mut games: Vec<Game> = ALE_SUPPORTED
        .iter()
        .filter_map(|stem| {
            let path = dir.join(format!("{stem}.bin"));
            path.is_file().then(|| Game { id: game_id(stem), rom: Rom { name: stem.to_string(), path } })
        })
        .collect();
    games.sort_by(|a, b| a.id.cmp(&b.id));
    games
}

/// ROM files in `dir` that this ALE cannot play (newer games), by stem.
pub fn unsupported_roms(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            if p.extension()? != "bin" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .filter(|s| !ALE_SUPPORTED.contains(&s.as_str()))
        .collect();
    v.sort();
    v
}

/// Edit distance, for "did you mean" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Up to five names closest to `query` (case and separators ignored).
pub fn suggestions<'a>(query: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let q = normalize(query);
    let mut scored: Vec<(usize, &str)> = names
        .into_iter()
        .map(|n| {
            let nn = normalize(n);
            let d = if nn.contains(&q) || q.contains(&nn) { 0 } else { levenshtein(&q, &nn) };
            (d, n)
        })
        .filter(|(d, n)| *d <= (normalize(n).len() / 3).max(2))
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n.to_string()).collect()
}

/// Lower-case, letters and digits only.
pub fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_gymnasium_camel_case() {
        assert_eq!(game_id("space_invaders"), "SpaceInvaders");
        assert_eq!(game_id("up_n_down"), "UpNDown");
        assert_eq!(game_id("pong"), "Pong");
    }

    #[test]
    fn suggestions_find_typos() {
        let names = ["Pong", "Breakout", "SpaceInvaders", "Pooyan"];
        assert_eq!(suggestions("Pnog", names)[0], "Pong");
        assert_eq!(suggestions("space-invader", names), vec!["SpaceInvaders"]);
        assert!(suggestions("Zzzzzzzzzzz", names).is_empty());
    }

    #[test]
    fn bad_rom_sizes_are_rejected_before_ale_sees_them() {
        let dir = std::env::temp_dir().join(format!("wndqn-rom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pong.bin");
        std::fs::write(&path, b"not a rom").unwrap();
        let err = Rom { name: "pong".into(), path: path.clone() }.check_readable().unwrap_err();
        assert!(err.to_string().contains("not the size of an Atari 2600 cartridge"), "{err}");
        let missing = Rom { name: "pong".into(), path: dir.join("nope.bin") };
        assert!(missing.check_readable().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
