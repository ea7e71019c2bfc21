//! `wndqn sweep report`: what a results section needs from a sweep, with the statistics
//! rliable computes ([`crate::stats`]): one score per run, normalized per game; per variant the
//! IQM, median, mean and optimality gap over all runs and games with stratified bootstrap
//! intervals; the probability of improvement of each pair of variants; performance profiles and
//! sample-efficiency curves with bootstrap bands; the per-game table. Written as `report.md`,
//! `scores.csv`, `aggregates.csv` and three PNGs; a report on a partly finished sweep names the
//! runs it left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde_json::json;

use super::spec::{Plan, ScoreRange};
use super::state::{self, State};
use crate::plot::{interval_plot, line_plot, Series, PALETTE};
use crate::results::{self, RunResult};
use crate::stats::{self, Bootstrap, Interval, Scores};
use crate::util::out;

/// Which score a run gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreKind {
    /// Mean return of the training games that ended in the last 10% of the run's env steps.
    Final,
    /// The run's last periodic greedy evaluation (`eval/episodic_return`).
    Eval,
}

/// How scores are normalized per game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Normalize {
    /// Atari-57 games: human-normalized; others: the spec's `[normalize]` range.
    Auto,
    /// Raw returns.
    None,
}

/// `wndqn sweep report` settings.
pub struct ReportOptions {
    /// Output folder (default `DIR/report`).
    pub out: Option<PathBuf>,
    /// Print JSON instead of the Markdown.
    pub json: bool,
    /// The score of a run.
    pub score: ScoreKind,
    /// Normalization.
    pub normalize: Normalize,
    /// Bootstrap resamples of the aggregates (profiles and curves use at most 2,000).
    pub reps: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Scalar tags to plot per variant over training, per game (`--tag`).
    pub tags: Vec<String>,
}

/// One scored run.
struct Scored {
    game: String,
    variant: String,
    seed: u64,
    env_steps: u64,
    raw: f64,
    norm: f64,
    result: RunResult,
}

