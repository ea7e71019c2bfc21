//! Where a run starts: a new folder, or a resumed one with its checkpoint restored (its replay
//! memory with it where saved), or a run that only needs its summary written.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use wndqn_envs::EnvId;

use super::build::{new_memory, Parts};
use super::shared::Shared;
use super::{hparams, Target};
use crate::config::Config;
use crate::run::dir::{self as run_dir, Resume, RunDir};
use crate::run::summary::{self, Summary};
use crate::tensorboard::Board;
use crate::util::say;

/// Continue from a checkpoint: networks, optimizer, counters, returns, the replay memory when it
/// was saved; events logged after the checkpoint are dropped so every curve continues.
pub(super) fn restore(p: &mut Parts, run: &RunDir, r: &Resume) -> Result<()> {
    crate::run::checkpoint::utf8_dir(&r.ckpt, |d| p.dqn.load(d))
        .with_context(|| format!("loading {}", r.ckpt.display()))?;
    let st = &r.state;
    let replay_loaded = st.has_replay && {
        let path = r.ckpt.join("replay.bin");
        let loaded =
            std::fs::File::open(&path).and_then(|f| p.memory.load(&mut std::io::BufReader::with_capacity(1 << 22, f)));
        if let Err(e) = &loaded {
            say!("warning: cannot load {} ({e}); the replay memory refills instead", path.display());
            p.memory = Arc::new(new_memory(&p.cfg, p.kind));
        }
        loaded.is_ok()
    };
    if !replay_loaded {
        (p.step_origin, p.update_origin) = (st.env_steps, st.updates);
    }
    for c in [&p.shared.env_steps, &p.shared.inserted] {
        c.store(st.env_steps, Ordering::SeqCst);
    }
    p.shared.updates.store(st.updates, Ordering::SeqCst);
    p.shared.episodes.store(st.episodes, Ordering::SeqCst);
    p.returns = st.recent_returns.clone();
    p.wall_before = st.wall_secs;
    let dropped = crate::tensorboard::reader::truncate_after(&run.path, st.env_steps, &mut |w| say!("{w}"))?;
    // From here on the run is running again: no summary until this segment ends.
    run.remove(summary::FILE)?;
    run.write("config.toml", p.cfg_text.as_bytes())?;
    say!(
        "resuming {} from {} ({} env steps, {} updates{}; {dropped} logged events after it dropped)",
        run.path.display(),
        r.ckpt.file_name().unwrap_or_default().to_string_lossy(),
        st.env_steps,
        st.updates,
        if replay_loaded { ", with its replay memory" } else { "; the replay memory refills first" }
    );
    Ok(())
}

/// A run about to start: a new folder to create under this parent or at this path, or a
/// resumed run folder (locked) with the checkpoint to continue from (checked against the config).
pub(super) enum Start {
    New(PathBuf),
    /// Exactly this folder, new.
    At(PathBuf),
    Resume(RunDir, Resume),
}

impl Start {
    /// Lock and check a resumed run before anything is built (its segment number seeds it). A
    /// run that reached its budget but has no summary is done here: only its summary was left
    /// to write ([`ControlFlow::Break`]).
    pub(super) fn of(target: Target, cfg: &Config, env_id: &EnvId) -> Result<ControlFlow<Summary, Start>> {
        let path = match target {
            Target::New(runs) => return Ok(ControlFlow::Continue(Start::New(runs))),
            Target::At(path) if crate::run::checkpoint::list(&path).is_empty() => {
                return Ok(ControlFlow::Continue(Start::At(path)))
            }
            Target::At(path) | Target::Resume(path) => path,
        };
        let run = RunDir::open(&path)?;
        Ok(match run_dir::resume_point(&run.path, cfg)? {
            (resume, false) => ControlFlow::Continue(Start::Resume(run, resume)),
            (resume, true) => ControlFlow::Break(finish(&run, &resume, cfg, env_id)?),
        })
    }

    /// 0 for a new run, the checkpoint's segment + 1 for a resumed one.
    pub(super) fn generation(&self) -> u64 {
        match self {
            Start::New(_) | Start::At(_) => 0,
            Start::Resume(_, r) => r.state.generation + 1,
        }
    }
}

/// The run folder, locked: a new one, or the resumed one with its checkpoint restored.
pub(super) fn open_run(p: &mut Parts, env_id: &EnvId, start: Start) -> Result<(RunDir, Board)> {
    let new = matches!(start, Start::New(_) | Start::At(_));
    let run = match start {
        Start::New(runs) => {
            let run = RunDir::create(&runs, &env_id.short_name(), p.cfg.agent.variant.name(), p.cfg.run.seed)?;
            run.write("config.toml", p.cfg_text.as_bytes())?;
            run
        }
        Start::At(path) => {
            let run = RunDir::create_at(&path)?;
            run.write("config.toml", p.cfg_text.as_bytes())?;
            run
        }
        Start::Resume(run, resume) => {
            restore(p, &run, &resume)?;
            run
        }
    };
    let mut board = Board::new(&run.path)?;
    if new {
        let group = run.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        board.hparams(&group, &hparams(&p.cfg), crate::util::unix_now());
        board.text("config", &format!("```toml\n{}\n```", p.cfg_text), 0);
    }
    board.flush();
    board.check()?;
    Ok((run, board))
}

/// The checkpoint state of a run at this moment.
pub(super) fn make_state(
    cfg: &Config,
    shared: &Shared,
    generation: u64,
    recent: Vec<f64>,
    wall: f64,
    has_replay: bool,
) -> crate::run::checkpoint::State {
    let steps = shared.inserted.load(Ordering::Acquire);
    crate::run::checkpoint::State {
        env_steps: steps,
        updates: shared.updates.load(Ordering::Acquire),
        episodes: shared.episodes.load(Ordering::Acquire),
        recent_returns: recent,
        epsilon: cfg.actors.exploration().epsilon(0, steps),
        seed: cfg.run.seed,
        generation,
        wall_secs: wall,
        has_replay,
    }
}

/// Write the summary of a run that reached its budget before its process could (see
/// [`summary::from_checkpoint`]).
pub(super) fn finish(run: &RunDir, r: &Resume, cfg: &Config, env_id: &EnvId) -> Result<Summary> {
    crate::tensorboard::reader::truncate_after(&run.path, r.state.env_steps, &mut |w| say!("{w}"))?;
    let s =
        summary::from_checkpoint(&run.path, &r.state, &env_id.short_name(), cfg.agent.variant, cfg.run.stop_at_return)?;
    run.write(summary::FILE, serde_json::to_string_pretty(&s)?.as_bytes())?;
    say!(
        "{} had reached its budget ({} env steps) without a summary; wrote it from {}",
        run.path.display(),
        r.state.env_steps,
        r.ckpt.display()
    );
    Ok(s)
}
