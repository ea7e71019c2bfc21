//! Checkpoints: `runs/X/checkpoints/ckpt-{updates}/` with the online and target networks, the
//! optimizer state, the counters and seeds (`state.json`), the config, optionally the replay
//! memory, and a `COMPLETE` marker listing every file's size and hash.
//!
//! Atomic: everything is written into a hidden temporary folder, each file fsynced, the marker
//! written last, then the folder renamed into place and the parent fsynced. A `kill -9` leaves
//! at worst a temporary folder, never a half-written `ckpt-*`; a checkpoint whose files do not
//! match their marker (disk corruption, manual edits) is skipped with a warning in favour of the
//! previous one. The last `log.keep_checkpoints` are kept.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use wndqn_agents::dqn::Dqn;
use wndqn_agents::replay::AnyMemory;

/// Counters and exploration/RNG state of a run at a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Env steps whose transitions reached the replay memory.
    pub env_steps: u64,
    /// Learner updates.
    pub updates: u64,
    /// Whole games finished.
    pub episodes: u64,
    /// Returns of the most recent games (for the 20-game means after a resume).
    pub recent_returns: Vec<f64>,
    /// Epsilon of the schedule at `env_steps` (recorded; it is a function of the step).
    pub epsilon: f64,
    /// Master seed of the run.
    pub seed: u64,
    /// How many times the run was started (0 = first); seeds of a resumed segment mix it in.
    pub generation: u64,
    /// Training time so far, seconds.
    pub wall_secs: f64,
    /// Whether `replay.bin` is part of the checkpoint.
    pub has_replay: bool,
}

const MARKER: &str = "COMPLETE";
/// Name prefix of a checkpoint being written.
const TMP_PREFIX: &str = ".tmp-";

fn fnv(path: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut h, mut n) = (0xcbf29ce484222325u64, 0u64);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        for &b in &buf[..k] {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        n += k as u64;
    }
    Ok((n, h))
}

fn fsync_dir(p: &Path) {
    if let Ok(d) = File::open(p) {
        let _ = d.sync_all();
    }
}

/// The checkpoints folder of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Write a checkpoint of `dqn` + `state` (+ the replay memory) and prune old ones. On failure
/// (a full disk, say) the temporary folder is removed and the error names the file.
pub fn write(
    run: &Path,
    dqn: &Dqn,
    state: &State,
    config_toml: &str,
    replay: Option<&AnyMemory>,
    keep: usize,
) -> Result<PathBuf> {
    let root = dir(run);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = format!("ckpt-{:012}", state.updates);
    let tmp = root.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = fill(&tmp, dqn, state, config_toml, replay) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
    fsync_dir(&root);
    // Keep the newest `keep`.
    let all = list(run);
    for (_, old) in all.iter().skip(keep.max(1)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dest)
}

/// The files of a checkpoint in `tmp`, each fsynced, the marker last.
fn fill(tmp: &Path, dqn: &Dqn, state: &State, config_toml: &str, replay: Option<&AnyMemory>) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    dqn.save(tmp).with_context(|| format!("writing the networks and optimizer into {}", tmp.display()))?;
    let put = |n: &str, bytes: &[u8]| {
        std::fs::write(tmp.join(n), bytes).with_context(|| format!("writing {}", tmp.join(n).display()))
    };
    put("state.json", serde_json::to_string_pretty(state)?.as_bytes())?;
    put("config.toml", config_toml.as_bytes())?;
    if let Some(m) = replay {
        let p = tmp.join("replay.bin");
        let r = (|| -> Result<()> {
            let mut w = BufWriter::with_capacity(1 << 22, File::create(&p)?);
            m.save(&mut w)?;
            w.flush()?;
            Ok(())
        })();
        r.with_context(|| format!("writing {}", p.display()))?;
    }
    let mut manifest = String::new();
    let mut names: Vec<String> =
        std::fs::read_dir(tmp)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for n in &names {
        let p = tmp.join(n);
        File::open(&p).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", p.display()))?;
        let (size, hash) = if n == "replay.bin" { (std::fs::metadata(&p)?.len(), 0) } else { fnv(&p)? };
        manifest.push_str(&format!("{n} {size} {hash:016x}\n"));
    }
    let marker = tmp.join(MARKER);
    (|| -> std::io::Result<()> {
        let mut m = File::create(&marker)?;
        m.write_all(manifest.as_bytes())?;
        m.sync_all()
    })()
    .with_context(|| format!("writing {}", marker.display()))?;
    fsync_dir(tmp);
    Ok(())
}

/// Remove the temporary folders that a process which died while writing a checkpoint left
/// behind (called once the run folder's lock is held, so no live writer owns them).
pub fn remove_temporaries(run: &Path) {
    for e in std::fs::read_dir(dir(run)).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Checkpoint folders, newest first (complete or not).
pub fn list(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir(run))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("ckpt-").and_then(|u| u.parse().ok()).map(|u| (u, e.path()))
        })
        .collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v
}

/// Check a checkpoint against its marker.
pub fn verify(ckpt: &Path) -> Result<State> {
    let manifest =
        std::fs::read_to_string(ckpt.join(MARKER)).map_err(|_| anyhow!("no {MARKER} marker (incomplete)"))?;
    for line in manifest.lines() {
        let mut it = line.split_whitespace();
        let (Some(n), Some(size), Some(hash)) = (it.next(), it.next(), it.next()) else {
            bail!("malformed marker line `{line}`")
        };
        let p = ckpt.join(n);
        let (got_size, got_hash) = if n == "replay.bin" {
            (std::fs::metadata(&p).map(|m| m.len()).unwrap_or(u64::MAX), 0)
        } else {
            fnv(&p).unwrap_or((u64::MAX, 0))
        };
        if got_size.to_string() != size || format!("{got_hash:016x}") != hash {
            bail!("{n} does not match its marker (size {got_size}, expected {size})");
        }
    }
    let state: State =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json"))?).context("state.json")?;
    Ok(state)
}

/// The newest usable checkpoint (or the one at `updates`), warning about the ones skipped.
pub fn find(run: &Path, updates: Option<u64>, warn: &mut dyn FnMut(String)) -> Result<(PathBuf, State)> {
    let all = list(run);
    if all.is_empty() {
        bail!("{} has no checkpoint (checkpoints are written every log.checkpoint_every updates and when a run ends or is interrupted)", run.display());
    }
    for (u, p) in &all {
        if let Some(want) = updates {
            if *u != want {
                continue;
            }
        }
        match verify(p) {
            Ok(s) => return Ok((p.clone(), s)),
            Err(e) => warn(format!("warning: skipping checkpoint {}: {e:#}", p.display())),
        }
    }
    match updates {
        Some(u) => bail!(
            "{} has no usable checkpoint at {u} updates (available: {})",
            run.display(),
            all.iter().map(|(u, _)| u.to_string()).collect::<Vec<_>>().join(", ")
        ),
        None => bail!("{} has no usable checkpoint", run.display()),
    }
}
