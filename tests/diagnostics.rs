//! The normalizations' diagnostics end to end: written by a real run, read back by
//! TensorBoard's own reader, showing what each normalization does to the weights, and plotted by
//! `compare --tag` per variant.

mod common;

use common::*;

fn points(ev: &serde_json::Value, tag: &str) -> Vec<f64> {
    ev["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| {
            panic!("{tag} missing: {:?}", ev["scalars"].as_object().map(|m| m.keys().collect::<Vec<_>>()))
        })
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect()
}

#[test]
fn diagnostics_show_each_normalization_and_compare_plots_them() {
    let runs = tempfile::tempdir().unwrap();
    let sets = ["run.total_env_steps=6000", "log.diagnostics_every=100", "log.eval_every=0"];
    let mut dirs = Vec::new();
    for v in ["plain", "spectral_norm", "weight_norm_projected", "layer_norm"] {
        let d = runs.path().join(v);
        let mut args = train_args("configs/cartpole.toml", &d, &sets);
        args.extend(["--variant".to_string(), v.to_string()]);
        let o = run(&args);
        assert!(o.status.success(), "{v}: {}", text(&o));
        dirs.push(only_run_dir(&d));
    }
    let evs: Vec<serde_json::Value> = dirs.iter().map(|d| read_events(d)).collect();
    for (ev, d) in evs.iter().zip(&dirs) {
        for tag in ["diag/weight_norm/fc0", "diag/relative_update/fc1", "diag/dormant_fraction", "diag/feature_rank"] {
            let p = points(ev, tag);
            assert!(p.len() >= 10 && p.iter().all(|x| x.is_finite() && *x >= 0.0), "{}: {tag} {p:?}", d.display());
        }
        let rank = points(ev, "diag/feature_rank");
        // srank of 128 hidden units on a 256-observation probe batch.
        assert!(rank.iter().all(|&r| (1.0..=128.0).contains(&r)), "{rank:?}");
        let dormant = points(ev, "diag/dormant_fraction");
        assert!(dormant.iter().all(|&x| x <= 1.0), "{dormant:?}");
        // Learning moves every layer between two diagnostics.
        assert!(points(ev, "diag/relative_update/q").iter().all(|&x| x > 0.0));
    }
    // Plain DQN's weights grow; spectral norm reports its sigma on the penultimate layer only.
    let plain = points(&evs[0], "diag/weight_norm/fc1");
    assert!(plain.last().unwrap() > &(plain[0] * 1.05), "plain ||W|| did not grow: {plain:?}");
    let sigma = points(&evs[1], "diag/sigma/fc1");
    assert!(sigma.iter().all(|&s| s > 0.0) && evs[1]["scalars"]["diag/sigma/fc0"].is_null());
    // The projection keeps every ||v|| where it started: ||v|| of the layer is constant.
    let proj = points(&evs[2], "diag/weight_norm/fc1");
    assert!(proj.iter().all(|&n| (n - proj[0]).abs() <= 1e-4 * proj[0]), "projected ||v|| moved: {proj:?}");
    assert!(points(&evs[2], "diag/g_mean/fc1").len() >= 10);
    // The summary says what the diagnostics cost.
    let share = summary(&dirs[0])["diagnostics_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 0.5, "{share}");

    let out = runs.path().join("cmp");
    let mut args = vec!["compare".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(strs(&["--tag", "diag/weight_norm/fc1", "--tag", "diag/feature_rank", "--out"]));
    args.push(out.display().to_string());
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["tag_diag_weight_norm_fc1.png", "tag_diag_feature_rank.png"] {
        let png = std::fs::read(out.join(f)).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{f}");
    }
    let csv = std::fs::read_to_string(out.join("tags.csv")).unwrap();
    for v in ["plain", "spectral_norm", "weight_norm_projected", "layer_norm"] {
        assert!(csv.lines().any(|l| l.starts_with(&format!("diag/feature_rank,{v},"))), "{v} missing:\n{csv}");
    }
    // A tag no run has is refused with the near ones.
    args.extend(strs(&["--tag", "diag/feature_rnk"]));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("Did you mean: diag/feature_rank"), "{}", text(&o));
}
