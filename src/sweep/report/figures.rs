//! The report's figures and the CSV files behind the curves: aggregates, performance profiles,
//! sample efficiency, the `--tag` curves per game, and the sensitivity curves of a grid.

use std::path::Path;

use anyhow::Result;

use super::Computed;
use crate::plot::{interval_plot, line_plot, line_plot_log_x, Series, PALETTE};
use crate::results::{self, BINS};
use crate::stats::{self, Bootstrap, Interval};
use crate::sweep::grid;
use crate::sweep::scoring;

fn color(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

/// `aggregates.png`, `profiles.png`, `sample_efficiency.png`; returns their names.
pub fn standard(c: &Computed, out: &Path) -> Result<Vec<String>> {
    let small = Bootstrap { reps: c.opts.reps.min(2000), ..c.boot };
    profiles(c, out, &small)?;
    sample_efficiency(c, out, &small)?;
    interval_plot(
        &out.join("aggregates.png"),
        &format!("{}: {} score, 95% stratified bootstrap CIs", c.plan.name, c.norm_word),
        &stats::AGGREGATES
            .iter()
            .map(|(m, _)| {
                (*m, c.aggregates.iter().filter(|a| a.1 == *m).map(|a| (a.0.name().to_string(), a.2)).collect())
            })
            .collect::<Vec<_>>(),
    )?;
    Ok(vec!["aggregates.png".into(), "profiles.png".into(), "sample_efficiency.png".into()])
}

/// The tau range of the performance profiles.
pub fn profile_range(c: &Computed) -> (f64, f64) {
    let all: Vec<f64> = c.norm_scores.values().flat_map(|s| s.iter().flatten().copied()).collect();
    (all.iter().copied().fold(0.0f64, f64::min), all.iter().copied().fold(1.0f64, f64::max))
}

/// Score distributions: the fraction of runs with a normalized score above tau, with bands.
fn profiles(c: &Computed, out: &Path, boot: &Bootstrap) -> Result<()> {
    let (lo, hi) = profile_range(c);
    let taus: Vec<f64> = (0..=50).map(|k| lo + (hi - lo) * k as f64 / 50.0).collect();
    let series: Vec<Series> = c
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let iv = boot.intervals(&c.norm_scores[v], |s| taus.iter().map(|&t| stats::fraction_above(s, t)).collect());
            series(v.name().to_string(), color(i), taus.clone(), &iv)
        })
        .collect();
    let title = format!("Performance profiles: fraction of runs with {} score > tau", c.norm_word);
    line_plot(&out.join("profiles.png"), &title, &format!("tau ({} score)", c.norm_word), "fraction of runs", &series)
}

fn series(label: String, color: [u8; 3], x: Vec<f64>, iv: &[Interval]) -> Series {
    Series {
        label,
        color,
        x,
        mean: iv.iter().map(|i| i.point).collect(),
        lo: iv.iter().map(|i| i.low).collect(),
        hi: iv.iter().map(|i| i.high).collect(),
    }
}

/// IQM of the normalized score against env steps (20 points, from each run's binned returns),
/// with bands.
fn sample_efficiency(c: &Computed, out: &Path, boot: &Bootstrap) -> Result<()> {
    let total = c.plan.base.run.total_env_steps;
    let steps: Vec<u64> = (1..=20).map(|k| total * k / 20).collect();
    let mut all = Vec::new();
    for (i, &v) in c.variants.iter().enumerate() {
        let (mut x, mut iv) = (Vec::new(), Vec::new());
        for &step in &steps {
            let point = |r: &scoring::Scored| {
                let (l, h, _) = c.refs[r.game()];
                r.record.score_at(step).map(|s| (s - l) / (h - l))
            };
            let Some(s) = scoring::by_task(&c.judged, &c.games, v, point) else { continue };
            x.push(step as f64);
            iv.push(boot.interval(&s, stats::iqm));
        }
        all.push(series(v.name().to_string(), color(i), x, &iv));
    }
    let title = format!("Sample efficiency: IQM of the {} score, 95% CIs", c.norm_word);
    line_plot(&out.join("sample_efficiency.png"), &title, "env steps", &format!("IQM {} score", c.norm_word), &all)
}

