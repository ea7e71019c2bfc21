//! Stopping and finishing, as sweeps on a cluster rely on them: one stop request (however many
//! copies of its signal arrive) is one clean stop, a stop at any moment leaves a checkpoint that
//! `--resume` continues from with one continuous curve, output that cannot be written never
//! stops a run, a run that lost its summary can be finished, and a run whose folder vanished
//! stops with an error naming it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

/// `timeout --preserve-status -s SIG SECS wndqn ARGS` (GNU timeout signals the child, then its
/// whole process group again); the status is wndqn's own.
fn timeout(sig: &str, secs: f64, args: &[String]) -> std::process::Output {
    Command::new("timeout")
        .args(["--preserve-status", "-s", sig, &format!("{secs:.2}"), env!("CARGO_BIN_EXE_wndqn")])
        .args(args)
        .current_dir(root())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("timeout runs")
}

fn no_panic(t: &str) {
    for bad in ["panicked", "internal error", "backtrace", "exiting now"] {
        assert!(!t.contains(bad), "`{bad}` in: {t}");
    }
}

fn run_dirs(runs: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(runs).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-"))
                .map(|e| {
                    let st = std::fs::read_to_string(e.path().join("state.json")).unwrap();
                    serde_json::from_str::<serde_json::Value>(&st).unwrap()["env_steps"].as_u64().unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every scalar curve of each run (read by TensorBoard itself) has strictly increasing steps.
fn assert_continuous(dirs: &[PathBuf]) {
    let mut cmd = Command::new(root().join(".venv/bin/python"));
    cmd.arg(root().join("tests/oracles/read_events.py"));
    // Two arguments at least, so that the output is keyed by folder.
    cmd.args(dirs).arg(&dirs[0]);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for d in dirs {
        let ev = &all[d.to_str().unwrap()];
        let scalars = ev["scalars"].as_object().unwrap();
        assert!(scalars.contains_key("charts/episodic_return"), "{}: no returns", d.display());
        for (tag, points) in scalars {
            let steps: Vec<i64> = points.as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
            assert!(
                steps.windows(2).all(|w| w[0] < w[1]),
                "{} {tag}: steps not strictly increasing: {steps:?}",
                d.display()
            );
        }
    }
}

#[test]
fn one_stop_request_from_timeout_is_one_clean_stop() {
    // `timeout` sends its signal to wndqn and then to the whole group: two copies within
    // microseconds. Each run must stop cleanly: checkpoint, summary, no "exiting now".
    let runs = tempfile::tempdir().unwrap();
    for (i, sig) in ["TERM", "INT", "TERM", "HUP"].into_iter().enumerate() {
        let dir = runs.path().join(format!("r{i}"));
        let args = train_args("configs/cartpole.toml", &dir, &["run.total_env_steps=1000000"]);
        let o = timeout(sig, 2.5, &args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(0), "SIG{sig}: {t}");
        no_panic(&t);
        assert_eq!(t.matches("interrupt: stopping cleanly").count(), 1, "{t}");
        let run = only_run_dir(&dir);
        assert!(!checkpoint_steps(&run).is_empty(), "SIG{sig}: no checkpoint");
        let s = summary(&run);
        assert_eq!((s["interrupted"].as_bool(), s["complete"].as_bool()), (Some(true), Some(false)), "{s}");
    }
}

#[test]
fn twenty_stops_at_random_moments_all_resume_to_one_continuous_curve() {
    // Stops land in the warm-up, the data-dependent init, learning and checkpoint writing (a
    // checkpoint every 100 updates); every run then resumes to its budget.
    let sets = [
        "run.total_env_steps=5000",
        "log.checkpoint_every=100",
        "log.scalars_every=100",
        "log.eval_every=2000",
        "log.eval_episodes=2",
    ];
    let runs = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let delays: Vec<f64> = (0..20).map(|_| rng.gen_range(0.6..3.5)).collect();
    let work = |k: usize| -> Option<PathBuf> {
        let dir = runs.path().join(format!("r{k}"));
        let o = timeout("TERM", delays[k], &train_args("configs/cartpole.toml", &dir, &sets));
        let t = text(&o);
        no_panic(&t);
        // A signal while the dynamic loader is still mapping libtorch (before any of wndqn's code
        // runs: tens of milliseconds warm, more on a cold disk) ends the process by that signal
        // (`timeout --preserve-status`: 128 + 15); it must have left nothing behind.
        if o.status.code() == Some(128 + libc::SIGTERM) {
            assert!(!dir.exists() || run_dirs(&dir).is_empty(), "run {k} killed by the signal left a folder: {t}");
            return None;
        }
        assert_eq!(o.status.code(), Some(0), "run {k} stopped after {:.2}s: {t}", delays[k]);
        // Stopped before it made its folder: nothing to resume (and nothing left behind).
        let run = run_dirs(&dir).pop()?;
        let s = summary(&run);
        assert!(
            !checkpoint_steps(&run).is_empty(),
            "run {k} stopped after {:.2}s without a checkpoint: {s}",
            delays[k]
        );
        if s["complete"] != true {
            let o = run_args(&resume_args(&run, &[]));
            assert!(o.status.success(), "run {k} (stopped at {} steps) does not resume: {}", s["env_steps"], text(&o));
        }
        let s = summary(&run);
        assert_eq!((s["env_steps"].as_u64(), s["complete"].as_bool()), (Some(5000), Some(true)), "run {k}: {s}");
        Some(run)
    };
    // Two at a time (one per core of the machines this runs on).
    let done: Vec<PathBuf> = std::thread::scope(|sc| {
        let a = sc.spawn(|| (0..20).step_by(2).filter_map(work).collect::<Vec<_>>());
        let b = sc.spawn(|| (1..20).step_by(2).filter_map(work).collect::<Vec<_>>());
        let mut v = a.join().unwrap();
        v.extend(b.join().unwrap());
        v
    });
    assert!(done.len() >= 18, "only {} of 20 runs started before their stop", done.len());
    assert_continuous(&done);
}

fn run_args(args: &[String]) -> std::process::Output {
    run(args)
}

#[test]
fn a_stop_in_the_warm_up_leaves_a_checkpoint_that_resumes() {
    let runs = tempfile::tempdir().unwrap();
    // Pong's preset warms up for 80k env steps: a stop after 3 s lands inside it.
    let args = train_args("configs/pong.toml", runs.path(), &["learner.exclusive_cpu=false"]);
    let o = timeout("INT", 4.0, &args);
    no_panic(&text(&o));
    let run = only_run_dir(runs.path());
    let first = checkpoint_steps(&run);
    assert_eq!(first.len(), 1, "one checkpoint of the warm-up");
    assert!(first[0] > 0, "it holds the env steps played");
    let st = std::fs::read_to_string(
        std::fs::read_dir(run.join("checkpoints")).unwrap().flatten().next().unwrap().path().join("state.json"),
    )
    .unwrap();
    assert!(st.contains("\"updates\": 0"), "{st}");
    // The resumed segment goes on from there (its memory refills) and is stopped again.
    let o = timeout("INT", 4.0, &resume_args(&run, &["learner.exclusive_cpu=false"]));
    let t = text(&o);
    no_panic(&t);
    assert!(t.contains("resuming") && t.contains(&format!("{} env steps", first[0])), "{t}");
    let later = checkpoint_steps(&run).into_iter().max().unwrap();
    assert!(later > first[0], "the second segment added steps: {later} vs {}", first[0]);
}

#[test]
fn a_closed_output_pipe_never_stops_a_run() {
    let runs = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["train", "--config", "configs/cartpole.toml", "--set", "run.total_env_steps=4000", "--runs-dir"])
        .arg(runs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `wndqn train ... 2>&1 | true`: the reader is gone before anything is written.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let s = summary(&only_run_dir(runs.path()));
    assert_eq!((s["env_steps"].as_u64(), s["complete"].as_bool()), (Some(4000), Some(true)), "{s}");
}

#[test]
fn a_finished_run_without_its_summary_is_finished_by_resume() {
    let runs = tempfile::tempdir().unwrap();
    let run = cartpole_run(runs.path(), &["--set", "run.total_env_steps=3000"]);
    let before = summary(&run);
    // Killed between the final checkpoint and the summary (a closed pipe did this before).
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let o = run_args(&resume_args(&run, &[]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("without a summary"), "{}", text(&o));
    let s = summary(&run);
    assert_eq!((s["env_steps"].as_u64(), s["complete"].as_bool()), (Some(3000), Some(true)), "{s}");
    assert_eq!(s["episodes"], before["episodes"]);
    assert_eq!(s["updates"], before["updates"]);
    // And then it is done: compare takes it, resume has nothing to do.
    let o = run_args(&strs(&["compare", run.to_str().unwrap(), "--out", runs.path().join("cmp").to_str().unwrap()]));
    assert!(o.status.success(), "{}", text(&o));
    let o = run_args(&resume_args(&run, &[]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("nothing to train"), "{}", text(&o));
}

#[test]
fn deleting_the_run_folder_stops_the_run_with_an_error_naming_it() {
    let runs = tempfile::tempdir().unwrap();
    let mut child = spawn(&train_args("configs/cartpole.toml", runs.path(), &["run.total_env_steps=100000000"]));
    let t0 = Instant::now();
    let run = loop {
        if let Some(r) = run_dirs(runs.path())
            .pop()
            .filter(|r| !checkpoint_steps(r).is_empty() || t0.elapsed() > Duration::from_secs(3))
        {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the run never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::fs::remove_dir_all(&run).unwrap();
    let t1 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t1.elapsed() < Duration::from_secs(30), "still running 30 s after its folder was deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(run.to_str().unwrap()) && (t.contains("disappeared") || t.contains("is gone")), "{t}");
    assert!(!t.contains("finished"), "{t}");
    assert!(!run.exists(), "the folder was created again");
}

#[test]
fn a_stop_during_libtorchs_start_up_is_a_clean_stop() {
    // libtorch's static initializers take about 0.4 s before `main`: a signal then is recorded
    // and becomes the run's first stop request (exit 0, and a checkpoint if the folder exists).
    // Only a signal while the loader still maps the libraries ends the process by it.
    let runs = tempfile::tempdir().unwrap();
    let mut clean = 0;
    for (k, secs) in [0.15, 0.2, 0.25, 0.3, 0.35, 0.4].into_iter().enumerate() {
        let dir = runs.path().join(format!("r{k}"));
        let o = timeout("TERM", secs, &train_args("configs/cartpole.toml", &dir, &["run.total_env_steps=100000"]));
        let t = text(&o);
        no_panic(&t);
        match o.status.code() {
            Some(0) => {
                clean += 1;
                assert_eq!(t.matches("interrupt: stopping cleanly").count(), 1, "{t}");
                if let Some(run) = if dir.exists() { run_dirs(&dir).pop() } else { None } {
                    assert!(!checkpoint_steps(&run).is_empty(), "stopped at {secs}s without a checkpoint: {t}");
                    assert_eq!(summary(&run)["interrupted"], true);
                }
            }
            Some(c) if c == 128 + libc::SIGTERM => {
                assert!(!dir.exists() || run_dirs(&dir).is_empty(), "killed at {secs}s, left a folder: {t}")
            }
            c => panic!("stopped at {secs}s: exit {c:?}: {t}"),
        }
    }
    assert!(clean >= 1, "no stop in the first 0.4 s was a clean one");
}

#[test]
fn a_hang_up_ignored_at_start_stays_ignored() {
    // `nohup wndqn train ...`: closing the terminal must not stop the run; a TERM still does.
    use std::os::unix::process::CommandExt;
    let runs = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.args(["train", "--config", "configs/cartpole.toml", "--set", "run.total_env_steps=1000000", "--runs-dir"])
        .arg(runs.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only signal(2) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Once its folder exists it is past its set-up: hang it up, twice, a second apart.
    while run_dirs(runs.path()).is_empty() {
        assert!(Instant::now() < deadline, "no run folder");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..2 {
        // SAFETY: kill(2) of our child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(1200));
    }
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped a run started with it ignored");
    // SAFETY: kill(2) of our child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let t = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert_eq!(summary(&only_run_dir(runs.path()))["interrupted"], true);
}
