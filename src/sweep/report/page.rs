//! The report's Markdown: what was compared and how, the aggregates, the probability of
//! improvement, the per-game table, the figures, and for a grid the sensitivity section.

use super::{Computed, Judged};
use crate::stats::{self, Interval};
use crate::sweep::scoring::{Normalize, ScoreKind};
use crate::sweep::spec::Stage;
use crate::sweep::state::State;
use crate::sweep::{grid, tuning};

fn f(i: &Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.point, i.low, i.high)
}

fn join<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// The report's lines on the runs left out: those not started yet counted, the others named,
/// each with why; the games left out of the aggregates.
fn left_out_lines(c: &Computed) -> String {
    let mut md = String::new();
    let (queued, named): (Vec<&String>, Vec<&String>) =
        c.left_out.iter().partition(|r| r.ends_with(&format!(" ({})", State::Queued.name())));
    if !named.is_empty() {
        md.push_str(&format!("- Left out: {}.\n", join(named)));
    }
    if !queued.is_empty() {
        md.push_str(&format!("- Not started yet: {} of the plan's runs.\n", queued.len()));
    }
    if !c.partial.is_empty() {
        md.push_str(&format!(
            "- Left out of the aggregates (not every variant has a finished run): {}.\n",
            c.partial.join(", ")
        ));
    }
    md
}

/// What the comparison's runs are, when the sweep has a grid.
fn judged_line(c: &Computed) -> String {
    let seeds = |stage: Stage| {
        let mut s: Vec<u64> = c.judged.iter().filter(|r| r.run.stage == stage).map(|r| r.run.seed).collect();
        s.sort_unstable();
        s.dedup();
        join(s)
    };
    match c.how {
        Judged::All => String::new(),
        Judged::Test => format!(
            "- Compared: the **test stage** only, each variant at the point chosen on the tuning seeds ({}), on the held-out seeds {}; no tuning run enters the aggregates, the probability of improvement, the profiles or the curves below.\n",
            join(&c.plan.seeds),
            seeds(Stage::Test)
        ),
        Judged::Chosen => format!(
            "- Compared: each variant's tuning runs at its best point, **chosen on the same seeds** ({}): optimistic for every variant{}.\n",
            seeds(Stage::Tune),
            if c.plan.test_seeds.is_empty() { "" } else { "; the held-out test stage has no finished run yet" }
        ),
    }
}

fn header(c: &Computed) -> String {
    let score_def = match c.opts.score {
        ScoreKind::Final => "the mean return of the training games that ended in the last 10% of the run's env steps (the last 20 games when fewer than 5 ended there)",
        ScoreKind::Eval => "the run's last periodic greedy evaluation (eval/episodic_return)",
    };
    let seeds: Vec<u64> = if c.how == Judged::Test { c.plan.test_seeds.clone() } else { c.plan.seeds.clone() };
    let mut md = format!("# Sweep `{}`: {} runs\n\n", c.plan.name, c.judged.len());
    md.push_str(&format!(
        "- Games: {}; variants: {}; seeds: {}; {} env steps per run.\n- Score of a run: {score_def}; {}.\n- Intervals: 95% percentile bootstrap, each game's runs resampled with replacement (stratified, as rliable's `get_interval_estimates`), {} resamples, seed {} (profiles and curves: {} resamples).\n",
        c.games.join(", "),
        join(c.variants.iter().map(|v| v.name())),
        join(seeds),
        c.plan.base.run.total_env_steps,
        match c.opts.normalize {
            Normalize::None => "raw returns, not normalized".to_string(),
            Normalize::Auto => format!(
                "{}: (score - random) / (reference - random) per game ({})",
                c.norm_word,
                if c.norm_word.contains("human") {
                    "Atari-57: the random and human scores published with DQN Zoo; others: the spec's [normalize]"
                } else {
                    "the spec's [normalize] range"
                }
            ),
        },
        c.boot.reps,
        c.boot.seed,
        c.boot.reps.min(2000),
    ));
    md.push_str(&judged_line(c));
    md.push_str(&left_out_lines(c));
    md
}

