//! Small helpers every command uses: output that never fails a run, shell quoting, panic
//! payloads, the time of day.
//!
//! Output: `println!` and `eprintln!` panic when the stream is gone (`wndqn train ... | head`,
//! a closed terminal, a full disk behind a redirect). A training run must never stop for its
//! output, so the application prints through [`say`] / [`out`] (and the `say!` / `out!` macros),
//! which drop what cannot be written; SIGPIPE is ignored for the same reason (`main.rs`).

use std::io::Write;

/// A line on stderr; dropped if stderr cannot be written.
pub fn say_line(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// A line on stdout; dropped if stdout cannot be written.
pub fn out_line(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
}

/// `eprintln!` that never panics.
macro_rules! say {
    ($($t:tt)*) => { $crate::util::say_line(&format!($($t)*)) };
}

/// `println!` that never panics.
macro_rules! out {
    ($($t:tt)*) => { $crate::util::out_line(&format!($($t)*)) };
}

pub(crate) use {out, say};

/// The most a config or sweep spec file may hold: far above any real one, and small enough that
/// a mistaken path (`/dev/zero`, a checkpoint) fails at once instead of filling memory.
pub const MAX_TEXT_FILE: u64 = 4 << 20;

/// Read a config or spec file (`what` names it in errors): a regular file of at most
/// [`MAX_TEXT_FILE`] bytes, as UTF-8.
pub fn read_text_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{what} {} is not a regular file", path.display());
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_TEXT_FILE {
        anyhow::bail!("{what} {} is larger than {} MiB: not a {what}", path.display(), MAX_TEXT_FILE >> 20);
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))
}
/// `s` as one shell word: unchanged when it is safe, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The message of a panic payload (`String` or `&str`; empty otherwise).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `s` cut to `max` characters for an error message (a megabyte-long value is not echoed).
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}… ({} characters)", s.chars().take(max).collect::<String>(), s.chars().count())
    }
}

/// A clap value parser for a duration in seconds: finite, positive, at most a day.
pub fn seconds_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{}` is not a number of seconds", clip(s, 40)))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{v} seconds: must be more than 0 and at most 86400 (a day)"))
    }
}

/// A clap value parser for a probability: a finite number in [0, 1].
pub fn probability_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{}` is not a number", clip(s, 40)))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v}: must be a probability in [0, 1]"))
    }
}

/// The first backticked cell of every table row of a markdown file (the documented keys or
/// tags, for the tests that keep docs/ equal to the code).
/// Seconds as `1h05m`, `12m30s` or `45s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
pub fn markdown_table_keys(markdown: &str) -> std::collections::BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect()
}

/// The CPU's model name (`/proc/cpuinfo`), for saying where a figure was measured.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_clipping() {
        assert_eq!(shell_quote("runs/a_b"), "runs/a_b");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip(&"x".repeat(100), 3), "xxx… (100 characters)");
    }

    #[test]
    fn argument_parsers_refuse_what_cannot_be_meant() {
        assert_eq!(seconds_arg("2.5"), Ok(2.5));
        for bad in ["inf", "nan", "1e300", "0", "-1", "x"] {
            assert!(seconds_arg(bad).is_err(), "{bad}");
        }
        assert_eq!(probability_arg("0.001"), Ok(0.001));
        for bad in ["2", "nan", "-0.1", "inf"] {
            assert!(probability_arg(bad).is_err(), "{bad}");
        }
    }
}