/// For every `--tag`, one figure per game with each variant's curve over its runs (each run's
/// binned means; their mean with a bootstrap band over the runs), and the points in
/// `tags.csv`; returns each tag's figures.
pub fn tags(c: &Computed, out: &Path) -> Result<Vec<(String, Vec<String>)>> {
    if c.opts.tags.is_empty() {
        return Ok(Vec::new());
    }
    let total = c.plan.base.run.total_env_steps;
    let mut csv = String::from("tag,game,variant,env_step,mean,band_low,band_high\n");
    let mut figures = Vec::new();
    for tag in &c.opts.tags {
        let mut files = Vec::new();
        for g in &c.games {
            let mut curves = Vec::new();
            for (i, &v) in c.variants.iter().enumerate() {
                let runs: Vec<&Vec<Option<f64>>> = c
                    .judged
                    .iter()
                    .filter(|s| s.game() == g && s.variant() == v)
                    .filter_map(|s| s.record.tags.get(tag))
                    .collect();
                if runs.is_empty() {
                    continue;
                }
                let bins: Vec<Vec<f64>> = (0..BINS).map(|b| runs.iter().filter_map(|r| r[b]).collect()).collect();
                let label = format!("{} ({} run{})", v.name(), runs.len(), if runs.len() == 1 { "" } else { "s" });
                curves.push((v, results::mean_curve(label, color(i), &bins, total)));
            }
            if curves.is_empty() {
                continue;
            }
            for (v, s) in &curves {
                for (((x, m), lo), hi) in s.x.iter().zip(&s.mean).zip(&s.lo).zip(&s.hi) {
                    csv.push_str(&format!("{},{g},{},{x:.0},{m},{lo},{hi}\n", super::csv_field(tag), v.name()));
                }
            }
            let short = wndqn_envs::ids::short_name(g).unwrap_or_else(|_| g.replace('/', "_"));
            let file = format!("tag_{}__{}.png", tag_file(tag), results::tag_file(&short));
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
            return Err(unknown_tag(tag, c));
        }
        figures.push((tag.clone(), files));
    }
    std::fs::write(out.join("tags.csv"), csv)?;
    Ok(figures)
}

/// A tag as a file-name part, at most 80 characters (a longer one ends in a hash of the whole).
fn tag_file(tag: &str) -> String {
    let f = results::tag_file(tag);
    if f.len() <= 80 {
        return f;
    }
    let h = crc32c::crc32c(tag.as_bytes());
    format!("{}_{h:08x}", &f[..70])
}

/// An error for a tag no run has, with the tags they have that are close to it.
fn unknown_tag(tag: &str, c: &Computed) -> anyhow::Error {
    let known: std::collections::BTreeSet<&str> =
        c.judged.iter().flat_map(|s| s.record.tags.keys().map(String::as_str)).collect();
    let near = wndqn_envs::roms::suggestions(tag, known.iter().copied());
    let hint = if near.is_empty() { String::new() } else { format!(" Did you mean: {}?", near.join(", ")) };
    anyhow::anyhow!(
        "no run of the comparison has the scalar tag `{tag}`{}.{hint}",
        if known.is_empty() {
            " (an archive keeps the tags it was made with: `sweep archive --tag`)".to_string()
        } else {
            format!("; tags of these runs: {}", known.into_iter().collect::<Vec<_>>().join(", "))
        }
    )
}

/// The x-axis of the sensitivity curves: the grid's one numeric axis (logarithmic where its
/// values are positive and span a factor of 10 or more), else the points' order.
fn axis_x(c: &Computed) -> (Vec<f64>, bool, String) {
    let points = grid::points(&c.plan.grid);
    if let [axis] = c.plan.grid.as_slice() {
        let xs: Option<Vec<f64>> = axis.values.iter().map(grid::number).collect();
        if let Some(xs) = xs {
            let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            return (xs, lo > 0.0 && hi / lo >= 10.0, axis.key.clone());
        }
    }
    ((0..points.len()).map(|i| i as f64).collect(), false, "grid point (see sensitivity.csv)".into())
}

