//! Reading configs: a file (TOML syntax and unknown keys with the file and line), `--set`
//! overrides on top, an older form migrated ([`migrate`]), then validation
//! ([`super::validate`]).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use wndqn_agents::normalization::Variant;

use super::Config;

/// A TOML error as `file:line:column: message`, with the offending line cut to 120 characters
/// (the toml crate quotes the whole line, which can be megabytes long).
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    // The message can quote a whole value (a megabyte-long string): it is cut too.
    let message = crate::util::clip(e.message(), 300);
    let Some(span) = e.span() else { return anyhow!("{}: {message}", path.display()) };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let col = text[line_start..start].chars().count() + 1;
    let from = col.saturating_sub(60).min(line.chars().count());
    let shown: String = line.chars().skip(from).take(120).collect();
    let (pre, post) = (if from > 0 { "…" } else { "" }, if line.chars().count() > from + 120 { "…" } else { "" });
    // The table the line belongs to names the key when the line alone does not (`a = 1` under
    // `[agent.loss]`).
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| format!(" in `{}`", crate::util::clip(h, 60)))
        .unwrap_or_default();
    anyhow!("{}:{line_no}:{col}: {message} (line {line_no}{table}: `{pre}{shown}{post}`)", path.display())
}

/// Read a config file: TOML syntax and unknown keys are reported with the file and line. An
/// older form is read too ([`migrate`]).
pub fn load_file(path: &Path) -> Result<toml::Table> {
    let text = crate::util::read_text_file(path, "config")?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    if migrate(&mut table) {
        Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            anyhow!("{}: {}", path.display(), crate::util::clip(&e.to_string().replace('\n', " "), 300))
        })?;
    } else {
        // Type and unknown-key errors, still with the file's line numbers.
        toml::from_str::<Config>(&text).map_err(|e| toml_error(path, &text, &e))?;
    }
    Ok(table)
}

/// Digits (with an optional sign and `_` separators) that TOML cannot hold as an integer.
fn is_integer_beyond_toml(raw: &str) -> bool {
    let digits = raw.strip_prefix(['+', '-']).unwrap_or(raw).replace('_', "");
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) && raw.replace('_', "").parse::<i64>().is_err()
}

/// Apply `section.key=value` overrides (value parsed as TOML, else taken as a string); keys
/// may go deeper (`agent.optimizer.eps=1e-8`).
pub fn apply_sets(table: &mut toml::Table, sets: &[String]) -> Result<()> {
    for s in sets {
        let (key, raw) = s.split_once('=').ok_or_else(|| anyhow!("--set {s}: expected section.key=value"))?;
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.len() < 2 || path.iter().any(|p| p.is_empty()) {
            bail!("--set {s}: expected section.key=value (e.g. agent.lr=3e-4)");
        }
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
            Ok(mut t) => t.remove("v").expect("parsed"),
            Err(_) if is_integer_beyond_toml(raw.trim()) => {
                bail!("--set {s}: {} is beyond the integers a config holds ({} to {})", raw.trim(), i64::MIN, i64::MAX)
            }
            Err(_) => toml::Value::String(raw.trim().to_string()),
        };
        if let (["agent", k], Some((_, new, _))) =
            (path.as_slice(), LEGACY_OPTIMIZER_KEYS.iter().find(|(old, _, _)| path.get(1) == Some(old)))
        {
            bail!("--set {s}: agent.{k} is the optimizer's: --set agent.optimizer.{new}={}", raw.trim());
        }
        let (last, parents) = path.split_last().expect("two parts at least");
        let mut t = &mut *table;
        for (i, p) in parents.iter().enumerate() {
            let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::String(name) = entry {
                // `agent.optimizer = "adam"` is a table of one key (`migrate`).
                if i == 1 && parents[0] == "agent" && *p == "optimizer" {
                    let mut o = toml::Table::new();
                    o.insert("rule".into(), toml::Value::String(name.clone()));
                    *entry = toml::Value::Table(o);
                }
            }
            t = entry.as_table_mut().ok_or_else(|| anyhow!("--set {s}: `{}` is not a table", path[..=i].join(".")))?;
        }
        t.insert(last.to_string(), value);
    }
    Ok(())
}

/// Turn a table into a validated config.
pub fn from_table(mut table: toml::Table, origin: &str) -> Result<Config> {
    migrate(&mut table);
    let cfg: Config = Config::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow!("{origin}: {}", crate::util::clip(&e.to_string().replace('\n', " "), 300)))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Load `path`, apply the overrides, validate.
pub fn load(path: &Path, sets: &[String]) -> Result<Config> {
    let mut t = load_file(path)?;
    apply_sets(&mut t, sets)?;
    let origin =
        if sets.is_empty() { path.display().to_string() } else { format!("{} with --set overrides", path.display()) };
    from_table(t, &origin)
}

/// A run's config: `path`, then the overrides, then the variant and seed on the typed config
/// (`--variant`, `--seed`); validated.
pub fn load_run(path: &Path, sets: &[String], variant: Option<Variant>, seed: Option<u64>) -> Result<Config> {
    let mut cfg = load(path, sets)?;
    if let Some(v) = variant {
        cfg.agent.variant = v;
    }
    if let Some(s) = seed {
        cfg.run.seed = s;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Older configs' optimizer keys under `[agent]`, by the rules that read them.
const LEGACY_OPTIMIZER_KEYS: [(&str, &str, &[&str]); 6] = [
    ("beta1", "beta1", &["adam", "adamax"]),
    ("beta2", "beta2", &["adam", "adamax"]),
    ("eps", "eps", &["adam", "adamax", "rmsprop"]),
    ("rms_alpha", "alpha", &["rmsprop"]),
    ("rms_centered", "centered", &["rmsprop"]),
    ("rms_momentum", "momentum", &["rmsprop"]),
];

/// A config table in today's form: `agent.optimizer = "name"` becomes `[agent.optimizer]
/// rule = "name"`, and the flat optimizer keys of older configs (`agent.beta1`, `agent.eps`,
/// `agent.rms_alpha`, ...) move into it as the rule's settings (a key the rule did not read is
/// dropped: it had no effect). Returns whether anything changed. Every config, run config,
/// checkpoint and sweep plan is read through it, so those written before the optimizer table
/// load as they trained.
pub fn migrate(table: &mut toml::Table) -> bool {
    let Some(agent) = table.get_mut("agent").and_then(|a| a.as_table_mut()) else { return false };
    let legacy = LEGACY_OPTIMIZER_KEYS.iter().any(|(k, _, _)| agent.contains_key(*k));
    let name = match agent.get("optimizer") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) if !legacy => return false,
        Some(toml::Value::Table(t)) => t.get("rule").and_then(|r| r.as_str()).unwrap_or("adam").to_string(),
        Some(_) => return false,
        None if legacy => "adam".to_string(),
        None => return false,
    };
    let mut opt = match agent.remove("optimizer") {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    opt.insert("rule".into(), toml::Value::String(name.clone()));
    for (old, new, rules) in LEGACY_OPTIMIZER_KEYS {
        if let Some(v) = agent.remove(old) {
            // Never beside the table in an older file: there, from a `--set`, which wins.
            if rules.contains(&name.as_str()) {
                opt.insert(new.to_string(), v);
            }
        }
    }
    agent.insert("optimizer".into(), toml::Value::Table(opt));
    true
}