/// A game's normalization `(score - lo) / (hi - lo)` and its name.
type Range = (f64, f64, &'static str);

/// A game's normalization; `best_plain` is the best score of the sweep's plain runs on it.
fn reference(plan: &Plan, game: &str, mode: Normalize, best_plain: Option<f64>) -> Result<Range> {
    if mode == Normalize::None {
        return Ok((0.0, 1.0, "raw return"));
    }
    let rom = wndqn_envs::ids::rom_name(game)?;
    if let Some((r, h)) = rom.as_deref().and_then(super::atari_scores::random_human) {
        return Ok((r, h, "human-normalized"));
    }
    match plan.normalize.get(game) {
        Some(&ScoreRange::Fixed([lo, hi])) if hi != lo => Ok((lo, hi, "min-max normalized")),
        Some(&ScoreRange::BestPlain(lo, _)) => match best_plain {
            Some(hi) if hi > lo => Ok((lo, hi, "normalized by random and the best plain run")),
            _ => bail!("{game}: its reference is the best plain run's score, and no plain run scored above random ({lo})"),
        },
        _ => bail!(
            "no reference scores for {game}: add `[normalize]` `\"{game}\" = [random, reference]` to the sweep spec, or pass --normalize none"
        ),
    }
}

/// The normalization of every game with a score, from the runs' raw scores (`(game, variant,
/// score)`).
fn references(plan: &Plan, mode: Normalize, raw: &[(String, String, f64)]) -> Result<BTreeMap<String, Range>> {
    plan.games
        .iter()
        .filter(|g| raw.iter().any(|r| &r.0 == *g))
        .map(|g| {
            let best = raw.iter().filter(|r| &r.0 == g && r.1 == "plain").map(|r| r.2).reduce(f64::max);
            Ok((g.clone(), reference(plan, g, mode, best)?))
        })
        .collect()
}

/// The scores per variant as `scores[task][run]` over `games`.
fn by_task(runs: &[Scored], games: &[String], variant: &str, f: impl Fn(&Scored) -> Option<f64>) -> Option<Scores> {
    let s: Scores = games
        .iter()
        .map(|g| runs.iter().filter(|r| &r.game == g && r.variant == variant).filter_map(&f).collect::<Vec<_>>())
        .collect();
    s.iter().all(|t| !t.is_empty()).then_some(s)
}

/// Scored runs, the runs left out (each with why), and every scored game's normalization.
type ScoredRuns = (Vec<Scored>, Vec<String>, BTreeMap<String, Range>);

/// The finished runs with a score, normalized; the runs left out, each with why; every game's
/// normalization.
fn score_runs(dir: &Path, plan: &Plan, opts: &ReportOptions) -> Result<ScoredRuns> {
    let none = BTreeMap::new();
    let mut found = Vec::new();
    let mut left_out = Vec::new();
    let runs = plan.runs();
    for (r, st) in runs.iter().zip(state::all(dir, plan, &none)) {
        if st.state != State::Done {
            left_out.push(format!("{} ({})", r.name, st.state.name()));
            continue;
        }
        let result = results::load(&dir.join("runs").join(&r.name), false)?;
        let raw = match opts.score {
            ScoreKind::Final => results::final_score(&result),
            ScoreKind::Eval => results::eval_score(&result),
        };
        match raw {
            Some(raw) => found.push((r, result, raw)),
            None => left_out.push(format!(
                "{} ({})",
                r.name,
                match opts.score {
                    ScoreKind::Final => "finished, but no training game ended",
                    ScoreKind::Eval => "finished without a greedy evaluation: use --score final",
                }
            )),
        }
    }
    let raw: Vec<(String, String, f64)> =
        found.iter().map(|(r, _, s)| (r.game.clone(), r.variant.clone(), *s)).collect();
    let refs = references(plan, opts.normalize, &raw)?;
    let scored = found
        .into_iter()
        .map(|(r, result, raw)| {
            let (lo, hi, _) = refs[&r.game];
            Scored {
                game: r.game.clone(),
                variant: r.variant.clone(),
                seed: r.seed,
                env_steps: result.total_steps,
                raw,
                norm: (raw - lo) / (hi - lo),
                result,
            }
        })
        .collect();
    Ok((scored, left_out, refs))
}

/// Run `wndqn sweep report`.
pub fn run(dir: &Path, plan: &Plan, opts: &ReportOptions) -> Result<()> {
    let (scored, left_out, refs) = score_runs(dir, plan, opts)?;
    if scored.is_empty() {
        bail!(
            "{} has no finished run to report on ({} left: wndqn sweep status {})",
            dir.display(),
            left_out.len(),
            dir.display()
        );
    }
    let variants: Vec<String> =
        plan.variants.iter().filter(|v| scored.iter().any(|s| &s.variant == *v)).cloned().collect();
    let (games, partial): (Vec<String>, Vec<String>) = plan
        .games
        .iter()
        .cloned()
        .partition(|g| variants.iter().all(|v| scored.iter().any(|s| &s.game == g && &s.variant == v)));
    if games.is_empty() {
        bail!("no game has a finished run of every variant yet ({}): nothing to aggregate", variants.join(", "));
    }
    let boot = Bootstrap { reps: opts.reps, seed: opts.seed, size: 0.95 };
    let small = Bootstrap { reps: opts.reps.min(2000), ..boot };
    let (norm_scores, aggregates, poi) = aggregate(&scored, &games, &variants, &boot);
    let out_dir = opts.out.clone().unwrap_or_else(|| dir.join("report"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let norm_word = match opts.normalize {
        Normalize::None => "raw return".to_string(),
        Normalize::Auto => {
            let kinds: std::collections::BTreeSet<&str> = games.iter().map(|g| refs[g].2).collect();
            kinds.into_iter().collect::<Vec<_>>().join(" / ")
        }
    };
    write_scores(&out_dir, &scored)?;
    write_aggregates(&out_dir, &aggregates, &poi)?;
    let profiles = draw_profiles(&out_dir, &variants, &norm_scores, &small, &norm_word)?;
    draw_curves(&out_dir, plan, &variants, &games, &scored, &refs, &small, &norm_word)?;
    interval_plot(
        &out_dir.join("aggregates.png"),
        &format!("{}: {norm_word} score, 95% stratified bootstrap CIs", plan.name),
        &stats::AGGREGATES
            .iter()
            .map(|(m, _)| (*m, aggregates.iter().filter(|a| a.1 == *m).map(|a| (a.0.clone(), a.2)).collect()))
            .collect::<Vec<_>>(),
    )?;
    let tag_figures = draw_tags(&out_dir, plan, &variants, &games, &scored, &opts.tags)?;
    let ctx =
        Page { plan, opts, norm_word: &norm_word, games: &games, partial: &partial, left_out: &left_out, boot: &boot };
    let mut md = markdown(&ctx, &scored, &variants, &aggregates, &poi, profiles);
    // A reading of the figures, written by hand beside the report, is kept and linked.
    if out_dir.join("notes.md").is_file() {
        md.push_str("\n## Reading\n\nWhat these figures show, and what they do not: [notes.md](notes.md).\n");
    }
    md.push_str(&tags_section(&tag_figures));
    std::fs::write(out_dir.join("report.md"), &md)
        .with_context(|| format!("writing {}/report.md", out_dir.display()))?;
    print_result(
        plan,
        opts,
        &Printed {
            scored: &scored,
            left_out: &left_out,
            games: &games,
            norm_word: &norm_word,
            md: &md,
            out_dir: &out_dir,
            tag_figures: &tag_figures,
        },
        &aggregates,
        &poi,
    );
    Ok(())
}

/// The aggregates of the normalized scores per variant and the probability of improvement of
/// each pair, with their intervals (and the scores they come from).
#[allow(clippy::type_complexity)]
fn aggregate<'a>(
    scored: &[Scored],
    games: &[String],
    variants: &'a [String],
    boot: &Bootstrap,
) -> (BTreeMap<&'a String, Scores>, Vec<(String, &'static str, Interval)>, Vec<(String, String, Interval)>) {
    let norm_scores: BTreeMap<&String, Scores> =
        variants.iter().filter_map(|v| by_task(scored, games, v, |r| Some(r.norm)).map(|s| (v, s))).collect();
    let aggregates: Vec<(String, &str, Interval)> = variants
        .iter()
        .flat_map(|v| stats::AGGREGATES.iter().map(move |(m, f)| (v, m, f)))
        .map(|(v, m, f)| (v.clone(), *m, boot.interval(&norm_scores[v], f)))
        .collect();
    let mut poi = Vec::new();
    for (i, x) in variants.iter().enumerate() {
        for y in &variants[i + 1..] {
            poi.push((
                x.clone(),
                y.clone(),
                boot.interval_pair(&norm_scores[x], &norm_scores[y], stats::probability_of_improvement),
            ));
        }
    }
    (norm_scores, aggregates, poi)
}

/// The report's section linking the diagnostics' figures (empty without `--tag`).
fn tags_section(tag_figures: &[(String, Vec<String>)]) -> String {
    if tag_figures.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n## Diagnostics over training\n\nPer game, each variant's mean over its seeds with a 95% bootstrap band (`tags.csv` holds the points):\n\n");
    for (tag, files) in tag_figures {
        md.push_str(&format!(
            "- `{tag}`: {}\n",
            files.iter().map(|f| format!("[{f}]({f})")).collect::<Vec<_>>().join(", ")
        ));
    }
    md
}

/// What a report printed on stdout is made of.
struct Printed<'a> {
    scored: &'a [Scored],
    left_out: &'a [String],
    games: &'a [String],
    norm_word: &'a str,
    md: &'a str,
    out_dir: &'a Path,
    tag_figures: &'a [(String, Vec<String>)],
}

