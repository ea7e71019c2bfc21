//! The run folder `runs/{env}__{variant}__s{seed}__{unix_time}/`: creating a new one or opening
//! one to resume, the lock that makes its process its only writer, the resume checks, and the
//! atomic writes of its small files (config.toml, summary.json).
//!
//! The lock is an advisory `flock` on `RUN/.lock`, held for the life of the process (the kernel
//! drops it when the process ends, even on `kill -9`); the file holds the owner's PID so that a
//! second `wndqn train --resume RUN` can say who has it. Once the lock is held, leftovers of an
//! earlier process (temporary checkpoint folders of a run that died mid-write) are removed.

use crate::util::say;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::run::checkpoint::State;

const LOCK: &str = ".lock";

/// A run folder this process owns (locked until dropped).
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
    _lock: File,
}

/// A checkpoint to continue from.
pub struct Resume {
    /// The checkpoint folder.
    pub ckpt: PathBuf,
    /// Its counters.
    pub state: State,
}

impl RunDir {
    /// A new, unique run folder under `runs`, locked.
    pub fn create(runs: &Path, env: &str, variant: &str, seed: u64) -> Result<RunDir> {
        std::fs::create_dir_all(runs).with_context(|| format!("cannot create {}", runs.display()))?;
        let t = crate::util::unix_now() as u64;
        for k in 0..1000 {
            let name = if k == 0 {
                format!("{env}__{variant}__s{seed}__{t}")
            } else {
                format!("{env}__{variant}__s{seed}__{t}_{k}")
            };
            let p = runs.join(name);
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(RunDir { _lock: lock(&p)?, path: p }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
            }
        }
        bail!("cannot find a free run folder name in {}", runs.display())
    }

    /// Exactly the folder `path`, locked, for a new run: made if missing; a run that was
    /// started there but never wrote a checkpoint (killed at once) is cleared away first. One
    /// with a checkpoint is refused (it is resumed instead).
    pub fn create_at(path: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        let lock = lock(path)?;
        if !crate::run::checkpoint::list(path).is_empty() {
            bail!("{} already holds a run with checkpoints: continue it with --resume", path.display());
        }
        for e in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?.flatten() {
            let name = e.file_name();
            if name != LOCK {
                let p = e.path();
                let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                r.with_context(|| format!("cannot clear {} for a new run", p.display()))?;
            }
        }
        Ok(RunDir { path: path.to_path_buf(), _lock: lock })
    }

    /// An existing run folder, locked, with leftovers of dead processes removed.
    pub fn open(path: &Path) -> Result<RunDir> {
        ensure_run_folder(path)?;
        let lock = lock(path)?;
        crate::run::checkpoint::remove_temporaries(path);
        Ok(RunDir { path: path.to_path_buf(), _lock: lock })
    }

    /// Write `name` in the folder atomically (temporary file, fsync, rename).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.path.join(name), bytes)
    }

    /// Remove `name` from the folder if it is there.
    pub fn remove(&self, name: &str) -> Result<()> {
        let p = self.path.join(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", p.display()))
            }
            _ => Ok(()),
        }
    }
}

/// An error unless `path` is a folder written by `wndqn train` (config.toml and an event file).
pub fn ensure_run_folder(path: &Path) -> Result<()> {
    if !path.join("config.toml").is_file() || crate::tensorboard::reader::files(path).is_empty() {
        bail!(
            "{} is not a wndqn run folder (it needs config.toml and an event file written by `wndqn train`)",
            path.display()
        );
    }
    Ok(())
}

/// The PID of the process training `run` right now (holding its lock), if any. Read from
/// /proc/locks, so asking never takes the lock (which would make that process's own start fail).
pub fn holder(run: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = run.join(LOCK);
    let meta = std::fs::metadata(&path).ok()?;
    let (ino, dev) = (meta.ino(), meta.dev());
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        // `1: FLOCK  ADVISORY  WRITE 4242 00:2e:1234 0 EOF`
        let f: Vec<&str> = l.split_whitespace().collect();
        let (kind, pid, id) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let mut parts = id.split(':');
        let maj = u32::from_str_radix(parts.next()?, 16).ok()?;
        let min = u32::from_str_radix(parts.next()?, 16).ok()?;
        let i: u64 = parts.next()?.parse().ok()?;
        (*kind == "FLOCK" && maj == major && min == minor && i == ino).then(|| pid.parse().ok()).flatten()
    })
}

/// Write `path` atomically: a reader sees the old file or the whole new one, never a prefix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}

/// Remove what a process killed while writing into `dir` left there: `.NAME.tmp-PID` files of
/// [`write_atomic`] and `.NAME.archiving-PID` folders of older archives, whose process `PID` is
/// gone. A live writer's are left alone.
pub fn remove_dead_temporaries(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = [".tmp-", ".archiving-"]
            .iter()
            .find_map(|m| name.rsplit_once(m).map(|(_, p)| p.to_string()))
            .filter(|_| name.starts_with('.'))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
    }
}

