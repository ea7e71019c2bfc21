//! `wndqn games`: the playable games and their ids.

use crate::util::out;
use std::path::Path;

use anyhow::Result;
use wndqn_envs::{ale, roms};

/// Print the games found in the ROM folder that the compiled-in ALE can play; with `all`, also
/// check every ROM's MD5 with ALE and list the files it does not know.
pub fn run(rom_dir: Option<&Path>, all: bool) -> Result<()> {
    let dir = roms::rom_dir(rom_dir)?;
    let games = roms::available_games(&dir);
    out!("{} playable Atari games on ALE {} (ROMs from {}):", games.len(), ale::version(), dir.display());
    out!("{:<20} {:<22} {:<30}", "id", "ALE/…-v5 id", "ROM");
    for g in &games {
        out!(
            "{:<20} {:<22} {}",
            g.id,
            format!("ALE/{}-v5", g.id),
            g.rom.path.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    out!("\nMinAtar (Young & Tian 2019; 10 x 10 grids, sticky actions 0.1, difficulty ramping):");
    out!("{:<24} {:<24} {:>8} {:>8}", "id (minimal actions)", "id (all six actions)", "channels", "actions");
    for (name, id_name, channels) in wndqn_envs::minatar::GAMES {
        let minimal = wndqn_envs::minatar::minimal_action_count(name);
        out!(
            "{:<24} {:<24} {channels:>8} {minimal:>5} / 6",
            format!("MinAtar/{id_name}-v1"),
            format!("MinAtar/{id_name}-v0")
        );
    }
    out!("\nplus classic control: CartPole-v1");
    let missing: Vec<_> = roms::ALE_SUPPORTED.iter().filter(|s| !games.iter().any(|g| g.rom.name == **s)).collect();
    if !missing.is_empty() {
        out!(
            "\nsupported by ALE {} but no ROM in that folder: {}",
            ale::version(),
            missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let unsupported = roms::unsupported_roms(&dir);
    if !unsupported.is_empty() {
        out!("\nROM files with names ALE {} does not know: {}", ale::version(), unsupported.join(", "));
    }
    if all {
        let mut unknown = Vec::new();
        for g in &games {
            match ale::identify(&g.rom.path) {
                Ok((Some(name), _)) if name == g.rom.name => {}
                Ok((name, md5)) => unknown.push(format!(
                    "{} (md5 {md5}{})",
                    g.rom.path.display(),
                    name.map(|n| format!(", the ROM of {n}")).unwrap_or_default()
                )),
                Err(e) => unknown.push(e.to_string()),
            }
        }
        if unknown.is_empty() {
            out!("\nevery listed ROM has the MD5 that ALE {} expects", ale::version());
        } else {
            out!("\nROMs ALE {} will refuse (unknown MD5):\n  {}", ale::version(), unknown.join("\n  "));
        }
    }
    Ok(())
}
