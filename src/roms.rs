//! Where this application finds Atari ROMs when nothing says: the ale-py wheel in the venv of
//! the checkout it was built in (what `make setup` installs). The envs library searches
//! `--rom-dir`, `WNDQN_ROM_DIR`, `$VIRTUAL_ENV` and `./.venv`; a checkout's venv is the
//! application's business, so it is found here and handed down as the ROM folder.

use std::path::{Path, PathBuf};

/// The checkout's ROM folder, when no flag, `WNDQN_ROM_DIR` or active venv names one (those win,
/// in the envs library) and it exists: next to the binary (`<checkout>/target/release/wndqn`),
/// else where the binary was built.
pub fn default_dir() -> Option<PathBuf> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if set(wndqn_envs::roms::ROM_DIR_ENV) || set("VIRTUAL_ENV") {
        return None;
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(|e| e.parent()?.parent()?.parent()).map(Path::to_path_buf);
    let built = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    [beside, built].into_iter().flatten().find_map(|checkout| wndqn_envs::roms::venv_roms(&checkout.join(".venv")))
}