/// The report on stdout: its Markdown and the files written, or one JSON object (`--json`).
fn print_result(
    plan: &Plan,
    opts: &ReportOptions,
    p: &Printed,
    aggregates: &[(String, &str, Interval)],
    poi: &[(String, String, Interval)],
) {
    let Printed { scored, left_out, games, norm_word, md, out_dir, tag_figures } = p;
    if opts.json {
        let agg: Vec<_> = aggregates
            .iter()
            .map(|(v, m, i)| json!({"variant": v, "metric": m, "point": i.point, "ci_low": i.low, "ci_high": i.high}))
            .collect();
        let p: Vec<_> = poi
            .iter()
            .map(|(x, y, i)| json!({"x": x, "y": y, "point": i.point, "ci_low": i.low, "ci_high": i.high}))
            .collect();
        out!(
            "{}",
            json!({"sweep": plan.name, "runs": scored.len(), "left_out": left_out, "games": games, "score": format!("{:?}", opts.score).to_lowercase(), "normalization": norm_word, "reps": opts.reps, "seed": opts.seed, "aggregates": agg, "probability_of_improvement": p, "out": out_dir})
        );
    } else {
        out!("{md}");
        let tags: String = tag_figures.iter().flat_map(|(_, f)| f).map(|f| format!(", {f}")).collect();
        let tags = if tags.is_empty() { tags } else { format!(", tags.csv{tags}") };
        out!("written: {}/{{report.md, scores.csv, aggregates.csv, aggregates.png, profiles.png, sample_efficiency.png{tags}}}", out_dir.display());
    }
}

