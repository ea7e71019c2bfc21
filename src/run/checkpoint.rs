//! Checkpoints: `runs/X/checkpoints/ckpt-{updates}/` with the online and target networks, the
//! optimizer state, the counters and seeds (`state.json`), the config, optionally the replay
//! memory, and a `COMPLETE` marker listing every file's size and hash.
//!
//! Atomic: everything is written into a hidden temporary folder, each file fsynced, the marker
//! written last, then the folder renamed into place (swapped with `renameat2(RENAME_EXCHANGE)`
//! when a checkpoint of that name exists, as after two stops in the warm-up) and the parent
//! fsynced. A `kill -9` leaves at worst a temporary folder, never a half-written `ckpt-*`.
//!
//! The marker lists every file with its size and CRC-32C (hardware-accelerated, so the
//! gigabytes of a `replay.bin` are checked too). A checkpoint whose networks, optimizer or counters do not
//! match their marker (disk corruption, manual edits), or whose marker lacks one of them, is
//! skipped with a warning in favour of the previous one; a damaged `replay.bin` only costs the
//! replay memory, which then refills. The last `log.keep_checkpoints` are kept.

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
/// Files every checkpoint has (replay.bin is optional).
const REQUIRED: [&str; 5] =
    ["config.toml", "online.safetensors", "optimizer.safetensors", "state.json", "target.safetensors"];
/// Name prefix of a checkpoint being written.
const TMP_PREFIX: &str = ".tmp-";

/// A file's size and hash as its marker line writes it: `crc32c:` and 8 hex digits.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut crc, mut n) = (0u32, 0u64);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..k]);
        n += k as u64;
    }
    Ok((n, format!("crc32c:{crc:08x}")))
}

fn fsync_dir(p: &Path) {
    if let Ok(d) = File::open(p) {
        let _ = d.sync_all();
    }
}

/// Run `f` on `dir` under a name that is valid UTF-8. tch takes file names as UTF-8 strings,
/// but a run folder's path need not be (`--runs-dir` is any path): such a folder is reached
/// through `/proc/self/fd/N` of an open handle on it, which lives until `f` returns.
pub fn utf8_dir<R>(dir: &Path, f: impl FnOnce(&Path) -> Result<R>) -> Result<R> {
    use std::os::fd::AsRawFd;
    if dir.to_str().is_some() {
        return f(dir);
    }
    let handle = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let alias = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let r = f(&alias);
    drop(handle);
    r
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
    if !run.is_dir() {
        bail!("the run folder {} is gone (deleted or moved while the run was training)", run.display());
    }
    let root = dir(run);
    if !root.is_dir() {
        std::fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
    }
    let name = format!("ckpt-{:012}", state.updates);
    let tmp = root.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = fill(&tmp, dqn, state, config_toml, replay) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dest = root.join(&name);
    if let Err(e) = put_in_place(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fsync_dir(&root);
    // Keep the newest `keep`.
    let all = list(run);
    for (_, old) in all.iter().skip(keep.max(1)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dest)
}

/// Move the finished folder `tmp` to `dest`. An existing `dest` (a checkpoint at the same
/// update count: two stops before the first update) is swapped out atomically, so that a
/// complete checkpoint of that name exists at every moment, then removed.
fn put_in_place(tmp: &Path, dest: &Path) -> Result<()> {
    let what = || format!("cannot move {} to {}", tmp.display(), dest.display());
    if !dest.exists() {
        return std::fs::rename(tmp, dest).with_context(what);
    }
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| anyhow!("{e}"));
    let (a, b) = (c(tmp)?, c(dest)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).with_context(what);
    }
    // `tmp` now holds the replaced checkpoint.
    let _ = std::fs::remove_dir_all(tmp);
    Ok(())
}

/// The files of a checkpoint in `tmp`, each fsynced, the marker last.
fn fill(tmp: &Path, dqn: &Dqn, state: &State, config_toml: &str, replay: Option<&AnyMemory>) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    utf8_dir(tmp, |d| dqn.save(d))
        .with_context(|| format!("writing the networks and optimizer into {}", tmp.display()))?;
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
        let (size, hash) = digest(&p).with_context(|| format!("reading {}", p.display()))?;
        manifest.push_str(&format!("{n} {size} {hash}\n"));
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

