//! Environment ids as users type them, and each id family's defaults.
//!
//! | id form               | frameskip | sticky actions | action set |
//! |-----------------------|-----------|----------------|------------|
//! | `Pong`, `ALE/Pong-v5` | 4         | 0.25           | minimal    |
//! | `PongNoFrameskip-v4`  | 1         | 0              | minimal    |
//! | `MinAtar/Breakout-v0` | 1         | 0.1            | all 6      |
//! | `MinAtar/Breakout-v1`, `MinAtar/Breakout` | 1 | 0.1  | minimal    |
//! | `CartPole`, `CartPole-v1` | -     | -              | 2 actions  |
//!
//! The MinAtar forms are Gymnasium's (the `minatar` package registers `-v0` with six actions and
//! `-v1` with each game's minimal set). Matching is case-insensitive and ignores `_`/`-` inside
//! the game name.

use std::path::Path;

use crate::env::EnvError;
use crate::roms::{self, normalize, Game};

/// Which defaults an Atari id brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// `ALE/Pong-v5` or a bare `Pong`: frameskip 4, sticky actions 0.25.
    V5,
    /// `PongNoFrameskip-v4`: frameskip 1, no sticky actions.
    NoFrameskipV4,
}

impl Family {
    /// Frames per env step.
    pub fn frameskip(self) -> u32 {
        match self {
            Family::V5 => 4,
            Family::NoFrameskipV4 => 1,
        }
    }
    /// Sticky-action probability.
    pub fn repeat_action_probability(self) -> f32 {
        match self {
            Family::V5 => 0.25,
            Family::NoFrameskipV4 => 0.0,
        }
    }
}

/// A resolved env id.
#[derive(Debug, Clone)]
pub enum EnvId {
    /// An ALE game.
    Atari {
        /// The game and its ROM.
        game: Game,
        /// The id family (for defaults).
        family: Family,
    },
    /// A MinAtar game.
    MinAtar {
        /// The package's name of the game (`breakout`, `space_invaders`).
        game: &'static str,
        /// The id's action set: all six (`-v0`) or the minimal one.
        full_actions: bool,
    },
    /// Classic-control CartPole-v1 (gymnasium-rs).
    CartPole,
}

impl EnvId {
    /// A short name for run folders (`Pong`, `MinAtar-Breakout`, `CartPole`).
    pub fn short_name(&self) -> String {
        match self {
            EnvId::Atari { game, .. } => game.id.clone(),
            EnvId::MinAtar { game, .. } => minatar_short_name(game),
            EnvId::CartPole => "CartPole".into(),
        }
    }
}

fn minatar_short_name(game: &str) -> String {
    let (_, name, _) = crate::minatar::GAMES.iter().find(|g| g.0 == game).expect("a MinAtar game");
    format!("MinAtar-{name}")
}

/// A MinAtar id (`MinAtar/Breakout-v1`): the package's game name and whether the id means all six
/// actions; `None` when `id` is not of the MinAtar form; an unknown game or version is an error.
fn minatar_id(id: &str) -> Option<Result<(&'static str, bool), EnvError>> {
    let t = id.trim();
    let body = t.get(..8).filter(|p| p.eq_ignore_ascii_case("minatar/")).map(|_| &t[8..])?;
    let lower = body.to_ascii_lowercase();
    let (game, full) = match (lower.strip_suffix("-v0"), lower.strip_suffix("-v1")) {
        (Some(g), _) => (g.to_string(), true),
        (_, Some(g)) => (g.to_string(), false),
        _ if !lower.contains("-v") => (lower.clone(), false),
        _ => (String::new(), false),
    };
    let found = crate::minatar::GAMES.iter().find(|g| !game.is_empty() && normalize(g.0) == normalize(&game));
    Some(match found {
        Some(g) if t.len() <= MAX_ID_LEN && plain_chars(body) => Ok((g.0, full)),
        _ => {
            let ids = minatar_ids();
            let q = body.chars().take(MAX_ID_LEN).collect::<String>();
            let q = q.split("-v").next().unwrap_or("").to_string();
            let names: Vec<&str> = crate::minatar::GAMES.iter().map(|g| g.1).collect();
            let close = roms::suggestions(&q, names.iter().copied());
            let sugg = ids.into_iter().filter(|i| close.iter().any(|c| i.contains(c.as_str()))).collect();
            Err(unknown(id, sugg))
        }
    })
}

/// The MinAtar ids `wndqn games` lists (the minimal-action `-v1` form).
pub fn minatar_ids() -> Vec<String> {
    crate::minatar::GAMES.iter().map(|g| format!("MinAtar/{}-v1", g.1)).collect()
}

