//! `wndqn train`: one run, then its summary on stdout.

use anyhow::Result;

use crate::train::TrainArgs;
use crate::util::{out, shell_quote};

/// Train, and print what the run did.
pub fn run(args: &TrainArgs) -> Result<()> {
    let s = crate::train::train(args)?;
    out!(
        "{} {}: {} env steps, {} updates, {} games in {:.0}s ({:.0} env steps/s, {:.1} updates/s)",
        if s.interrupted { "interrupted" } else { "finished" },
        s.run_dir.display(),
        s.env_steps,
        s.updates,
        s.episodes,
        s.wall_secs,
        s.env_steps_per_sec,
        s.updates_per_sec
    );
    let games = match s.last20_mean_return {
        Some(m) => format!("mean return of the last 20 games: {m:.2}"),
        None => "no training game finished yet".to_string(),
    };
    let eval = s.final_eval_mean.map(|m| format!("; last greedy evaluation: {m:.2}")).unwrap_or_default();
    out!("  {games}{eval}");
    out!(
        "  time: actors waited {:.0}% for the learner; learner busy {:.0}%, waited {:.0}% for data; diagnostics {:.1}% of update time",
        100.0 * s.actor_wait_frac,
        100.0 * s.learner_busy_frac,
        100.0 * s.learner_wait_frac,
        100.0 * s.diagnostics_share
    );
    out!(
        "  view: make tensorboard   (or .venv/bin/tensorboard --logdir {})",
        shell_quote(&s.run_dir.display().to_string())
    );
    Ok(())
}
