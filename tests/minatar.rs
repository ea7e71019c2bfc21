//! MinAtar through the whole tool: DQN learns Breakout, and `games`, `train`, `eval --video`,
//! `compare`, `sweep`, `bench env`, `bench acting` and `check` work on MinAtar ids, bad MinAtar
//! input included.

mod common;

use common::*;

/// A random policy scores about 0.5 a game on MinAtar Breakout (`wndqn bench env` measures it over
/// millions of games); plain DQN on the MinAtar preset must reach a 20-game mean of 5, ten times
/// that, within 150k frames. Shortened from the preset so that it fits the suite (about 30-60 s
/// on 2 cores): Adam 1e-3, one update per 4 frames, epsilon decay over 25k frames.
#[test]
fn dqn_learns_minatar_breakout() {
    let runs = tempfile::tempdir().unwrap();
    let sets = [
        "env.id=MinAtar/Breakout-v0",
        "agent.variant=plain",
        "agent.optimizer=adam",
        "agent.lr=1e-3",
        "agent.optimizer.eps=1e-8",
        "learner.replay_ratio=0.25",
        "actors.epsilon_decay_steps=25000",
        "run.total_env_steps=150000",
        "run.stop_at_return=5",
        "log.eval_every=0",
    ];
    let o = run(&train_args("configs/minatar.toml", runs.path(), &sets));
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&only_run_dir(runs.path()));
    let best = s["best20_mean_return"].as_f64().unwrap();
    assert!(best >= 5.0, "best 20-game mean {best} (random play: about 0.5): {s}");
}

#[test]
fn games_lists_minatar_and_the_benches_run_on_its_games() {
    let o = run(&["games"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for g in ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"] {
        assert!(out.contains(&format!("MinAtar/{g}-v1")) && out.contains(&format!("MinAtar/{g}-v0")), "{g}:\n{out}");
    }
    let o = run(&["bench", "env", "--game", "MinAtar/SpaceInvaders-v1", "--seconds", "0.5", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = j["random_policy_mean_return"].as_f64().unwrap();
    assert!(j["random_policy_games"].as_u64().unwrap() > 100 && r > 0.5 && r < 20.0, "{j}");
    // An actor's greedy step, both ways, on the game's observations.
    let o = run(&[
        "bench",
        "acting",
        "--game",
        "MinAtar/Breakout-v0",
        "--variant",
        "layer_norm",
        "--seconds",
        "0.3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let us = |k: &str| j[k].as_f64().unwrap();
    assert!(us("loops_us") > 0.0 && us("tensor_ops_us") > 0.0 && us("load_us") > 0.0, "{j}");
    assert!(j["blocks"].as_u64().unwrap() >= 4 && j["network"] == "minatar", "{j}");
}

#[test]
fn train_eval_video_and_compare_on_a_minatar_game() {
    let runs = tempfile::tempdir().unwrap();
    let out = runs.path().join("cmp");
    let mut args = train_args(
        "configs/minatar.toml",
        runs.path(),
        &["env.id=MinAtar/Seaquest-v1", "run.total_env_steps=3000", "replay.warmup_steps=1000", "log.eval_every=0"],
    );
    args[0] = "compare".into();
    args.extend(strs(&["--variants", "plain,weight_norm", "--seeds", "1", "--out", out.to_str().unwrap()]));
    args.retain(|a| a != "--quiet");
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.join("table.md").exists() && out.join("curves.png").exists());
    let dir = runs.path().join("comparisons/minatar/runs/MinAtar-Seaquest__weight_norm__s1");
    assert!(dir.join("summary.json").is_file(), "{}", text(&o));
    let gif = runs.path().join("sq.gif");
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "2", "--video", gif.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&gif).unwrap();
    assert!(bytes.starts_with(b"GIF89a") && bytes.len() > 1_000, "{} bytes", bytes.len());
}

/// A MinAtar sweep with one game normalized by a fixed range and one by its best plain run; the
/// Freeway run (2,500 steps: its one game lasts 2,501) finishes no game and is left out, with why,
/// instead of failing the report.
#[test]
fn a_minatar_sweep_runs_and_reports() {
    let d = tempfile::tempdir().unwrap();
    let spec = sweep_spec(
        d.path(),
        "spec.toml",
        "minatar.toml",
        "games = [\"MinAtar/Breakout-v1\", \"MinAtar/Asterix-v1\", \"MinAtar/Freeway-v1\"]\nvariants = [\"plain\"]\nseeds = 1\nsets = [\"run.total_env_steps=2500\", \"replay.warmup_steps=500\", \"log.eval_every=0\"]\n\n[normalize]\n\"MinAtar/Breakout-v1\" = [0.5, 10.0]\n\"MinAtar/Asterix-v1\" = [-1.0, \"best plain\"]\n\"MinAtar/Freeway-v1\" = [0.1, 30.0]\n",
    );
    let dir = d.path().join("sw");
    let o = run(&["sweep", "run", spec.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["sweep", "report", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let report = std::fs::read_to_string(dir.join("report/report.md")).unwrap_or_else(|_| text(&o));
    assert!(report.contains("MinAtar") && report.contains("best plain run"), "{report}");
    assert!(report.contains("MinAtar-Freeway__plain__s1 (finished, but no training game ended in it)"), "{report}");
}

#[test]
fn bad_minatar_input_is_refused_clearly() {
    for (sets, want) in [
        (vec!["env.id=MinAtar/Breakot-v1"], "Did you mean: MinAtar/Breakout-v1"),
        (vec!["env.id=MinAtar/Breakout-v9"], "unknown environment id"),
        (vec!["env.repeat_action_probability=1.5"], "must be in [0, 1]"),
        (vec!["env.repeat_action_probability=-0.1"], "must be in [0, 1]"),
        (vec!["agent.network=nature"], "set agent.network = \"minatar\""),
        (vec!["env.id=Pong", "agent.network=nature", "env.difficulty_ramping=false"], "MinAtar setting"),
    ] {
        let mut args = strs(&["check", "configs/minatar.toml"]);
        for s in &sets {
            args.extend(strs(&["--set", s]));
        }
        let o = run(&args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{sets:?}: {out}");
        assert!(out.contains(want) && !out.contains("panicked"), "{sets:?}: {out}");
    }
    // A sticky probability of 1 is allowed, as in the package (the first action repeats forever).
    let o = run(&["check", "configs/minatar.toml", "--set", "env.repeat_action_probability=1.0"]);
    assert!(o.status.success(), "{}", text(&o));
}
