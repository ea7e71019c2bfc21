//! Parity with ale-py 0.12.1, the Python ALE that published Atari results come from, used as an
//! oracle through `tests/oracles/ale_oracle.py` (one Python process for all jobs). The same actions
//! must give identical rewards, lives, game-over and truncation flags and raw screens, and 84x84
//! observations within one gray level (the oracle resizes in float64 with numpy; we use float32
//! separable passes). Covered: every game of the Atari-57 without sticky actions, and the
//! `ALE/Pong-v5` / `ALE/Breakout-v5` settings with ALE's sticky actions and the same seed.

use std::path::{Path, PathBuf};
use std::process::Command;

use wndqn_envs::atari::{ale_seed, AtariEnv};
use wndqn_envs::roms::ATARI_57;
use wndqn_envs::{Env, EnvConfig, EnvId, Obs};

struct Job {
    game: String,
    env: AtariEnv,
    ale_seed: i32,
    sticky: f32,
    actions: Vec<usize>,
}

/// The ROMs of the ale-py wheel in the checkout's venv (`make setup`).
fn checkout_roms() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    wndqn_envs::roms::venv_roms(&venv).expect("the ale-py wheel in .venv (make setup)")
}

fn job(stem: &str, family_id: &str, seed: u64, steps: usize) -> Job {
    let cfg = EnvConfig {
        id: family_id.replace("{}", &wndqn_envs::roms::game_id(stem)),
        frameskip: Some(4),
        noop_max: 0,
        fire_reset: false,
        episodic_life: false,
        clip_rewards: false,
        ..Default::default()
    };
    let (id, cfg) = cfg.resolve(Some(&checkout_roms())).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let EnvId::Atari { game, .. } = &id else { unreachable!() };
    let mut env = AtariEnv::new(&game.rom, &cfg).unwrap_or_else(|e| panic!("{stem}: {e}"));
    env.reset(Some(seed)).unwrap();
    // Pseudo-random actions with holds of 8 steps, so that players really move.
    let (mut x, mut cur) = (seed ^ 0x5DEECE66D, 0);
    let actions = (0..steps)
        .map(|t| {
            if t % 8 == 0 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                cur = ((x >> 33) % env.num_actions() as u64) as usize;
            }
            cur
        })
        .collect();
    Job { game: stem.into(), env, ale_seed: ale_seed(seed), sticky: cfg.repeat_action_probability.unwrap(), actions }
}

fn screen_weights() -> Vec<u64> {
    let mut x = 0x2545F4914F6CDD1Du64;
    (0..210 * 160)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x
        })
        .collect()
}

/// Run the oracle on every job; returns its output folder.
fn oracle(jobs: &[Job], tag: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("wndqn-parity-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let spec: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| serde_json::json!({"game": j.game, "seed": j.ale_seed, "sticky": j.sticky, "frameskip": 4, "obs_every": 1, "actions": j.actions}))
        .collect();
    let spec_path = out.join("jobs.json");
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let status = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/oracles/ale_oracle.py"))
        .arg(&spec_path)
        .arg(&out)
        .status()
        .expect("the project venv (make setup) has ale-py");
    assert!(status.success(), "oracle failed");
    out
}

/// Play a job and compare; returns (steps compared, |rewards| seen, life changes seen).
fn compare(j: &mut Job, k: usize, out: &Path, weights: &[u64]) -> (usize, f64, usize) {
    let theirs: Vec<(f64, i32, bool, bool, String)> =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("{k}.json"))).unwrap()).unwrap();
    let frames = std::fs::read(out.join(format!("{k}.u8"))).unwrap();
    let g = &j.game;
    let (mut rewards, mut life_changes, mut prev_lives) = (0.0, 0, None);
    for (t, (&a, (r, lives, over, trunc, hash))) in j.actions.iter().zip(&theirs).enumerate() {
        let s = j.env.step(a);
        assert_eq!(s.raw_reward as f64, *r, "{g}: reward at step {t}");
        assert_eq!(s.lives, *lives, "{g}: lives at step {t}");
        assert_eq!(s.terminated, *over, "{g}: game over at step {t}");
        assert_eq!(s.truncated, *trunc, "{g}: truncation at step {t}");
        let screen = j.env.grayscale_screen();
        let h = screen.iter().zip(weights).fold(0u64, |h, (&p, &w)| h.wrapping_add((p as u64).wrapping_mul(w)));
        assert_eq!(&format!("{h:016x}"), hash, "{g}: raw screen at step {t}");
        // Every step's 84x84 observation (the oracle writes one per step, `obs_every` 1).
        let Obs::Frames { latest, .. } = j.env.obs() else { unreachable!() };
        let o = t * 84 * 84;
        let max = latest.iter().zip(&frames[o..o + 84 * 84]).map(|(p, q)| p.abs_diff(*q)).max().unwrap();
        assert!(max <= 1, "{g}: 84x84 observation at step {t} differs by {max} gray levels");
        rewards += r.abs();
        life_changes += usize::from(prev_lives.is_some_and(|p| p != *lives));
        prev_lives = Some(*lives);
    }
    assert_eq!(theirs.len(), j.actions.len().min(theirs.len()));
    (theirs.len(), rewards, life_changes)
}

fn check_all(mut jobs: Vec<Job>, tag: &str) -> Vec<(String, usize, f64, usize)> {
    let out = oracle(&jobs, tag);
    let weights = screen_weights();
    let results = jobs.iter_mut().enumerate().map(|(k, j)| {
        let (n, r, l) = compare(j, k, &out, &weights);
        (j.game.clone(), n, r, l)
    });
    let results: Vec<_> = results.collect();
    std::fs::remove_dir_all(&out).unwrap();
    results
}

#[test]
fn atari_57_match_ale_py_without_sticky_actions() {
    assert_eq!(ATARI_57.len(), 57);
    let jobs: Vec<Job> =
        ATARI_57.iter().enumerate().map(|(i, g)| job(g, "{}NoFrameskip-v4", 11 + i as u64, 600)).collect();
    let results = check_all(jobs, "57");
    // Not vacuous: the sequences score, lose lives and play many steps in most games.
    let scoring = results.iter().filter(|r| r.2 > 0.0).count();
    let with_lives = results.iter().filter(|r| r.3 > 0).count();
    let steps: usize = results.iter().map(|r| r.1).sum();
    eprintln!("57 games: {steps} steps compared, {scoring} games with rewards, {with_lives} with life changes");
    assert!(scoring >= 40, "only {scoring} of 57 games saw a reward: {results:?}");
    assert!(with_lives >= 15, "only {with_lives} of 57 games saw a life change");
    assert!(steps >= 57 * 400, "{steps} steps");
}

#[test]
fn v5_sticky_actions_match_ale_py_with_the_same_seed() {
    let jobs = vec![job("pong", "ALE/{}-v5", 3, 2000), job("breakout", "ALE/{}-v5", 4, 2000)];
    assert!(jobs.iter().all(|j| j.sticky == 0.25));
    for (g, n, r, _) in check_all(jobs, "v5") {
        assert!(n > 300 && r > 0.0, "{g}: {n} steps, rewards {r}");
    }
}
