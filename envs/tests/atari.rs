//! Atari environment tests on real ROMs (the ale-py wheel's, installed by `make setup`).

use std::path::Path;

use wndqn_envs::ale::{Ale, AleSettings, SCREEN_H, SCREEN_W};
use wndqn_envs::resize::AreaResize;
use wndqn_envs::{make_env, Env, EnvConfig, EnvId, Obs, Step};

/// The ROMs of the ale-py wheel in the checkout's venv (`make setup`).
fn checkout_roms() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv");
    wndqn_envs::roms::venv_roms(&venv).expect("the ale-py wheel in .venv (make setup)")
}

fn env_cfg(id: &str, f: impl FnOnce(&mut EnvConfig)) -> (EnvId, EnvConfig) {
    let mut c = EnvConfig { id: id.into(), ..Default::default() };
    f(&mut c);
    c.resolve(Some(&checkout_roms())).expect("ROMs are installed by `make setup`")
}

fn latest(env: &dyn Env) -> Vec<u8> {
    match env.obs() {
        Obs::Frames { latest, .. } => latest.to_vec(),
        Obs::Vector(_) => unreachable!(),
    }
}

fn stack(env: &dyn Env) -> Vec<u8> {
    match env.obs() {
        Obs::Frames { stack, .. } => stack.to_vec(),
        Obs::Vector(_) => unreachable!(),
    }
}

/// A reproducible action sequence (LCG), independent of `rand`.
fn actions(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) % k as u64) as usize
        })
        .collect()
}

/// Play `n` steps with resets; a digest of everything observed.
fn trajectory(id: &EnvId, cfg: &EnvConfig, seed: u64, n: usize) -> Vec<(u64, Step)> {
    let mut env = make_env(id, cfg).unwrap();
    env.reset(Some(seed)).unwrap();
    let acts = actions(n, env.num_actions(), seed);
    let mut out = Vec::new();
    for a in acts {
        let s = env.step(a);
        let h =
            stack(env.as_ref()).iter().fold(1469598103934665603u64, |h, &b| (h ^ b as u64).wrapping_mul(1099511628211));
        out.push((h, s));
        if s.terminated || s.truncated {
            env.reset(None).unwrap();
        }
    }
    out
}

#[test]
fn same_seed_same_trajectory_other_seed_differs() {
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |_| {});
    let a = trajectory(&id, &cfg, 7, 600);
    let b = trajectory(&id, &cfg, 7, 600);
    assert_eq!(a, b);
    let c = trajectory(&id, &cfg, 8, 600);
    assert_ne!(a, c, "sticky actions and no-ops must depend on the seed");
}

#[test]
fn threads_give_the_same_trajectories_as_sequential_runs() {
    let (id, cfg) = env_cfg("ALE/Pong-v5", |_| {});
    let seeds = [1u64, 2, 3, 4];
    let sequential: Vec<_> = seeds.iter().map(|&s| trajectory(&id, &cfg, s, 400)).collect();
    let handles: Vec<_> = seeds
        .iter()
        .map(|&s| {
            let (id, cfg) = (id.clone(), cfg.clone());
            std::thread::spawn(move || trajectory(&id, &cfg, s, 400))
        })
        .collect();
    let threaded: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(sequential, threaded);
}

#[test]
fn frame_skip_max_pool_and_resize_match_a_direct_computation() {
    // No no-ops, no FIRE, no sticky actions: the env must equal ALE driven by hand.
    let (id, cfg) = env_cfg("PongNoFrameskip-v4", |c| {
        c.frameskip = Some(4);
        c.noop_max = 0;
        c.fire_reset = false;
    });
    let EnvId::Atari { game, .. } = &id else { unreachable!() };
    let mut env = make_env(&id, &cfg).unwrap();
    env.reset(Some(3)).unwrap();
    let settings =
        AleSettings { seed: wndqn_envs::atari::ale_seed(3), max_episode_frames: 108_000, ..Default::default() };
    let mut ale = Ale::load(&game.rom, settings).unwrap();
    ale.reset_game();
    let codes = ale.minimal_actions();
    let mut resize = AreaResize::new(SCREEN_H, SCREEN_W, 84, 84);
    let (mut a, mut b) = (vec![0u8; SCREEN_H * SCREEN_W], vec![0u8; SCREEN_H * SCREEN_W]);
    let mut expect = vec![0u8; 84 * 84];
    for (t, act) in actions(300, codes.len(), 11).into_iter().enumerate() {
        let mut r = 0;
        for i in 0..4 {
            r += ale.act(codes[act]);
            if i == 2 {
                ale.screen_grayscale(&mut a);
            }
        }
        ale.screen_grayscale(&mut b);
        let pooled: Vec<u8> = a.iter().zip(&b).map(|(x, y)| *x.max(y)).collect();
        resize.apply(&pooled, &mut expect);
        let s = env.step(act);
        assert_eq!(s.raw_reward, r as f32, "reward at step {t}");
        assert_eq!(latest(env.as_ref()), expect, "frame at step {t}");
    }
}

