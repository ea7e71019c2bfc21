//! Helpers shared by the integration suites: the real binary, run folders, TensorBoard's reader.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wndqn"));
    c.current_dir(root());
    c.env_remove("RUST_BACKTRACE");
    c
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    bin().args(args).output().expect("wndqn runs")
}

/// Write the sweep spec `dir/name` on the preset `configs/{base}`: its `[sweep]` table starts
/// with that base, `rest` follows (the grid's keys, then any other table).
pub fn sweep_spec(dir: &Path, name: &str, base: &str, rest: &str) -> PathBuf {
    let p = dir.join(name);
    let base = root().join("configs").join(base);
    std::fs::write(&p, format!("[sweep]\nbase = {:?}\n{rest}", base.display().to_string())).unwrap();
    p
}

/// Owned copies of `args`.
pub fn strs(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `train --config CONFIG --quiet --runs-dir RUNS --set S ...`.
pub fn train_args(config: &str, runs: &Path, sets: &[&str]) -> Vec<String> {
    let mut v = strs(&["train", "--config", config, "--quiet", "--runs-dir"]);
    v.push(runs.display().to_string());
    for s in sets {
        v.extend(strs(&["--set", s]));
    }
    v
}

/// `train --resume RUN --quiet --set S ...`.
pub fn resume_args(run: &Path, sets: &[&str]) -> Vec<String> {
    let mut v = strs(&["train", "--resume"]);
    v.push(run.display().to_string());
    v.push("--quiet".into());
    for s in sets {
        v.extend(strs(&["--set", s]));
    }
    v
}

/// Start `wndqn ARGS` with its output captured.
pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Child {
    use std::process::Stdio;
    bin().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn only_run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(runs).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "expected one run folder in {}: {dirs:?}", runs.display());
    dirs[0].clone()
}

pub fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

pub fn read_events(run_dir: &Path) -> serde_json::Value {
    let o = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/oracles/read_events.py"))
        .arg(run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn cartpole_run(runs: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["train", "--config", "configs/cartpole.toml", "--quiet", "--runs-dir", runs.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    only_run_dir(runs)
}

/// Wait (however loaded the machine is) until the run under `runs` has written `n` checkpoints.
pub fn wait_for_checkpoints(runs: &Path, n: usize) {
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let written = std::fs::read_dir(runs).unwrap().flatten().any(|run| {
            std::fs::read_dir(run.path().join("checkpoints"))
                .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-")).count() >= n)
                .unwrap_or(false)
        });
        assert!(t0.elapsed().as_secs() < 120, "no checkpoints after 2 minutes");
        if written {
            return;
        }
    }
}

/// The run's event file (the newest, when a resume added more).
pub fn events_file(run: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    v.sort();
    v.pop().expect("an event file")
}
