//! Environment ids as users type them, and each id family's defaults.
//!
//! | id form               | frameskip | sticky actions | action set |
//! |-----------------------|-----------|----------------|------------|
//! | `Pong`, `ALE/Pong-v5` | 4         | 0.25           | minimal    |
//! | `PongNoFrameskip-v4`  | 1         | 0              | minimal    |
//! | `CartPole`, `CartPole-v1` | -     | -              | 2 actions  |
//!
//! Matching is case-insensitive and ignores `_`/`-` inside the game name.

use std::path::Path;

use crate::roms::{self, normalize, Game};
use crate::EnvError;

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
    /// Classic-control CartPole-v1 (gymnasium-rs).
    CartPole,
}

impl EnvId {
    /// A short name for run folders (`Pong`, `CartPole`).
    pub fn short_name(&self) -> String {
        match self {
            EnvId::Atari { game, .. } => game.id.clone(),
            EnvId::CartPole => "CartPole".into(),
        }
    }
}

/// Whether an id names CartPole (no ROM lookup needed).
pub fn is_cartpole(id: &str) -> bool {
    matches!(normalize(id).as_str(), "cartpole" | "cartpolev1")
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
    if is_cartpole(id) {
        return Ok(EnvId::CartPole);
    }
    let Some((game_part, family)) = split_family(id) else {
        return Err(EnvError::UnknownId {
            id: id.to_string(),
            suggestions: vec![],
            hint: "known id forms: `Pong`, `ALE/Pong-v5`, `PongNoFrameskip-v4`, `CartPole-v1`".into(),
        });
    };
    let wanted = normalize(&game_part);
    let supported_stem = roms::ALE_SUPPORTED.iter().find(|s| normalize(s) == wanted);
    let dir = roms::rom_dir(rom_dir)?;
    match supported_stem {
        Some(stem) => {
            let games = roms::available_games(&dir);
            match games.into_iter().find(|g| g.rom.name == *stem) {
                Some(game) => Ok(EnvId::Atari { game, family }),
                None => Err(EnvError::MissingRom { game: roms::game_id(stem), file: format!("{stem}.bin"), dir }),
            }
        }
        None => {
            if roms::unsupported_roms(&dir).iter().any(|s| normalize(s) == wanted) {
                return Err(EnvError::UnsupportedGame { game: game_part });
            }
            let ids: Vec<String> =
                roms::ALE_SUPPORTED.iter().map(|s| roms::game_id(s)).chain(["CartPole-v1".to_string()]).collect();
            Err(EnvError::UnknownId {
                id: id.to_string(),
                suggestions: roms::suggestions(&game_part, ids.iter().map(String::as_str)),
                hint: "`wndqn games` lists every playable id".into(),
            })
        }
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
}
