//! `wndqn sweep archive DIR --out OUT`: a sweep's finished runs reduced to what judging them
//! needs, small enough to copy home from a cluster or to commit beside a study's report.
//!
//! The archive is a sweep folder holding the plan (`sweep.toml`, with the tuning stage's choices)
//! and `runs.jsonl`: one [`RunRecord`] a line for each run that is done (its exact scores, its
//! returns and the scalar tags asked for, binned along training; see [`super::record`]). No
//! checkpoints, logs or event files. So `sweep status` and `sweep report` (on the tags kept) read
//! the archive as they read the sweep, and `sweep run SPEC --dir OUT` continues from it: its
//! archived runs are done, the others train there. Archiving again adds the runs finished since;
//! an archive archives into another (with fewer tags, say).

use std::path::Path;

use anyhow::{bail, Result};

use super::record::{self, RunRecord};
use super::spec::{Plan, PLAN};
use super::state::{self, Folders, State};
use crate::util::say;

/// `sweep archive` settings.
pub struct ArchiveOptions {
    /// The archive folder.
    pub out: std::path::PathBuf,
    /// Scalar tags kept besides the returns: a tag, or a prefix ending in `/` (`diag/`).
    pub tags: Vec<String>,
}

/// Whether a scalar tag goes into the archive.
fn kept(tag: &str, tags: &[String]) -> bool {
    tags.iter().any(|t| t == tag || (t.ends_with('/') && tag.starts_with(t.as_str())))
}

/// The archive's plan: the sweep's own, written if the folder is new (nothing to write when it
/// holds this plan already); refused if it holds another sweep or anything else.
fn prepare(dir: &Path, plan: &Plan, out: &Path) -> Result<()> {
    if out.canonicalize().ok().is_some_and(|o| dir.canonicalize().ok().as_ref() == Some(&o)) {
        bail!("--out {} is the sweep folder itself: archive into another folder", out.display());
    }
    if plan.check_same(out, "Use another --out")?.is_some() {
        return Ok(());
    }
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not a sweep folder: choose a new or empty --out", out.display())
    }
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    Ok(())
}

/// Run `wndqn sweep archive DIR --out OUT`.
pub fn run(dir: &Path, plan: &Plan, opts: &ArchiveOptions) -> Result<()> {
    let out = &opts.out;
    prepare(dir, plan, out)?;
    // An archive killed mid-way (kill -9) left its temporary file (or, from older versions,
    // folders under runs/).
    crate::run::dir::remove_dead_temporaries(out);
    crate::run::dir::remove_dead_temporaries(&out.join("runs"));
    let mut records = record::read_all(out)?;
    let source = record::read_all(dir)?;
    let none = Default::default();
    let (from, to) = (Folders::new(dir), Folders::new(out));
    let runs = plan.runs();
    let (mut added, mut already, mut not_done) = (0usize, 0usize, 0usize);
    let keep = |t: &str| kept(t, &opts.tags);
    let mut result = Ok(());
    for r in &runs {
        if crate::signals::interrupted() {
            say!("interrupted: {added} run(s) added to {} so far; archive again to go on", out.display());
            result = Err(anyhow::anyhow!("interrupted"));
            break;
        }
        if records.contains_key(&r.name) {
            already += 1;
            continue;
        }
        if state::status(&to, plan, r, &none).state == State::Running {
            say!("warning: {} is being trained in the archive: left as it is", r.name);
            continue;
        }
        let rec = match source.get(&r.name) {
            Some(rec) => RunRecord {
                tags: rec.tags.iter().filter(|(t, _)| keep(t)).map(|(t, v)| (t.clone(), v.clone())).collect(),
                ..rec.clone()
            },
            None if state::status(&from, plan, r, &none).state == State::Done => {
                match crate::results::load(&from.run(&r.name), false) {
                    Ok(res) => RunRecord::from_result(&r.name, &res, &keep),
                    Err(e) => {
                        result = Err(e.context(format!("archiving {}", r.name)));
                        break;
                    }
                }
            }
            None => {
                not_done += 1;
                continue;
            }
        };
        records.insert(r.name.clone(), rec);
        added += 1;
        say!("archived {} ({}/{})", r.name, added + already, runs.len());
    }
    // The runs read so far are written whatever stopped the loop; the plan last, so that a
    // folder with a plan has its records.
    record::write_all(out, &records)?;
    let text =
        std::fs::read(dir.join(PLAN)).map_err(|e| anyhow::anyhow!("cannot read {}/{PLAN}: {e}", dir.display()))?;
    crate::run::dir::write_atomic(&out.join(PLAN), &text)?;
    result?;
    let bytes = std::fs::metadata(out.join(record::FILE)).map(|m| m.len()).unwrap_or(0);
    say!(
        "{}: {} of the sweep's {} runs ({added} added now; {already} there already), {:.2} MB of records; {not_done} not done yet, not archived",
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
    fn the_tags_asked_for_are_kept_nothing_else() {
        let tags = vec!["losses/td_loss".to_string(), "diag/".to_string()];
        for t in ["losses/td_loss", "diag/weight_norm/fc1"] {
            assert!(kept(t, &tags), "{t}");
        }
        for t in ["charts/episodic_length", "losses/td_loss_x", "diagnostics", "config", "weight_norm/g/fc1"] {
            assert!(!kept(t, &tags), "{t}");
        }
    }
}