#[test]
fn frame_stack_shifts_and_pads_with_the_first_frame() {
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |_| {});
    let mut env = make_env(&id, &cfg).unwrap();
    env.reset(Some(1)).unwrap();
    let px = 84 * 84;
    let s0 = stack(env.as_ref());
    for k in 1..4 {
        assert_eq!(s0[..px], s0[k * px..(k + 1) * px], "reset pads with the first frame");
    }
    let mut history = vec![latest(env.as_ref())];
    for a in actions(10, env.num_actions(), 5) {
        env.step(a);
        history.push(latest(env.as_ref()));
        let s = stack(env.as_ref());
        let n = history.len();
        for k in 0..4 {
            // Slot 3 is the newest frame; slot k is 3 - k steps older, padded at the start.
            let want = &history[(n - 1).saturating_sub(3 - k)];
            assert_eq!(&s[k * px..(k + 1) * px], &want[..], "slot {k} after {} steps", n - 1);
        }
    }
}

#[test]
fn rewards_are_clipped_to_their_sign_but_returns_stay_raw() {
    let run = |clip: bool| {
        let (id, cfg) = env_cfg("ALE/SpaceInvaders-v5", |c| {
            c.clip_rewards = clip;
            c.repeat_action_probability = Some(0.0);
        });
        trajectory(&id, &cfg, 4, 3000)
    };
    let (clipped, raw) = (run(true), run(false));
    for ((_, c), (_, r)) in clipped.iter().zip(&raw) {
        assert_eq!(c.raw_reward, r.raw_reward);
        assert_eq!(c.reward, r.raw_reward.signum() * (r.raw_reward != 0.0) as i32 as f32);
        assert_eq!(r.reward, r.raw_reward);
        assert_eq!(c.episode, r.episode, "episode returns are unclipped");
    }
    // Space Invaders pays 5 to 30 points per alien: clipping must have had something to do.
    assert!(raw.iter().any(|(_, s)| s.raw_reward > 1.0), "no reward above 1 in 3000 random steps");
}

#[test]
fn episodic_life_ends_learning_episodes_but_returns_cover_the_whole_game() {
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |c| c.repeat_action_probability = Some(0.0));
    let mut env = make_env(&id, &cfg).unwrap();
    env.reset(Some(2)).unwrap();
    let (mut life_ends, mut raw_sum) = (0, 0.0);
    let mut lives = 5;
    for a in actions(20_000, env.num_actions(), 3) {
        let s = env.step(a);
        raw_sum += s.raw_reward as f64;
        if s.terminated && s.episode.is_none() {
            life_ends += 1;
            assert_eq!(s.lives, lives - 1, "a learning episode ends exactly when a life is lost");
        }
        lives = s.lives;
        if let Some(e) = s.episode {
            assert_eq!(life_ends, 4, "Breakout: 5 lives, the first 4 losses end learning episodes");
            assert!((e.ret - raw_sum).abs() < 1e-9, "whole-game return {} vs sum of raw rewards {raw_sum}", e.ret);
            return;
        }
        if s.terminated || s.truncated {
            env.reset(None).unwrap();
            assert_eq!(s.lives, lives);
        }
    }
    panic!("no game over in 20k random steps");
}

#[test]
fn truncation_at_the_frame_limit_is_not_termination() {
    let (id, cfg) = env_cfg("ALE/Pong-v5", |c| c.max_episode_frames = 400);
    let mut env = make_env(&id, &cfg).unwrap();
    env.reset(Some(1)).unwrap();
    for t in 0..200 {
        let s = env.step(0);
        if s.truncated {
            assert!(!s.terminated);
            assert!(s.episode.is_some());
            assert!((80..100).contains(&t), "400 frames at frameskip 4 is ~100 steps (minus no-ops), got {t}");
            return;
        }
    }
    panic!("never truncated");
}

#[test]
fn noop_and_fire_resets_play_the_expected_number_of_frames() {
    // FIRE + the next action, frameskip 4 each: exactly 8 frames; no-ops: 1..=30 more.
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |c| {
        c.noop_max = 0;
        c.fire_reset = true;
        c.repeat_action_probability = Some(0.0);
    });
    let EnvId::Atari { game, .. } = &id else { unreachable!() };
    let mut env = wndqn_envs::atari::AtariEnv::new(&game.rom, &cfg).unwrap();
    env.reset(Some(1)).unwrap();
    assert_eq!(env.episode_frames(), 8);
    let cfg30 = EnvConfig { noop_max: 30, ..cfg.clone() };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let mut env = wndqn_envs::atari::AtariEnv::new(&game.rom, &cfg30).unwrap();
        env.reset(Some(seed)).unwrap();
        let f = env.episode_frames();
        assert!((9..=38).contains(&f), "{f}");
        seen.insert(f);
    }
    assert!(seen.len() > 5, "no-op counts must vary with the seed: {seen:?}");
    let cfg_nofire = EnvConfig { fire_reset: false, ..cfg };
    let mut env = wndqn_envs::atari::AtariEnv::new(&game.rom, &cfg_nofire).unwrap();
    env.reset(Some(1)).unwrap();
    assert_eq!(env.episode_frames(), 0);
}