/// `sensitivity.png` (every variant's IQM over all games against the axis), one
/// `sensitivity__GAME.png` per game, `sensitivity.csv` and `tuning.csv`; returns their names.
pub fn sensitivity(c: &Computed, out: &Path) -> Result<Vec<String>> {
    let (x, log, xlabel) = axis_x(c);
    let draw = if log { line_plot_log_x } else { line_plot };
    let curve = |i: usize, label: &str, iv: &[Option<Interval>]| {
        let keep: Vec<(f64, Interval)> = x.iter().zip(iv).filter_map(|(&x, i)| i.map(|i| (x, i))).collect();
        let ivs: Vec<Interval> = keep.iter().map(|k| k.1).collect();
        series(label.to_string(), color(i), keep.iter().map(|k| k.0).collect(), &ivs)
    };
    let all: Vec<Series> =
        c.sensitivity.iter().enumerate().map(|(i, s)| curve(i, s.variant.name(), &s.curve)).collect();
    let ylabel = format!("IQM {} score (tuning runs)", c.norm_word);
    draw(
        &out.join("sensitivity.png"),
        &format!("{}: score against {xlabel}, 95% CIs", c.plan.name),
        &xlabel,
        &ylabel,
        &all,
    )?;
    let mut files = vec!["sensitivity.png".to_string()];
    for (gi, g) in c.games.iter().enumerate() {
        let short = wndqn_envs::ids::short_name(g).unwrap_or_else(|_| g.replace('/', "_"));
        let per: Vec<Series> =
            c.sensitivity.iter().enumerate().map(|(i, s)| curve(i, s.variant.name(), &s.per_game[gi])).collect();
        let file = format!("sensitivity__{}.png", results::tag_file(&short));
        draw(&out.join(&file), &format!("{short}: score against {xlabel}, 95% CIs"), &xlabel, &ylabel, &per)?;
        files.push(file);
    }
    write_sensitivity(c, out)?;
    files.extend(["sensitivity.csv".to_string(), "tuning.csv".to_string()]);
    Ok(files)
}

fn write_sensitivity(c: &Computed, out: &Path) -> Result<()> {
    let points = grid::points(&c.plan.grid);
    let keys: Vec<String> = c.plan.grid.iter().map(|a| super::csv_field(&a.key)).collect();
    let mut csv = format!("variant,game,{},iqm,ci_low,ci_high\n", keys.join(","));
    let values = |p: &grid::Point| p.iter().map(|v| super::csv_field(&grid::show(v))).collect::<Vec<_>>().join(",");
    for s in &c.sensitivity {
        let games = std::iter::once(("all", &s.curve)).chain(c.games.iter().map(String::as_str).zip(&s.per_game));
        for (g, iv) in games {
            for (p, i) in points.iter().zip(iv) {
                if let Some(i) = i {
                    csv.push_str(&format!("{},{g},{},{},{},{}\n", s.variant.name(), values(p), i.point, i.low, i.high));
                }
            }
        }
    }
    std::fs::write(out.join("sensitivity.csv"), csv)?;
    let mut t = format!("variant,what,game,{},value,ci_low,ci_high\n", keys.join(","));
    let blank = vec![String::new(); keys.len()].join(",");
    for s in &c.sensitivity {
        let v = s.variant.name();
        if let Some(b) = s.best {
            let i = s.curve[b].unwrap_or(Interval { point: f64::NAN, low: f64::NAN, high: f64::NAN });
            t.push_str(&format!("{v},best,all,{},{},{},{}\n", values(&points[b]), i.point, i.low, i.high));
        }
        for (gi, g) in c.games.iter().enumerate() {
            if let Some(b) = s.best_per_game[gi] {
                let i = s.per_game[gi][b].unwrap_or(Interval { point: f64::NAN, low: f64::NAN, high: f64::NAN });
                t.push_str(&format!("{v},best,{g},{},{},{},{}\n", values(&points[b]), i.point, i.low, i.high));
            }
        }
        if let Some(i) = s.score {
            t.push_str(&format!("{v},sensitivity,all,{blank},{},{},{}\n", i.point, i.low, i.high));
        }
        for ch in c.plan.chosen.iter().filter(|ch| ch.variant == s.variant) {
            let g = ch.game.as_deref().unwrap_or("all");
            t.push_str(&format!("{v},chosen,{g},{},{},,\n", values(&ch.point), ch.score));
        }
    }
    std::fs::write(out.join("tuning.csv"), t)?;
    Ok(())
}
