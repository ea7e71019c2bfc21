//! Input that cannot work gets an error naming the problem (exit 2, no panic, no abort, nothing
//! left behind), values that make nonsense are refused before anything runs, a run that
//! diverges stops saying when, damaged files are found out by their hashes and CRCs, and
//! `compare` never reads a damaged, unfinished, running or duplicated run as a good one.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Exit 2 with `want` in the output, and nothing that reads like a crash.
fn refused(o: &Output, want: &str) -> String {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "expected a clean refusal mentioning `{want}`:\n{t}");
    assert!(t.contains(want), "expected `{want}` in:\n{t}");
    for bad in ["panicked", "internal error", "backtrace", "memory allocation", "Aborted", "terminate called"] {
        assert!(!t.contains(bad), "`{bad}` in:\n{t}");
    }
    t
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.count() == 0).unwrap_or(true)
}

#[test]
fn inputs_that_used_to_panic_or_abort_are_errors() {
    let runs = tempfile::tempdir().unwrap();
    let cart = |extra: &[&str]| [train_args("configs/cartpole.toml", runs.path(), &[]), strs(extra)].concat();
    let pong = |sets: &[&str]| train_args("configs/pong.toml", runs.path(), sets);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (cart(&["--seed", "18446744073709551615"]), "run.seed = 18446744073709551615 must be at most"),
        (strs(&["bench", "env", "--seconds", "inf"]), "must be more than 0 and at most 86400"),
        (strs(&["bench", "env", "--seconds", "nan"]), "must be more than 0 and at most 86400"),
        (strs(&["bench", "env", "--seconds", "1e300"]), "must be more than 0 and at most 86400"),
        (strs(&["bench", "learner", "--seconds=-1"]), "must be more than 0"),
        (cart(&["--set", "agent.hidden=100000"]), "agent.hidden = 100000 must be 1..=16384"),
        (pong(&["replay.capacity=10_000_000"]), "The largest replay.capacity that fits is about"),
        (strs(&["bench", "replay", "--fill", "100000000000"]), "--fill 100000000000 needs about"),
        (strs(&["bench", "learner", "--batch", "100000"]), "--batch 100000 needs about"),
        (strs(&["bench", "learner", "--batch", "0"]), "--batch 0 must be at least 1"),
    ];
    for (args, want) in cases {
        let t0 = std::time::Instant::now();
        refused(&run(&args), want);
        assert!(t0.elapsed().as_secs() < 20, "{args:?} took {:?}", t0.elapsed());
    }
    // The message gives the estimate, and the largest capacity it names does fit.
    let avail = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 = avail
        .lines()
        .find(|l| l.starts_with("MemAvailable"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let too_big = (kib * 1024.0 / 7062.0 * 1.2) as u64;
    let t = refused(&run(&pong(&[&format!("replay.capacity={too_big}")])), "replay memory");
    assert!(t.contains(" GB") && t.contains("7062 bytes"), "{t}");
    assert!(empty(runs.path()), "a refused run left files behind");
}

#[test]
fn paths_that_are_not_utf8_work_or_fail_clearly() {
    let base = tempfile::tempdir().unwrap();
    let weird = base.path().join(std::ffi::OsStr::from_bytes(b"runs-\xff\xfe"));
    let o = bin()
        .args([
            "train",
            "--config",
            "configs/cartpole.toml",
            "--quiet",
            "--set",
            "run.total_env_steps=1500",
            "--runs-dir",
        ])
        .arg(&weird)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&weird).unwrap().count(), 1);
    let cfg = base.path().join(std::ffi::OsStr::from_bytes(b"c\xff.toml"));
    std::fs::copy(root().join("configs/cartpole.toml"), &cfg).unwrap();
    let o = bin()
        .args(["train", "--quiet", "--set", "run.total_env_steps=1500", "--runs-dir"])
        .arg(base.path().join("r2"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = bin()
        .args(["train", "--config"])
        .arg(base.path().join(std::ffi::OsStr::from_bytes(b"no\xff.toml")))
        .output()
        .unwrap();
    refused(&o, "cannot read config");
}

#[test]
fn values_that_make_nonsense_are_config_errors_naming_the_key() {
    let runs = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("agent.init_scale=inf", "agent.init_scale must be a finite number"),
        ("agent.optimizer.beta1=5.0", "agent.optimizer.beta1 = 5 must be in [0, 1)"),
        ("agent.optimizer.eps=inf", "agent.optimizer.eps must be a finite number"),
        ("agent.optimizer.momentum=0.5", "unknown field `momentum`"),
        ("agent.rms_momentum=0.5", "agent.rms_momentum is the optimizer's: --set agent.optimizer.momentum=0.5"),
        ("agent.optimizer=adamm", "unknown variant `adamm`, expected one of `adam`, `adamax`, `rmsprop`"),
        ("agent.lr=nan", "agent.lr must be a finite number"),
        ("learner.threads=10000", "learner.threads = 10000 is far beyond this machine"),
        ("env.noop_max=1000000", "env.noop_max = 1000000"),
        ("log.eval_max_steps=0", "log.eval_max_steps must be >= 1"),
        ("run.total_env_steps=900", "run.total_env_steps = 900 must be larger than replay.warmup_steps = 1000"),
        ("actors.send_batch=1000000000", "actors.send_batch = 1000000000 must be 1..=4096"),
        ("learner.prefetch=1000000000000", "learner.prefetch = 1000000000000 must be 1..=256"),
    ];
    for (set, want) in cases {
        refused(&run(&train_args("configs/cartpole.toml", runs.path(), &[set])), want);
    }
    let o = run(&strs(&["bench", "env", "--threads", "200", "--seconds", "1"]));
    refused(&o, "--threads 200");
    assert!(empty(runs.path()));
}

