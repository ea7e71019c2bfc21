//! Odd and hostile input against sweeps and run folders, through the real binary: values that
//! would reach the Slurm script, symbolic links planted in a sweep folder, a folder whose runs
//! belong to another plan, files that are not configs, grids too large to plan, and run folders
//! whose config was edited.

mod common;

use common::*;
use std::path::Path;

/// The grid of one tiny run.
const ONE_RUN: &str = "variants = [\"plain\"]\nseeds = 1\nsets = [\"run.total_env_steps=1500\", \"replay.warmup_steps=500\", \"log.eval_every=0\"]\n";

/// A CartPole spec of one tiny run, with `extra` appended.
fn spec(dir: &Path, name: &str, extra: &str) -> std::path::PathBuf {
    sweep_spec(dir, name, "cartpole.toml", &format!("games = [\"CartPole-v1\"]\n{ONE_RUN}{extra}"))
}

#[test]
fn slurm_values_that_are_not_one_slurm_word_are_refused_before_anything_is_written() {
    let d = tempfile::tempdir().unwrap();
    // Each value against a key in turn (the spec unit test crosses every key with every value).
    let nasty =
        ["local\ntouch PWNED", "a b", "$(touch PWNED)", "`touch PWNED`", "a;touch PWNED", "../x", "'q'", "\"q\""];
    let keys = ["partition", "account", "qos", "time", "mem"];
    for (i, v) in nasty.into_iter().enumerate() {
        let key = keys[i % keys.len()];
        {
            let s = spec(d.path(), "s.toml", &format!("[slurm]\n{key} = {}\n", toml::Value::String(v.into())));
            let dir = d.path().join("sw");
            let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--dry-run"]);
            let out = text(&o);
            assert_eq!(o.status.code(), Some(2), "{key} = {v:?}: {out}");
            assert!(out.contains(&format!("[slurm] {key}")) && !dir.exists(), "{key} = {v:?}: {out}");
        }
    }
    assert!(!d.path().join("PWNED").exists() && !root().join("PWNED").exists());
}

#[test]
fn links_planted_in_a_sweep_folder_are_refused_and_their_targets_untouched() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path(), "s.toml", "");
    let dir = d.path().join("sw");
    let victim = d.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    for planted in ["logs/CartPole__plain__s1.log", ".lock"] {
        std::fs::remove_dir_all(dir.join("runs")).unwrap();
        let link = dir.join(planted);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
        let out = text(&o);
        assert!(!o.status.success() && out.contains("is a symbolic link"), "{planted}: {out}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{planted}");
        std::fs::remove_file(&link).unwrap();
    }
}

#[test]
fn runs_of_another_config_are_never_counted_as_this_plans() {
    let d = tempfile::tempdir().unwrap();
    let a = spec(d.path(), "a.toml", "");
    let dir = d.path().join("sw");
    let o = run(&["sweep", "run", a.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(dir.join("sweep.toml")).unwrap();
    let b =
        std::fs::read_to_string(&a).unwrap().replace("\"log.eval_every=0\"", "\"log.eval_every=0\", \"agent.lr=1e-3\"");
    let b_path = d.path().join("b.toml");
    std::fs::write(&b_path, b).unwrap();
    let o = run(&["sweep", "run", b_path.to_str().unwrap(), "--dir", dir.to_str().unwrap()]);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("trained with another config") && out.contains("agent.lr"), "{out}");
}

#[test]
fn files_that_are_not_configs_and_grids_too_large_are_refused_at_once() {
    let t = std::time::Instant::now();
    let o = run(&["check", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not a regular file"), "{}", text(&o));
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.toml");
    std::fs::write(&big, "#".repeat(5 << 20)).unwrap();
    let o = run(&["check", big.to_str().unwrap()]);
    assert!(text(&o).contains("larger than 4 MiB"), "{}", text(&o));
    let s = spec(d.path(), "s.toml", "").to_str().unwrap().to_string();
    std::fs::write(&s, std::fs::read_to_string(&s).unwrap().replace("seeds = 1", "seeds = 1000000")).unwrap();
    let o = run(&["sweep", "run", &s, "--dir", d.path().join("sw").to_str().unwrap(), "--dry-run"]);
    assert!(text(&o).contains("= 1000000 runs, more than the 10000"), "{}", text(&o));
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
}

#[test]
fn an_edited_run_config_is_named_and_run_dir_continues_a_run_with_its_own_config() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("r");
    let sets = ["run.total_env_steps=1500", "replay.warmup_steps=500", "log.eval_every=0", "log.checkpoint_every=500"];
    let mut args = strs(&["train", "--config", "configs/cartpole.toml", "--quiet", "--run-dir", dir.to_str().unwrap()]);
    for s in sets {
        args.extend(strs(&["--set", s]));
    }
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    // Without --config, --run-dir on a started run takes that run's config (not the Pong preset):
    // with its summary gone, it resumes from its checkpoint and finishes.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let o = run(&["train", "--quiet", "--run-dir", dir.to_str().unwrap()]);
    assert!(o.status.success() && !text(&o).contains("env.id"), "{}", text(&o));
    assert_eq!(summary(&dir)["env_steps"].as_u64(), Some(1500), "{}", text(&o));
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap().replace("hidden = 128", "hidden = 64")).unwrap();
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "1"]);
    let out = text(&o);
    assert!(!o.status.success() && out.contains("agent.hidden") && !out.contains("panicked"), "{out}");
}

