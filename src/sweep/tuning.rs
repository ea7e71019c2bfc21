//! The tuning stage of a sweep with a grid: the choice of each variant's point, and the
//! statistics of how a variant's score depends on the point (its sensitivity), all on the
//! normalized final scores of the tuning runs (the seeds of `sweep.seeds`).
//!
//! - **Choice** (`[select] rule = "iqm"`): per variant, the point whose tuning runs have the
//!   highest IQM of the normalized score pooled over all games (rliable's aggregate IQM), one
//!   point shared by the games; with `per_game = true`, per game. Ties go to the earlier point
//!   of the grid.
//! - **Sensitivity curve**: per variant and point, that IQM with its stratified bootstrap
//!   interval (each game's runs resampled); per game, the IQM of the game's runs alone.
//! - **Sensitivity score** (Adkins, Bowling & White 2024): with `G(e, h)` the mean normalized
//!   score of the runs on game `e` at point `h`, `mean_e max_h G(e, h) - max_h mean_e G(e, h)`:
//!   what tuning per game gains over the best point shared by all games (0: one point is best
//!   everywhere). Its interval resamples the runs of every (game, point) cell on their own.
//! - **Ranking**: at each point, which variants' IQM intervals lie wholly above another's.

use anyhow::{bail, Result};
use wndqn_agents::normalization::Variant;

use super::grid::Point;
use super::scoring::Scored;
use super::spec::{Choice, Plan, Stage};
use crate::stats::{self, Bootstrap, Interval, Scores};

/// The normalized scores of the tuning runs of `variant` at `point`, as `scores[game][run]`
/// over `games` (a game without such a run has an empty list).
pub fn cell_scores(scored: &[Scored], games: &[String], variant: Variant, point: &Point) -> Scores {
    games
        .iter()
        .map(|g| {
            scored
                .iter()
                .filter(|s| s.run.stage == Stage::Tune && s.game() == g && s.variant() == variant)
                .filter(|s| &s.run.point == point)
                .map(|s| s.norm)
                .collect()
        })
        .collect()
}

/// The tuning stage's choices (see the module doc). Every game, variant and point needs a
/// scored tuning run.
pub fn choose(plan: &Plan, scored: &[Scored]) -> Result<Vec<Choice>> {
    let points = super::grid::points(&plan.grid);
    let mut out = Vec::new();
    for &v in &plan.variants {
        let per_point: Vec<Scores> = points.iter().map(|p| cell_scores(scored, &plan.games, v, p)).collect();
        for (p, s) in points.iter().zip(&per_point) {
            if let Some((g, _)) = plan.games.iter().zip(s).find(|(_, runs)| runs.is_empty()) {
                bail!(
                    "{} at {} on {g} has no scored tuning run: the choice needs every game, variant and point",
                    v.name(),
                    super::grid::sets(&plan.grid, p).join(", ")
                );
            }
        }
        let best = |stat: &dyn Fn(&Scores) -> f64| -> (usize, f64) {
            per_point
                .iter()
                .map(stat)
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |b, (i, x)| if x > b.1 { (i, x) } else { b })
        };
        if plan.select.per_game {
            for (gi, g) in plan.games.iter().enumerate() {
                let (i, score) = best(&|s: &Scores| stats::iqm(&vec![s[gi].clone()]));
                out.push(Choice { variant: v, game: Some(g.clone()), point: points[i].clone(), score });
            }
        } else {
            let (i, score) = best(&|s: &Scores| stats::iqm(s));
            out.push(Choice { variant: v, game: None, point: points[i].clone(), score });
        }
    }
    Ok(out)
}

/// One variant's sensitivity: its curve over the points, per game, and its score.
pub struct Sensitivity {
    /// The variant.
    pub variant: Variant,
    /// IQM over all games at each point, with its interval (none where a game has no run).
    pub curve: Vec<Option<Interval>>,
    /// Per game, the IQM of that game's runs at each point, with its interval.
    pub per_game: Vec<Vec<Option<Interval>>>,
    /// The point with the best IQM over all games, and per game.
    pub best: Option<usize>,
    /// Per game, the point with the best IQM on it.
    pub best_per_game: Vec<Option<usize>>,
    /// Adkins et al.'s sensitivity score with its interval.
    pub score: Option<Interval>,
}