#[test]
fn a_negative_stop_at_return_stops_the_run() {
    // Returns are negative in many games (Pong): a negative goal is a goal, not "off".
    let runs = tempfile::tempdir().unwrap();
    let run_dir = cartpole_run(runs.path(), &["--set", "run.stop_at_return=-5", "--set", "run.total_env_steps=100000"]);
    let s = summary(&run_dir);
    assert!(s["solved_at_step"].as_u64().is_some(), "{s}");
    assert!(s["env_steps"].as_u64().unwrap() < 100_000, "{s}");
    assert_eq!(s["complete"], true, "reaching the goal finishes the run: {s}");
}

#[test]
fn a_diverging_run_stops_with_an_error_saying_when_and_keeps_its_checkpoints() {
    let runs = tempfile::tempdir().unwrap();
    let sets = [
        "run.total_env_steps=20000",
        "agent.lr=1",
        "agent.grad_clip_norm=0",
        "agent.optimizer.beta2=0",
        "log.checkpoint_every=1",
        "log.keep_checkpoints=1000",
    ];
    let o = run(&train_args("configs/cartpole.toml", runs.path(), &sets));
    let t = refused(&o, "training diverged");
    assert!(t.contains("by update") && t.contains("env step"), "{t}");
    // Every checkpoint on disk holds finite weights: none was written from the diverged ones.
    let dir = only_run_dir(runs.path());
    let s = summary(&dir);
    assert!(s["error"].as_str().is_some_and(|e| e.contains("training diverged")), "the summary says why: {s}");
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "1", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn misleading_errors_now_say_what_is_wrong() {
    let runs = tempfile::tempdir().unwrap();
    for (id, suggestion) in [
        ("CartPole-v0", Some("CartPole-v1")),
        ("CartPol-v1", Some("CartPole-v1")),
        ("../../etc/passwd", None),
        ("../pong", None),
    ] {
        let o = run(&train_args("configs/cartpole.toml", runs.path(), &[&format!("env.id=\"{id}\"")]));
        let t = refused(&o, "unknown environment id");
        assert!(!t.contains("agent.network"), "{t}");
        if let Some(s) = suggestion {
            assert!(t.contains(&format!("Did you mean: {s}")), "{t}");
        }
    }
    let huge = "x".repeat(1 << 20);
    let cfg = runs.path().join("huge.toml");
    std::fs::write(&cfg, format!("[env]\nid = \"{huge}\"\n")).unwrap();
    let o = run(&strs(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--runs-dir",
        runs.path().join("r").to_str().unwrap(),
    ]));
    let t = refused(&o, "unknown environment id");
    assert!(t.len() < 2000, "a 1 MB id echoed: {} bytes of output", t.len());
    // WNDQN_ROM_DIR="" is unset, not the current folder.
    let o =
        bin().env("WNDQN_ROM_DIR", "").args(["bench", "env", "--game", "Pong", "--seconds", "0.2"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(empty(&runs.path().join("r")));
}

/// A finished CartPole run with a checkpoint holding its replay memory.
fn run_with_replay(runs: &Path) -> PathBuf {
    cartpole_run(runs, &["--set", "run.total_env_steps=2000", "--save-replay"])
}

fn newest_checkpoint(run: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints")).unwrap().flatten().map(|e| e.path()).collect();
    v.sort();
    v.pop().unwrap()
}

#[test]
fn damaged_checkpoints_are_found_out_by_their_hashes() {
    let runs = tempfile::tempdir().unwrap();
    let dir = run_with_replay(runs.path());
    let ckpt = newest_checkpoint(&dir);
    // A flipped byte in replay.bin's header: the networks are fine, the memory refills.
    let p = ckpt.join("replay.bin");
    let mut b = std::fs::read(&p).unwrap();
    b[3] ^= 0xff;
    std::fs::write(&p, &b).unwrap();
    let o = run(&resume_args(&dir, &["run.total_env_steps=4000"]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("replay.bin does not match its hash") && t.contains("refills"), "{t}");
    // A missing file is named as missing.
    let ckpt = newest_checkpoint(&dir);
    std::fs::remove_file(ckpt.join("target.safetensors")).unwrap();
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "1"]);
    let t = text(&o);
    assert!(t.contains("target.safetensors is missing") && !t.contains("18446744073709551615"), "{t}");
    // An empty marker is not a complete checkpoint.
    std::fs::write(ckpt.join("COMPLETE"), "").unwrap();
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "1"]);
    let t = text(&o);
    assert!(t.contains("does not list"), "{t}");
}

