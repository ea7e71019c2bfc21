//! Sweeps end to end: a local sweep killed with -9 mid-way and run again finishes every run
//! once with one continuous curve each; the same through a one-node Slurm cluster with a task
//! requeued mid-run (`scontrol requeue`); `sweep status` right at each stage; bad input refused
//! before anything starts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A spec of CartPole, plain and weight_norm, 2 seeds, in `dir`.
fn spec(dir: &Path, extra: &str) -> PathBuf {
    let grid = "games = [\"CartPole-v1\"]\nvariants = [\"plain\", \"weight_norm\"]\nseeds = 2\nsets = [\"run.total_env_steps=9000\", \"learner.replay_ratio=1\", \"log.checkpoint_every=300\", \"log.eval_every=3000\", \"log.eval_episodes=2\"]\n\n[normalize]\n\"CartPole-v1\" = [22.0, 500.0]\n";
    sweep_spec(dir, "tiny.toml", "cartpole.toml", &format!("{grid}{extra}"))
}

const RUNS: [&str; 4] =
    ["CartPole__plain__s1", "CartPole__weight_norm__s1", "CartPole__plain__s2", "CartPole__weight_norm__s2"];

fn status(dir: &Path) -> serde_json::Value {
    let o = run(&["sweep", "status", dir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn states(s: &serde_json::Value) -> Vec<String> {
    s["runs"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap().to_string()).collect()
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn checkpoints(run: &Path) -> usize {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("ckpt-")).count())
        .unwrap_or(0)
}

fn event_files(run: &Path) -> usize {
    std::fs::read_dir(run).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("events.")).count()
}

/// Every run done at its budget, with strictly increasing steps on every curve (TensorBoard's
/// reader); returns each run's number of event files (training segments).
fn all_done_and_continuous(dir: &Path) -> Vec<usize> {
    let s = status(dir);
    assert_eq!(states(&s), vec!["done"; 4], "{s}");
    RUNS.iter()
        .map(|name| {
            let run = dir.join("runs").join(name);
            let sm = summary(&run);
            assert_eq!((sm["env_steps"].as_u64(), sm["complete"].as_bool()), (Some(9000), Some(true)), "{name}: {sm}");
            let ev = read_events(&run);
            for (tag, points) in ev["scalars"].as_object().unwrap() {
                let steps: Vec<i64> = points.as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
                assert!(steps.windows(2).all(|w| w[0] < w[1]), "{name} {tag}: {steps:?}");
            }
            event_files(&run)
        })
        .collect()
}

#[test]
fn a_local_sweep_killed_mid_way_finishes_every_run_once() {
    let d = tempfile::tempdir().unwrap();
    let spec = spec(d.path(), "");
    let dir = d.path().join("sweep");
    let args =
        strs(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "2", "--quiet"]);
    let mut sweep = spawn(&args);
    // Two runs going, each with a checkpoint: then the sweep process dies at once.
    wait_until(Duration::from_secs(120), "two runs with checkpoints", || {
        RUNS[..2].iter().all(|n| checkpoints(&dir.join("runs").join(n)) > 0)
    });
    let s = status(&dir);
    assert_eq!(states(&s), ["running", "running", "queued", "queued"], "{s}");
    assert!(s["runs"][0]["pid"].as_u64().is_some(), "{s}");
    // SAFETY: kill(2) of the sweep process this test started.
    unsafe { libc::kill(sweep.id() as i32, libc::SIGKILL) };
    let _ = sweep.wait();
    // Its children are told by the kernel (SIGINT) and stop cleanly.
    wait_until(Duration::from_secs(60), "the runs stopping", || states(&status(&dir)).iter().all(|s| s != "running"));
    let s = status(&dir);
    assert_eq!(states(&s), ["interrupted", "interrupted", "queued", "queued"], "{s}");
    // Run again: the two are resumed, the two others started; every run finishes once.
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let segments = all_done_and_continuous(&dir);
    assert_eq!(segments, [2, 2, 1, 1], "the killed runs resumed (a second segment), the others ran once");
    // A third run has nothing to do.
    let o = run(&args);
    assert!(o.status.success() && text(&o).contains("4 done"), "{}", text(&o));
    // And the report reads them.
    let o = run(&["sweep", "report", dir.to_str().unwrap(), "--reps", "500", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["runs"], 4);
    for f in ["report.md", "scores.csv", "aggregates.csv", "aggregates.png", "profiles.png", "sample_efficiency.png"] {
        assert!(dir.join("report").join(f).is_file(), "{f}");
    }
    archive_reads_as_the_sweep(d.path(), &spec, &dir, &r);
}

/// The archive of a finished sweep: every run done there, no checkpoints, the returns and the
/// tag asked for only (TensorBoard's reader, against the sweep's own files), the same report,
/// nothing to do for `sweep run` on it; archiving again adds nothing; a folder holding
/// something else is refused.
fn archive_reads_as_the_sweep(d: &Path, spec: &Path, dir: &Path, report: &serde_json::Value) {
    let arch = d.join("archive");
    let archive = |to: &Path| {
        run(&["sweep", "archive", dir.to_str().unwrap(), "--out", to.to_str().unwrap(), "--tag", "losses/td_loss"])
    };
    let o = archive(&arch);
    assert!(o.status.success() && text(&o).contains("4 added now"), "{}", text(&o));
    assert_eq!(states(&status(&arch)), vec!["done"; 4]);
    for name in RUNS {
        let (run_dir, a) = (dir.join("runs").join(name), arch.join("runs").join(name));
        assert_eq!((checkpoints(&a), event_files(&a)), (0, 1), "{name}");
        let (full, slim) = (read_events(&run_dir), read_events(&a));
        let tags: Vec<&String> = slim["scalars"].as_object().unwrap().keys().collect();
        assert_eq!(
            tags,
            ["charts/episodic_return", "eval/episodic_return", "eval/episodic_return_std", "losses/td_loss"],
            "{name}"
        );
        for t in tags {
            assert_eq!(slim["scalars"][t], full["scalars"][t], "{name} {t}");
        }
        assert_eq!(slim["hparams"], full["hparams"], "{name}");
        assert!(slim["histograms"].as_object().unwrap().is_empty() && slim["text"].as_object().unwrap().is_empty());
    }
    let o = run(&["sweep", "report", arch.to_str().unwrap(), "--reps", "500", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["aggregates"], report["aggregates"], "the archive's report is the sweep's");
    let o = run(&["sweep", "run", spec.to_str().unwrap(), "--dir", arch.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success() && text(&o).contains("4 done"), "{}", text(&o));
    let o = archive(&arch);
    assert!(
        o.status.success() && text(&o).contains("0 added now") && text(&o).contains("4 there already"),
        "{}",
        text(&o)
    );
    let odir = d.join("elsewhere");
    std::fs::create_dir_all(&odir).unwrap();
    std::fs::write(odir.join("notes.txt"), "not a sweep").unwrap();
    let o = archive(&odir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a sweep folder"), "{}", text(&o));
}

/// The one-node cluster of scripts/slurm_local.sh, or why it cannot be had here.
fn cluster() -> Result<String, String> {
    let o = Command::new("bash")
        .arg(root().join("scripts/slurm_local.sh"))
        .arg("up")
        .output()
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&o.stdout);
    match out.lines().find_map(|l| l.strip_prefix("SLURM_CONF=")) {
        Some(conf) if o.status.success() => Ok(conf.to_string()),
        _ => Err(format!("scripts/slurm_local.sh up: {}", text(&o).trim())),
    }
}

fn slurm(conf: &str, cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).env("SLURM_CONF", conf).output().unwrap()
}

#[test]
fn a_slurm_sweep_with_a_requeued_task_finishes_with_continuous_curves() {
    let conf = match cluster() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED a_slurm_sweep_with_a_requeued_task_finishes_with_continuous_curves: {why}");
            return;
        }
    };
    let d = tempfile::tempdir().unwrap();
    let spec = spec(d.path(), "[slurm]\ncpus_per_task = 1\nmem = \"2G\"\nmax_parallel = 2\n");
    let dir = d.path().join("sweep");
    let w = |args: &[&str]| bin().args(args).env("SLURM_CONF", &conf).output().unwrap();
    let st = || -> serde_json::Value {
        let o = w(&["sweep", "status", dir.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let o = w(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--executor", "slurm"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("submitted Slurm job"), "{}", text(&o));
    let script = std::fs::read_to_string(dir.join("slurm/task.sh")).unwrap();
    assert!(script.contains("--signal=B:USR1@120") && script.contains("scontrol requeue"), "{script}");
    let first = states(&st());
    assert!(first.iter().all(|s| s == "queued" || s == "running"), "{first:?}");
    // A running task with a checkpoint is requeued from outside, as preemption would.
    let mut victim = (String::new(), String::new());
    wait_until(Duration::from_secs(180), "a running task with a checkpoint", || {
        let s = st();
        s["runs"].as_array().unwrap().iter().any(|r| {
            let ok = r["state"] == "running" && checkpoints(&dir.join("runs").join(r["name"].as_str().unwrap())) > 0;
            if ok {
                let task = r["slurm"].as_str().unwrap().split_whitespace().next().unwrap().to_string();
                victim = (r["name"].as_str().unwrap().to_string(), task);
            }
            ok
        })
    });
    let (name, task) = victim;
    let o = slurm(&conf, "scontrol", &["requeue", &task]);
    assert!(o.status.success(), "{}", text(&o));
    // It leaves the node (its run stops with a checkpoint) and pends until its begin time;
    // released at once here (on a cluster it waits about two minutes).
    wait_until(Duration::from_secs(90), "the requeued task pending", || {
        let s = st();
        let r = s["runs"].as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).unwrap().clone();
        r["state"] == "queued" && r["slurm"].as_str().unwrap_or("").contains("PENDING")
    });
    // Its folder says how far it got, whatever the queue says.
    let s = st();
    let r = s["runs"].as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).unwrap().clone();
    assert!(r["env_steps"].as_u64().unwrap_or(0) > 0, "a requeued run with a checkpoint shows its steps: {r}");
    let o = slurm(&conf, "scontrol", &["update", &format!("JobId={task}"), "StartTime=now"]);
    assert!(o.status.success(), "{}", text(&o));
    wait_until(Duration::from_secs(300), "every run done", || states(&st()).iter().all(|s| s == "done"));
    let segments = all_done_and_continuous(&dir);
    let i = RUNS.iter().position(|r| *r == name).unwrap();
    assert!(segments[i] >= 2, "{name} was requeued: two segments, got {segments:?}");
    let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap();
    assert!(log.contains("restart 1") && log.contains("resuming"), "{log}");
}

/// A CPU request no node can meet would pend forever: set in the spec it is refused; the default
/// (actors + 2) is lowered to the largest node. `sweep cancel` of pending tasks prints no
/// complaint of scancel's.
#[test]
fn cpu_requests_fit_the_cluster_and_cancel_is_quiet() {
    let conf = match cluster() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED cpu_requests_fit_the_cluster_and_cancel_is_quiet: {why}");
            return;
        }
    };
    let w = |args: &[&str]| bin().args(args).env("SLURM_CONF", &conf).output().unwrap();
    let d = tempfile::tempdir().unwrap();
    let too_many = spec(d.path(), "[slurm]\ncpus_per_task = 999\n");
    let dir = d.path().join("a");
    let o = w(&["sweep", "run", too_many.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--executor", "slurm"]);
    assert!(!o.status.success() && text(&o).contains("cpus_per_task = 999"), "{}", text(&o));
    let d2 = tempfile::tempdir().unwrap();
    let default = spec(d2.path(), "[slurm]\nmem = \"2G\"\nmax_parallel = 1\n");
    let dir = d2.path().join("b");
    let o = w(&["sweep", "run", default.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--executor", "slurm"]);
    assert!(o.status.success(), "{}", text(&o));
    let script = std::fs::read_to_string(dir.join("slurm/task.sh")).unwrap();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    assert!(cpus >= 3 || script.contains(&format!("--cpus-per-task={cpus}")), "{}\n{script}", text(&o));
    let o = w(&["sweep", "cancel", dir.to_str().unwrap()]);
    assert!(o.status.success() && !text(&o).contains("scancel:"), "{}", text(&o));
}

#[test]
fn bad_sweeps_are_refused_before_anything_starts() {
    let d = tempfile::tempdir().unwrap();
    let good = spec(d.path(), "");
    let text_of = |p: &Path| std::fs::read_to_string(p).unwrap();
    let variant = |from: &str, to: &str| {
        let p = d.path().join(format!("bad-{}.toml", to.len()));
        std::fs::write(&p, text_of(&good).replacen(from, to, 1)).unwrap();
        p
    };
    let dir = d.path().join("sweep");
    let cases: Vec<(PathBuf, &str)> = vec![
        (variant("\"CartPole-v1\"]", "\"CartPol-v1\"]"), "Did you mean: CartPole-v1"),
        (variant("\"plain\"", "\"plian\""), "unknown variant `plian`. Did you mean: plain"),
        (variant("seeds = 2", "seeds = []"), "the sweep has no runs"),
        (
            variant("variants = [\"plain\", \"weight_norm\"]", "variants = [\"plain\", \"plain\"]"),
            "lists `plain` twice",
        ),
        (variant("learner.replay_ratio=1", "learner.replay_rate=1"), "unknown field `replay_rate`"),
    ];
    for (spec, want) in cases {
        let o = run(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--quiet"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want) && !text(&o).contains("panicked"), "expected `{want}`: {}", text(&o));
        assert!(!dir.exists(), "a refused sweep wrote {}", dir.display());
    }
    let o = run(&["sweep", "run", good.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Slurm without sbatch.
    let empty = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["sweep", "run", good.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--executor", "slurm"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("sbatch") && text(&o).contains("--executor local") && text(&o).contains("--dry-run"),
        "{}",
        text(&o)
    );
    assert!(!dir.exists());
    // --dry-run writes nothing.
    let o = run(&["sweep", "run", good.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--dry-run"]);
    assert!(o.status.success() && text(&o).contains("4 runs") && !dir.exists(), "{}", text(&o));
    // A report on a folder with no finished run, and a folder holding another plan.
    let o = run(&["sweep", "run", good.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--dry-run"]);
    assert!(o.status.success());
    std::fs::create_dir_all(&dir).unwrap();
    let plan_of = |spec: &Path| {
        let o =
            run(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1", "--quiet"]);
        (o.status.code(), text(&o))
    };
    // Install the good plan without running long: a budget of... the real one, stopped at once.
    let mut child = spawn(&strs(&[
        "sweep",
        "run",
        good.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--jobs",
        "1",
        "--quiet",
    ]));
    wait_until(Duration::from_secs(60), "the plan installed", || dir.join("sweep.toml").is_file());
    // SAFETY: kill(2) of the sweep process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    wait_until(Duration::from_secs(60), "runs stopped", || states(&status(&dir)).iter().all(|s| s != "running"));
    let o = run(&["sweep", "report", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no finished run"), "{}", text(&o));
    let plan_before = std::fs::read_to_string(dir.join("sweep.toml")).unwrap();
    let other = variant("run.total_env_steps=9000", "run.total_env_steps=9500");
    let (code, t) = plan_of(&other);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("holds another sweep") && t.contains("base.run.total_env_steps"), "{t}");
    assert_eq!(std::fs::read_to_string(dir.join("sweep.toml")).unwrap(), plan_before, "the earlier plan was touched");
}
