//! Robustness of the real binary: a ROM that cannot run, zero actors, two writers on one run
//! folder, an edited config on resume, a resume budget that leaves nothing to learn, a full disk,
//! a double Ctrl-C: each is refused or survived with a clear message.

mod common;

use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::*;

/// Wait for `child` at most `limit`; kill it (and fail) past that.
fn wait_within(mut child: Child, limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quiet_failure(o: &Output) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for bad in ["panicked", "internal error", "backtrace", "RUST_BACKTRACE"] {
        assert!(!t.contains(bad), "`{bad}` in: {t}");
    }
}

#[test]
fn a_rom_that_cannot_run_is_an_error_within_seconds() {
    let roms = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..2048u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(roms.path().join("pong.bin"), bytes).unwrap();
    let rom_dir = roms.path().to_str().unwrap();
    for args in [
        vec!["--rom-dir", rom_dir, "bench", "env", "--game", "Pong", "--seconds", "1"],
        vec![
            "--rom-dir",
            rom_dir,
            "train",
            "--config",
            "configs/pong.toml",
            "--runs-dir",
            runs.path().to_str().unwrap(),
        ],
    ] {
        let (o, took) = wait_within(spawn(&args), Duration::from_secs(30));
        quiet_failure(&o);
        assert!(took < Duration::from_secs(15), "took {took:?}");
        let t = text(&o);
        assert!(t.contains("pong.bin") && t.contains("does not know this ROM"), "{t}");
    }
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0, "no run folder for a run that never started");
}

#[test]
fn zero_actors_is_a_named_error_not_a_panic() {
    let runs = tempfile::tempdir().unwrap();
    let sets = ["actors.num_actors=0"];
    let o = run(&train_args("configs/cartpole.toml", runs.path(), &sets));
    quiet_failure(&o);
    assert!(text(&o).contains("actors.num_actors = 0 must be 1..=256"), "{}", text(&o));
}

fn checkpointed_run(runs: &Path) -> std::path::PathBuf {
    cartpole_run(
        runs,
        &["--set", "run.total_env_steps=3000", "--set", "log.checkpoint_every=500", "--set", "log.eval_every=0"],
    )
}