/// Names a user, a script or an attacker might hand over: spaces, quotes, command substitution,
/// backticks, `;`, a newline, `../` and a very long one.
fn odd_names() -> Vec<String> {
    let mut v: Vec<String> =
        ["a b", "it's", "q\"q", "$(touch PWNED)", "`touch PWNED`", "x;touch PWNED", "nl\nx", "../up"]
            .into_iter()
            .map(String::from)
            .collect();
    v.push("L".repeat(200));
    v
}

#[test]
fn odd_names_for_folders_links_and_specs_are_refused_or_harmless() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let s = spec(&home, "s.toml", "");
    // A sweep folder of every name: the plan and the Slurm job script, never a command run.
    for n in odd_names() {
        let dir = home.join(&n);
        for exec in ["local", "slurm"] {
            let o = run(&[
                "sweep",
                "run",
                s.to_str().unwrap(),
                "--dir",
                dir.to_str().unwrap(),
                "--dry-run",
                "--executor",
                exec,
            ]);
            let out = text(&o);
            assert!(matches!(o.status.code(), Some(0) | Some(2)), "{n:?} {exec}: {out}");
            assert!(!out.contains("panicked") && !out.contains("internal error"), "{n:?} {exec}: {out}");
        }
    }
    // One real sweep, then links to victims of every name, and specs of every name whose runs
    // would differ from the ones done.
    let dir = home.join("sw");
    let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(dir.join("runs")).unwrap();
    for n in odd_names() {
        let victim = home.join(format!("victim {n}").replace('/', "_"));
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.join("logs/CartPole__plain__s1.log");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
        let out = text(&o);
        assert!(!o.status.success() && out.contains("is a symbolic link"), "{n:?}: {out}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{n:?}");
        std::fs::remove_file(&link).unwrap();
    }
    let o = run(&["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(dir.join("sweep.toml")).unwrap();
    for n in odd_names() {
        let other = std::fs::read_to_string(&s).unwrap().replace(
            "\"log.eval_every=0\"",
            &format!("\"log.eval_every=0\", {}", toml::Value::String(format!("env.id={n}"))),
        );
        let p = home.join(format!("b {n}.toml").replace('/', "_"));
        std::fs::write(&p, other).unwrap();
        let o = run(&["sweep", "run", p.to_str().unwrap(), "--dir", dir.to_str().unwrap()]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{n:?}: {out}");
        assert!(!out.contains("panicked") && !out.contains("internal error"), "{n:?}: {out}");
    }
    for place in [home.as_path(), d.path(), root().as_path()] {
        assert!(!place.join("PWNED").exists(), "a name ran a command in {}", place.display());
    }
}

#[test]
fn a_minatar_sweep_continues_over_its_own_resolved_run_configs() {
    // A run folder keeps its config as training resolved the id (MinAtar sets
    // env.full_action_space); the sweep run again must take its runs as its own.
    let d = tempfile::tempdir().unwrap();
    let p = sweep_spec(d.path(), "m.toml", "minatar.toml", &format!("games = [\"MinAtar/Breakout-v0\"]\n{ONE_RUN}"));
    let dir = d.path().join("sw");
    let args = ["sweep", "run", p.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "1"];
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let saved = std::fs::read_to_string(dir.join("runs/MinAtar-Breakout__plain__s1/config.toml")).unwrap();
    assert!(saved.contains("full_action_space = true"), "{saved}");
    let o = run(&args);
    let out = text(&o);
    assert!(o.status.success() && out.contains("1 done"), "{out}");
}
