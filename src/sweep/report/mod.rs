//! `wndqn sweep report`: what a results section needs from a sweep, with the statistics
//! rliable computes ([`crate::stats`]): one score per run, normalized per game; per variant the
//! IQM, median, mean and optimality gap over all runs and games with stratified bootstrap
//! intervals; the probability of improvement of each pair of variants; performance profiles and
//! sample-efficiency curves with bootstrap bands; the per-game table; for a sweep with a grid,
//! each variant's sensitivity to it ([`super::tuning`]). Written as `report.md`, `scores.csv`,
//! `aggregates.csv` and PNGs (with a grid: `sensitivity.csv`, `tuning.csv` and their figures); a
//! report on a partly finished sweep names the runs it left out.
//!
//! **Which runs are compared.** Without a grid, every run. With a grid and test seeds, the test
//! stage's runs only (each variant at its chosen point, on held-out seeds); before the test stage
//! has runs, and without test seeds, each variant's tuning runs at its chosen point, which the
//! report then says were chosen on the same seeds. The sensitivity statistics use the tuning
//! runs.
//!
//! Every run is read as its [`RunRecord`](super::record::RunRecord), from its folder or from an
//! archive's `runs.jsonl`, so a report regenerates the same from an archive.
//!
//! **Writing.** Everything is computed and drawn first, into a temporary folder beside the output
//! folder; only then does each file replace its namesake there (a rename). A refused report
//! (a bad `--tag`, a damaged run) leaves the report already there as it was, and a file of the
//! output folder that is a symbolic link is refused before anything is written.

mod figures;
mod page;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use wndqn_agents::normalization::Variant;

use super::scoring::{self, Normalize, ScoreKind, Scored};
use super::spec::{Plan, Stage};
use super::tuning;
use crate::stats::{self, Bootstrap, Interval, Scores};
use crate::util::out;

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

/// Which runs the comparison uses (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// Every run (no grid).
    All,
    /// The test stage's runs.
    Test,
    /// The tuning runs at each variant's chosen point.
    Chosen,
}

/// Everything a report says, computed before any file is written.
struct Computed<'a> {
    plan: &'a Plan,
    opts: &'a ReportOptions,
    scored: &'a [Scored],
    judged: Vec<&'a Scored>,
    how: Judged,
    variants: Vec<Variant>,
    games: Vec<String>,
    partial: Vec<String>,
    left_out: Vec<String>,
    norm_word: String,
    boot: Bootstrap,
    aggregates: Vec<(Variant, &'static str, Interval)>,
    poi: Vec<(Variant, Variant, Interval)>,
    norm_scores: BTreeMap<Variant, Scores>,
    sensitivity: Vec<tuning::Sensitivity>,
    refs: BTreeMap<String, scoring::Range>,
}

/// The runs the comparison uses, and which those are.
fn judged<'a>(plan: &Plan, scored: &'a [Scored]) -> Result<(Vec<&'a Scored>, Judged)> {
    if plan.grid.is_empty() {
        return Ok((scored.iter().collect(), Judged::All));
    }
    let test = scoring::of_stage(scored, Stage::Test);
    if !test.is_empty() {
        return Ok((test, Judged::Test));
    }
    let chosen = if plan.chosen.is_empty() { tuning::choose(plan, scored)? } else { plan.chosen.clone() };
    let mut p = plan.clone();
    p.chosen = chosen;
    let runs = scored
        .iter()
        .filter(|s| {
            s.run.stage == Stage::Tune && p.choice(s.variant(), s.game()).is_some_and(|c| c.point == s.run.point)
        })
        .collect();
    Ok((runs, Judged::Chosen))
}

/// Why a sweep has nothing to report: the runs left out, counted by why.
fn nothing_to_report(dir: &Path, left_out: &[String]) -> anyhow::Error {
    let mut why: BTreeMap<&str, usize> = BTreeMap::new();
    for l in left_out {
        let reason = l.rsplit_once(" (").map(|(_, r)| r.trim_end_matches(')')).unwrap_or("?");
        *why.entry(reason).or_default() += 1;
    }
    let counts: Vec<String> = why.iter().map(|(r, n)| format!("{n} {r}")).collect();
    anyhow::anyhow!(
        "{} has no run with a score to report on: {} (wndqn sweep status {})",
        dir.display(),
        if counts.is_empty() { "the plan has no runs".into() } else { counts.join("; ") },
        dir.display()
    )
}

