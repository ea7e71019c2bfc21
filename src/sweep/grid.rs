//! Grid axes of a sweep: any config key with a list of values (`[grid] "agent.lr" = [1e-4,
//! 2.5e-4]`), crossed with the sweep's games x variants x seeds.
//!
//! Each run carries its point of the grid (one value per axis) in its name, in a short readable
//! form: the key's last part and the value (`lr2.5e-4`), so `Breakout__plain__lr2.5e-4__s1`.
//! An axis is refused before anything starts when its key is one of the sweep's own axes
//! (`env.id`, `agent.variant`, `run.seed`), when the config has no such key, when it lists no
//! value, a value twice, or a value of the wrong type (each value is applied to the base config
//! as `--set` would apply it, and the config must then load and validate).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// One axis: a dotted config key and its values, in the spec's order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// The config key (`agent.lr`).
    pub key: String,
    /// Its values.
    pub values: Vec<toml::Value>,
}

/// A point of the grid: one value per axis, in the axes' order.
pub type Point = Vec<toml::Value>;

/// Keys a sweep sets itself, per run.
const OWN: [(&str, &str); 3] =
    [("env.id", "sweep.games"), ("agent.variant", "sweep.variants"), ("run.seed", "sweep.seeds")];

/// The axes of a spec's `[grid]` table: `"agent.lr" = [...]`, or the same as nested tables
/// (`[grid.agent] lr = [...]`); sorted by key.
pub fn axes(grid: &toml::Table) -> Result<Vec<Axis>> {
    let mut flat = Vec::new();
    crate::config::flatten("", &toml::Value::Table(grid.clone()), &mut flat);
    let mut out = Vec::new();
    for (key, v) in flat {
        if let Some((_, own)) = OWN.iter().find(|(k, _)| *k == key) {
            bail!("grid.\"{key}\": the sweep sets {key} itself, per run: list its values in {own}");
        }
        let toml::Value::Array(values) = v else {
            bail!("grid.\"{key}\" = {v}: an axis is a list of values, e.g. \"{key}\" = [1e-4, 2.5e-4]");
        };
        if values.is_empty() {
            bail!("grid.\"{key}\" lists no value: an axis needs at least one");
        }
        for (i, x) in values.iter().enumerate() {
            if matches!(x, toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)) {
                bail!("grid.\"{key}\": {x} is not a single value (a number, a string or a boolean)");
            }
            if values[..i].iter().any(|y| same(x, y)) {
                bail!("grid.\"{key}\" lists {x} twice");
            }
        }
        out.push(Axis { key, values });
    }
    Ok(out)
}

/// Two values of an axis are the same setting (1 and 1.0 too).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a.as_float().or(a.as_integer().map(|i| i as f64)), b.as_float().or(b.as_integer().map(|i| i as f64))) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Every point of the grid, the last axis fastest; one empty point without axes.
pub fn points(axes: &[Axis]) -> Vec<Point> {
    let mut out: Vec<Point> = vec![Vec::new()];
    for a in axes {
        out = out.iter().flat_map(|p| a.values.iter().map(move |v| [p.clone(), vec![v.clone()]].concat())).collect();
    }
    out
}

/// The short name of each axis: its key's last part (`lr`), or the whole key with `-` for `.`
/// where two axes end alike.
pub fn short_names(axes: &[Axis]) -> Vec<String> {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    axes.iter()
        .map(|a| {
            let clash = axes.iter().filter(|b| last(&b.key) == last(&a.key)).count() > 1;
            if clash {
                a.key.replace('.', "-")
            } else {
                last(&a.key)
            }
        })
        .collect()
}

/// A value as a run name shows it: numbers below 0.01 or from 100,000 up in scientific form
/// (`2.5e-4`, `1.5625e-3`), others plain (`0.25`, `128`); strings with only `[A-Za-z0-9._+-]`
/// kept.
pub fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(x) => {
            let a = x.abs();
            if a != 0.0 && !(1e-2..1e5).contains(&a) {
                format!("{x:e}")
            } else {
                format!("{x}")
            }
        }
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::String(s) => {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '-' }).collect()
        }
        other => other.to_string(),
    }
}

/// The part of a run's name for its point (`lr2.5e-4`, `lr1e-4_hidden64`); empty without axes.
pub fn label(axes: &[Axis], point: &[toml::Value]) -> String {
    short_names(axes).iter().zip(point).map(|(k, v)| format!("{k}{}", show(v))).collect::<Vec<_>>().join("_")
}

/// The point as `key=value` overrides, as `--set` takes them.
pub fn sets(axes: &[Axis], point: &[toml::Value]) -> Vec<String> {
    axes.iter().zip(point).map(|(a, v)| format!("{}={v}", a.key)).collect()
}

/// A value as a number, where it is one (for plots against the axis).
pub fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or(v.as_integer().map(|i| i as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn axes_cross_in_order_and_name_their_points_shortly() {
        let a = axes(&table("\"agent.lr\" = [4e-5, 2.5e-4, 1.5625e-3]\n[agent]\nhidden = [64, 128]\n")).unwrap();
        assert_eq!(a.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["agent.hidden", "agent.lr"]);
        let p = points(&a);
        assert_eq!(p.len(), 6);
        let labels: Vec<String> = p.iter().map(|p| label(&a, p)).collect();
        assert_eq!(labels[..3], ["hidden64_lr4e-5", "hidden64_lr2.5e-4", "hidden64_lr1.5625e-3"]);
        assert_eq!(labels[5], "hidden128_lr1.5625e-3");
        assert_eq!(sets(&a, &p[1]), ["agent.hidden=64", "agent.lr=0.00025"]);
        assert_eq!(show(&toml::Value::Float(0.25)), "0.25");
        assert_eq!(show(&toml::Value::String("a b/c".into())), "a-b-c");
        assert_eq!(points(&[]), vec![Vec::<toml::Value>::new()]);
        let clash = axes(&table("\"agent.eps\" = [1e-8]\n\"replay.eps\" = [0.1]\n")).unwrap();
        assert_eq!(short_names(&clash), ["agent-eps", "replay-eps"]);
    }

    #[test]
    fn bad_axes_are_refused_with_the_reason() {
        for (text, want) in [
            ("\"agent.lr\" = []", "lists no value"),
            ("\"agent.lr\" = [1e-4, 1e-4]", "lists 0.0001 twice"),
            ("\"agent.hidden\" = [64, 64.0]", "twice"),
            ("\"agent.lr\" = 1e-4", "an axis is a list of values"),
            ("\"agent.lr\" = [[1e-4]]", "not a single value"),
            ("\"agent.variant\" = [\"plain\"]", "sweep.variants"),
            ("\"run.seed\" = [1, 2]", "sweep.seeds"),
            ("\"env.id\" = [\"Pong\"]", "sweep.games"),
        ] {
            let e = format!("{:#}", axes(&table(text)).unwrap_err());
            assert!(e.contains(want), "{text}: expected `{want}` in: {e}");
        }
    }
}
