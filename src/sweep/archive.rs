//! `wndqn sweep archive DIR --out OUT`: a sweep's finished runs reduced to what judging them
//! needs, as a sweep folder of its own, small enough to copy home from a cluster or to commit
//! beside a study's report.
//!
//! The archive holds the plan (`sweep.toml`, `configs/`) and, for each run that is done, its
//! `config.toml`, its summary and one event file with the run's hyper-parameters, its returns
//! (training games and greedy evaluations) and the scalar tags asked for (`--tag`); no
//! checkpoints, logs, histograms or other tags. The event records are copied as they are (steps,
//! wall times, values), from event files that are whole. So `sweep status`, `sweep report` (on
//! the tags kept) and TensorBoard read the archive as they read the sweep, and
//! `sweep run SPEC --dir OUT` continues from it: its runs are done, the others start there.
//! Archiving again adds the runs finished since; an archive archives back into a sweep folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tensorboard_proto::event::Event;

use super::spec::{Plan, PLAN};
use super::state::{self, Folders, State};
use crate::run::summary::{self, EventFileInfo};
use crate::util::say;

/// Scalars every archive keeps: what a run's scores are computed from.
const SCORES: &[&str] = &["charts/episodic_return", "eval/episodic_return", "eval/episodic_return_std"];

/// `sweep archive` settings.
pub struct ArchiveOptions {
    /// The archive folder.
    pub out: PathBuf,
    /// Scalar tags kept besides the returns: a tag, or a prefix ending in `/` (`diag/`).
    pub tags: Vec<String>,
}

/// Whether a summary value of `tag` goes into the archive.
fn kept(tag: &str, tags: &[String]) -> bool {
    SCORES.contains(&tag)
        || tag.starts_with("_hparams_/")
        || tags.iter().any(|t| t == tag || (t.ends_with('/') && tag.starts_with(t.as_str())))
}

/// `e` with only the values the archive keeps; none when nothing is left (the file-version
/// record too: the archive's own file has one).
fn slim(mut e: Event, tags: &[String]) -> Option<Event> {
    if !e.has_summary() {
        return None;
    }
    let values = e.mut_summary().mut_value();
    values.retain(|v| kept(v.get_tag(), tags) && (v.has_simple_value() || v.get_tag().starts_with("_hparams_/")));
    (!values.is_empty()).then_some(e)
}

/// The archive's plan and run configs: the sweep's own, written if the folder is new (nothing
/// to write when it holds this plan already); refused if it holds another sweep or anything else.
fn prepare(dir: &Path, plan: &Plan, out: &Path) -> Result<()> {
    if out.canonicalize().ok().is_some_and(|o| dir.canonicalize().ok().as_ref() == Some(&o)) {
        bail!("--out {} is the sweep folder itself: archive into another folder", out.display());
    }
    if plan.check_same(out, "Use another --out")?.is_some() {
        // The plan is written last: where it is, the configs are too.
        return Ok(());
    }
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not a sweep folder: choose a new or empty --out", out.display())
    }
    for sub in ["runs", "configs"] {
        std::fs::create_dir_all(out.join(sub)).with_context(|| format!("cannot create {}", out.join(sub).display()))?;
    }
    let (from, to) = (Folders { dir: dir.to_path_buf() }, Folders { dir: out.to_path_buf() });
    for r in plan.runs() {
        let text = std::fs::read(from.config(&r.name))
            .with_context(|| format!("cannot read {}", from.config(&r.name).display()))?;
        crate::run::dir::write_atomic(&to.config(&r.name), &text)?;
    }
    let text = std::fs::read(dir.join(PLAN)).with_context(|| format!("cannot read {}/{PLAN}", dir.display()))?;
    crate::run::dir::write_atomic(&out.join(PLAN), &text)
}

/// Archive one done run `src` as `dst`; returns the bytes written.
fn archive_run(src: &Path, dst: &Path, tags: &[String]) -> Result<u64> {
    let s = summary::read(src)?;
    let events = crate::results::checked_events(src, &s)?;
    let name = dst.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let tmp = dst.with_file_name(format!(".{name}.archiving-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let config = std::fs::read(src.join("config.toml"))
        .with_context(|| format!("cannot read {}", src.join("config.toml").display()))?;
    crate::run::dir::write_atomic(&tmp.join("config.toml"), &config)?;
    let mut board = crate::tensorboard::Board::new(&tmp)?;
    for e in events.into_iter().filter_map(|e| slim(e, tags)) {
        board.event(e);
    }
    board.flush();
    board.check()?;
    let file = board.path().file_name().unwrap_or_default().to_string_lossy().into_owned();
    let bytes =
        std::fs::metadata(board.path()).map(|m| m.len()).with_context(|| format!("{}", board.path().display()))?;
    drop(board);
    let s = summary::Summary { run_dir: dst.to_path_buf(), events: vec![EventFileInfo { file, bytes }], ..s };
    let text = serde_json::to_string_pretty(&s)?;
    crate::run::dir::write_atomic(&tmp.join(summary::FILE), text.as_bytes())?;
    if dst.exists() {
        std::fs::remove_dir_all(dst).with_context(|| format!("cannot replace {}", dst.display()))?;
    }
    std::fs::rename(&tmp, dst).with_context(|| format!("cannot move {} to {}", tmp.display(), dst.display()))?;
    Ok(bytes + (config.len() + text.len()) as u64)
}

/// Run `wndqn sweep archive DIR --out OUT`.
pub fn run(dir: &Path, plan: &Plan, opts: &ArchiveOptions) -> Result<()> {
    let out = &opts.out;
    prepare(dir, plan, out)?;
    let none = BTreeMap::new();
    let (from, to) = (Folders { dir: dir.to_path_buf() }, Folders { dir: out.to_path_buf() });
    let runs = plan.runs();
    let (mut added, mut already, mut not_done, mut bytes) = (0usize, 0usize, 0usize, 0u64);
    for r in &runs {
        if crate::signals::interrupted() {
            say!("interrupted: {added} run(s) added to {} so far, each whole; archive again to go on", out.display());
            bail!("interrupted");
        }
        let here = state::status(&to, plan, r, &none).state;
        if here == State::Done {
            already += 1;
            continue;
        }
        if state::status(&from, plan, r, &none).state != State::Done {
            not_done += 1;
            continue;
        }
        if here == State::Running {
            say!("warning: {} is being trained in the archive: left as it is", r.name);
            continue;
        }
        bytes += archive_run(&from.run(&r.name), &to.run(&r.name), &opts.tags)
            .with_context(|| format!("archiving {}", r.name))?;
        added += 1;
        say!("archived {} ({}/{})", r.name, added + already, runs.len());
    }
    say!(
        "{}: {} of the sweep's {} runs ({added} added now, {:.1} MB; {already} there already); {not_done} not done yet, not archived",
        out.display(),
        added + already,
        runs.len(),
        bytes as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_hparams_and_the_tags_asked_for_are_kept_nothing_else() {
        let tags = vec!["losses/td_loss".to_string(), "diag/".to_string()];
        for t in [
            "charts/episodic_return",
            "eval/episodic_return",
            "_hparams_/session_start_info",
            "losses/td_loss",
            "diag/weight_norm/fc1",
        ] {
            assert!(kept(t, &tags), "{t}");
        }
        for t in ["charts/episodic_length", "losses/td_loss_x", "diagnostics", "config", "weight_norm/g/fc1"] {
            assert!(!kept(t, &tags), "{t}");
        }
    }
}
