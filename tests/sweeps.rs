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

/// The archive of a finished sweep: the plan and one record a run (`runs.jsonl`), every run
/// done there, the tag asked for only, the same report (scores and aggregates to the bit),
/// nothing to do for `sweep run` on it; archiving again adds nothing; a folder holding something
/// else is refused.
fn archive_reads_as_the_sweep(d: &Path, spec: &Path, dir: &Path, report: &serde_json::Value) {
    let arch = d.join("archive");
    let archive = |to: &Path| {
        run(&["sweep", "archive", dir.to_str().unwrap(), "--out", to.to_str().unwrap(), "--tag", "losses/td_loss"])
    };
    let o = archive(&arch);
    assert!(o.status.success() && text(&o).contains("4 added now"), "{}", text(&o));
    assert_eq!(states(&status(&arch)), vec!["done"; 4]);
    let mut names: Vec<String> =
        std::fs::read_dir(&arch).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["runs.jsonl", "sweep.toml"], "an archive is its plan and its records");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(arch.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    for r in &records {
        let tags: Vec<&String> = r["tags"].as_object().unwrap().keys().collect();
        assert_eq!(tags, ["losses/td_loss"], "{r}");
        let name = r["name"].as_str().unwrap();
        let full = read_events(&dir.join("runs").join(name));
        let returns = full["scalars"]["charts/episodic_return"].as_array().unwrap().len() as u64;
        let games: u64 = r["games"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).sum();
        assert_eq!(games, returns, "{name}: every training game is in a bin");
    }
    let o = run(&["sweep", "report", arch.to_str().unwrap(), "--reps", "500", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["aggregates"], report["aggregates"], "the archive's report is the sweep's");
    let (a, b) = (dir.join("report/scores.csv"), arch.join("report/scores.csv"));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "scores.csv from the archive");
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

/// A grid with a tuning and a test stage, end to end: the tuning runs, the choice recorded in
/// the plan, the test runs at the chosen points; each run's HPARAMS session with its grid value
/// and `score/final` (TensorBoard's reader), the sweep folder's experiment naming the axis; a
/// report comparing the test stage only, with the sensitivity files.
#[test]
fn a_grid_sweep_tunes_then_tests_at_the_chosen_points() {
    let d = tempfile::tempdir().unwrap();
    let grid = "games = [\"CartPole-v1\"]\nvariants = [\"plain\", \"layer_norm\"]\ntune_seeds = [1]\ntest_seeds = [2]\nsets = [\"run.total_env_steps=3000\", \"learner.replay_ratio=0.25\", \"log.eval_every=3000\", \"log.eval_episodes=1\"]\n\n[grid]\n\"agent.lr\" = [1e-4, 1e-3]\n\n[normalize]\n\"CartPole-v1\" = [22.0, 500.0]\n";
    let spec = sweep_spec(d.path(), "lr.toml", "cartpole.toml", grid);
    let dir = d.path().join("sweep");
    let o = run(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "2", "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chosen for plain: agent.lr="), "{}", text(&o));
    let s = status(&dir);
    assert_eq!(states(&s), vec!["done"; 6], "4 tuning runs and 2 test runs: {s}");
    let plan: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("sweep.toml")).unwrap()).unwrap();
    let chosen = plan["chosen"].as_array().unwrap();
    assert_eq!(chosen.len(), 2);
    let names: Vec<&str> = s["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for c in chosen {
        let v = c["variant"].as_str().unwrap();
        let lr = c["point"][0].as_float().unwrap();
        let name = format!("CartPole__{v}__lr{}__s2", if lr == 1e-3 { "1e-3" } else { "1e-4" });
        assert!(names.contains(&name.as_str()), "{name} in {names:?}");
        let ev = read_events(&dir.join("runs").join(&name));
        assert_eq!(ev["hparams"]["hparams"]["agent.lr"].as_f64(), Some(lr), "{name}: {}", ev["hparams"]);
        assert_eq!(ev["hparams"]["hparams"]["agent.variant"].as_str(), Some(v));
        assert_eq!(ev["scalars"]["score/final"].as_array().map(|a| a.len()), Some(1), "{name}");
    }
    let o = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", "import sys\nfrom tensorboard.backend.event_processing.event_accumulator import EventAccumulator\nfrom tensorboard.plugins.hparams import plugin_data_pb2\nea = EventAccumulator(sys.argv[1]); ea.Reload()\nd = plugin_data_pb2.HParamsPluginData.FromString(ea.PluginTagToContent('hparams')['_hparams_/experiment'])\nprint(' '.join(h.name for h in d.experiment.hparam_infos), ' '.join(m.name.tag for m in d.experiment.metric_infos))"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "env.id agent.variant run.seed agent.lr score/final",
        "{}",
        text(&o)
    );
    let o = run(&["sweep", "report", dir.to_str().unwrap(), "--reps", "300", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["judged"].as_str(), r["runs"].as_u64()), (Some("test stage"), Some(2)), "{r}");
    for f in ["sensitivity.png", "sensitivity__CartPole.png", "sensitivity.csv", "tuning.csv"] {
        assert!(dir.join("report").join(f).is_file(), "{f}");
    }
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
    let count = std::cell::Cell::new(0);
    let variant = |from: &str, to: &str| {
        count.set(count.get() + 1);
        let p = d.path().join(format!("bad-{}.toml", count.get()));
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
        (variant("[normalize]", "[grid]\n\"agent.lr\" = []\n[normalize]"), "grid.\"agent.lr\" lists no value"),
        (variant("[normalize]", "[grid]\n\"agent.lrate\" = [1e-4]\n[normalize]"), "unknown field `lrate`"),
        (variant("[normalize]", "[grid]\n\"agent.lr\" = [1e-4, 1e-4]\n[normalize]\n"), "lists 0.0001 twice"),
        (variant("[normalize]", "[grid]\n\"agent.lr\" = [\"fast\"]\n[normalize]\n\n"), "invalid type: string \"fast\""),
        (variant("[normalize]", "[grid]\n\"run.seed\" = [1, 2]\n[normalize]\n\n\n"), "list its values in sweep.seeds"),
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
    assert!(text(&o).contains("no run with a score to report on") && text(&o).contains("queued"), "{}", text(&o));
    let plan_before = std::fs::read_to_string(dir.join("sweep.toml")).unwrap();
    let other = variant("run.total_env_steps=9000", "run.total_env_steps=9500");
    let (code, t) = plan_of(&other);
    assert_eq!(code, Some(2), "{t}");
    assert!(t.contains("holds another sweep") && t.contains("base.run.total_env_steps"), "{t}");
    assert_eq!(std::fs::read_to_string(dir.join("sweep.toml")).unwrap(), plan_before, "the earlier plan was touched");
}

