//! Reading TensorBoard event files back (for `compare` and for resuming a run).
//!
//! Event files are TFRecord streams of `Event` protos; tensorboard-rs only writes them, so the
//! reader is here (with tensorboard-proto's types and tensorboard-rs's CRC).

use std::path::{Path, PathBuf};

use anyhow::Result;
use protobuf::Message;
use tensorboard_proto::event::Event;
use tensorboard_rs::record_writer::RecordWriter;

/// Event files of a run folder, oldest first.
pub fn files(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents.")))
        .collect();
    v.sort();
    v
}

/// Every complete record of one file (a torn last record, as a killed writer leaves, is ignored).
pub fn read_file(path: &Path) -> Result<Vec<Event>> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 12 <= data.len() {
        let len = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes")) as usize;
        let start = i + 12;
        if start + len + 4 > data.len() {
            break;
        }
        match Event::parse_from_bytes(&data[start..start + len]) {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
        i = start + len + 4;
    }
    Ok(out)
}

/// `(step, value)` of a scalar tag over all the run's event files, in file order.
pub fn scalars(run: &Path, tag: &str) -> Result<Vec<(u64, f64)>> {
    let mut v = Vec::new();
    for f in files(run) {
        for e in read_file(&f)? {
            if e.has_summary() {
                for val in e.get_summary().get_value() {
                    if val.get_tag() == tag && val.has_simple_value() {
                        v.push((e.get_step() as u64, val.get_simple_value() as f64));
                    }
                }
            }
        }
    }
    Ok(v)
}

/// Drop every event after env step `step` from the run's event files (rewritten atomically),
/// so a resumed run continues each curve without duplicated steps in any reader.
pub fn truncate_after(run: &Path, step: u64) -> Result<usize> {
    let mut dropped = 0;
    for f in files(run) {
        let events = read_file(&f)?;
        let keep: Vec<&Event> = events.iter().filter(|e| e.get_step() as u64 <= step).collect();
        let n_bytes = std::fs::metadata(&f)?.len();
        let kept_all = keep.len() == events.len();
        if kept_all && is_clean(&f, n_bytes)? {
            continue;
        }
        dropped += events.len() - keep.len();
        let tmp = f.with_extension("tmp-resume");
        {
            let file = std::fs::File::create(&tmp)?;
            let mut w = RecordWriter::new(std::io::BufWriter::new(file));
            for e in keep {
                w.write(&e.write_to_bytes()?)?;
            }
            w.flush()?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &f)?;
    }
    Ok(dropped)
}

/// Whether the file ends exactly at a record boundary.
fn is_clean(path: &Path, len: u64) -> Result<bool> {
    let data = std::fs::read(path)?;
    let mut i = 0usize;
    while i + 12 <= data.len() {
        let l = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes")) as usize;
        i += 12 + l + 4;
    }
    Ok(i as u64 == len)
}
