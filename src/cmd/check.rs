//! `wndqn check CONFIG...`: everything `train` does with a config before its first step, without
//! training: read it (errors with file and line), apply `--set`, validate every key, find the
//! environment and its ROM, build one environment and the Q-network, and estimate the memory a
//! run needs against what this machine has. For a config written by hand, or a sweep about to
//! go to a cluster; `sweep run --dry-run` does the same for every run of a sweep.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::json;
use wndqn_agents::dqn::Dqn;
use wndqn_envs::make_env;

use crate::config::Config;
use crate::util::out;

/// `wndqn check` flags.
#[derive(Debug, Args)]
pub struct CheckCmd {
    /// Config files to check.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Overrides applied to every config, as for `train` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// One JSON object per config (`{"config", "ok", "error" | "env", "memory_gb", "resolved"}`).
    #[arg(long)]
    pub json: bool,
    /// Also print each accepted config resolved (every default filled in, as a run's config.toml).
    #[arg(long)]
    pub print: bool,
}

/// What a checked config turned out to be.
pub struct Checked {
    /// The resolved config.
    pub cfg: Config,
    /// The environment's short name.
    pub env: String,
    /// Actions of the environment.
    pub actions: usize,
    /// The memory a run needs, bytes (estimate).
    pub memory: f64,
}

/// Check one config as `train` would start it on `device` (its precision must run there); builds
/// an environment and the networks on the CPU.
pub fn check(path: &Path, sets: &[String], device: Option<tch::Device>, rom_dir: Option<&Path>) -> Result<Checked> {
    let mut cfg = crate::config::load(path, sets)?;
    if let Some(device) = device {
        cfg.learner.precision.compute(device)?;
    }
    let (id, env_cfg) = cfg.env.resolve(rom_dir)?;
    cfg.env = env_cfg;
    let est = match crate::memory::available() {
        Some(avail) => crate::memory::check_fits(&cfg, 1, avail)?,
        None => crate::memory::estimate(&cfg),
    };
    let env = make_env(&id, &cfg.env)?;
    let net = cfg.net_config(env.obs_kind(), env.num_actions());
    // The learner's networks and optimizer, as a run makes them (freed at once).
    drop(Dqn::new(&net, cfg.agent.dqn(), tch::Device::Cpu));
    Ok(Checked { env: id.short_name(), actions: env.num_actions(), memory: est.total(), cfg })
}

/// Run `wndqn check` for the learner's device of `--device` (as `train` would take it); an
/// error (exit 2) when any config is refused.
pub fn run(cmd: CheckCmd, device: crate::device::DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    crate::threads::limit_current_thread(1);
    let device = device.resolve()?;
    let mut refused = 0;
    for path in &cmd.configs {
        let r = check(path, &cmd.sets, Some(device), rom_dir);
        let name = path.to_string_lossy();
        match (&r, cmd.json) {
            (Ok(c), true) => out!(
                "{}",
                json!({"config": name, "ok": true, "env": c.env, "variant": c.cfg.agent.variant.name(), "actions": c.actions, "memory_gb": c.memory / 1e9, "resolved": cmd.print.then(|| c.cfg.to_toml())})
            ),
            (Err(e), true) => out!("{}", json!({"config": name, "ok": false, "error": format!("{e:#}")})),
            (Ok(c), false) => out!(
                "ok {name}: {} {}, {} actions, about {} of memory",
                c.env,
                c.cfg.agent.variant.name(),
                c.actions,
                crate::memory::gb(c.memory)
            ),
            (Err(e), false) => out!("refused {name}: {e:#}"),
        }
        if let (Ok(c), true, false) = (&r, cmd.print, cmd.json) {
            out!("{}", c.cfg.to_toml());
        }
        refused += usize::from(r.is_err());
    }
    if refused > 0 {
        anyhow::bail!("{refused} of {} config(s) refused", cmd.configs.len());
    }
    Ok(())
}
