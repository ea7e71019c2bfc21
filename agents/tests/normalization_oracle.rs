//! Every normalization against PyTorch's own modules (tests/oracles/norm_reference.py): K full
//! DQN updates (double DQN, Huber, clipping, Adam or RMSProp, hard target copies) on the MLP,
//! MinAtar and Nature networks give the same losses, the same first gradients, the same spectral vectors `u`, `v`
//! after every update, the same variables at the end (online and target), and the projected
//! variant keeps every `||v||` at its initial value.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use wndqn_agents::dqn::{Dqn, DqnConfig, Loss, TargetUpdate};
use wndqn_agents::normalization::{LayerNormAxes, NormOptions, SpectralLayers, Variant};
use wndqn_agents::optim::{Adam, OptimizerKind, RmsProp};
use wndqn_agents::qnet::{Arch, QNetConfig};
use wndqn_agents::replay::TensorBatch;

const UPDATES: usize = 12;
const BATCH: i64 = 16;
const SYNC: u64 = 5;

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

fn vars(vs: &tch::nn::VarStore) -> BTreeMap<String, Vec<f32>> {
    vs.variables().into_iter().map(|(n, t)| (n, floats(&t))).collect()
}

struct Case {
    arch: Arch,
    variant: Variant,
    norm: NormOptions,
    optimizer: OptimizerKind,
    /// Double DQN's targets (its argmax is a step function of the weights: see [`nature`]).
    double: bool,
    /// How many updates, and a hard target copy after every `sync`.
    updates: usize,
    sync: u64,
}

/// RMSProp without centering or momentum, eps 0.01: a step proportional to its gradient for a
/// weight with a tiny gradient, and no difference of two running averages in its denominator.
/// Adam's first steps are `lr * sign(g)` whatever the gradient's size, so f32 rounding that flips
/// the sign of a near-zero gradient of the Nature network's 1.6M fc1 weights moves them `2 lr`
/// apart, and centered RMSProp divides by `E[g^2] - E[g]^2`, where rounding cancels: no tolerance
/// on the weights could then tell rounding from a real difference.
const RMSPROP: OptimizerKind =
    OptimizerKind::RmsProp(RmsProp { alpha: 0.95, eps: 0.01, centered: false, momentum: 0.0 });

fn optimizer_json(o: &OptimizerKind) -> Value {
    match o {
        OptimizerKind::RmsProp(r) => {
            json!({"name": "rmsprop", "alpha": r.alpha, "eps": r.eps, "centered": r.centered, "momentum": r.momentum})
        }
        _ => json!({"name": "adam"}),
    }
}

fn batches(case: &Case, shape: &[i64], actions: i64) -> Vec<TensorBatch> {
    let dims: Vec<i64> = std::iter::once(BATCH).chain(shape.iter().copied()).collect();
    let obs = || match case.arch {
        // MinAtar grids: 0 or 255 per cell, as the games make them.
        Arch::Minatar => (Tensor::rand(dims.as_slice(), (Kind::Float, Device::Cpu)).lt(0.3).to_kind(Kind::Uint8)) * 255,
        // Atari frames: any byte.
        Arch::Nature => Tensor::randint(256, dims.as_slice(), (Kind::Uint8, Device::Cpu)),
        _ => Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)),
    };
    (0..case.updates)
        .map(|_| TensorBatch {
            obs: obs(),
            next_obs: obs(),
            actions: Tensor::randint(actions, [BATCH], (Kind::Int64, Device::Cpu)),
            rewards: Tensor::randn([BATCH], (Kind::Float, Device::Cpu)),
            terminated: Tensor::rand([BATCH], (Kind::Float, Device::Cpu)).lt(0.2).to_kind(Kind::Float),
        })
        .collect()
}

fn batch_json(b: &TensorBatch) -> Value {
    json!({
        "obs": floats(&b.obs), "next_obs": floats(&b.next_obs),
        "actions": Vec::<i64>::try_from(&b.actions).unwrap(),
        "rewards": floats(&b.rewards), "terminated": floats(&b.terminated),
    })
}