fn compute<'a>(
    plan: &'a Plan,
    opts: &'a ReportOptions,
    scored: &'a [Scored],
    left_out: Vec<String>,
    refs: BTreeMap<String, scoring::Range>,
) -> Result<Computed<'a>> {
    let (judged, how) = judged(plan, scored)?;
    let variants: Vec<Variant> =
        plan.variants.iter().copied().filter(|v| judged.iter().any(|s| s.variant() == *v)).collect();
    let (games, partial): (Vec<String>, Vec<String>) = plan
        .games
        .iter()
        .cloned()
        .partition(|g| variants.iter().all(|v| judged.iter().any(|s| s.game() == g && s.variant() == *v)));
    if games.is_empty() {
        let names: Vec<&str> = variants.iter().map(|v| v.name()).collect();
        bail!("no game has a finished run of every variant yet ({}): nothing to aggregate", names.join(", "));
    }
    let boot = Bootstrap { reps: opts.reps, seed: opts.seed, size: 0.95 };
    let (norm_scores, aggregates, poi) = aggregate(&judged, &games, &variants, &boot);
    let norm_word = match opts.normalize {
        Normalize::None => "raw return".to_string(),
        Normalize::Auto => {
            let kinds: std::collections::BTreeSet<&str> = games.iter().map(|g| refs[g].2).collect();
            kinds.into_iter().collect::<Vec<_>>().join(" / ")
        }
    };
    let sensitivity = if plan.grid.is_empty() {
        Vec::new()
    } else {
        tuning::sensitivity(plan, scored, &games, &Bootstrap { reps: opts.reps.min(10_000), ..boot })
    };
    Ok(Computed {
        plan,
        opts,
        scored,
        judged,
        how,
        variants,
        games,
        partial,
        left_out,
        norm_word,
        boot,
        aggregates,
        poi,
        norm_scores,
        sensitivity,
        refs,
    })
}

/// Run `wndqn sweep report`.
pub fn run(dir: &Path, plan: &Plan, opts: &ReportOptions) -> Result<()> {
    let out_dir = opts.out.clone().unwrap_or_else(|| dir.join("report"));
    let tags = opts.tags.clone();
    let keep = move |t: &str| tags.iter().any(|x| x == t);
    let (found, mut left_out) = scoring::records(dir, plan, &keep)?;
    let sr = scoring::score(plan, found, opts.score, opts.normalize)?;
    left_out.extend(sr.left_out);
    if sr.scored.is_empty() {
        return Err(nothing_to_report(dir, &left_out));
    }
    let c = compute(plan, opts, &sr.scored, left_out, sr.refs)?;
    let staging = Staging::new(&out_dir)?;
    let written = write_all(&c, staging.path(), &out_dir)?;
    staging.commit(&written)?;
    print_result(&c, &out_dir, &written);
    Ok(())
}

/// Write every file of the report into `out` (the staging folder of `out_dir`); returns their
/// names.
fn write_all(c: &Computed, out: &Path, out_dir: &Path) -> Result<Vec<String>> {
    let mut files = vec!["scores.csv".to_string(), "aggregates.csv".to_string()];
    write_scores(out, c)?;
    write_aggregates(out, &c.aggregates, &c.poi)?;
    files.extend(figures::standard(c, out)?);
    let tag_figures = figures::tags(c, out)?;
    if !tag_figures.is_empty() {
        files.push("tags.csv".into());
    }
    files.extend(tag_figures.iter().flat_map(|(_, f)| f.clone()));
    if !c.sensitivity.is_empty() {
        files.extend(figures::sensitivity(c, out)?);
    }
    let mut md = page::markdown(c);
    // A reading of the figures, written by hand beside the report, is kept and linked.
    if out_dir.join("notes.md").is_file() {
        md.push_str("\n## Reading\n\nWhat these figures show, and what they do not: [notes.md](notes.md).\n");
    }
    md.push_str(&page::tags_section(&tag_figures));
    std::fs::write(out.join("report.md"), &md).with_context(|| format!("writing {}/report.md", out.display()))?;
    files.insert(0, "report.md".into());
    Ok(files)
}

/// A temporary folder beside the output folder, whose files replace their namesakes in it at
/// [`Staging::commit`]; removed when dropped.
struct Staging {
    out: PathBuf,
    tmp: PathBuf,
}