/// Whether an id names CartPole (no ROM lookup needed).
pub fn is_cartpole(id: &str) -> bool {
    let id = id.trim();
    id.len() <= MAX_ID_LEN && matches!(normalize(id).as_str(), "cartpole" | "cartpolev1") && plain_chars(id)
}

/// Ids longer than this are not ids (and are not echoed whole in errors).
const MAX_ID_LEN: usize = 64;

/// Letters, digits, `-`, `_` (and `.` for nothing): no paths, no spaces.
fn plain_chars(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What an id names, checked without looking for ROMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// An ALE game this build can play (its ROM may still be missing).
    Atari,
    /// A MinAtar game.
    MinAtar,
    /// CartPole-v1.
    CartPole,
}

fn unknown(id: &str, suggestions: Vec<String>) -> EnvError {
    let shown: String = if id.chars().count() > MAX_ID_LEN {
        format!("{}… ({} characters)", id.chars().take(MAX_ID_LEN).collect::<String>(), id.chars().count())
    } else {
        id.to_string()
    };
    EnvError::UnknownId {
        id: shown,
        suggestions,
        hint: "ids look like `Pong`, `ALE/Pong-v5`, `PongNoFrameskip-v4`, `MinAtar/Breakout-v1` or `CartPole-v1`; `wndqn games` lists every playable id".into(),
    }
}

/// Every id form users may type, for suggestions.
fn known_ids() -> Vec<String> {
    roms::ALE_SUPPORTED
        .iter()
        .map(|s| roms::game_id(s))
        .chain(minatar_ids())
        .chain(["CartPole-v1".to_string()])
        .collect()
}

/// The short name of an id (`ALE/Pong-v5` -> `Pong`, `CartPole-v1` -> `CartPole`), as run
/// folders are named, checked as [`classify`] does (no ROMs needed).
pub fn short_name(id: &str) -> Result<String, EnvError> {
    if let Some(m) = minatar_id(id) {
        return Ok(minatar_short_name(m?.0));
    }
    Ok(match rom_name(id)? {
        Some(stem) => roms::game_id(&stem),
        None => "CartPole".into(),
    })
}

/// The ALE ROM name of an Atari id (`ALE/SpaceInvaders-v5` -> `space_invaders`), `None` for
/// CartPole and MinAtar; checked as [`classify`] does.
pub fn rom_name(id: &str) -> Result<Option<String>, EnvError> {
    Ok(match classify(id)? {
        IdKind::CartPole | IdKind::MinAtar => None,
        IdKind::Atari => {
            let (game, _) = split_family(id).expect("classify checked the form");
            let stem = roms::ALE_SUPPORTED.iter().find(|s| normalize(s) == normalize(&game)).expect("checked");
            Some(stem.to_string())
        }
    })
}

/// Check an id without looking for ROMs: CartPole, or a game ALE 0.12.1 can play, in one of the
/// id forms. Anything else (a typo, another version, a path) is an unknown id with suggestions.
pub fn classify(id: &str) -> Result<IdKind, EnvError> {
    if is_cartpole(id) {
        return Ok(IdKind::CartPole);
    }
    if let Some(m) = minatar_id(id) {
        return m.map(|_| IdKind::MinAtar);
    }
    let t = id.trim();
    let body = match t.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("ale/") => &t[4..],
        _ => t,
    };
    let suggest = || {
        let q = body.chars().take(MAX_ID_LEN).collect::<String>();
        let q = q.split("-v").next().unwrap_or("").trim_end_matches("NoFrameskip").to_string();
        let ids = known_ids();
        roms::suggestions(&q, ids.iter().map(String::as_str))
    };
    if t.len() > MAX_ID_LEN || !plain_chars(body) || body.is_empty() {
        return Err(unknown(id, if t.len() > MAX_ID_LEN { vec![] } else { suggest() }));
    }
    match split_family(t) {
        Some((game, _)) if roms::ALE_SUPPORTED.iter().any(|s| normalize(s) == normalize(&game)) => Ok(IdKind::Atari),
        _ => Err(unknown(id, suggest())),
    }
}

/// Split an Atari id into its game part and family; `None` for a version we do not know.
fn split_family(id: &str) -> Option<(String, Family)> {
    let lower = id.trim().to_ascii_lowercase();
    let body = lower.strip_prefix("ale/").unwrap_or(&lower);
    if let Some(g) = body.strip_suffix("-v5") {
        return Some((g.to_string(), Family::V5));
    }
    if let Some(g) = body.strip_suffix("noframeskip-v4") {
        return Some((g.to_string(), Family::NoFrameskipV4));
    }
    if body.contains("-v") {
        return None;
    }
    Some((body.to_string(), Family::V5))
}