/// Open `path` as `opts` say, refusing a symbolic link in its place (`O_NOFOLLOW`): a link
/// planted in a run or sweep folder must not make wndqn write a file elsewhere.
pub fn open_no_follow(opts: &mut std::fs::OpenOptions, path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match opts.custom_flags(libc::O_NOFOLLOW).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{} is a symbolic link: wndqn does not follow links for the files it writes in run and sweep folders; remove it (rm {}) and run again",
            path.display(),
            crate::util::shell_quote(&path.display().to_string())
        ),
        r => r.with_context(|| format!("cannot open {}", path.display())),
    }
}

/// Take the advisory lock of folder `dir` (`dir/.lock`, holding this process's PID and command)
/// for as long as the returned file lives; an error naming the holder when another process has
/// it. Run folders and sweep folders alike.
pub fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut f = open_no_follow(File::options().read(true).write(true).create(true).truncate(false), &path)?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut owner = String::new();
            let _ = f.read_to_string(&mut owner);
            // The PID the holder wrote, or, for a holder that wrote none (not wndqn), the kernel's.
            let pid = owner.lines().next().and_then(|l| l.trim().parse::<u32>().ok()).or_else(|| holder(dir));
            let pid = pid.map_or("?".to_string(), |p| p.to_string());
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim().to_string())
                .unwrap_or_default();
            let who = if cmd.contains("wndqn") { "another wndqn process" } else { "another process" };
            let cmd: String = cmd.chars().take(200).collect();
            bail!(
                "{} is in use by {who} (pid {pid}{}): one process writes a folder at a time. Wait for it to finish or stop it (kill -INT {pid}).",
                dir.display(),
                if cmd.is_empty() { String::new() } else { format!(", `{cmd}`") }
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", path.display()));
    }
    // `args_os`: a path argument need not be UTF-8 (`std::env::args` would panic on it).
    let cmd: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}\n{}", std::process::id(), cmd.join(" ")).with_context(|| format!("writing {}", path.display()))?;
    Ok(f)
}

/// Keys that may change when a run is resumed: budgets, logging and thread counts. Anything
/// else (environment, network, optimizer, replay, exploration) would make it another run.
pub const SAFE_ON_RESUME: &[&str] = &[
    "run.total_env_steps",
    "run.stop_at_return",
    "learner.threads",
    "learner.prefetch",
    "learner.exclusive_cpu",
    "learner.cuda_graph",
    "learner.precision",
    "log.",
];

/// Keys whose values differ between two configs.
pub fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    crate::config::flatten("", &toml::Value::try_from(old)?, &mut a);
    crate::config::flatten("", &toml::Value::try_from(new)?, &mut b);
    let text = |v: Vec<(String, toml::Value)>| -> std::collections::BTreeMap<String, String> {
        v.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    };
    let (a, b) = (text(a), text(b));
    let keys: std::collections::BTreeSet<_> =
        a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    Ok(keys.into_iter().collect())
}

/// Keys that differ between two configs and that a resume may not change.
pub fn fixed_keys(old: &Config, new: &Config) -> Result<Vec<String>> {
    Ok(changed_keys(old, new)?
        .into_iter()
        .filter(|k| !SAFE_ON_RESUME.iter().any(|s| k == s || (s.ends_with('.') && k.starts_with(s))))
        .collect())
}

/// `wanted` (the run's config.toml with the command line's overrides) may differ from the
/// config the checkpoint was trained with only in [`SAFE_ON_RESUME`] keys. Returns that config.
pub fn check_keys(run: &Path, ckpt: &Path, wanted: &Config) -> Result<Config> {
    let trained = crate::config::load(&ckpt.join("config.toml"), &[])
        .with_context(|| format!("the config of checkpoint {}", ckpt.display()))?;
    let fixed = fixed_keys(&trained, wanted)?;
    if !fixed.is_empty() {
        bail!(
            "{} does not match its checkpoint: {} differ from the config the checkpoint was trained with ({}); these keys are fixed for a run (only {} may change). Start a new run instead, or restore the run's config.toml.",
            run.display(),
            fixed.join(", "),
            ckpt.join("config.toml").display(),
            SAFE_ON_RESUME.join(", ").replace("log.", "log.*")
        );
    }
    Ok(trained)
}