/// `mean_e max_h G(e, h) - max_h mean_e G(e, h)` of cells `[e * points + h]` (runs' scores).
fn adkins(cells: &Scores, points: usize) -> f64 {
    let games = cells.len() / points;
    let g = |e: usize, h: usize| stats::avg(&cells[e * points + h]);
    let per_game: f64 = (0..games).map(|e| (0..points).map(|h| g(e, h)).fold(f64::NEG_INFINITY, f64::max)).sum();
    let shared = (0..points).map(|h| (0..games).map(|e| g(e, h)).sum::<f64>()).fold(f64::NEG_INFINITY, f64::max);
    (per_game - shared) / games as f64
}

/// The sensitivity of every variant over `games` and the grid's points.
pub fn sensitivity(plan: &Plan, scored: &[Scored], games: &[String], boot: &Bootstrap) -> Vec<Sensitivity> {
    let points = super::grid::points(&plan.grid);
    let argmax = |v: &[Option<Interval>]| -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, x) in v.iter().enumerate() {
            let x = (*x)?.point;
            if best.is_none_or(|b| x > b.1) {
                best = Some((i, x));
            }
        }
        best.map(|b| b.0)
    };
    plan.variants
        .iter()
        .map(|&v| {
            let cells: Vec<Scores> = points.iter().map(|p| cell_scores(scored, games, v, p)).collect();
            let full = |s: &Scores| s.iter().all(|t| !t.is_empty());
            let curve: Vec<Option<Interval>> =
                cells.iter().map(|s| full(s).then(|| boot.interval(s, stats::iqm))).collect();
            let per_game: Vec<Vec<Option<Interval>>> = (0..games.len())
                .map(|e| {
                    cells
                        .iter()
                        .map(|s| (!s[e].is_empty()).then(|| boot.interval(&vec![s[e].clone()], stats::iqm)))
                        .collect()
                })
                .collect();
            let flat: Scores = (0..games.len()).flat_map(|e| cells.iter().map(move |s| s[e].clone())).collect();
            let score = full(&flat).then(|| boot.interval(&flat, |c| adkins(c, points.len())));
            Sensitivity {
                variant: v,
                best: argmax(&curve),
                best_per_game: per_game.iter().map(|c| argmax(c)).collect(),
                curve,
                per_game,
                score,
            }
        })
        .collect()
}

/// Pairs of variants whose IQM intervals at a point do not overlap: `(point, above, below)`.
pub fn separated(sens: &[Sensitivity]) -> Vec<(usize, Variant, Variant)> {
    let mut out = Vec::new();
    let n = sens.first().map_or(0, |s| s.curve.len());
    for h in 0..n {
        for a in sens {
            for b in sens {
                if let (Some(x), Some(y)) = (a.curve[h], b.curve[h]) {
                    if x.low > y.high {
                        out.push((h, a.variant, b.variant));
                    }
                }
            }
        }
    }
    out
}