/// For every tag, one figure per game with each variant's curve over its seeds, and the
/// points in `tags.csv`; returns each tag's figures.
fn draw_tags(
    out: &Path,
    plan: &Plan,
    variants: &[String],
    games: &[String],
    scored: &[Scored],
    tags: &[String],
) -> Result<Vec<(String, Vec<String>)>> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let total = plan.base.run.total_env_steps;
    let mut csv = String::from("tag,game,variant,env_step,mean,band_low,band_high\n");
    let mut figures = Vec::new();
    for tag in tags {
        let mut files = Vec::new();
        for g in games {
            let curves: Vec<(&String, Series)> = variants
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let rs: Vec<&RunResult> =
                        scored.iter().filter(|s| &s.game == g && &s.variant == v).map(|s| &s.result).collect();
                    results::tag_curve(v, PALETTE[i % PALETTE.len()], &rs, tag, total).map(|c| (v, c))
                })
                .collect();
            if curves.is_empty() {
                continue;
            }
            for (v, s) in &curves {
                for (((x, m), lo), hi) in s.x.iter().zip(&s.mean).zip(&s.lo).zip(&s.hi) {
                    csv.push_str(&format!("{tag},{g},{v},{x:.0},{m},{lo},{hi}\n"));
                }
            }
            let short = wndqn_envs::ids::short_name(g).unwrap_or_else(|_| g.replace('/', "_"));
            let file = format!("tag_{}__{}.png", results::tag_file(tag), results::tag_file(&short));
            let series: Vec<Series> = curves.into_iter().map(|(_, s)| s).collect();
            line_plot(
                &out.join(&file),
                &format!("{short}: {tag} (mean over seeds, 95% band)"),
                "env steps",
                tag,
                &series,
            )?;
            files.push(file);
        }
        if files.is_empty() {
            return Err(results::unknown_tag(tag, &scored.iter().map(|s| &s.result).collect::<Vec<_>>()));
        }
        figures.push((tag.clone(), files));
    }
    std::fs::write(out.join("tags.csv"), csv)?;
    Ok(figures)
}

fn write_scores(out: &Path, scored: &[Scored]) -> Result<()> {
    let mut csv = String::from("game,variant,seed,env_steps,score,normalized_score\n");
    for s in scored {
        csv.push_str(&format!("{},{},{},{},{},{}\n", s.game, s.variant, s.seed, s.env_steps, s.raw, s.norm));
    }
    std::fs::write(out.join("scores.csv"), csv).with_context(|| format!("writing {}/scores.csv", out.display()))
}

