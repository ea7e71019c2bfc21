//! The evaluator thread: greedy games with each snapshot of the network it is sent.

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use crossbeam::channel::{Receiver, Sender};
use wndqn_agents::policy::Policy;
use wndqn_agents::qnet::QNetConfig;

use super::shared::{Event, Shared};
use super::{monitor, spawn};
use crate::seeds::{self, Stream};

/// The evaluator thread's settings.
pub(super) struct EvalSpec {
    pub(super) net: QNetConfig,
    pub(super) log: crate::config::LogConfig,
    pub(super) idle: bool,
    pub(super) gseed: u64,
}

/// The evaluator thread: plays greedy games with each snapshot it is sent.
pub(super) fn spawn_evaluator(
    shared: &Arc<Shared>,
    spec: EvalSpec,
    mut env: Box<dyn wndqn_envs::Env>,
    ev: Sender<Event>,
    jobs: Receiver<monitor::EvalJob>,
) -> Result<JoinHandle<Result<()>>> {
    let s = shared.clone();
    spawn("evaluator", shared, move || {
        crate::threads::limit_current_thread(1);
        let mut background = crate::threads::Background::new(spec.idle);
        let mut policy = Policy::new(&spec.net);
        let log = &spec.log;
        for (step, snap) in jobs.iter() {
            background.poll(true);
            policy.load_snapshot(&snap);
            let seed = seeds::derive(spec.gseed, Stream::Evaluation(step));
            let returns = crate::play::evaluate(
                env.as_mut(),
                &policy,
                log.eval_episodes,
                log.eval_epsilon,
                log.eval_max_steps,
                seed,
                |_, _| !s.stopping(),
            )?;
            if s.stopping() {
                break;
            }
            let _ = ev.send(Event::Eval { step, returns });
        }
        Ok(())
    })
}
