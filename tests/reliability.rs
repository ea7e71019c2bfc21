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

/// A copy of the committed CartPole study's archive (70 runs as records, no training needed).
fn cartpole_archive(d: &Path) -> std::path::PathBuf {
    let src = root().join("docs/results/cartpole-variants/sweep");
    let dst = d.join("archive");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["sweep.toml", "runs.jsonl"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Every file of a folder with its bytes.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// `sweep report` writes only its own files: a link planted where one of them goes is refused
/// before anything is written (its target untouched), and a report refused late (a tag no run
/// has) leaves the report already there as it was.
#[test]
fn a_report_writes_only_its_own_files_and_a_refused_one_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let arch = cartpole_archive(d.path());
    let out = d.path().join("out");
    let report = |extra: &[&str]| {
        let mut a = vec!["sweep", "report", arch.to_str().unwrap(), "--out", out.to_str().unwrap(), "--reps", "300"];
        a.extend_from_slice(extra);
        run(&a)
    };
    // A link planted in the output folder.
    std::fs::create_dir_all(&out).unwrap();
    let victim = d.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("scores.csv")).unwrap();
    let o = report(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a symbolic link"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["scores.csv"], "nothing written beside the link");
    let siblings: Vec<String> =
        std::fs::read_dir(d.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(siblings.iter().all(|n| !n.contains(".report-")), "the staging folder is gone: {siblings:?}");
    std::fs::remove_file(out.join("scores.csv")).unwrap();
    // A good report, then a refused one into the same folder.
    let o = report(&["--tag", "diag/feature_rank"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = contents(&out);
    assert!(before.contains_key("report.md") && before.contains_key("tags.csv"));
    let o = report(&["--tag", "diag/feature_rnk"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("Did you mean: diag/feature_rank"), "{}", text(&o));
    assert_eq!(contents(&out), before, "a refused report changed the report already there");
}

/// Tags with a comma, a quote or a line break stay one CSV field each, and a 300-character tag
/// gets a figure whose file name the file system takes.
#[test]
fn odd_tags_are_quoted_and_long_ones_get_short_file_names() {
    let d = tempfile::tempdir().unwrap();
    let arch = cartpole_archive(d.path());
    let long = format!("diag/{}", "x".repeat(300));
    let odd = "diag/a,b \"c\"\nd";
    let lines: Vec<String> = std::fs::read_to_string(arch.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            let bins = r["tags"]["diag/feature_rank"].clone();
            r["tags"][&long] = bins.clone();
            r["tags"][odd] = bins;
            r.to_string()
        })
        .collect();
    std::fs::write(arch.join("runs.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = d.path().join("out");
    let o = run(&[
        "sweep",
        "report",
        arch.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--reps",
        "300",
        "--tag",
        &long,
        "--tag",
        odd,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", "import csv, sys\nrows = list(csv.reader(open(sys.argv[1], newline='')))\nprint(len(rows[0]), {len(r) for r in rows}, sorted({r[0] for r in rows[1:]}))"])
        .arg(out.join("tags.csv"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(said.starts_with("7 {7}"), "every row has the header's 7 fields: {said}");
    assert!(said.contains("a,b \"c\"\\nd") && said.contains(&"x".repeat(300)), "{said}");
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        assert!(e.file_name().len() <= 255, "{:?}", e.file_name());
    }
}

/// Keys that cannot work are refused by `check` as by `train`: a diagnostics batch the
/// feature rank cannot take, none at all, a CUDA precision on the CPU; Atari's frame settings on
/// MinAtar and CartPole; an integer beyond TOML's; and the memory estimate counts the
/// diagnostics and the process itself.
#[test]
fn check_refuses_what_train_cannot_run_and_counts_all_the_memory() {
    let refused = |args: &[&str], want: &str| {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want) && !text(&o).contains("panicked"), "{args:?}: expected `{want}`: {}", text(&o));
    };
    for set in ["log.diagnostics_batch=1000000", "log.diagnostics_batch=0"] {
        refused(&["check", "configs/minatar.toml", "--set", set], "log.diagnostics_batch");
    }
    refused(&["--device", "cpu", "check", "configs/pong.toml", "--set", "learner.precision=tf32"], "CUDA precision");
    for set in [
        "env.frameskip=4",
        "env.mode=1",
        "env.difficulty=1",
        "env.frame_stack=2",
        "env.noop_max=0",
        "env.frame_size=64",
        "env.fire_reset=false",
        "env.episodic_life=false",
        "env.max_pool=false",
    ] {
        refused(
            &["check", "configs/minatar.toml", "--set", set],
            "is an Atari setting, with no effect on MinAtar/Breakout-v0",
        );
    }
    refused(&["check", "configs/cartpole.toml", "--set", "env.frame_stack=2"], "is an Atari setting");
    refused(
        &["check", "configs/cartpole.toml", "--set", "run.seed=99999999999999999999"],
        "beyond the integers a config holds",
    );
    let gb = |sets: &[&str]| {
        let mut a = vec!["check", "--json", "configs/minatar.toml"];
        for s in sets {
            a.extend(["--set", s]);
        }
        let o = run(&a);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["memory_gb"].as_f64().unwrap()
    };
    // A MinAtar run holds about 0.43 GB resident.
    assert!(gb(&[]) >= 0.4, "{}", gb(&[]));
    assert!(gb(&["log.diagnostics_batch=4096"]) > gb(&["log.diagnostics_batch=16"]));
}

/// A run folder whose path is too long for its checkpoints is refused before anything is
/// written; `train --run-dir` on a finished run with a larger budget continues it, as
/// `--resume` does; a run that failed says why in its summary.
#[test]
fn a_long_runs_dir_is_refused_at_once_and_run_dir_extends_like_resume() {
    let d = tempfile::tempdir().unwrap();
    let long = d.path().join(vec!["d".repeat(200); 20].join("/"));
    let o = run(&train_args("configs/cartpole.toml", &long, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("choose a shorter --runs-dir"), "{}", text(&o));
    assert!(!d.path().join("d".repeat(200)).exists(), "nothing was created");
    let run_dir = d.path().join("r");
    let at = |steps: &str| {
        let o = run(&[
            "train",
            "--config",
            "configs/cartpole.toml",
            "--quiet",
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--set",
            &format!("run.total_env_steps={steps}"),
            "--set",
            "replay.warmup_steps=500",
            "--set",
            "log.eval_every=0",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        summary(&run_dir)
    };
    assert_eq!(at("1500")["env_steps"], 1500);
    assert_eq!(at("2500")["env_steps"], 2500, "a larger budget continues the run");
    assert_eq!(at("2500")["env_steps"], 2500);
}

/// Memory that `--jobs` runs need is refused before the sweep folder is written, with and
/// without --dry-run, naming how many fit; an archive killed mid-way (its temporary file or an
/// older version's folder left behind) is cleaned up by the next one.
#[test]
fn sweep_memory_is_refused_before_writing_and_archives_clean_up_after_a_kill() {
    let d = tempfile::tempdir().unwrap();
    let s = spec(d.path(), "s.toml", "");
    let dir = d.path().join("sw");
    for dry in [true, false] {
        let mut a = vec!["sweep", "run", s.to_str().unwrap(), "--dir", dir.to_str().unwrap(), "--jobs", "256"];
        if dry {
            a.push("--dry-run");
        }
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("--jobs 256") && text(&o).contains("such runs fit at once"), "{}", text(&o));
        assert!(!dir.exists(), "a refused sweep wrote its folder");
    }
    let arch = cartpole_archive(d.path());
    let (tmp, old) =
        (arch.join(".runs.jsonl.tmp-999999999"), arch.join("runs/.CartPole__plain__s1.archiving-999999999"));
    std::fs::write(&tmp, "half").unwrap();
    std::fs::create_dir_all(&old).unwrap();
    let o = run(&["sweep", "archive", arch.to_str().unwrap(), "--out", d.path().join("again").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["sweep", "archive", d.path().join("again").to_str().unwrap(), "--out", arch.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!tmp.exists() && !old.exists(), "a dead archive's leftovers stay");
}