/// The budget of a resumed run must leave something to do. A run continued with the budget it
/// was trained for can always go on (a stop near its end must not strand it): when fewer env
/// steps are left than the refill of an unsaved replay memory takes, they are played with the
/// checkpoint's policy and no further update. A budget changed on resume must leave room to
/// learn again.
pub fn check_budget(run: &Path, state: &State, wanted: &Config, trained: &Config) -> Result<()> {
    let total = wanted.run.total_env_steps;
    if state.env_steps >= total {
        bail!(
            "{} already has {} env steps, at or past run.total_env_steps = {total}: nothing to train. Raise the budget, e.g. --set run.total_env_steps={}",
            run.display(),
            state.env_steps,
            state.env_steps * 2
        );
    }
    let refill = wanted.replay.warmup_steps;
    let short = !state.has_replay && state.env_steps + refill > total;
    if short && total == trained.run.total_env_steps {
        say!(
            "note: {} env steps are left, fewer than the {refill} (replay.warmup_steps) that refill the replay memory (not saved with the checkpoint): they are played with the checkpoint's policy, without further updates",
            total - state.env_steps
        );
    } else if short {
        bail!(
            "{} would stop before learning again: its checkpoint has no replay memory, so {refill} env steps (replay.warmup_steps) refill it first, but run.total_env_steps = {total} leaves only {}. Raise the budget to more than {} (--set run.total_env_steps=N), or save the replay memory (`--save-replay`) next time.",
            run.display(),
            total - state.env_steps,
            state.env_steps + refill
        );
    }
    Ok(())
}

/// Read the checkpoint to resume `run` from and check `wanted` against it. The flag: the run
/// reached its budget but its summary does not say it is done (missing: killed after its last
/// checkpoint), so only the summary is left to write.
pub fn resume_point(run: &Path, wanted: &Config) -> Result<(Resume, bool)> {
    let (ckpt, state) = crate::run::checkpoint::find(run, None, &mut |w| say!("{w}"))?;
    let trained = check_keys(run, &ckpt, wanted)?;
    // Finished: the checkpoint is at the budget it was trained for (and at the one asked for).
    let at_budget = state.env_steps >= trained.run.total_env_steps && state.env_steps >= wanted.run.total_env_steps;
    let finish = at_budget && !crate::run::summary::read(run).is_ok_and(|s| s.complete);
    if !finish {
        check_budget(run, &state, wanted, &trained)?;
    }
    Ok((Resume { ckpt, state }, finish))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_in_place_of_the_lock_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let run = d.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&victim, run.join(LOCK)).unwrap();
        let e = format!("{:#}", lock(&run).unwrap_err());
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_second_lock_names_the_owner_and_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let first = lock(d.path()).unwrap();
        let e = format!("{:#}", lock(d.path()).unwrap_err());
        assert!(
            e.contains("in use by another wndqn process") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        assert_eq!(holder(d.path()), Some(std::process::id()), "/proc/locks names the holder");
        drop(first);
        assert_eq!(holder(d.path()), None);
        lock(d.path()).expect("free again once the owner is gone");
    }

    #[test]
    fn atomic_writes_leave_no_temporary_and_replace_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("summary.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let e = format!("{:#}", write_atomic(&d.path().join("missing/x.json"), b"x").unwrap_err());
        assert!(e.contains("missing/x.json"), "{e}");
    }

    fn state(steps: u64, has_replay: bool) -> State {
        State {
            env_steps: steps,
            updates: 10,
            episodes: 1,
            recent_returns: vec![],
            epsilon: 1.0,
            seed: 1,
            generation: 0,
            wall_secs: 1.0,
            has_replay,
        }
    }

    #[test]
    fn resume_refuses_changed_keys_and_budgets_that_leave_nothing_to_learn() {
        let d = tempfile::tempdir().unwrap();
        let ckpt = d.path().join("ckpt");
        std::fs::create_dir(&ckpt).unwrap();
        let mut trained = Config::default();
        trained.replay.warmup_steps = 1000;
        trained.run.total_env_steps = 10_000;
        std::fs::write(ckpt.join("config.toml"), trained.to_toml()).unwrap();
        let check = |st: State, cfg: &Config| {
            check_keys(d.path(), &ckpt, cfg).and_then(|t| check_budget(d.path(), &st, cfg, &t))
        };
        check(state(5000, false), &trained).unwrap();
        let mut edited = trained.clone();
        edited.agent.lr = 1e-3;
        let e = format!("{:#}", check(state(5000, false), &edited).unwrap_err());
        assert!(e.contains("agent.lr") && e.contains("fixed for a run"), "{e}");
        let mut longer = trained.clone();
        longer.run.total_env_steps = 20_000;
        check(state(5000, false), &longer).unwrap();
        // Stopped near its end: the run's own budget can always be finished...
        check(state(9500, false), &trained).expect("the last steps are played without updates");
        // ...but a budget raised on resume must leave room to learn again.
        let mut raised = trained.clone();
        raised.run.total_env_steps = 10_200;
        let e = format!("{:#}", check(state(9500, false), &raised).unwrap_err());
        assert!(e.contains("replay.warmup_steps") && e.contains("leaves only 700"), "{e}");
        check(state(9500, true), &raised).expect("with its replay memory it can go on");
        let e = format!("{:#}", check(state(10_000, true), &trained).unwrap_err());
        assert!(e.contains("nothing to train"), "{e}");
    }
}
