//! `learner.precision`: bf16 only where the CPU computes it natively (the check itself is
//! tested with WNDQN_CPU_BF16, which overrides what the CPU says), TF32 only on CUDA, and a run
//! that changes precision on resume, its checkpoints f32 whatever it trained in.

mod common;

use std::path::Path;

use common::*;

/// The dtypes in a safetensors file's header.
fn dtypes(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .collect()
}

fn refused(o: &std::process::Output, want: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(want) && !t.contains("panicked"), "expected `{want}` in: {t}");
}

#[test]
fn bf16_needs_native_bf16_and_tf32_a_gpu() {
    let runs = tempfile::tempdir().unwrap();
    let bf16 = train_args("configs/cartpole.toml", runs.path(), &["learner.precision=\"bf16\""]);
    let o = bin().args(&bf16).env("WNDQN_CPU_BF16", "0").output().unwrap();
    refused(&o, "needs a CPU that computes bf16 natively (AVX512_BF16 or AMX-BF16)");
    let o = bin()
        .args(["bench", "learner", "--precision", "bf16", "--seconds", "1"])
        .env("WNDQN_CPU_BF16", "0")
        .output()
        .unwrap();
    refused(&o, "needs a CPU that computes bf16 natively");
    if !Path::new("/dev/nvidia0").exists() {
        let o = run(&train_args("configs/cartpole.toml", runs.path(), &["learner.precision=\"tf32\""]));
        refused(&o, "is a CUDA precision");
    }
    let o = run(&train_args("configs/cartpole.toml", runs.path(), &["learner.precision=\"fp16\""]));
    refused(&o, "fp16");
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0);
}

#[test]
fn a_run_changes_precision_on_resume_and_checkpoints_stay_f32() {
    let runs = tempfile::tempdir().unwrap();
    // Native bf16 asserted, so that the test runs on any CPU (emulated, it is only slower).
    let with = |args: Vec<String>| bin().args(args).env("WNDQN_CPU_BF16", "1").output().unwrap();
    let o = with(train_args("configs/cartpole.toml", runs.path(), &["run.total_env_steps=3000", "log.eval_every=0"]));
    assert!(o.status.success(), "{}", text(&o));
    let dir = only_run_dir(runs.path());
    for (precision, total) in [("bf16", 5000), ("fp32", 7000)] {
        let sets = [format!("learner.precision=\"{precision}\""), format!("run.total_env_steps={total}")];
        let o = with(resume_args(&dir, &[&sets[0], &sets[1]]));
        assert!(o.status.success(), "{precision}: {}", text(&o));
        let s = summary(&dir);
        assert_eq!((s["env_steps"].as_u64(), s["complete"].as_bool()), (Some(total), Some(true)), "{s}");
        let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("precision = \"{precision}\"")), "{cfg}");
        let newest = std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten().map(|e| e.path()).max().unwrap();
        for f in ["online.safetensors", "target.safetensors", "optimizer.safetensors"] {
            let d = dtypes(&newest.join(f));
            assert!(d.iter().all(|t| t == "F32" || t == "I64"), "{precision} {f}: {d:?}");
        }
    }
    let o = run(&["eval", dir.to_str().unwrap(), "--episodes", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
}
