//! The learner's checkpoints: what it calls after each update.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use crossbeam::channel::Sender;
use wndqn_agents::dqn::Dqn;

use super::build::Parts;
use super::resume::make_state;
use super::shared::Event;

/// What the learner calls after each update: a checkpoint every `log.checkpoint_every` updates.
pub(super) fn checkpointer(
    p: &Parts,
    run: &Path,
    recent: Arc<std::sync::Mutex<Vec<f64>>>,
    started: Instant,
    ev: Sender<Event>,
) -> impl FnMut(&Dqn) -> Result<()> + Send + 'static {
    let (every, keep, wall_before, generation) =
        (p.cfg.log.checkpoint_every, p.cfg.log.keep_checkpoints, p.wall_before, p.generation);
    let (dir, cfg, text, shared) = (run.to_path_buf(), p.cfg.clone(), p.cfg_text.clone(), p.shared.clone());
    move |dqn: &Dqn| -> Result<()> {
        if every > 0 && dqn.updates().is_multiple_of(every) {
            let r = recent.lock().map(|r| r.clone()).unwrap_or_default();
            let wall = wall_before + started.elapsed().as_secs_f64();
            let st = make_state(&cfg, &shared, generation, r, wall, false);
            let path = crate::run::checkpoint::write(&dir, dqn, &st, &text, None, keep)?;
            let _ = ev.send(Event::Note(format!("checkpoint {}", path.display())));
        }
        Ok(())
    }
}