/// An error unless a run in folder `run` can write its checkpoints: Linux refuses a path of
/// more than 4,095 bytes or a name of more than 255 ("File name too long"), and the longest path
/// a run writes is a checkpoint's optimizer state in its temporary folder. Checked before the
/// first step, where a run that trains for hours would otherwise fail at its first checkpoint.
pub fn check_path_length(run: &Path) -> Result<()> {
    const PATH_MAX: usize = 4095;
    const NAME_MAX: usize = 255;
    let run = std::path::absolute(run).unwrap_or_else(|_| run.to_path_buf());
    let suffix = format!("checkpoints/{TMP_PREFIX}ckpt-{:015}-{:07}/optimizer.safetensors", 0, 0);
    if let Some(c) = run.components().map(|c| c.as_os_str().len()).find(|&n| n > NAME_MAX) {
        bail!(
            "{}: a name in this path is {c} bytes long, and Linux allows at most {NAME_MAX}: choose another runs folder",
            run.display()
        );
    }
    let len = run.as_os_str().len() + 1 + suffix.len();
    if len > PATH_MAX {
        bail!(
            "the run folder {} is {} bytes long, and its checkpoints need {} more ({suffix}): {len} is beyond the {PATH_MAX} bytes Linux allows a path; choose a shorter --runs-dir",
            run.display(),
            run.as_os_str().len(),
            suffix.len() + 1
        );
    }
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

/// A checkpoint that passed [`verify`].
#[derive(Debug)]
pub struct Verified {
    /// Its counters.
    pub state: State,
    /// `replay.bin` is listed but damaged: resume without it (the memory refills).
    pub replay_damaged: Option<String>,
}

/// Check a checkpoint against its marker: every listed file with its size and hash, and every
/// file a checkpoint needs listed.
pub fn verify(ckpt: &Path) -> Result<Verified> {
    let manifest =
        std::fs::read_to_string(ckpt.join(MARKER)).map_err(|_| anyhow!("no {MARKER} marker (incomplete)"))?;
    let mut listed = Vec::new();
    let mut replay_damaged = None;
    for line in manifest.lines() {
        let mut it = line.split_whitespace();
        let (Some(n), Some(size), Some(hash), None) = (it.next(), it.next(), it.next(), it.next()) else {
            bail!("malformed marker line `{}`", crate::util::clip(line, 80))
        };
        let p = ckpt.join(n);
        let why = match digest(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!("{n} is missing")),
            Err(e) => Some(format!("{n} cannot be read ({e})")),
            Ok((s, _)) if s.to_string() != size => Some(format!("{n} has {s} bytes, its marker says {size}")),
            Ok((_, h)) if h != hash => Some(format!("{n} does not match its hash ({h}, marker: {hash})")),
            Ok(_) => None,
        };
        match (why, n) {
            (Some(w), "replay.bin") => replay_damaged = Some(w),
            (Some(w), _) => bail!("{w}"),
            (None, _) => {}
        }
        listed.push(n.to_string());
    }
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|r| !listed.iter().any(|l| l == r)).collect();
    if !missing.is_empty() {
        bail!("its {MARKER} marker does not list {}", missing.join(", "));
    }
    let mut state: State =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("state.json"))?).context("state.json")?;
    if replay_damaged.is_some() {
        state.has_replay = false;
    }
    Ok(Verified { state, replay_damaged })
}

/// The newest usable checkpoint (or the one at `updates`), warning about the ones skipped.
pub fn find(run: &Path, updates: Option<u64>, warn: &mut dyn FnMut(String)) -> Result<(PathBuf, State)> {
    let all = list(run);
    if all.is_empty() {
        bail!("{} has no checkpoint (checkpoints are written every log.checkpoint_every updates and whenever a run stops, also during its warm-up)", run.display());
    }
    for (u, p) in &all {
        if let Some(want) = updates {
            if *u != want {
                continue;
            }
        }
        match verify(p) {
            Ok(v) => {
                if let Some(why) = v.replay_damaged {
                    warn(format!(
                        "warning: checkpoint {}: {why}; using it without its replay memory, which refills",
                        p.display()
                    ));
                }
                return Ok((p.clone(), v.state));
            }
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