fn reference(problem: &Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/oracles/norm_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the project venv (make setup) provides torch");
    child.stdin.take().unwrap().write_all(problem.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ours` and `theirs` agree to `tol` relative to the larger of 1 and `theirs`' largest entry.
fn close(what: &str, ours: &[f32], theirs: &Value, tol: f64) {
    let theirs: Vec<f64> =
        theirs.as_array().unwrap_or_else(|| panic!("{what}: missing")).iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(ours.len(), theirs.len(), "{what}: sizes");
    let scale = theirs.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let err = ours.iter().zip(&theirs).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(err <= tol * scale, "{what}: max difference {err:e} (scale {scale})");
}

fn run(case: &Case) {
    // One intra-op thread, as the reference: a matrix product split over threads sums in an
    // order that depends on the threads it gets, and 12 Adam updates amplify that.
    tch::set_num_threads(1);
    tch::manual_seed(7);
    let (shape, actions, u8) = match case.arch {
        Arch::Minatar => (vec![4i64, 10, 10], 6i64, true),
        Arch::Nature => (vec![4i64, 84, 84], 6, true),
        _ => (vec![4i64], 3, false),
    };
    let net = QNetConfig {
        arch: case.arch,
        variant: case.variant,
        dueling: false,
        obs_shape: shape.clone(),
        num_actions: actions,
        hidden: 32,
        norm: case.norm,
    };
    let cfg = DqnConfig {
        gamma: 0.99,
        double_dqn: case.double,
        loss: Loss::Huber,
        grad_clip_norm: Some(10.0),
        target_update: TargetUpdate::Hard(case.sync),
        optimizer: case.optimizer,
        lr: 1e-3,
    };
    let mut dqn = Dqn::new(&net, cfg, Device::Cpu);
    let bs = batches(case, &shape, actions);
    if case.variant.data_init() {
        dqn.data_init(&bs[0].obs, 1.0);
    }
    let problem = json!({
        "arch": case.arch.name(), "variant": case.variant.name(),
        "layer_norm_axes": case.norm.layer_norm_axes.name(), "spectral_layers": case.norm.spectral_layers.name(),
        "obs_shape": shape, "actions": actions, "hidden": 32, "u8": u8,
        "gamma": 0.99, "lr": 1e-3, "clip": 10.0, "sync_every": case.sync, "double": case.double,
        "optimizer": optimizer_json(&case.optimizer),
        "online": vars(&dqn.online_vs), "target": vars(&dqn.target_vs),
        "batches": bs.iter().map(batch_json).collect::<Vec<_>>(),
    });
    let theirs = reference(&problem);
    let name = format!("{} {}", case.arch.name(), case.variant.name());
    let norm0: BTreeMap<String, Vec<f32>> =
        vars(&dqn.online_vs).into_iter().filter(|(n, _)| n.ends_with(".v_norm0")).collect();
    for (k, b) in bs.iter().enumerate() {
        let st = dqn.update(b);
        let loss_theirs = theirs["losses"][k].as_f64().unwrap();
        assert!(
            (st.loss - loss_theirs).abs() <= 1e-4 * (1.0 + loss_theirs.abs()),
            "{name} update {k}: loss {} vs {loss_theirs}",
            st.loss
        );
        let now = vars(&dqn.online_vs);
        if k == 0 {
            // The first update's gradients (weight norm's `v` keeps part of its gradient in the
            // optimizer: its trajectory is compared below).
            let grads = theirs["grads"].as_object().unwrap();
            for (n, t) in dqn.online_vs.variables() {
                if t.requires_grad() && !n.ends_with(".v") {
                    close(&format!("{name}: gradient of {n}"), &floats(&t.grad()), &grads[&n], 1e-4);
                }
            }
        }
        for (n, v) in now.iter().filter(|(n, _)| n.contains(".sn_")) {
            close(&format!("{name} update {k}: {n}"), v, &theirs["sn"][k][n], 1e-4);
        }
        for (n, v0) in &norm0 {
            let layer = n.trim_end_matches(".v_norm0");
            let v = dqn.online_vs.variables()[&format!("{layer}.v")].shallow_clone();
            let rows = floats(&v.flatten(1, -1).norm_scalaropt_dim(2.0, [1i64].as_slice(), false));
            for (a, b) in rows.iter().zip(v0) {
                assert!((a - b).abs() <= 1e-5 * b, "{name} update {k}: ||{layer}.v|| {a} vs its initial {b}");
            }
            close(&format!("{name} update {k}: ||{layer}.v||"), &rows, &theirs["v_norms"][k][layer], 1e-5);
        }
    }
    for (which, vs) in [("online", &dqn.online_vs), ("target", &dqn.target_vs)] {
        for (n, v) in vars(vs) {
            if n.ends_with(".v_norm0") {
                continue;
            }
            close(&format!("{name}: {which} {n} after {} updates", case.updates), &v, &theirs[which][&n], 2e-4);
        }
    }
    // The updates moved the network (a comparison of untouched weights would prove nothing).
    let before = problem["online"].as_object().unwrap();
    let moved = vars(&dqn.online_vs)
        .iter()
        .flat_map(|(n, v)| {
            v.iter().zip(before[n].as_array().unwrap()).map(|(a, b)| (*a as f64 - b.as_f64().unwrap()).abs())
        })
        .fold(0.0, f64::max);
    assert!(moved > 5e-3, "{name}: the updates moved no variable by more than {moved}");
}

fn case(arch: Arch, variant: Variant) -> Case {
    Case {
        arch,
        variant,
        norm: NormOptions::default(),
        optimizer: OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
        double: true,
        updates: UPDATES,
        sync: SYNC,
    }
}

/// The Nature network (84x84 frames) for 4 updates with a target copy after the second, with
/// RMSProp (see [`RMSPROP`]) and targets from the target network's max (on random frames its six
/// Q-values lie close together, and a rounding difference that flips double DQN's argmax for one
/// transition changes that target wholesale). Why 4: on this problem PyTorch does not agree with
/// itself for longer. Its own run with every weight moved by a relative 1e-6 (about what another
/// summation order gives) has losses 1e-6 apart for 2 updates, 2e-5 at the third, 4e-4 to 7e-4
/// at the fourth and up to 1e-2 after that (projected weight norm, lr 1e-4 and 3e-5 alike), so a
/// longer trajectory could not tell a difference of implementation from rounding.
fn nature(variant: Variant) -> Case {
    Case { optimizer: RMSPROP, double: false, updates: 4, sync: 2, ..case(Arch::Nature, variant) }
}

#[test]
fn layer_norm_matches_pytorch() {
    run(&case(Arch::Mlp, Variant::LayerNorm));
    run(&case(Arch::Minatar, Variant::LayerNorm));
    let chw = NormOptions { layer_norm_axes: LayerNormAxes::Chw, ..Default::default() };
    run(&Case { norm: chw, ..case(Arch::Minatar, Variant::LayerNorm) });
    run(&nature(Variant::LayerNorm));
}

#[test]
fn spectral_norm_matches_pytorch() {
    run(&case(Arch::Mlp, Variant::SpectralNorm));
    run(&case(Arch::Minatar, Variant::SpectralNorm));
    let all = NormOptions { spectral_layers: SpectralLayers::All, ..Default::default() };
    run(&Case { norm: all, ..case(Arch::Minatar, Variant::SpectralNorm) });
    run(&Case { norm: all, ..case(Arch::Mlp, Variant::SpectralNorm) });
    run(&nature(Variant::SpectralNorm));
}

#[test]
fn projected_weight_norm_matches_pytorch_and_keeps_its_norms() {
    run(&case(Arch::Mlp, Variant::WeightNormProjected));
    run(&case(Arch::Minatar, Variant::WeightNormProjected));
    run(&nature(Variant::WeightNormProjected));
}

#[test]
fn plain_and_weight_norm_match_pytorch() {
    for v in [Variant::Plain, Variant::WeightNorm, Variant::WeightNormNoinit] {
        run(&case(Arch::Mlp, v));
        run(&case(Arch::Minatar, v));
    }
}