/// Resolve `id` against the ROMs in `rom_dir` (or the default ROM search path).
pub fn resolve(id: &str, rom_dir: Option<&Path>) -> Result<EnvId, EnvError> {
    if let Some(m) = minatar_id(id) {
        let (game, full_actions) = m?;
        return Ok(EnvId::MinAtar { game, full_actions });
    }
    let kind = classify(id).map_err(|e| {
        // A ROM that exists but that this ALE cannot play says so, instead of "unknown".
        let game = split_family(id).map(|(g, _)| g).unwrap_or_default();
        let dir = roms::rom_dir(rom_dir).ok();
        match dir
            .filter(|d| !game.is_empty() && roms::unsupported_roms(d).iter().any(|s| normalize(s) == normalize(&game)))
        {
            Some(_) if plain_chars(&game) => EnvError::UnsupportedGame { game },
            _ => e,
        }
    })?;
    if kind == IdKind::CartPole {
        return Ok(EnvId::CartPole);
    }
    let (game_part, family) = split_family(id).expect("classify checked the form");
    let wanted = normalize(&game_part);
    let stem = roms::ALE_SUPPORTED.iter().find(|s| normalize(s) == wanted).expect("classify checked the game");
    let dir = roms::rom_dir(rom_dir)?;
    match roms::available_games(&dir).into_iter().find(|g| g.rom.name == *stem) {
        Some(game) => Ok(EnvId::Atari { game, family }),
        None => Err(EnvError::MissingRom { game: roms::game_id(stem), file: format!("{stem}.bin"), dir }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_families() {
        assert_eq!(split_family("ALE/Pong-v5"), Some(("pong".into(), Family::V5)));
        assert_eq!(split_family("PongNoFrameskip-v4"), Some(("pong".into(), Family::NoFrameskipV4)));
        assert_eq!(split_family("space_invaders"), Some(("space_invaders".into(), Family::V5)));
        assert_eq!(split_family("Pong-v3"), None);
        assert!(is_cartpole("CartPole-v1") && is_cartpole("cartpole"));
    }

    #[test]
    fn short_names_name_run_folders() {
        for (id, want) in [("ALE/Pong-v5", "Pong"), ("space_invaders", "SpaceInvaders"), ("CartPole-v1", "CartPole")] {
            assert_eq!(short_name(id).unwrap(), want);
        }
        assert!(short_name("Pongg").is_err());
    }

    #[test]
    fn ids_are_checked_without_roms_and_unknown_ones_get_suggestions() {
        assert_eq!(classify("ALE/Pong-v5").unwrap(), IdKind::Atari);
        assert_eq!(classify("SpaceInvadersNoFrameskip-v4").unwrap(), IdKind::Atari);
        assert_eq!(classify("CartPole-v1").unwrap(), IdKind::CartPole);
        for (bad, want) in [("CartPole-v0", "CartPole-v1"), ("CartPol-v1", "CartPole-v1"), ("Pongg", "Pong")] {
            let e = classify(bad).unwrap_err().to_string();
            assert!(e.contains("unknown environment id") && e.contains(want), "{bad}: {e}");
        }
        for bad in ["../pong", "../../etc/passwd", "Pong v5", "ALE/../Pong", "", "pong/", "ñañ", "ALE/"] {
            let e = classify(bad).unwrap_err().to_string();
            assert!(e.contains("unknown environment id"), "{bad}: {e}");
        }
        assert_eq!(classify("MinAtar/Breakout-v1").unwrap(), IdKind::MinAtar);
        assert_eq!(short_name("minatar/space_invaders").unwrap(), "MinAtar-SpaceInvaders");
        for (bad, want) in
            [("MinAtar/Breakot-v1", "MinAtar/Breakout-v1"), ("MinAtar/Seaquest-v3", "MinAtar/Seaquest-v1")]
        {
            let e = classify(bad).unwrap_err().to_string();
            assert!(e.contains("unknown environment id") && e.contains(want), "{bad}: {e}");
        }
        assert!(matches!(
            resolve("MinAtar/Freeway-v0", None).unwrap(),
            EnvId::MinAtar { game: "freeway", full_actions: true }
        ));
        let huge = "x".repeat(1 << 20);
        let e = classify(&huge).unwrap_err().to_string();
        assert!(e.contains("unknown environment id") && e.len() < 600, "{} characters", e.len());
    }
}