impl Staging {
    fn new(out: &Path) -> Result<Staging> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
        let tmp = out.with_file_name(format!(".{name}.report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Staging { out: out.to_path_buf(), tmp })
    }

    fn path(&self) -> &Path {
        &self.tmp
    }

    /// Refuse a link or a folder where a file goes, then move every file into place.
    fn commit(&self, files: &[String]) -> Result<()> {
        for f in files {
            let dst = self.out.join(f);
            if let Ok(m) = std::fs::symlink_metadata(&dst) {
                if m.file_type().is_symlink() || !m.is_file() {
                    bail!(
                        "{} is {}, not a file of a report: nothing was written; remove it or choose another --out",
                        dst.display(),
                        if m.file_type().is_symlink() { "a symbolic link" } else { "a folder" }
                    );
                }
            }
        }
        for f in files {
            std::fs::rename(self.tmp.join(f), self.out.join(f))
                .with_context(|| format!("moving {} into {}", f, self.out.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// The aggregates of the normalized scores per variant and the probability of improvement of
/// each pair, with their intervals (and the scores they come from).
#[allow(clippy::type_complexity)]
fn aggregate(
    judged: &[&Scored],
    games: &[String],
    variants: &[Variant],
    boot: &Bootstrap,
) -> (BTreeMap<Variant, Scores>, Vec<(Variant, &'static str, Interval)>, Vec<(Variant, Variant, Interval)>) {
    let norm_scores: BTreeMap<Variant, Scores> =
        variants.iter().filter_map(|&v| scoring::by_task(judged, games, v, |r| Some(r.norm)).map(|s| (v, s))).collect();
    let aggregates: Vec<(Variant, &str, Interval)> = variants
        .iter()
        .flat_map(|v| stats::AGGREGATES.iter().map(move |(m, f)| (*v, m, f)))
        .map(|(v, m, f)| (v, *m, boot.interval(&norm_scores[&v], f)))
        .collect();
    let mut poi = Vec::new();
    for (i, &x) in variants.iter().enumerate() {
        for &y in &variants[i + 1..] {
            poi.push((x, y, boot.interval_pair(&norm_scores[&x], &norm_scores[&y], stats::probability_of_improvement)));
        }
    }
    (norm_scores, aggregates, poi)
}

/// The report on stdout: its Markdown and the files written, or one JSON object (`--json`).
fn print_result(c: &Computed, out_dir: &Path, files: &[String]) {
    if c.opts.json {
        let agg: Vec<_> = c
            .aggregates
            .iter()
            .map(|(v, m, i)| json!({"variant": v.name(), "metric": m, "point": i.point, "ci_low": i.low, "ci_high": i.high}))
            .collect();
        let p: Vec<_> = c
            .poi
            .iter()
            .map(
                |(x, y, i)| json!({"x": x.name(), "y": y.name(), "point": i.point, "ci_low": i.low, "ci_high": i.high}),
            )
            .collect();
        let judged = match c.how {
            Judged::All => "all runs",
            Judged::Test => "test stage",
            Judged::Chosen => "tuning runs at the chosen points",
        };
        out!(
            "{}",
            json!({"sweep": c.plan.name, "runs": c.judged.len(), "judged": judged, "left_out": c.left_out, "games": c.games, "score": format!("{:?}", c.opts.score).to_lowercase(), "normalization": c.norm_word, "reps": c.opts.reps, "seed": c.opts.seed, "aggregates": agg, "probability_of_improvement": p, "out": out_dir})
        );
    } else {
        out!("{}", std::fs::read_to_string(out_dir.join("report.md")).unwrap_or_default());
        out!("written: {}/{{{}}}", out_dir.display(), files.join(", "));
    }
}

/// One CSV field, quoted where it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_scores(out: &Path, c: &Computed) -> Result<()> {
    let grid = !c.plan.grid.is_empty();
    let mut csv = String::from("game,variant,seed,env_steps,score,normalized_score");
    if grid {
        csv.push_str(",stage");
        for a in &c.plan.grid {
            csv.push_str(&format!(",{}", csv_field(&a.key)));
        }
    }
    csv.push('\n');
    for s in c.scored.iter().filter(|s| grid || c.judged.iter().any(|j| std::ptr::eq(*j, *s))) {
        csv.push_str(&format!(
            "{},{},{},{},{},{}",
            s.game(),
            s.variant().name(),
            s.run.seed,
            s.record.env_steps,
            s.raw,
            s.norm
        ));
        if grid {
            csv.push_str(if s.run.stage == Stage::Test { ",test" } else { ",tune" });
            for v in &s.run.point {
                csv.push_str(&format!(",{}", csv_field(&super::grid::show(v))));
            }
        }
        csv.push('\n');
    }
    std::fs::write(out.join("scores.csv"), csv).with_context(|| format!("writing {}/scores.csv", out.display()))
}

fn write_aggregates(out: &Path, agg: &[(Variant, &str, Interval)], poi: &[(Variant, Variant, Interval)]) -> Result<()> {
    let mut csv = String::from("variant,metric,point,ci_low,ci_high\n");
    for (v, m, i) in agg {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            v.name(),
            m.replace(' ', "_").to_lowercase(),
            i.point,
            i.low,
            i.high
        ));
    }
    for (x, y, i) in poi {
        csv.push_str(&format!(
            "{} > {},probability_of_improvement,{},{},{}\n",
            x.name(),
            y.name(),
            i.point,
            i.low,
            i.high
        ));
    }
    std::fs::write(out.join("aggregates.csv"), csv).with_context(|| format!("writing {}/aggregates.csv", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::scoring::synthetic;
    use crate::sweep::spec::{test_spec, Choice};

    const SPEC: &str = "[sweep]\nbase = \"base.toml\"\ngames = [\"MinAtar/Breakout-v0\", \"MinAtar/Freeway-v0\"]\nvariants = [\"plain\", \"layer_norm\"]\nseeds = [1, 2, 3]\ntest_seeds = [4, 5]\n\n[grid]\n\"agent.lr\" = [1e-4, 1e-3]\n\n[normalize]\n\"MinAtar/Breakout-v0\" = [0.0, 1.0]\n\"MinAtar/Freeway-v0\" = [0.0, 1.0]\n";

    #[test]
    fn nothing_to_report_says_why() {
        let left = [
            "a (finished, but no training game ended in it)",
            "b (finished, but no training game ended in it)",
            "c (queued)",
        ];
        let e = nothing_to_report(Path::new("sw"), &left.map(String::from)).to_string();
        assert!(e.contains("2 finished, but no training game ended in it; 1 queued"), "{e}");
    }

    #[test]
    fn the_test_stage_statistics_use_no_tuning_run() {
        let (_d, p) = test_spec("minatar.toml", SPEC);
        let mut plan = Plan::from_spec(&p).unwrap();
        let at = |x: f64| vec![toml::Value::Float(x)];
        plan.chosen = vec![
            Choice { variant: Variant::Plain, game: None, point: at(1e-3), score: 0.0 },
            Choice { variant: Variant::LayerNorm, game: None, point: at(1e-4), score: 0.0 },
        ];
        // Tuning runs score 100 (they would dominate every statistic); test runs their seed.
        let scored = synthetic(&plan, |r| if r.stage == Stage::Tune { 100.0 } else { r.seed as f64 });
        let (judged, how) = judged(&plan, &scored).unwrap();
        assert_eq!(how, Judged::Test);
        assert_eq!(judged.len(), 2 * 2 * 2);
        assert!(judged.iter().all(|s| s.run.stage == Stage::Test && plan.test_seeds.contains(&s.run.seed)));
        let boot = Bootstrap { reps: 200, seed: 0, size: 0.95 };
        let games = plan.games.clone();
        let (scores, agg, _) = aggregate(&judged, &games, &plan.variants, &boot);
        assert_eq!(scores[&Variant::Plain], vec![vec![4.0, 5.0], vec![4.0, 5.0]]);
        let iqm = agg.iter().find(|a| a.0 == Variant::LayerNorm && a.1 == "IQM").unwrap().2;
        assert!(iqm.high <= 5.0 && iqm.low >= 4.0, "{iqm:?}");
        // Before the test stage has a run: the tuning runs at the chosen points, said to be so.
        let tuning: Vec<Scored> = scored.into_iter().filter(|s| s.run.stage == Stage::Tune).collect();
        let (chosen, how) = super::judged(&plan, &tuning).unwrap();
        assert_eq!(how, Judged::Chosen);
        assert!(chosen.iter().all(|s| plan.choice(s.variant(), s.game()).unwrap().point == s.run.point));
    }
}
