//! Integration suite: the real `wndqn` binary, real ROMs, real libtorch, and TensorBoard's own
//! reader (Python `tensorboard`, through scripts/read_events.py) on the event files it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wndqn"));
    c.current_dir(root());
    c.env_remove("RUST_BACKTRACE");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("wndqn runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn only_run_dir(runs: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(runs).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "expected one run folder in {}: {dirs:?}", runs.display());
    dirs[0].clone()
}

fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap()
}

fn read_events(run_dir: &Path) -> serde_json::Value {
    let o = Command::new(root().join(".venv/bin/python")).arg(root().join("scripts/read_events.py")).arg(run_dir).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

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
        "train", "--config", "configs/cartpole.toml", "--variant", variant, "--seed", "1", "--quiet",
        "--runs-dir", runs.path().to_str().unwrap(), "--set", "run.stop_at_return=195",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&only_run_dir(runs.path()));
    let best = s["best20_mean_return"].as_f64().unwrap();
    // A random policy averages ~22; 195 is the classic "solved" mark (20 consecutive games).
    assert!(best >= 195.0, "{variant}: best 20-game mean {best}: {s}");
    assert!(s["solved_at_step"].as_u64().unwrap() <= 50_000);
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
        "train", "--config", "configs/pong.toml", "--quiet", "--device", "cpu", "--runs-dir", runs.path().to_str().unwrap(),
        "--set", "run.total_env_steps=3000", "--set", "replay.warmup_steps=1000", "--set", "replay.capacity=5000",
        "--set", "log.scalars_every=250", "--set", "log.histograms_every=500", "--set", "log.eval_every=1500",
        "--set", "log.eval_episodes=1", "--set", "log.eval_max_steps=300", "--set", "actors.num_actors=2",
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
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/sps", "losses/td_loss", "losses/q_values",
        "learner/updates_per_sec", "learner/grad_norm", "replay/size", "weight_norm/g_mean/conv0", "eval/episodic_return"] {
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
    assert_eq!(hp["hparams"]["variant"], "weight_norm");
    assert_eq!(hp["hparams"]["env"], "PongNoFrameskip-v4");
    assert_eq!(hp["group"].as_str().unwrap(), name);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_with_a_readable_event_file() {
    let runs = tempfile::tempdir().unwrap();
    let child = bin()
        .args(["train", "--config", "configs/pong.toml", "--quiet", "--runs-dir", runs.path().to_str().unwrap(),
            "--set", "replay.warmup_steps=500", "--set", "replay.capacity=5000", "--set", "log.scalars_every=100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until learning has produced some events, then interrupt.
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let dirs: Vec<_> = std::fs::read_dir(runs.path()).unwrap().flatten().collect();
        if t0.elapsed().as_secs() > 12 && !dirs.is_empty() {
            break;
        }
    }
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
    assert!(ev["hparams"]["hparams"]["variant"] == "weight_norm");
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_no_run_folder() {
    let runs = tempfile::tempdir().unwrap();
    let r = runs.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "--config", "configs/pong.toml", "--runs-dir", r, "--set", "env.id=\"Pnog\""], "Did you mean: Pong"),
        (vec!["train", "--config", "configs/pong.toml", "--runs-dir", r, "--set", "agent.lrr=1"], "unknown field `lrr`"),
        (vec!["train", "--config", "configs/pong.toml", "--runs-dir", r, "--variant", "fancy"], "unknown variant `fancy`"),
        (vec!["train", "--config", "configs/pong.toml", "--runs-dir", r, "--set", "agent.gamma=2"], "agent.gamma"),
        (vec!["train", "--config", "configs/nope.toml", "--runs-dir", r], "cannot read config"),
        (vec!["train", "--config", "configs/pong.toml", "--runs-dir", r, "--rom-dir", "/nonexistent"], "no ROM folder"),
        (vec!["bench", "env", "--game", "Breakot"], "Did you mean: Breakout"),
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