#[test]
fn eval_refuses_impossible_settings_before_playing() {
    let runs = tempfile::tempdir().unwrap();
    // A short Pong run: it has a screen to make a video of.
    let sets = ["run.total_env_steps=1100", "replay.warmup_steps=1000", "replay.capacity=5000", "log.eval_every=0"];
    let o = run(&train_args("configs/pong.toml", runs.path(), &sets));
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run_dir(runs.path());
    let d = dir.to_str().unwrap();
    for (args, want) in [
        (vec!["--episodes", "0"], "--episodes"),
        (vec!["--epsilon", "2"], "must be a probability in [0, 1]"),
        (vec!["--epsilon", "nan"], "must be a probability in [0, 1]"),
        (vec!["--max-steps", "0"], "--max-steps"),
    ] {
        let o = run(&[&["eval", d][..], &args].concat());
        refused(&o, want);
    }
    let t0 = std::time::Instant::now();
    let o =
        run(&["eval", d, "--episodes", "100000", "--video", runs.path().join("missing_dir/x.gif").to_str().unwrap()]);
    refused(&o, "cannot write there");
    assert!(t0.elapsed().as_secs() < 10, "it played the games first ({:?})", t0.elapsed());
    if !Path::new("/dev/nvidia0").exists() {
        refused(&run(&["--device", "cuda", "eval", d, "--episodes", "1"]), "--device cuda was asked for");
    }
}

