//! Parity with ale-py, the Python ALE (a newer emulator build), used as an oracle through
//! `scripts/ale_oracle.py`: the same action sequence must give the same rewards, lives and game
//! over flags, and 84x84 observations within a small tolerance (the oracle resizes in float64
//! with numpy; we use float32 separable passes).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use wndqn_envs::{make_env, EnvConfig, Obs};

fn check_game(game_id: &str, stem: &str, steps: usize, seed: u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = EnvConfig {
        id: format!("{game_id}NoFrameskip-v4"),
        frameskip: Some(4),
        repeat_action_probability: Some(0.0),
        noop_max: 0,
        fire_reset: false,
        episodic_life: false,
        clip_rewards: false,
        ..Default::default()
    };
    let (id, cfg) = cfg.resolve(None).expect("ROMs come with `make setup`");
    let mut env = make_env(&id, &cfg).unwrap();
    env.reset(Some(seed)).unwrap();
    // Pseudo-random actions with long holds, so paddles and players really move.
    let mut x = seed;
    let mut actions = Vec::with_capacity(steps);
    let mut cur = 0;
    for t in 0..steps {
        if t % 8 == 0 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            cur = ((x >> 33) % env.num_actions() as u64) as usize;
        }
        actions.push(cur);
    }
    let out = std::env::temp_dir().join(format!("wndqn-parity-{stem}-{}", std::process::id()));
    let mut child = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/ale_oracle.py"))
        .args([stem, &seed.to_string(), "4", out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("the project venv (make setup) has ale-py");
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "oracle failed");
    let steps_json: Vec<(f64, i32, bool)> = serde_json::from_str(&std::fs::read_to_string(out.join("steps.json")).unwrap()).unwrap();
    let frames = std::fs::read(out.join("obs.u8")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let (mut total_abs, mut max_abs, mut rewards, mut n) = (0u64, 0u8, 0.0, 0usize);
    for (t, (&a, (r, lives, over))) in actions.iter().zip(&steps_json).enumerate() {
        let s = env.step(a);
        assert_eq!(s.raw_reward as f64, *r, "{stem}: reward at step {t}");
        assert_eq!(s.lives, *lives, "{stem}: lives at step {t}");
        assert_eq!(s.terminated, *over, "{stem}: game over at step {t}");
        rewards += r.abs();
        let Obs::Frames { latest, .. } = env.obs() else { unreachable!() };
        let theirs = &frames[t * 84 * 84..(t + 1) * 84 * 84];
        for (p, q) in latest.iter().zip(theirs) {
            let d = p.abs_diff(*q);
            total_abs += d as u64;
            max_abs = max_abs.max(d);
        }
        n += 1;
        if s.terminated {
            break;
        }
    }
    let mean_abs = total_abs as f64 / (n * 84 * 84) as f64;
    assert!(n >= steps.min(steps_json.len()), "{stem}: compared {n} steps");
    assert!(rewards > 0.0, "{stem}: the sequence must score or concede something to test rewards");
    assert!(max_abs <= 1 && mean_abs < 0.01, "{stem}: observations differ: max {max_abs}, mean {mean_abs:.4}");
}

#[test]
fn pong_matches_ale_py() {
    check_game("Pong", "pong", 2000, 5);
}

#[test]
fn breakout_matches_ale_py() {
    check_game("Breakout", "breakout", 2000, 9);
}