#[test]
fn minimal_and_full_action_sets() {
    let (id, cfg) = env_cfg("Pong", |_| {});
    assert_eq!(make_env(&id, &cfg).unwrap().num_actions(), 6);
    let (id, cfg) = env_cfg("Pong", |c| c.full_action_space = Some(true));
    assert_eq!(make_env(&id, &cfg).unwrap().num_actions(), 18);
}

#[test]
fn ids_resolve_case_insensitively_with_family_defaults() {
    for (id, skip, sticky) in [
        ("pong", 4, 0.25),
        ("ALE/Pong-v5", 4, 0.25),
        ("PONGNOFRAMESKIP-V4", 1, 0.0),
        ("ale/space_invaders-v5", 4, 0.25),
    ] {
        let (_, c) = env_cfg(id, |_| {});
        assert_eq!((c.frameskip, c.repeat_action_probability), (Some(skip), Some(sticky)), "{id}");
    }
}

#[test]
fn bad_ids_and_roms_give_clear_errors() {
    let e = EnvConfig { id: "Pnog".into(), ..Default::default() }.resolve(None).unwrap_err().to_string();
    assert!(e.contains("unknown environment id `Pnog`") && e.contains("Did you mean: Pong"), "{e}");
    let e = EnvConfig { id: "SpaceInvader-v5".into(), ..Default::default() }.resolve(None).unwrap_err().to_string();
    assert!(e.contains("SpaceInvaders"), "{e}");
    let dir = tempfile_dir();
    let e = EnvConfig { id: "Pong".into(), ..Default::default() }.resolve(Some(&dir)).unwrap_err().to_string();
    assert!(e.contains("no ROM for Pong") && e.contains("pong.bin") && e.contains("ale-py"), "{e}");
    std::fs::write(dir.join("pong.bin"), vec![0u8; 100]).unwrap();
    let (id, cfg) = EnvConfig { id: "Pong".into(), ..Default::default() }.resolve(Some(&dir)).unwrap();
    let e = make_env(&id, &cfg).err().expect("a 100-byte ROM must be refused").to_string();
    assert!(e.contains("not the size of an Atari 2600 cartridge"), "{e}");
    let e = EnvConfig { id: "Pong".into(), ..Default::default() }
        .resolve(Some(Path::new("/nonexistent/roms")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no ROM folder") || e.contains("no ROM for"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_rom_ale_does_not_know_is_an_error_within_seconds() {
    // Random bytes named pong.bin: ALE would run Pong's settings on garbage code (ALE 0.6 hung).
    let dir = tempfile_dir();
    let mut x = 0x1234_5678u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(dir.join("pong.bin"), bytes).unwrap();
    let t0 = std::time::Instant::now();
    let (id, cfg) = EnvConfig { id: "Pong".into(), ..Default::default() }.resolve(Some(&dir)).unwrap();
    let e = make_env(&id, &cfg).err().expect("a random-bytes ROM must be refused").to_string();
    assert!(t0.elapsed().as_secs() < 5, "took {:?}", t0.elapsed());
    assert!(e.contains("pong.bin") && e.contains("does not know this ROM") && e.contains("md5"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn game_modes_and_difficulties_come_from_ale_and_are_validated() {
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |c| c.mode = Some(999));
    let e = make_env(&id, &cfg).err().expect("mode 999 is not a Breakout mode").to_string();
    assert!(e.contains("env.mode = 999") && e.contains("available: 0, 4,"), "{e}");
    let (id, cfg) = env_cfg("ALE/Breakout-v5", |c| c.difficulty = Some(7));
    let e = make_env(&id, &cfg).err().expect("difficulty 7 is not a Breakout difficulty").to_string();
    assert!(e.contains("env.difficulty = 7") && e.contains("available: 0, 1"), "{e}");
    let EnvId::Atari { game, .. } = &id else { unreachable!() };
    let ale = Ale::load(&game.rom, AleSettings { mode: Some(4), difficulty: Some(1), ..Default::default() }).unwrap();
    assert_eq!(ale.mode_and_difficulty(), (4, 1));
    assert!(ale.modes().len() > 1 && ale.difficulties() == vec![0, 1], "{:?} {:?}", ale.modes(), ale.difficulties());
    // A mode changes the game: Breakout's mode 4 plays differently from mode 0.
    let play = |mode| {
        let (id, cfg) = env_cfg("ALE/Breakout-v5", |c| {
            c.mode = Some(mode);
            c.repeat_action_probability = Some(0.0);
        });
        trajectory(&id, &cfg, 1, 300)
    };
    assert_ne!(play(0), play(4));
}

#[test]
fn every_atari_57_game_including_surround_is_playable() {
    for g in ["Surround", "Pitfall", "Tennis", "YarsRevenge", "VideoPinball"] {
        let (id, cfg) = env_cfg(&format!("ALE/{g}-v5"), |_| {});
        let mut env = make_env(&id, &cfg).unwrap_or_else(|e| panic!("{g}: {e}"));
        env.reset(Some(1)).unwrap();
        for a in actions(50, env.num_actions(), 2) {
            env.step(a);
        }
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wndqn-roms-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
