//! The runs of a sweep as the report and the tuning stage judge them: each finished run's
//! [`RunRecord`] (from its folder, or from an archive's `runs.jsonl`), its score, and the score
//! normalized per game.
//!
//! Normalization per game: Atari-57 games are human-normalized (the DQN Zoo table); other games
//! take the spec's `[normalize]` range, fixed `[random, reference]`, or `[random, "best plain"]`
//! (the best score of the sweep's plain runs on the game, which moves when a run is added; a
//! sweep with a tuning stage refuses it).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use clap::ValueEnum;
use wndqn_agents::normalization::Variant;

use super::record::{self, RunRecord};
use super::spec::{Plan, RunSpec, ScoreRange, Stage};
use super::state::{self, State};
use crate::stats::Scores;

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

/// One scored run.
pub struct Scored {
    /// Its place in the plan.
    pub run: RunSpec,
    /// Its score.
    pub raw: f64,
    /// Its score normalized for its game.
    pub norm: f64,
    /// The run, reduced.
    pub record: RunRecord,
}

impl Scored {
    /// The env id.
    pub fn game(&self) -> &str {
        &self.run.game
    }
    /// The variant.
    pub fn variant(&self) -> Variant {
        self.run.variant
    }
}

/// A game's normalization `(score - lo) / (hi - lo)` and its name.
pub type Range = (f64, f64, &'static str);

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

/// The runs found done, each with its record, and the runs left out, each with its state.
pub type Found = (Vec<(RunSpec, RunRecord)>, Vec<String>);

/// The records of the plan's runs that are done, by name: from the sweep's run folders, or from
/// the archive's `runs.jsonl` (which a folder of the same run does not override); and the runs
/// not done, each with its state. `keep`: the scalar tags a record read from a folder keeps.
pub fn records(dir: &Path, plan: &Plan, keep: &dyn Fn(&str) -> bool) -> Result<Found> {
    let archived = record::read_all(dir)?;
    let none = BTreeMap::new();
    let f = state::Folders::new(dir);
    let (mut found, mut left_out) = (Vec::new(), Vec::new());
    for r in plan.runs() {
        if let Some(rec) = archived.get(&r.name) {
            found.push((r, rec.clone()));
            continue;
        }
        let st = state::status(&f, plan, &r, &none);
        if st.state != State::Done {
            left_out.push(format!("{} ({})", r.name, st.state.name()));
            continue;
        }
        let result = crate::results::load(&f.run(&r.name), false)?;
        let rec = RunRecord::from_result(&r.name, &result, keep);
        found.push((r, rec));
    }
    Ok((found, left_out))
}

/// The finished runs with a score, normalized, and the runs left out, each with why.
pub struct ScoredRuns {
    /// The runs scored, in the plan's order.
    pub scored: Vec<Scored>,
    /// The runs left out, each with why.
    pub left_out: Vec<String>,
    /// Every scored game's normalization.
    pub refs: BTreeMap<String, Range>,
}

/// Score the finished runs of `found` (see [`records`]) by `kind`, normalized by `mode`.
pub fn score(plan: &Plan, found: Vec<(RunSpec, RunRecord)>, kind: ScoreKind, mode: Normalize) -> Result<ScoredRuns> {
    let mut left_out = Vec::new();
    let mut with_score = Vec::new();
    for (r, rec) in found {
        let raw = match kind {
            ScoreKind::Final => rec.score,
            ScoreKind::Eval => rec.eval,
        };
        match raw {
            Some(raw) => with_score.push((r, rec, raw)),
            None => left_out.push(format!(
                "{} ({})",
                r.name,
                match kind {
                    ScoreKind::Final => "finished, but no training game ended in it",
                    ScoreKind::Eval => "finished without a greedy evaluation: use --score final",
                }
            )),
        }
    }
    let mut refs = BTreeMap::new();
    for g in plan.games.iter().filter(|g| with_score.iter().any(|(r, _, _)| &r.game == *g)) {
        let best = with_score
            .iter()
            .filter(|(r, _, _)| &r.game == g && r.variant == Variant::Plain)
            .map(|x| x.2)
            .reduce(f64::max);
        refs.insert(g.clone(), reference(plan, g, mode, best)?);
    }
    let scored = with_score
        .into_iter()
        .map(|(run, record, raw)| {
            let (lo, hi, _) = refs[&run.game];
            Scored { run, raw, norm: (raw - lo) / (hi - lo), record }
        })
        .collect();
    Ok(ScoredRuns { scored, left_out, refs })
}

/// `f` of each run of `variant` (of `stage`, where given) as `scores[game][run]` over `games`;
/// none when a game has no such run.
pub fn by_task(
    runs: &[&Scored],
    games: &[String],
    variant: Variant,
    f: impl Fn(&Scored) -> Option<f64>,
) -> Option<Scores> {
    let s: Scores = games
        .iter()
        .map(|g| runs.iter().filter(|r| r.game() == g && r.variant() == variant).filter_map(|r| f(r)).collect())
        .collect::<Vec<Vec<f64>>>();
    s.iter().all(|t| !t.is_empty()).then_some(s)
}

/// The runs of one stage.
pub fn of_stage(scored: &[Scored], stage: Stage) -> Vec<&Scored> {
    scored.iter().filter(|s| s.run.stage == stage).collect()
}

/// Every run of `plan` scored `score(run)` (raw = normalized), as a report scores finished runs.
#[cfg(test)]
pub fn synthetic(plan: &Plan, mut score: impl FnMut(&RunSpec) -> f64) -> Vec<Scored> {
    plan.runs()
        .into_iter()
        .map(|run| {
            let x = score(&run);
            let record = RunRecord {
                name: run.name.clone(),
                env_steps: 1000,
                score: Some(x),
                eval: None,
                last20: None,
                updates_per_sec: 0.0,
                wall_secs: 0.0,
                games: vec![1; record::RETURN_BINS],
                returns: vec![x; record::RETURN_BINS],
                evals: Vec::new(),
                tags: Default::default(),
            };
            Scored { run, raw: x, norm: x, record }
        })
        .collect()
}