/// The whole page but the tag section.
pub fn markdown(c: &Computed) -> String {
    let mut md = header(c);
    md.push_str(&format!("\n## Aggregates ({} score, all runs of all games)\n\n| variant | runs | IQM | median | mean | optimality gap |\n|---|---|---|---|---|---|\n", c.norm_word));
    for &v in &c.variants {
        let n = c.judged.iter().filter(|s| s.variant() == v && c.games.iter().any(|g| g == s.game())).count();
        let cell = |m: &str| c.aggregates.iter().find(|a| a.0 == v && a.1 == m).map(|a| f(&a.2)).unwrap_or_default();
        md.push_str(&format!(
            "| {} | {n} | {} | {} | {} | {} |\n",
            v.name(),
            cell("IQM"),
            cell("median"),
            cell("mean"),
            cell("optimality gap")
        ));
    }
    if !c.poi.is_empty() {
        md.push_str("\n## Probability of improvement\n\nP(X > Y): the chance that a run of X scores above a run of Y on the same game (Mann-Whitney U / (n m)), averaged over games; 0.5 is no difference.\n\n| X | Y | P(X > Y) |\n|---|---|---|\n");
        for (x, y, i) in &c.poi {
            md.push_str(&format!("| {} | {} | {} |\n", x.name(), y.name(), f(i)));
        }
    }
    md.push_str(&format!(
        "\n## Per game (raw return; mean over seeds [95% bootstrap CI over seeds])\n\n| game | {} |\n|---|{}\n",
        join(c.variants.iter().map(|v| v.name())).replace(", ", " | "),
        "---|".repeat(c.variants.len())
    ));
    for g in &c.plan.games {
        let cells: Vec<String> = c
            .variants
            .iter()
            .map(|&v| {
                let xs: Vec<f64> =
                    c.judged.iter().filter(|s| s.game() == g && s.variant() == v).map(|s| s.raw).collect();
                if xs.is_empty() {
                    return "-".into();
                }
                let i = c.boot.interval(&vec![xs.clone()], stats::mean);
                format!("{:.2} [{:.2}, {:.2}] ({} seeds)", i.point, i.low, i.high, xs.len())
            })
            .collect();
        md.push_str(&format!("| {g} | {} |\n", cells.join(" | ")));
    }
    let (lo, hi) = super::figures::profile_range(c);
    md.push_str(&format!(
        "\n## Figures\n\n- `aggregates.png`: the four aggregates with their intervals.\n- `profiles.png`: performance profiles (fraction of runs above tau, tau from {lo:.2} to {hi:.2}) with bands.\n- `sample_efficiency.png`: IQM of the {} score at 20 points of training, with bands.\n- `scores.csv`: one row per run; `aggregates.csv`: every interval above.\n",
        c.norm_word
    ));
    if !c.sensitivity.is_empty() {
        md.push_str(&sensitivity_section(c));
    }
    md
}

