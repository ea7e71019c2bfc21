//! `wndqn games`: the playable games and their ids.

use std::path::Path;

use anyhow::Result;
use wndqn_envs::roms;

/// Print the games found in the ROM folder that ALE 0.6 can play.
pub fn run(rom_dir: Option<&Path>, all: bool) -> Result<()> {
    let dir = roms::rom_dir(rom_dir)?;
    let games = roms::available_games(&dir);
    println!("{} playable Atari games (ROMs from {}):", games.len(), dir.display());
    println!("{:<20} {:<22} {:<30}", "id", "ALE/…-v5 id", "ROM");
    for g in &games {
        println!("{:<20} {:<22} {}", g.id, format!("ALE/{}-v5", g.id), g.rom.path.file_name().unwrap_or_default().to_string_lossy());
    }
    println!("\nplus classic control: CartPole-v1");
    let missing: Vec<_> = roms::ALE_SUPPORTED.iter().filter(|s| !games.iter().any(|g| g.rom.name == **s)).collect();
    if !missing.is_empty() {
        println!("\nsupported by ALE 0.6 but no ROM in that folder: {}", missing.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "));
    }
    let unsupported = roms::unsupported_roms(&dir);
    if all && !unsupported.is_empty() {
        println!("\nROMs present that ALE 0.6 cannot play (added in ALE 0.7+): {}", unsupported.join(", "));
    } else if !unsupported.is_empty() {
        println!("({} more ROMs need a newer ALE; `wndqn games --all` lists them)", unsupported.len());
    }
    Ok(())
}