#[test]
fn compare_refuses_damaged_unfinished_running_and_duplicated_runs() {
    let runs = tempfile::tempdir().unwrap();
    let a = runs.path().join("a");
    let b = runs.path().join("b");
    let ra = cartpole_run(&a, &["--set", "run.total_env_steps=3000"]);
    let rb = cartpole_run(&b, &["--set", "run.total_env_steps=3000", "--seed", "2"]);
    let out = |n: &str| runs.path().join(n).display().to_string();
    let cmp = |dirs: &[&Path], extra: &[&str]| {
        let mut args = strs(&["compare"]);
        args.extend(dirs.iter().map(|d| d.display().to_string()));
        args.extend(strs(&["--out", &out("cmp")]));
        args.extend(strs(extra));
        run(&args)
    };
    let good = cmp(&[&ra, &rb], &[]);
    assert!(good.status.success(), "{}", text(&good));
    // The same run twice (once through a different path) counts once.
    let again = runs.path().join("a/./").join(ra.file_name().unwrap());
    let o = cmp(&[&ra, &again, &rb], &[]);
    assert!(o.status.success() && text(&o).contains("counted once"), "{}", text(&o));
    let table = std::fs::read_to_string(out("cmp") + "/table.csv").unwrap();
    assert!(table.lines().nth(1).unwrap().starts_with("weight_norm,2,"), "{table}");
    // Damage: a cut, seven flipped bytes, an empty file.
    let events = |r: &Path| events_file(r);
    let original = std::fs::read(events(&rb)).unwrap();
    let damages: Vec<(Vec<u8>, &str)> = vec![
        (original[..original.len() / 2].to_vec(), "it was changed or cut"),
        (
            {
                let mut d = original.clone();
                for k in 0..7 {
                    d[original.len() / 3 + 97 * k] ^= 0x40;
                }
                d
            },
            "is damaged at byte",
        ),
        (Vec::new(), "it was changed or cut"),
    ];
    for (bytes, want) in damages {
        std::fs::write(events(&rb), &bytes).unwrap();
        let t = refused(&cmp(&[&ra, &rb], &[]), want);
        assert!(t.contains(events(&rb).to_str().unwrap()) && !t.contains("NaN"), "{t}");
    }
    std::fs::write(events(&rb), &original).unwrap();
    // An interrupted run: refused, or compared as it is with --allow-unfinished.
    let c = runs.path().join("c");
    let child = spawn(&train_args("configs/cartpole.toml", &c, &["run.total_env_steps=1000000"]));
    wait_for(|| summary_exists_or_steps(&c));
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait_with_output().unwrap().status.success());
    let rc = only_run_dir(&c);
    refused(&cmp(&[&ra, &rc], &[]), "was interrupted");
    let o = cmp(&[&ra, &rc], &["--allow-unfinished"]);
    assert!(o.status.success(), "{}", text(&o));
    // A run being trained (resumed) right now is refused, naming the process.
    let child = spawn(&resume_args(&rc, &["run.total_env_steps=100000000"]));
    let pid = child.id();
    wait_for(|| std::fs::read_to_string(rc.join(".lock")).unwrap_or_default().starts_with(&format!("{pid}\n")));
    refused(&cmp(&[&ra, &rc], &["--allow-unfinished"]), &format!("being trained right now (pid {pid})"));
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // Its wall time covers both segments.
    let s = summary(&rc);
    let (wall, seg) = (s["wall_secs"].as_f64().unwrap(), s["segment_wall_secs"].as_f64().unwrap());
    assert!(wall > seg + 0.5, "wall {wall} s is the last segment's {seg} s only");
}

fn summary_exists_or_steps(runs: &Path) -> bool {
    std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .any(|r| std::fs::read_dir(r.path()).map(|d| d.count() >= 3).unwrap_or(false))
        && {
            std::thread::sleep(std::time::Duration::from_millis(1500));
            true
        }
}

fn wait_for(mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed().as_secs() < 60, "waited a minute");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
