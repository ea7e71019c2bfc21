//! Integration suite: the real `wndqn` binary, real ROMs, real libtorch, and TensorBoard's own
//! reader (Python `tensorboard`, through tests/oracles/read_events.py) on the event files it writes.

mod common;

use common::*;
use std::path::Path;

#[test]
fn games_lists_the_standard_atari_games() {
    let o = run(&["games"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let n: usize = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 57, "{n} games");
    for g in ["Pong", "Breakout", "SpaceInvaders", "Seaquest", "Enduro", "MontezumaRevenge", "MsPacman", "Qbert"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{g} "))), "{g} missing:\n{out}");
    }
}

fn cartpole_solves(variant: &str) {
    let runs = tempfile::tempdir().unwrap();
    let o = run(&[
        "train",
        "--config",
        "configs/cartpole.toml",
        "--variant",
        variant,
        "--seed",
        "1",
        "--quiet",
        "--runs-dir",
        runs.path().to_str().unwrap(),
        "--set",
        "run.stop_at_return=195",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&only_run_dir(runs.path()));
    let best = s["best20_mean_return"].as_f64().unwrap();
    // A random policy averages ~22; 195 is the classic "solved" mark (20 consecutive games),
    // where the run stops. Runs are not bit-reproducible across thread timings, and about one
    // seed-1 run in six peaks just under 195 on a loaded machine (measured: 192-210), so the
    // test asks for 150, seven times a random policy.
    assert!(best >= 150.0, "{variant}: best 20-game mean {best}: {s}");
}

#[test]
fn cartpole_plain_learns() {
    cartpole_solves("plain");
}

#[test]
fn cartpole_weight_norm_learns() {
    cartpole_solves("weight_norm");
}

#[test]
fn atari_run_with_two_actors_writes_a_tensorboard_run() {
    let runs = tempfile::tempdir().unwrap();
    let o = run(&[
        "train",
        "--config",
        "configs/pong.toml",
        "--quiet",
        "--device",
        "cpu",
        "--runs-dir",
        runs.path().to_str().unwrap(),
        "--set",
        "run.total_env_steps=3000",
        "--set",
        "replay.warmup_steps=1000",
        "--set",
        "replay.capacity=5000",
        "--set",
        "log.scalars_every=250",
        "--set",
        "log.histograms_every=500",
        "--set",
        "log.eval_every=1500",
        "--set",
        "log.eval_episodes=1",
        "--set",
        "log.eval_max_steps=300",
        "--set",
        "actors.num_actors=2",
        "--set",
        "log.diagnostics_every=200",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run_dir(runs.path());
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("Pong__weight_norm__s1__"), "{name}");
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("total_env_steps = 3000") && cfg.contains("frameskip = 4"), "resolved config:\n{cfg}");
    let s = summary(&dir);
    assert_eq!(s["env_steps"].as_u64().unwrap(), 3000);
    // Replay ratio 0.25 after a 1000-step warm-up: ~500 updates, whatever the machine's speed.
    let updates = s["updates"].as_u64().unwrap();
    assert!((480..=500).contains(&updates), "updates {updates}");
    let ev = read_events(&dir);
    for tag in [
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/epsilon",
        "charts/sps",
        "losses/td_loss",
        "losses/q_values",
        "learner/updates_per_sec",
        "learner/grad_norm",
        "replay/size",
        "weight_norm/g_mean/conv0",
        "eval/episodic_return",
        "diag/weight_norm/conv0",
        "diag/weight_norm/fc1",
        "diag/relative_update/q",
        "diag/g_mean/fc1",
        "diag/dormant_fraction",
        "diag/feature_rank",
    ] {
        let points = ev["scalars"][tag].as_array().unwrap_or_else(|| panic!("{tag} missing: {}", ev["scalars"]));
        assert!(!points.is_empty(), "{tag}");
    }
    // Steps increase along every curve (x-axis = env steps).
    for (tag, pts) in ev["scalars"].as_object().unwrap() {
        let steps: Vec<i64> = pts.as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{tag}: {steps:?}");
        assert!(steps.iter().all(|&s| s <= 3000), "{tag}");
    }
    assert!(ev["histograms"]["weight_norm/g/fc1"].as_u64().unwrap() >= 1);
    assert!(ev["text"]["config"].as_str().unwrap().contains("[agent]"));
    let hp = &ev["hparams"];
    assert_eq!(hp["hparams"]["agent.variant"], "weight_norm");
    assert_eq!(hp["hparams"]["env.id"], "PongNoFrameskip-v4");
    assert_eq!(hp["group"].as_str().unwrap(), name);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_with_a_readable_event_file() {
    let runs = tempfile::tempdir().unwrap();
    let sets = ["replay.warmup_steps=500", "replay.capacity=5000", "log.scalars_every=100"];
    let child = spawn(&train_args("configs/pong.toml", runs.path(), &sets));
    // Wait until learning has produced some events, then interrupt.
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let dirs: Vec<_> = std::fs::read_dir(runs.path()).unwrap().flatten().collect();
        if t0.elapsed().as_secs() > 12 && !dirs.is_empty() {
            break;
        }
    }
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t1 = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "exit {:?}: {}", o.status, text(&o));
    assert!(t1.elapsed().as_secs() < 20, "took {:?} to stop", t1.elapsed());
    let out = text(&o);
    assert!(out.contains("interrupted") && out.contains("env steps"), "{out}");
    let dir = only_run_dir(runs.path());
    let s = summary(&dir);
    assert_eq!(s["interrupted"], true);
    let ev = read_events(&dir);
    assert!(ev["scalars"]["charts/sps"].as_array().map_or(0, |a| a.len()) >= 1, "{}", ev["scalars"]);
    assert_eq!(ev["hparams"]["hparams"]["agent.variant"], "weight_norm", "{}", ev["hparams"]);
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_no_run_folder() {
    let runs = tempfile::tempdir().unwrap();
    let r = runs.path().to_str().unwrap();
    let train =
        |sets: &[&str], extra: &[&str]| [train_args("configs/pong.toml", runs.path(), sets), strs(extra)].concat();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (train(&["env.id=\"Pnog\""], &[]), "Did you mean: Pong"),
        (train(&["agent.lrr=1"], &[]), "unknown field `lrr`"),
        (train(&[], &["--variant", "fancy"]), "invalid value 'fancy'"),
        (train(&["agent.gamma=2"], &[]), "agent.gamma"),
        (strs(&["train", "--config", "configs/nope.toml", "--runs-dir", r]), "cannot read config"),
        (train(&[], &["--rom-dir", "/nonexistent"]), "no ROM folder"),
        (strs(&["bench", "env", "--game", "Breakot"]), "Did you mean: Breakout"),
        (strs(&["bench", "acting", "--game", "MinAtar/Breakot-v0"]), "Did you mean"),
    ];
    for (args, want) in cases {
        let o = run(&args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(t.contains(want), "{args:?}: expected `{want}` in:\n{t}");
        assert!(!t.contains("panicked") && !t.contains("stack backtrace"), "{args:?}:\n{t}");
    }
    if !Path::new("/dev/nvidia0").exists() {
        let o = run(&["--device", "cuda", "train", "--config", "configs/cartpole.toml", "--runs-dir", r]);
        assert!(!o.status.success());
        assert!(text(&o).contains("--device cuda was asked for"), "{}", text(&o));
    }
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0, "a failed start left files behind");
}

/// libtorch's CUDA backend registers only if libtorch_cuda.so is a real dependency of the
/// binary; the linker drops it unless build.rs keeps it (`--no-as-needed`).
#[test]
fn the_binary_links_libtorch_cuda_when_libtorch_has_it() {
    let lib = root().join(".venv/libtorch/lib");
    let o = std::process::Command::new("readelf")
        .arg("-d")
        .arg(env!("CARGO_BIN_EXE_wndqn"))
        .output()
        .expect("readelf (binutils) is installed");
    let dynamic = String::from_utf8_lossy(&o.stdout);
    for l in ["libtorch_cuda.so", "libc10_cuda.so"] {
        if lib.join(l).exists() {
            assert!(dynamic.contains(&format!("[{l}]")), "{l} is not NEEDED by the binary:\n{dynamic}");
        }
    }
    let o = run(&["info", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["ale"], "0.12.1");
    assert!(info["libtorch"].as_str().unwrap().starts_with("2.11.0"), "{info}");
    assert_eq!(info["libtorch_cuda_loaded"], lib.join("libtorch_cuda.so").exists());
    assert_eq!(info["cuda_available"], Path::new("/dev/nvidia0").exists());
    assert!(info["games"].as_u64().unwrap() >= 100, "{info}");
}

#[test]
fn config_errors_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.toml");
    std::fs::write(&p, "[env]\nid = \"Pong\"\n\n[agent]\nlearning_rate = 3\n").unwrap();
    let o = run(&["train", "--config", p.to_str().unwrap(), "--runs-dir", d.path().to_str().unwrap()]);
    let t = text(&o);
    assert!(!o.status.success());
    assert!(t.contains("bad.toml") && t.contains("line 5") && t.contains("learning_rate"), "{t}");
}

#[cfg(unix)]
#[test]
fn interrupted_run_resumes_with_one_continuous_curve() {
    let runs = tempfile::tempdir().unwrap();
    // Slow the run down (a large replay ratio) so the interrupt lands mid-run.
    let sets =
        ["run.total_env_steps=12000", "learner.replay_ratio=4", "log.checkpoint_every=2000", "log.scalars_every=200"];
    let child = spawn(&train_args("configs/cartpole.toml", runs.path(), &sets));
    // Interrupt once learning has logged and checkpointed (not after a fixed time: under load
    // a fixed sleep can end before the warm-up does).
    wait_for_checkpoints(runs.path(), 1);
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run_dir(runs.path());
    let first = summary(&dir);
    assert_eq!(first["interrupted"], true, "the interrupt came too late: {first}");
    let stopped_at = first["env_steps"].as_u64().unwrap();
    assert!(stopped_at < 12_000);
    let o = run(&["train", "--resume", dir.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    assert_eq!(only_run_dir(runs.path()), dir, "resume must not create a second run");
    let s = summary(&dir);
    assert_eq!(s["env_steps"].as_u64().unwrap(), 12_000);
    assert!(s["updates"].as_u64().unwrap() > first["updates"].as_u64().unwrap());
    let ev = read_events(&dir);
    for tag in ["charts/episodic_return", "charts/sps", "losses/td_loss"] {
        let steps: Vec<i64> = ev["scalars"][tag].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{tag}: steps not strictly increasing: {steps:?}");
        assert!(
            *steps.first().unwrap() < stopped_at as i64 && *steps.last().unwrap() > stopped_at as i64,
            "{tag} must span the resume"
        );
    }
}

#[test]
fn corrupted_newest_checkpoint_is_skipped_for_the_previous_one() {
    let runs = tempfile::tempdir().unwrap();
    let dir = cartpole_run(
        runs.path(),
        &["--set", "run.total_env_steps=3000", "--set", "log.checkpoint_every=500", "--set", "log.eval_every=0"],
    );
    let ckpts: Vec<_> = {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten().map(|e| e.path()).collect();
        v.sort();
        v
    };
    assert!(ckpts.len() >= 2, "{ckpts:?}");
    let newest = ckpts.last().unwrap();
    // Flip bytes in the middle of the network file: same size, different content.
    let f = newest.join("online.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&f, bytes).unwrap();
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: skipping checkpoint") && err.contains(newest.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    let js: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(js["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with(ckpts[ckpts.len() - 2].file_name().unwrap().to_str().unwrap()));
    assert_eq!(js["returns"].as_array().unwrap().len(), 2);
    // An interrupted write (a temporary folder, no marker) is ignored too.
    std::fs::create_dir_all(dir.join("checkpoints/.tmp-ckpt-000000099999-1")).unwrap();
    let o = run(&resume_args(&dir, &["run.total_env_steps=4500"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(!dir.join("checkpoints/.tmp-ckpt-000000099999-1").exists(), "a resume removes what dead writers left");
}

#[test]
fn eval_reports_statistics_and_writes_a_gif() {
    let runs = tempfile::tempdir().unwrap();
    let sets = ["run.total_env_steps=1200", "replay.warmup_steps=1000", "replay.capacity=5000", "log.eval_every=0"];
    let o = run(&train_args("configs/pong.toml", runs.path(), &sets));
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run_dir(runs.path());
    let gif = runs.path().join("game.gif");
    let (d, g) = (dir.to_str().unwrap(), gif.to_str().unwrap());
    let o = run(&["eval", d, "--episodes", "2", "--max-steps", "150", "--video", g]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("mean")
            && out.contains("median")
            && out.contains("std")
            && out.contains("min")
            && out.contains("max"),
        "{out}"
    );
    let bytes = std::fs::read(&gif).unwrap();
    assert!(bytes.starts_with(b"GIF89a") && bytes.len() > 10_000, "{} bytes", bytes.len());
}

#[test]
fn compare_two_tiny_cartpole_runs_writes_tables_and_a_png() {
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("cmp");
    let launch = ["--variants", "plain,weight_norm", "--seeds", "1", "--out", out.to_str().unwrap()];
    let mut args = train_args("configs/cartpole.toml", runs.path(), &["run.total_env_steps=4000", "log.eval_every=0"]);
    args[0] = "compare".into();
    args.extend(strs(&launch));
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| plain | 1 |") && stdout.contains("| weight_norm | 1 |"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("variant,seeds,final_return_mean,ci95_low,ci95_high,iqm,auc"));
    let png = std::fs::read(out.join("curves.png")).unwrap();
    assert!(png.starts_with(&[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]));
    let dec = png::Decoder::new(std::io::Cursor::new(png));
    let reader = dec.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (1000, 620));
    // The runs went through the sweep executor into the comparison's folder; the same command
    // again finds them done and trains nothing.
    let folder = runs.path().join("comparisons/cartpole");
    assert!(folder.join("sweep.toml").is_file());
    let o = run(&args);
    assert!(o.status.success() && text(&o).contains("2 done, 0 failed, 0 to run"), "{}", text(&o));
    // The finished runs can be compared again by folder.
    let dirs: Vec<String> = std::fs::read_dir(folder.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.toml").exists())
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(dirs.len(), 2);
    let mut args = vec!["compare".to_string(), "--out".into(), runs.path().join("cmp2").display().to_string()];
    args.extend(dirs);
    let o = bin().args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn resume_eval_and_compare_refuse_bad_input() {
    let runs = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let not_run = scratch.path().join("not-a-run");
    std::fs::create_dir_all(&not_run).unwrap();
    let o = run(&["train", "--resume", not_run.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("is not a wndqn run folder"), "{}", text(&o));
    let o = run(&["eval", not_run.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("is not a wndqn run folder"), "{}", text(&o));
    let dir = cartpole_run(runs.path(), &["--set", "run.total_env_steps=1500", "--set", "log.eval_every=0"]);
    // Resuming with a changed learning rate is refused, naming the key.
    let o = run(&resume_args(&dir, &["agent.lr=0.1", "run.total_env_steps=9000"]));
    assert!(!o.status.success() && text(&o).contains("agent.lr"), "{}", text(&o));
    // A run without checkpoints: its checkpoints removed.
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    let o = run(&["eval", dir.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("has no checkpoint"), "{}", text(&o));
    // Runs of different environments.
    let other = tempfile::tempdir().unwrap();
    let sets = ["run.total_env_steps=1100", "replay.warmup_steps=1000", "replay.capacity=5000", "log.eval_every=0"];
    let o = run(&train_args("configs/pong.toml", other.path(), &sets));
    assert!(o.status.success(), "{}", text(&o));
    let pong = only_run_dir(other.path());
    let o = run(&[
        "compare",
        dir.to_str().unwrap(),
        pong.to_str().unwrap(),
        "--out",
        scratch.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && text(&o).contains("different environments"), "{}", text(&o));
    assert!(!text(&o).contains("panicked"));
}

#[cfg(unix)]
#[test]
fn kill_9_never_breaks_the_newest_complete_checkpoint() {
    let runs = tempfile::tempdir().unwrap();
    // Checkpoints every 100 updates, so the kill is likely to land during a write.
    let mut child = bin()
        .args(train_args(
            "configs/cartpole.toml",
            runs.path(),
            &["run.total_env_steps=200000", "log.checkpoint_every=100", "log.eval_every=0"],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_checkpoints(runs.path(), 2);
    std::thread::sleep(std::time::Duration::from_millis(150));
    // SAFETY: kill(2) on a process this test started; no memory is touched.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let dir = only_run_dir(runs.path());
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "1", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&resume_args(&dir, &["run.total_env_steps=1001"]));
    // A budget below the checkpoint's steps is refused up front, after reading the checkpoint.
    assert!(!o.status.success() && text(&o).contains("nothing to train"), "{}", text(&o));
}