fn write_aggregates(out: &Path, agg: &[(String, &str, Interval)], poi: &[(String, String, Interval)]) -> Result<()> {
    let mut csv = String::from("variant,metric,point,ci_low,ci_high\n");
    for (v, m, i) in agg {
        csv.push_str(&format!("{v},{},{},{},{}\n", m.replace(' ', "_").to_lowercase(), i.point, i.low, i.high));
    }
    for (x, y, i) in poi {
        csv.push_str(&format!("{x} > {y},probability_of_improvement,{},{},{}\n", i.point, i.low, i.high));
    }
    std::fs::write(out.join("aggregates.csv"), csv).with_context(|| format!("writing {}/aggregates.csv", out.display()))
}

/// Score distributions: the fraction of runs with a normalized score above tau, with bands.
/// Returns the tau range drawn.
fn draw_profiles(
    out: &Path,
    variants: &[String],
    scores: &BTreeMap<&String, Scores>,
    boot: &Bootstrap,
    norm_word: &str,
) -> Result<(f64, f64)> {
    let all: Vec<f64> = scores.values().flat_map(|s| s.iter().flatten().copied()).collect();
    let lo = all.iter().copied().fold(0.0f64, f64::min);
    let hi = all.iter().copied().fold(1.0f64, f64::max);
    let taus: Vec<f64> = (0..=50).map(|k| lo + (hi - lo) * k as f64 / 50.0).collect();
    let series: Vec<Series> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let iv = boot.intervals(&scores[v], |s| taus.iter().map(|&t| stats::fraction_above(s, t)).collect());
            Series {
                label: v.clone(),
                color: PALETTE[i % PALETTE.len()],
                x: taus.clone(),
                mean: iv.iter().map(|i| i.point).collect(),
                lo: iv.iter().map(|i| i.low).collect(),
                hi: iv.iter().map(|i| i.high).collect(),
            }
        })
        .collect();
    let title = format!("Performance profiles: fraction of runs with {norm_word} score > tau");
    line_plot(&out.join("profiles.png"), &title, &format!("tau ({norm_word} score)"), "fraction of runs", &series)?;
    Ok((lo, hi))
}

/// IQM of the normalized score against env steps (20 points), with bands.
#[allow(clippy::too_many_arguments)]
fn draw_curves(
    out: &Path,
    plan: &Plan,
    variants: &[String],
    games: &[String],
    scored: &[Scored],
    refs: &BTreeMap<String, Range>,
    boot: &Bootstrap,
    norm_word: &str,
) -> Result<()> {
    let total = plan.base.run.total_env_steps;
    let steps: Vec<u64> = (1..=20).map(|k| total * k / 20).collect();
    let mut series = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let (mut x, mut mean, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &step in &steps {
            let point = |r: &Scored| {
                let (l, h, _) = refs[&r.game];
                results::score_at(&r.result, step).map(|s| (s - l) / (h - l))
            };
            let Some(s) = by_task(scored, games, v, point) else { continue };
            let iv = boot.interval(&s, stats::iqm);
            x.push(step as f64);
            mean.push(iv.point);
            lo.push(iv.low);
            hi.push(iv.high);
        }
        series.push(Series { label: v.clone(), color: PALETTE[i % PALETTE.len()], x, mean, lo, hi });
    }
    let title = format!("Sample efficiency: IQM of the {norm_word} score, 95% CIs");
    line_plot(&out.join("sample_efficiency.png"), &title, "env steps", &format!("IQM {norm_word} score"), &series)
}

/// What the Markdown needs besides the numbers.
struct Page<'a> {
    plan: &'a Plan,
    opts: &'a ReportOptions,
    norm_word: &'a str,
    games: &'a [String],
    partial: &'a [String],
    left_out: &'a [String],
    boot: &'a Bootstrap,
}