/// The sensitivity section of a sweep with a grid.
fn sensitivity_section(c: &Computed) -> String {
    let points = grid::points(&c.plan.grid);
    let show = |p: &grid::Point| grid::sets(&c.plan.grid, p).join(", ");
    let axes = join(c.plan.grid.iter().map(|a| format!("`{}`", a.key)));
    let mut md = format!(
        "\n## Sensitivity to {axes} (tuning runs, seeds {})\n\n`sensitivity.png`: per variant, the IQM of the {} score over all games at each point, with 95% stratified bootstrap intervals; `sensitivity__GAME.png`: per game; `sensitivity.csv` holds the points, `tuning.csv` the choices and scores below.\n\n| variant | best point (all games) | IQM there | best point per game | chosen | sensitivity score |\n|---|---|---|---|---|---|\n",
        join(&c.plan.seeds),
        c.norm_word
    );
    for s in &c.sensitivity {
        let best = s.best.map(|b| show(&points[b])).unwrap_or_else(|| "-".into());
        let at = s.best.and_then(|b| s.curve[b]).map(|i| f(&i)).unwrap_or_else(|| "-".into());
        let per: Vec<String> = c
            .games
            .iter()
            .zip(&s.best_per_game)
            .map(|(g, b)| {
                let short = wndqn_envs::ids::short_name(g).unwrap_or_else(|_| g.clone());
                format!("{short}: {}", b.map(|b| grid::label(&c.plan.grid, &points[b])).unwrap_or_else(|| "-".into()))
            })
            .collect();
        let chosen: Vec<String> = c
            .plan
            .chosen
            .iter()
            .filter(|ch| ch.variant == s.variant)
            .map(|ch| {
                format!("{}{}", ch.game.as_deref().map(|g| format!("{g}: ")).unwrap_or_default(), show(&ch.point))
            })
            .collect();
        md.push_str(&format!(
            "| {} | {best} | {at} | {} | {} | {} |\n",
            s.variant.name(),
            per.join("; "),
            if chosen.is_empty() { "-".to_string() } else { chosen.join("; ") },
            s.score.map(|i| f(&i)).unwrap_or_else(|| "-".into())
        ));
    }
    md.push_str("\nSensitivity score (Adkins, Bowling & White 2024): the mean over games of the best mean normalized score at any point on that game, less the best mean over games at one shared point: what tuning per game gains over the best shared setting (0: one point is best everywhere). Its interval resamples each (game, point) cell's runs.\n");
    md.push_str(&ranking(c, &points));
    md
}

/// Whether the ranking of the variants changes along the grid, as far as the intervals say.
fn ranking(c: &Computed, points: &[grid::Point]) -> String {
    let sep = tuning::separated(&c.sensitivity);
    let rev = tuning::reversals(&sep);
    let label = |h: usize| grid::label(&c.plan.grid, &points[h]);
    let mut md = String::from(
        "\n**Ranking along the grid** (IQM over all games; `A > B`: A's 95% interval lies wholly above B's):\n\n",
    );
    for (h, _) in points.iter().enumerate() {
        let mut order: Vec<(&str, f64)> =
            c.sensitivity.iter().filter_map(|s| s.curve[h].map(|i| (s.variant.name(), i.point))).collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        let above: Vec<String> =
            sep.iter().filter(|x| x.0 == h).map(|(_, a, b)| format!("{} > {}", a.name(), b.name())).collect();
        md.push_str(&format!(
            "- {}: {}{}\n",
            label(h),
            join(order.iter().map(|(v, x)| format!("{v} {x:.2}"))),
            if above.is_empty() {
                "; no pair separated".to_string()
            } else {
                format!("; separated: {}", above.join(", "))
            }
        ));
    }
    if rev.is_empty() {
        md.push_str("\nNo pair of variants is separated in one order at one point and in the other order at another: as far as these intervals tell, the ranking does not reverse along the grid.\n");
    } else {
        for (a, b, h1, h2) in rev {
            md.push_str(&format!(
                "\nThe ranking reverses: {} > {} at {}, {} > {} at {} (both separated).\n",
                a.name(),
                b.name(),
                label(h1),
                b.name(),
                a.name(),
                label(h2)
            ));
        }
    }
    md
}

/// The report's section linking the diagnostics' figures (empty without `--tag`).
pub fn tags_section(tag_figures: &[(String, Vec<String>)]) -> String {
    if tag_figures.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n## Diagnostics over training\n\nPer game, each variant's mean over its seeds with a 95% bootstrap band (`tags.csv` holds the points):\n\n");
    for (tag, files) in tag_figures {
        md.push_str(&format!("- `{tag}`: {}\n", join(files.iter().map(|f| format!("[{f}]({f})")))));
    }
    md
}
