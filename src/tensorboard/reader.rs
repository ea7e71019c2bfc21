//! Reading TensorBoard event files back (for `compare`, `sweep report` and for resuming a run).
//!
//! Event files are TFRecord streams: per record an 8-byte length, the masked CRC-32C of the
//! length, the data (an `Event` proto) and the masked CRC-32C of the data. tensorboard-rs only
//! writes them, so the reader is here, and it checks both CRCs: a flipped byte is reported as
//! damage at its offset in the named file, never read as a different number. The only
//! incomplete record a healthy file can have is its last one, torn by a process that was
//! killed mid-write; [`EventFile::torn_bytes`] says how long it is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
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

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// The records of one event file.
pub struct EventFile {
    /// Every complete, intact record, in order.
    pub events: Vec<Event>,
    /// Bytes of an incomplete last record (a writer killed mid-record); 0 for a whole file.
    pub torn_bytes: u64,
    /// Where the first damaged record starts, and what is wrong with it; the records before it
    /// are in `events`, nothing after it is read.
    pub damage: Option<(u64, String)>,
}

impl EventFile {
    /// An error naming `path` if the file is damaged or ends in a torn record.
    pub fn require_whole(&self, path: &Path) -> Result<()> {
        if let Some((at, why)) = &self.damage {
            bail!("event file {} is damaged at byte {at}: {why}", path.display());
        }
        if self.torn_bytes > 0 {
            bail!(
                "event file {} ends in the middle of a record ({} bytes of it): the file was cut, or its writer is still running or was killed",
                path.display(),
                self.torn_bytes
            );
        }
        Ok(())
    }
}

/// Parse TFRecord bytes.
pub fn parse(data: &[u8]) -> EventFile {
    let mut out = EventFile { events: Vec::new(), torn_bytes: 0, damage: None };
    let mut i = 0usize;
    while i < data.len() {
        let rest = data.len() - i;
        if rest < 12 {
            out.torn_bytes = rest as u64;
            break;
        }
        let len_bytes = &data[i..i + 8];
        let want = u32::from_le_bytes(data[i + 8..i + 12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != want {
            out.damage = Some((i as u64, "the length of a record does not match its CRC".into()));
            break;
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let start = i + 12;
        if len > (data.len() - start) as u64 || (data.len() - start) as u64 - len < 4 {
            out.torn_bytes = rest as u64;
            break;
        }
        let end = start + len as usize;
        let body = &data[start..end];
        let want = u32::from_le_bytes(data[end..end + 4].try_into().expect("4 bytes"));
        if masked_crc(body) != want {
            out.damage = Some((i as u64, "the data of a record does not match its CRC".into()));
            break;
        }
        match Event::parse_from_bytes(body) {
            Ok(e) => out.events.push(e),
            Err(e) => {
                out.damage = Some((i as u64, format!("a record is not a TensorBoard event ({e})")));
                break;
            }
        }
        i = end + 4;
    }
    out
}

/// Read one event file.
pub fn read_file(path: &Path) -> Result<EventFile> {
    let data = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(parse(&data))
}

/// `(step, value)` of a scalar tag in `events`.
pub fn scalar_values(events: &[Event], tag: &str) -> Vec<(u64, f64)> {
    let mut v = Vec::new();
    for e in events {
        if e.has_summary() {
            for val in e.get_summary().get_value() {
                if val.get_tag() == tag && val.has_simple_value() {
                    v.push((e.get_step() as u64, val.get_simple_value() as f64));
                }
            }
        }
    }
    v
}

/// `(step, value)` of every scalar tag, in event order.
pub fn all_scalar_values(events: &[Event]) -> std::collections::BTreeMap<String, Vec<(u64, f64)>> {
    let mut m: std::collections::BTreeMap<String, Vec<(u64, f64)>> = Default::default();
    for e in events.iter().filter(|e| e.has_summary()) {
        for val in e.get_summary().get_value().iter().filter(|v| v.has_simple_value()) {
            m.entry(val.get_tag().to_string()).or_default().push((e.get_step() as u64, val.get_simple_value() as f64));
        }
    }
    m
}

/// `(step, value)` of a scalar tag over all the run's event files, in file order; damage is an
/// error naming the file (a torn last record is skipped).
pub fn scalars(run: &Path, tag: &str) -> Result<Vec<(u64, f64)>> {
    let mut v = Vec::new();
    for f in files(run) {
        let ef = read_file(&f)?;
        if let Some((at, why)) = &ef.damage {
            bail!("event file {} is damaged at byte {at}: {why}", f.display());
        }
        v.extend(scalar_values(&ef.events, tag));
    }
    Ok(v)
}

/// Drop every event after env step `step` from the run's event files (rewritten atomically),
/// so a resumed run continues each curve without duplicated steps in any reader. A torn last
/// record is dropped; a damaged file keeps the records before the damage, with a warning.
pub fn truncate_after(run: &Path, step: u64, warn: &mut dyn FnMut(String)) -> Result<usize> {
    let mut dropped = 0;
    for f in files(run) {
        let ef = read_file(&f)?;
        if let Some((at, why)) = &ef.damage {
            warn(format!(
                "warning: event file {} is damaged at byte {at} ({why}); keeping the {} records before it",
                f.display(),
                ef.events.len()
            ));
        }
        let keep: Vec<&Event> = ef.events.iter().filter(|e| e.get_step() as u64 <= step).collect();
        if keep.len() == ef.events.len() && ef.torn_bytes == 0 && ef.damage.is_none() {
            continue;
        }
        dropped += ef.events.len() - keep.len();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(steps: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out);
        for &s in steps {
            let mut e = Event::new();
            e.set_step(s);
            e.set_summary(tensorboard_rs::summary::scalar("charts/episodic_return", s as f32));
            w.write(&e.write_to_bytes().unwrap()).unwrap();
        }
        out
    }

    #[test]
    fn a_whole_file_reads_back_and_a_torn_tail_is_only_a_tail() {
        let data = file_of(&[1, 2, 3]);
        let ef = parse(&data);
        assert_eq!(scalar_values(&ef.events, "charts/episodic_return"), vec![(1, 1.0), (2, 2.0), (3, 3.0)]);
        assert!(ef.damage.is_none() && ef.torn_bytes == 0);
        for cut in [data.len() - 1, data.len() - 20, data.len() / 2] {
            let ef = parse(&data[..cut]);
            assert!(ef.damage.is_none(), "a cut is not damage");
            assert!(ef.torn_bytes > 0, "cut at {cut} of {}", data.len());
            assert!(ef.require_whole(Path::new("x")).unwrap_err().to_string().contains("middle of a record"));
        }
    }

    #[test]
    fn every_flipped_byte_is_damage_never_another_number() {
        let data = file_of(&[10, 20, 30]);
        let clean = scalar_values(&parse(&data).events, "charts/episodic_return");
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x5a;
            let ef = parse(&d);
            let read = scalar_values(&ef.events, "charts/episodic_return");
            assert!(read.iter().all(|r| clean.contains(r)), "byte {i}: read {read:?}");
            assert!(ef.damage.is_some() || ef.torn_bytes > 0, "byte {i} flipped and nothing noticed");
            if let Some((at, _)) = ef.damage {
                assert!(at as usize <= i, "damage reported at {at}, after the flip at {i}");
            }
        }
    }
}