/// The report's lines on the runs left out: those not started yet counted, the others named,
/// each with why; the games left out of the aggregates.
fn left_out_lines(c: &Page) -> String {
    let mut md = String::new();
    let (queued, named): (Vec<&String>, Vec<&String>) =
        c.left_out.iter().partition(|r| r.ends_with(&format!(" ({})", State::Queued.name())));
    if !named.is_empty() {
        md.push_str(&format!("- Left out: {}.\n", named.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")));
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

fn markdown(
    c: &Page,
    scored: &[Scored],
    variants: &[String],
    agg: &[(String, &str, Interval)],
    poi: &[(String, String, Interval)],
    profile_range: (f64, f64),
) -> String {
    let f = |i: &Interval| format!("{:.3} [{:.3}, {:.3}]", i.point, i.low, i.high);
    let score_def = match c.opts.score {
        ScoreKind::Final => "the mean return of the training games that ended in the last 10% of the run's env steps (the last 20 games when fewer than 5 ended there)",
        ScoreKind::Eval => "the run's last periodic greedy evaluation (eval/episodic_return)",
    };
    let mut md = format!("# Sweep `{}`: {} runs\n\n", c.plan.name, scored.len());
    md.push_str(&format!(
        "- Games: {}; variants: {}; seeds: {}; {} env steps per run.\n- Score of a run: {score_def}; {}.\n- Intervals: 95% percentile bootstrap, each game's runs resampled with replacement (stratified, as rliable's `get_interval_estimates`), {} resamples, seed {} (profiles and curves: {} resamples).\n",
        c.games.join(", "),
        variants.join(", "),
        c.plan.seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
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
    md.push_str(&left_out_lines(c));
    md.push_str(&format!("\n## Aggregates ({} score, all runs of all games)\n\n| variant | runs | IQM | median | mean | optimality gap |\n|---|---|---|---|---|---|\n", c.norm_word));
    for v in variants {
        let n = scored.iter().filter(|s| &s.variant == v && c.games.contains(&s.game)).count();
        let cell = |m: &str| agg.iter().find(|a| &a.0 == v && a.1 == m).map(|a| f(&a.2)).unwrap_or_default();
        md.push_str(&format!(
            "| {v} | {n} | {} | {} | {} | {} |\n",
            cell("IQM"),
            cell("median"),
            cell("mean"),
            cell("optimality gap")
        ));
    }
    if !poi.is_empty() {
        md.push_str("\n## Probability of improvement\n\nP(X > Y): the chance that a run of X scores above a run of Y on the same game (Mann-Whitney U / (n m)), averaged over games; 0.5 is no difference.\n\n| X | Y | P(X > Y) |\n|---|---|---|\n");
        for (x, y, i) in poi {
            md.push_str(&format!("| {x} | {y} | {} |\n", f(i)));
        }
    }
    md.push_str(&format!(
        "\n## Per game ({}; mean over seeds [95% bootstrap CI over seeds])\n\n| game | {} |\n|---|{}\n",
        "raw return",
        variants.join(" | "),
        "---|".repeat(variants.len())
    ));
    for g in &c.plan.games {
        let cells: Vec<String> = variants
            .iter()
            .map(|v| {
                let xs: Vec<f64> = scored.iter().filter(|s| &s.game == g && &s.variant == v).map(|s| s.raw).collect();
                if xs.is_empty() {
                    return "-".into();
                }
                let i = c.boot.interval(&vec![xs.clone()], stats::mean);
                format!("{:.2} [{:.2}, {:.2}] ({} seeds)", i.point, i.low, i.high, xs.len())
            })
            .collect();
        md.push_str(&format!("| {g} | {} |\n", cells.join(" | ")));
    }
    md.push_str(&format!(
        "\n## Figures\n\n- `aggregates.png`: the four aggregates with their intervals.\n- `profiles.png`: performance profiles (fraction of runs above tau, tau from {:.2} to {:.2}) with bands.\n- `sample_efficiency.png`: IQM of the {} score at 20 points of training, with bands.\n- `scores.csv`: one row per run; `aggregates.csv`: every interval above.\n",
        profile_range.0, profile_range.1, c.norm_word
    ));
    md
}