/// `--dry-run --estimate` measures each variant on the first game and each other game with the
/// first variant (training for real, at the runs' final epsilon), and sums the runs still to do
/// from those rates: the time of one run at a time is the runs' budgets over the rates it
/// printed. Nothing is written.
#[test]
fn estimate_measures_variants_and_games() {
    let d = tempfile::tempdir().unwrap();
    let grid = "games = [\"MinAtar/Breakout-v0\", \"MinAtar/Seaquest-v0\"]\nvariants = [\"plain\", \"weight_norm\"]\nseeds = 2\nsets = [\"run.total_env_steps=300_000\", \"learner.replay_ratio=0.25\"]\n\n[normalize]\n\"MinAtar/Breakout-v0\" = [0.51, 8.55]\n\"MinAtar/Seaquest-v0\" = [0.10, 2.97]\n";
    let spec = sweep_spec(d.path(), "est.toml", "minatar.toml", grid);
    let dir = d.path().join("sw");
    let o = run(&[
        "sweep",
        "run",
        spec.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
        "--jobs",
        "1",
        "--dry-run",
        "--estimate",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    let rate = |what: &str| -> f64 {
        let line =
            t.lines().find(|l| l.trim_start().starts_with(what)).unwrap_or_else(|| panic!("no `{what}` line: {t}"));
        line.split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    let (p, w, s) = (
        rate("plain on MinAtar/Breakout-v0"),
        rate("weight_norm on MinAtar/Breakout-v0"),
        rate("plain on MinAtar/Seaquest-v0"),
    );
    assert!(!t.contains("weight_norm on MinAtar/Seaquest-v0"), "a game is measured with the first variant only: {t}");
    // Eight runs of 300k env steps, each at its variant's rate times its game's factor.
    let want: f64 = 2.0 * 300_000.0 * (1.0 / p + 1.0 / w + 1.0 / s + 1.0 / (w * s / p));
    let said = t.lines().find(|l| l.contains("of one run at a time")).unwrap();
    let minutes: f64 = said.split("test stage included): ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(
        (minutes - want / 60.0).abs() <= 0.5 + 0.02 * want / 60.0,
        "{minutes} minutes said, {} from the rates: {t}",
        want / 60.0
    );
    assert!(!dir.exists(), "the dry run wrote the sweep folder");
}
