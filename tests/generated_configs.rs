//! Generated configs: 1,040 configs mutated from every preset in `configs/` (wrong types,
//! non-finite and extreme numbers, empty and huge strings, unknown keys; one to three mutations
//! each, from a fixed seed), all checked by one `wndqn check` process (read, validated, the
//! environment and the networks built, the memory estimated), each accepted or refused with an
//! error that names a mutated key, never a panic. Then 50 of them, drawn with a fixed seed
//! (accepted ones included), run through `wndqn train`: a run either stops cleanly on SIGINT
//! after a few seconds of training, or fails clearly within seconds. And every key of the
//! MinAtar preset at each extreme of its kind: refused by `check` naming the key, or trained
//! past its first diagnostics and checkpoint.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use toml::Value;

const PER_PRESET: usize = 260;

/// Keys that a resolved config leaves out when they are unset.
const OPTIONAL: &[&str] = &[
    "run.stop_at_return",
    "env.frameskip",
    "env.repeat_action_probability",
    "env.full_action_space",
    "env.mode",
    "env.difficulty",
];

fn presets() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("configs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    v
}

/// Every key of the resolved config, as `wndqn check --print` writes it, plus the optional ones.
fn all_keys() -> Vec<String> {
    let o = run(&["check", "--json", "--print", "configs/cartpole.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let resolved: toml::Table = toml::from_str(v["resolved"].as_str().unwrap()).unwrap();
    let mut keys = Vec::new();
    for (section, t) in &resolved {
        for k in t.as_table().unwrap().keys() {
            keys.push(format!("{section}.{k}"));
        }
    }
    keys.extend(OPTIONAL.iter().map(|s| s.to_string()));
    keys.sort();
    keys.dedup();
    keys
}

/// A value of the wrong kind, a non-finite or extreme number, or an odd string.
fn odd_value(rng: &mut StdRng) -> Value {
    let choices: Vec<Value> = vec![
        Value::String("x".into()),
        Value::Boolean(true),
        Value::Array(vec![Value::Integer(1), Value::Integer(2)]),
        Value::Table(toml::Table::from_iter([("a".to_string(), Value::Integer(1))])),
        Value::Float(f64::INFINITY),
        Value::Float(f64::NEG_INFINITY),
        Value::Float(f64::NAN),
        Value::Integer(0),
        Value::Integer(-1),
        Value::Integer(1),
        Value::Integer(1 << 31),
        Value::Integer(1 << 53),
        Value::Integer(i64::MAX),
        Value::Integer(i64::MIN),
        Value::Float(1e300),
        Value::Float(-1e300),
        Value::Float(1e-300),
        Value::Float(0.5),
        Value::Float(-0.5),
        Value::String(String::new()),
        Value::String("a".repeat(1 << 20)),
        Value::String("ñ/../../etc/passwd".into()),
    ];
    choices[rng.gen_range(0..choices.len())].clone()
}

/// A value of the same kind as `v`, changed as a user might change it (scaled, shifted, flipped,
/// another name), so that many mutated configs are still valid.
fn plausible_value(v: &Value, rng: &mut StdRng) -> Value {
    match v {
        Value::Integer(i) => Value::Integer(match rng.gen_range(0..4) {
            0 => i.saturating_mul(2),
            1 => i / 2,
            2 => i.saturating_add(1),
            _ => (i - 1).max(0),
        }),
        Value::Float(x) => Value::Float(x * [0.5, 2.0, 0.1, 10.0][rng.gen_range(0..4)]),
        Value::Boolean(b) => Value::Boolean(!b),
        Value::String(_) => {
            let names = [
                "plain",
                "weight_norm",
                "weight_norm_noinit",
                "weight_norm_mobn",
                "adam",
                "adamax",
                "rmsprop",
                "huber",
                "mse",
                "Pong",
                "Breakout",
                "ALE/Seaquest-v5",
                "CartPole-v1",
                "nature",
                "mlp",
            ];
            Value::String(names[rng.gen_range(0..names.len())].to_string())
        }
        other => other.clone(),
    }
}

/// One mutated config: the table and the keys that were mutated (`section.key`).
fn mutate(base: &toml::Table, keys: &[String], rng: &mut StdRng) -> (toml::Table, Vec<String>) {
    let mut t = base.clone();
    let mut touched = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let key = if rng.gen_bool(0.1) {
            // An unknown key, in a known section or in a new one.
            let section = ["run", "env", "agent", "replay", "actors", "learner", "log", "zzz"][rng.gen_range(0..8)];
            format!("{section}.unknown_{}", rng.gen_range(0..1000))
        } else {
            keys[rng.gen_range(0..keys.len())].clone()
        };
        let (section, leaf) = key.split_once('.').unwrap();
        let sec = t.entry(section.to_string()).or_insert_with(|| Value::Table(toml::Table::new()));
        let sec = sec.as_table_mut().unwrap();
        let value = match sec.get(leaf) {
            Some(old) if rng.gen_bool(0.5) => plausible_value(old, rng),
            _ => odd_value(rng),
        };
        sec.insert(leaf.to_string(), value);
        touched.push(key);
    }
    (t, touched)
}

/// Whether an error message names one of `keys` (dotted, or the key as the file's line shows it).
fn names_a_key(msg: &str, keys: &[String]) -> bool {
    keys.iter().any(|k| {
        let (section, leaf) = k.split_once('.').unwrap();
        msg.contains(k.as_str())
            || msg.contains(&format!("`{leaf} ="))
            || msg.contains(&format!("`{leaf}`"))
            || (msg.contains(&format!("`{section}`")) && msg.contains("unknown field"))
            || msg.contains(&format!("`[{section}.{leaf}]"))
    })
}

/// At most 3,000 characters of `s`, for failure messages.
fn clip(s: &str) -> String {
    s.chars().take(3000).collect()
}

/// `wndqn train --quiet --config FILE --runs-dir RUNS_DIR`, its output in `log` and `log`.err:
/// files, since a test that reads pipes only at the end would block a chatty child.
fn spawn_train(file: &Path, runs_dir: &Path, log: &Path) -> std::process::Child {
    bin()
        .args(["train", "--quiet", "--config"])
        .arg(file)
        .arg("--runs-dir")
        .arg(runs_dir)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

/// What a child of [`spawn_train`] wrote, clipped.
fn logged(log: &Path) -> String {
    clip(&format!(
        "{}{}",
        std::fs::read_to_string(log).unwrap_or_default(),
        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
    ))
}

fn no_crash(t: &str) {
    for bad in ["panicked", "internal error", "backtrace", "memory allocation", "Aborted", "terminate called"] {
        assert!(!t.contains(bad), "`{bad}` in:\n{}", clip(t));
    }
}

struct Generated {
    file: PathBuf,
    keys: Vec<String>,
    accepted: bool,
}

fn generate(dir: &Path) -> Vec<Generated> {
    let keys = all_keys();
    let mut rng = StdRng::seed_from_u64(1_000);
    let mut out = Vec::new();
    for preset in presets() {
        let base: toml::Table = toml::from_str(&std::fs::read_to_string(&preset).unwrap()).unwrap();
        for i in 0..PER_PRESET {
            let (t, touched) = mutate(&base, &keys, &mut rng);
            let file = dir.join(format!("{}-{i:03}.toml", preset.file_stem().unwrap().to_string_lossy()));
            std::fs::write(&file, toml::to_string(&t).unwrap()).unwrap();
            out.push(Generated { file, keys: touched, accepted: false });
        }
    }
    out
}

#[test]
fn a_thousand_generated_configs_are_accepted_or_refused_naming_the_key_and_fifty_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = generate(dir.path());
    assert!(configs.len() >= 1000);
    // One process checks them all (in process: parse, validate, build, estimate).
    let mut args = strs(&["check", "--json"]);
    args.extend(configs.iter().map(|g| g.file.display().to_string()));
    let t0 = Instant::now();
    let o = run(&args);
    let took = t0.elapsed();
    no_crash(&text(&o));
    assert!(matches!(o.status.code(), Some(0 | 2)), "{}", clip(&text(&o)));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), configs.len(), "one answer per config");
    let mut unnamed = Vec::new();
    for (g, r) in configs.iter_mut().zip(&lines) {
        assert_eq!(r["config"].as_str().unwrap(), g.file.to_str().unwrap());
        g.accepted = r["ok"] == true;
        if !g.accepted {
            let e = r["error"].as_str().unwrap();
            if !names_a_key(e, &g.keys) {
                unnamed.push(format!("{:?}: {}", g.keys, &e[..e.len().min(400)]));
            }
        }
    }
    assert!(unnamed.is_empty(), "{} errors name none of the mutated keys:\n{}", unnamed.len(), unnamed.join("\n"));
    let accepted = configs.iter().filter(|g| g.accepted).count();
    eprintln!(
        "{} configs checked in {took:?}: {accepted} accepted, {} refused",
        configs.len(),
        configs.len() - accepted
    );
    assert!(accepted >= 50 && accepted < configs.len() - 50, "{accepted} accepted: the generator lost its spread");

    // 50 through the binary: 25 accepted, 25 refused, drawn with a fixed seed.
    let mut rng = StdRng::seed_from_u64(50);
    let mut pick: Vec<&Generated> = Vec::new();
    for want in [true, false] {
        let mut pool: Vec<&Generated> = configs.iter().filter(|g| g.accepted == want).collect();
        pool.shuffle(&mut rng);
        pick.extend(pool.into_iter().take(25));
    }
    let runs = tempfile::tempdir().unwrap();
    let trial = |k: usize| {
        let g = pick[k];
        let runs_dir = runs.path().join(format!("r{k}"));
        std::fs::create_dir_all(&runs_dir).unwrap();
        let log = runs.path().join(format!("r{k}.log"));
        let mut child = spawn_train(&g.file, &runs_dir, &log);
        let t0 = Instant::now();
        let mut signalled = None;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            // An accepted config runs until it is interrupted; a refused one is never signalled,
            // so its exit code (2) can only come from the refusal, whatever the machine's load.
            if !g.accepted && t0.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{} {:?} (refused by check) did not fail within 30 s", g.file.display(), g.keys);
            }
            if g.accepted && signalled.is_none() && t0.elapsed() > Duration::from_secs(3) {
                // SAFETY: kill(2) on a process this test started; no memory is touched.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                signalled = Some(Instant::now());
            }
            if let Some(at) = signalled {
                if at.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let cfg = std::fs::read_to_string(&g.file).unwrap();
                    panic!("{} {:?} did not stop within 20 s of SIGINT:\n{}", g.file.display(), g.keys, clip(&cfg));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let t = logged(&log);
        no_crash(&t);
        if g.accepted {
            assert_eq!(
                status.code(),
                Some(0),
                "{} {:?} (accepted by check) did not run and stop cleanly:\n{t}",
                g.file.display(),
                g.keys
            );
            let run = only_run_dir(&runs_dir);
            assert!(run.join("summary.json").is_file() && run.join("checkpoints").is_dir(), "{t}");
        } else {
            assert_eq!(status.code(), Some(2), "{} {:?} (refused by check) ran:\n{t}", g.file.display(), g.keys);
            assert!(names_a_key(&t, &g.keys), "{:?}: {t}", g.keys);
            assert_eq!(std::fs::read_dir(&runs_dir).unwrap().count(), 0, "a refused run left files");
        }
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| (0..50).step_by(2).for_each(trial));
        let b = s.spawn(|| (1..50).step_by(2).for_each(trial));
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// Every key of the MinAtar preset, dotted to its leaf (`agent.optimizer.eps`), with its value.
fn minatar_leaves() -> Vec<(String, Value)> {
    let o = run(&["check", "--json", "--print", "configs/minatar.toml"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Table(t) => t.iter().for_each(|(k, v)| walk(&format!("{prefix}{k}."), v, out)),
            other => out.push((prefix.trim_end_matches('.').to_string(), other.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", &Value::Table(toml::from_str(v["resolved"].as_str().unwrap()).unwrap()), &mut out);
    out
}

/// Every key of the MinAtar preset (`log.*` and the optimizer's included), one at a time, at each
/// extreme of its kind (integers 0, -1 and 2^53; floats 0, -1 and 1e300; booleans flipped):
/// `check` accepts or refuses each, naming the key; and each one it accepts then trains past its
/// first updates, diagnostics (every 20 updates here), evaluation and checkpoint, and stops
/// cleanly on SIGINT. What `check` accepts, `train` runs.
#[test]
fn every_key_at_its_extremes_is_refused_by_check_or_trains() {
    let dir = tempfile::tempdir().unwrap();
    let base =
        toml::from_str::<toml::Table>(&std::fs::read_to_string(root().join("configs/minatar.toml")).unwrap()).unwrap();
    let early = [
        ("replay", "warmup_steps", 500),
        ("log", "diagnostics_every", 20),
        ("log", "checkpoint_every", 50),
        ("log", "eval_every", 1500),
    ];
    let mut cases = Vec::new();
    for (key, v) in minatar_leaves() {
        let values: Vec<Value> = match v {
            Value::Integer(_) => vec![Value::Integer(0), Value::Integer(-1), Value::Integer(1 << 53)],
            Value::Float(_) => vec![Value::Float(0.0), Value::Float(-1.0), Value::Float(1e300)],
            Value::Boolean(b) => vec![Value::Boolean(!b)],
            _ => continue,
        };
        for x in values {
            let mut t = base.clone();
            for (s, k, n) in early {
                t.entry(s)
                    .or_insert_with(|| Value::Table(Default::default()))
                    .as_table_mut()
                    .unwrap()
                    .insert(k.into(), Value::Integer(n));
            }
            let path: Vec<&str> = key.split('.').collect();
            let mut at = &mut t;
            for p in &path[..path.len() - 1] {
                let e = at.entry(p.to_string()).or_insert_with(|| Value::Table(Default::default()));
                at = e.as_table_mut().unwrap();
            }
            at.insert(path[path.len() - 1].to_string(), x.clone());
            let file = dir.path().join(format!("k{:03}.toml", cases.len()));
            std::fs::write(&file, toml::to_string(&t).unwrap()).unwrap();
            cases.push((file, key.clone(), x));
        }
    }
    let mut args = strs(&["check", "--json"]);
    args.extend(cases.iter().map(|c| c.0.display().to_string()));
    let o = run(&args);
    no_crash(&text(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len());
    let mut accepted = Vec::new();
    for ((file, key, x), r) in cases.iter().zip(&lines) {
        if r["ok"] == true {
            accepted.push((file.clone(), key.clone(), x.clone()));
        } else {
            let e = r["error"].as_str().unwrap();
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                e.contains(key.as_str()) || e.contains(&format!("`{leaf}")),
                "{key} = {x}: the error names another key: {e}"
            );
        }
    }
    let keys: std::collections::BTreeSet<&String> = cases.iter().map(|c| &c.1).collect();
    let runs = tempfile::tempdir().unwrap();
    let trained = std::sync::atomic::AtomicUsize::new(0);
    let trial = |k: usize| {
        let (file, key, x) = &accepted[k];
        let runs_dir = runs.path().join(format!("r{k}"));
        let log = runs.path().join(format!("r{k}.log"));
        let mut child = spawn_train(file, &runs_dir, &log);
        let t0 = Instant::now();
        let mut signalled = false;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if !signalled && t0.elapsed() > Duration::from_secs(7) {
                // SAFETY: kill(2) on a process this test started.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                signalled = true;
            }
            if t0.elapsed() > Duration::from_secs(40) {
                let _ = child.kill();
                panic!("{key} = {x}: no clean stop within 40 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let t = logged(&log);
        no_crash(&t);
        assert_eq!(status.code(), Some(0), "{key} = {x} (accepted by check) did not run and stop cleanly:\n{t}");
        trained.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| (0..accepted.len()).step_by(2).for_each(trial));
        let b = s.spawn(|| (1..accepted.len()).step_by(2).for_each(trial));
        a.join().unwrap();
        b.join().unwrap();
    });
    eprintln!(
        "{} keys, {} configs at their extremes: {} refused naming the key, {} accepted, all {} trained and stopped cleanly",
        keys.len(),
        cases.len(),
        cases.len() - accepted.len(),
        accepted.len(),
        trained.into_inner()
    );
}