/// The pairs whose order flips between two points, each wholly separated at both: `(a, b,
/// point where a is above, point where b is above)`.
pub fn reversals(sep: &[(usize, Variant, Variant)]) -> Vec<(Variant, Variant, usize, usize)> {
    let mut out = Vec::new();
    for &(h1, a, b) in sep {
        if let Some(&(h2, _, _)) = sep.iter().find(|&&(_, x, y)| x == b && y == a) {
            if a < b {
                out.push((a, b, h1, h2));
            }
        }
    }
    out.sort_by_key(|r| (r.0, r.1));
    out.dedup_by_key(|r| (r.0, r.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::scoring::synthetic;
    use crate::sweep::spec::{test_spec, RunSpec};

    const SPEC: &str = "[sweep]\nbase = \"base.toml\"\ngames = [\"MinAtar/Breakout-v0\", \"MinAtar/Freeway-v0\"]\nvariants = [\"plain\", \"layer_norm\"]\nseeds = [1, 2, 3]\ntest_seeds = [4, 5]\n\n[grid]\n\"agent.lr\" = [1e-4, 2.5e-4, 1e-3]\n\n[normalize]\n\"MinAtar/Breakout-v0\" = [0.0, 1.0]\n\"MinAtar/Freeway-v0\" = [0.0, 1.0]\n";

    fn lr(r: &RunSpec) -> f64 {
        r.point[0].as_float().unwrap()
    }

    /// Scores peaking at a known rate per variant and game, with seed noise smaller than the gaps.
    fn peaked(r: &RunSpec) -> f64 {
        let best = match (r.variant, r.game.as_str()) {
            (Variant::Plain, _) => 2.5e-4,
            (_, "MinAtar/Breakout-v0") => 1e-3,
            _ => 1e-4,
        };
        1.0 - (lr(r).log10() - f64::log10(best)).abs() + 0.01 * r.seed as f64
    }

    #[test]
    fn the_choice_is_the_point_with_the_best_iqm_shared_or_per_game() {
        let (_d, p) = test_spec("minatar.toml", SPEC);
        let plan = Plan::from_spec(&p).unwrap();
        let scored = synthetic(&plan, peaked);
        let c = choose(&plan, &scored).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].variant, lr_of(&c[0])), (Variant::Plain, 2.5e-4));
        // layer_norm: 1e-3 on one game, 1e-4 on the other: shared, 1e-3 and 1e-4 tie on the mean
        // of the two games; IQM over the pooled 6 runs: the earlier point of the grid wins a tie.
        assert_eq!(c[1].variant, Variant::LayerNorm);
        let mut per_game = plan.clone();
        per_game.select.per_game = true;
        let c = choose(&per_game, &scored).unwrap();
        let ln: Vec<(Option<&str>, f64)> =
            c.iter().filter(|c| c.variant == Variant::LayerNorm).map(|c| (c.game.as_deref(), lr_of(c))).collect();
        assert_eq!(ln, [(Some("MinAtar/Breakout-v0"), 1e-3), (Some("MinAtar/Freeway-v0"), 1e-4)]);
        // Tuning runs missing: refused, naming the cell.
        let fewer: Vec<_> = synthetic(&plan, peaked)
            .into_iter()
            .filter(|s| !(s.run.seed < 9 && lr(&s.run) == 1e-3 && s.run.game == "MinAtar/Freeway-v0"))
            .collect();
        let e = choose(&plan, &fewer).unwrap_err().to_string();
        assert!(e.contains("MinAtar/Freeway-v0") && e.contains("agent.lr=0.001"), "{e}");
    }

    fn lr_of(c: &Choice) -> f64 {
        c.point[0].as_float().unwrap()
    }

    #[test]
    fn the_sensitivity_is_zero_when_one_point_is_best_everywhere_and_positive_otherwise() {
        let (_d, p) = test_spec("minatar.toml", SPEC);
        let plan = Plan::from_spec(&p).unwrap();
        let boot = Bootstrap { reps: 500, seed: 1, size: 0.95 };
        let s = sensitivity(&plan, &synthetic(&plan, peaked), &plan.games, &boot);
        assert_eq!(s[0].score.unwrap().point, 0.0, "plain peaks at 2.5e-4 on both games");
        assert_eq!((s[0].best, s[0].best_per_game.clone()), (Some(1), vec![Some(1), Some(1)]));
        // layer_norm: per game 1.02 on each; shared at 1e-3 or 1e-4: (1.02 + 0.02) / 2.
        let ln = s[1].score.unwrap();
        assert!((ln.point - 0.5).abs() < 1e-9, "{ln:?}");
        assert_eq!(s[1].best_per_game, vec![Some(2), Some(0)]);
    }

    #[test]
    fn the_sensitivity_score_is_the_gain_of_tuning_per_game() {
        // Two games, two points: game 0 best at point 0 (1.0 vs 0.0), game 1 at point 1 (1.0 vs
        // 0.5). Per game: (1 + 1) / 2 = 1; shared: max((1 + 0) / 2, (0 + 1.5)... ) = 0.75.
        let cells: Scores = vec![vec![1.0, 1.0], vec![0.0], vec![0.5, 0.5], vec![1.0, 1.0]];
        assert!((adkins(&cells, 2) - 0.25).abs() < 1e-12);
        // One point best everywhere: no gain.
        let flat: Scores = vec![vec![1.0], vec![0.0], vec![2.0], vec![0.5]];
        assert_eq!(adkins(&flat, 2), 0.0);
    }

    /// The same statistics through a direct computation in Python (rliable for the IQM and its
    /// interval): points to 1e-9, the choice and best points exactly, intervals within
    /// Monte-Carlo error (a tenth of the interval's width, 4,000 resamples each).
    #[test]
    fn tuning_statistics_match_a_direct_computation() {
        use rand::{Rng, SeedableRng};
        let (_d, p) = test_spec("minatar.toml", SPEC);
        let mut plan = Plan::from_spec(&p).unwrap();
        plan.test_seeds.clear();
        plan.seeds = (1..=5).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let scored = synthetic(&plan, |r| ((peaked(r) + rng.gen_range(-0.4..0.4)) * 20.0).round() / 20.0);
        let reps = 4000;
        let boot = Bootstrap { reps, seed: 2, size: 0.95 };
        let sens = sensitivity(&plan, &scored, &plan.games, &boot);
        let points = crate::sweep::grid::points(&plan.grid);
        let runs: Vec<serde_json::Value> = scored
            .iter()
            .map(|s| {
                let i = points.iter().position(|p| *p == s.run.point).unwrap();
                serde_json::json!({"variant": s.variant().name(), "game": s.game(), "point": i, "score": s.norm})
            })
            .collect();
        let case = serde_json::json!({"reps": reps, "games": plan.games, "points": points.len(),
            "variants": plan.variants.iter().map(|v| v.name()).collect::<Vec<_>>(), "runs": runs});
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.json");
        std::fs::write(&path, case.to_string()).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let o = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/oracles/sensitivity_oracle.py"))
            .arg(&path)
            .output()
            .expect("the project venv (make setup) has rliable");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let close = |what: &str, ours: Interval, t: &serde_json::Value| {
            let (p, l, h) = (t["point"].as_f64().unwrap(), t["low"].as_f64().unwrap(), t["high"].as_f64().unwrap());
            assert!((ours.point - p).abs() < 1e-9, "{what}: point {} vs {p}", ours.point);
            let tol = 0.1 * (h - l) + 1e-9;
            assert!(
                (ours.low - l).abs() <= tol && (ours.high - h).abs() <= tol,
                "{what}: [{}, {}] vs [{l}, {h}]",
                ours.low,
                ours.high
            );
        };
        let mut shared = plan.clone();
        let choice = choose(&shared, &scored).unwrap();
        shared.select.per_game = true;
        let per_game_choice = choose(&shared, &scored).unwrap();
        for s in &sens {
            let t = &theirs[s.variant.name()];
            for (h, i) in s.curve.iter().enumerate() {
                close(&format!("{} curve {h}", s.variant.name()), i.unwrap(), &t["curve"][h]);
            }
            for (gi, g) in plan.games.iter().enumerate() {
                for (h, i) in s.per_game[gi].iter().enumerate() {
                    assert!((i.unwrap().point - t["per_game"][g][h].as_f64().unwrap()).abs() < 1e-9);
                }
                assert_eq!(s.best_per_game[gi], t["best_per_game"][g].as_u64().map(|x| x as usize));
                let c =
                    per_game_choice.iter().find(|c| c.variant == s.variant && c.game.as_deref() == Some(g)).unwrap();
                assert_eq!(
                    points.iter().position(|p| *p == c.point),
                    t["choice_per_game"][g].as_u64().map(|x| x as usize)
                );
            }
            assert_eq!(s.best, t["best"].as_u64().map(|x| x as usize));
            let c = choice.iter().find(|c| c.variant == s.variant).unwrap();
            assert_eq!(points.iter().position(|p| *p == c.point), t["choice"].as_u64().map(|x| x as usize));
            close(&format!("{} sensitivity", s.variant.name()), s.score.unwrap(), &t["sensitivity"]);
        }
    }
}