#[test]
fn a_run_folder_has_one_writer() {
    let runs = tempfile::tempdir().unwrap();
    let dir = checkpointed_run(runs.path());
    let d = dir.to_str().unwrap();
    let first = spawn(&["train", "--resume", d, "--quiet", "--set", "run.total_env_steps=100000000"]);
    let pid = first.id();
    let events = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("events."))
            .collect()
    };
    // Wait until the first process holds the lock and has opened its own event file (named with its
    // pid), so that any event file appearing later can only come from the refused process.
    let t0 = Instant::now();
    while !std::fs::read_to_string(dir.join(".lock")).unwrap_or_default().starts_with(&format!("{pid}\n"))
        || !events().iter().any(|n| n.contains(&format!(".{pid}.")))
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "the first process never took the lock and opened its events");
        std::thread::sleep(Duration::from_millis(50));
    }
    let events_before = events().len();
    let o = run(&["train", "--resume", d, "--quiet", "--set", "run.total_env_steps=100000000"]);
    quiet_failure(&o);
    assert!(text(&o).contains(&format!("in use by another wndqn process (pid {pid}")), "{}", text(&o));
    assert_eq!(events_before, events().len(), "the refused process wrote an event file");
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let (o, _) = wait_within(first, Duration::from_secs(60));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn resume_refuses_an_edited_config_and_a_budget_with_nothing_to_learn() {
    let runs = tempfile::tempdir().unwrap();
    let dir = checkpointed_run(runs.path());
    let d = dir.to_str().unwrap();
    // An edit in RUN/config.toml is checked against the checkpoint's own config.
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.0005"), "{cfg}");
    std::fs::write(dir.join("config.toml"), cfg.replace("lr = 0.0005", "lr = 0.002")).unwrap();
    let o = run(&["train", "--resume", d, "--quiet", "--set", "run.total_env_steps=9000"]);
    quiet_failure(&o);
    assert!(text(&o).contains("agent.lr") && text(&o).contains("fixed for a run"), "{}", text(&o));
    std::fs::write(dir.join("config.toml"), &cfg).unwrap();
    // 3000 steps done, no replay memory saved: 1000 warm-up steps must come before learning.
    let t0 = Instant::now();
    let o = run(&["train", "--resume", d, "--quiet", "--set", "run.total_env_steps=3500"]);
    quiet_failure(&o);
    assert!(text(&o).contains("replay.warmup_steps") && text(&o).contains("leaves only 500"), "{}", text(&o));
    assert!(t0.elapsed() < Duration::from_secs(20));
    // A budget that leaves room works, and the curves go on.
    let o = run(&["train", "--resume", d, "--quiet", "--set", "run.total_env_steps=4500"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(summary(&dir)["env_steps"].as_u64(), Some(4500));
}

/// A tmpfs of `kib` KiB mounted on a fresh folder, unmounted on drop; `None` without the
/// privilege to mount (CI and developers run as root).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(kib: u64) -> Option<SmallDisk> {
        let d = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(d.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(d))
    }
    fn grow(&self, kib: u64) {
        let s = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_run_cleanly_naming_the_file() {
    let Some(disk) = SmallDisk::new(900) else {
        eprintln!("SKIPPED a_full_disk_stops_the_run_cleanly_naming_the_file: mounting a tmpfs needs root");
        return;
    };
    let runs = disk.0.path();
    let args = train_args(
        "configs/cartpole.toml",
        runs,
        &["run.total_env_steps=1000000", "log.checkpoint_every=100", "log.keep_checkpoints=3", "log.eval_every=0"],
    );
    let (o, _) = wait_within(spawn(&args), Duration::from_secs(120));
    quiet_failure(&o);
    let t = text(&o);
    let dir = only_run_dir(runs);
    assert!(
        t.contains("No space left on device") && t.contains(dir.to_str().unwrap()),
        "the error must name the file: {t}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary checkpoint folders left: {leftovers:?}");
    match std::fs::read_to_string(dir.join("summary.json")) {
        Ok(s) => assert!(serde_json::from_str::<serde_json::Value>(&s).is_ok(), "a partial summary.json: {s:?}"),
        Err(_) => {
            // Not written at all: compare must say so instead of printing NaN.
            let o = run(&["compare", dir.to_str().unwrap(), "--out", runs.join("cmp").to_str().unwrap()]);
            quiet_failure(&o);
            assert!(text(&o).contains("summary.json") && !text(&o).contains("NaN"), "{}", text(&o));
        }
    }
    // With room again, the run resumes from its newest complete checkpoint and finishes.
    disk.grow(64 * 1024);
    let steps = std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten().count();
    assert!(steps >= 1, "no complete checkpoint survived");
    let o = run(&resume_args(&dir, &["run.total_env_steps=1000000", "run.stop_at_return=1"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["compare", dir.to_str().unwrap(), "--out", runs.join("cmp2").to_str().unwrap()]);
    assert!(o.status.success() && !text(&o).contains("NaN"), "{}", text(&o));
}

/// `wndqn train` on `config` into `runs` with actor 0 stuck (`WNDQN_FAULT=stall-actor0`),
/// started once its run folder exists and `settle` has passed since.
fn stalled_run(config: &str, runs: &Path, sets: &[&str], settle: Duration) -> Child {
    let child = bin()
        .args(train_args(config, runs, sets))
        .env("WNDQN_FAULT", "stall-actor0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_dir(runs).unwrap().flatten().next().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(90), "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(settle);
    child
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs a stuck actor: --features fault-injection, as `make test` builds"
)]
fn a_second_ctrl_c_apart_in_time_exits_at_once_and_quietly() {
    let runs = tempfile::tempdir().unwrap();
    let sets = ["replay.warmup_steps=300", "replay.capacity=5000", "learner.exclusive_cpu=false"];
    // Actor 0 never answers, so the first request cannot end the run before the second comes;
    // actor 1 keeps acting inside libtorch while the signals arrive.
    let child = stalled_run("configs/pong.toml", runs.path(), &sets, Duration::from_secs(5));
    let pid = child.id() as i32;
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(pid, libc::SIGINT) };
    // A copy of the same request (a terminal signals the whole process group): no effect.
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(1500));
    let t1 = Instant::now();
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let (o, _) = wait_within(child, Duration::from_secs(30));
    let took = t1.elapsed();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(130), "{t}");
    assert!(took < Duration::from_secs(3), "took {took:?} after the second request");
    assert_eq!(t.matches("interrupt: stopping cleanly").count(), 1, "{t}");
    assert!(t.contains("interrupted twice: exiting now"), "{t}");
    for bad in ["panicked", "internal error", "backtrace", "Invalid"] {
        assert!(!t.contains(bad), "`{bad}` in: {t}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs a stuck actor: --features fault-injection, as `make test` builds"
)]
fn a_stop_request_ends_the_process_even_when_a_thread_does_not_answer() {
    let runs = tempfile::tempdir().unwrap();
    let child = stalled_run("configs/cartpole.toml", runs.path(), &["log.eval_every=0"], Duration::from_secs(1));
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (o, took) = wait_within(child, Duration::from_secs(60));
    let t = text(&o);
    assert!(took < Duration::from_secs(20), "took {took:?} to stop: {t}");
    quiet_failure(&o);
    assert!(t.contains("actor0") && t.contains("did not stop within 10s"), "{t}");
    let dir = only_run_dir(runs.path());
    let s = summary(&dir);
    assert_eq!(s["interrupted"], true, "the run folder keeps a valid summary: {s}");
}
