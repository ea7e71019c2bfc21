//! A run's parts, built before any thread starts: the networks, the replay memory, the shared
//! counters, and each thread's settings.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use tch::Device;
use wndqn_agents::dqn::{Dqn, DqnConfig};
use wndqn_agents::normalization::Variant;
use wndqn_agents::qnet::{Arch, QNetConfig};
use wndqn_agents::replay::AnyMemory;
use wndqn_envs::{make_env, EnvConfig, EnvId, ObsKind};

use super::{actor, learner, pace, replay, shared::Shared};
use crate::config::Config;
use crate::seeds::{self, Stream};

/// What a run is made of before its threads start.
pub(super) struct Parts {
    pub(super) cfg: Config,
    pub(super) cfg_text: String,
    pub(super) envs: Vec<Box<dyn wndqn_envs::Env>>,
    pub(super) eval_env: Box<dyn wndqn_envs::Env>,
    pub(super) kind: ObsKind,
    pub(super) net: QNetConfig,
    pub(super) dqn: Dqn,
    pub(super) memory: Arc<AnyMemory>,
    pub(super) shared: Arc<Shared>,
    /// Seed of this segment (a resumed segment draws fresh streams from the same seed).
    pub(super) gseed: u64,
    pub(super) generation: u64,
    /// See [`pace::Pace::step_origin`].
    pub(super) step_origin: u64,
    pub(super) update_origin: u64,
    pub(super) wall_before: f64,
    pub(super) returns: Vec<f64>,
}

/// Environments, networks and the replay memory (environments first: a bad ROM fails before any
/// file is written).
pub(super) fn build(cfg: Config, env_id: &EnvId, device: Device, generation: u64) -> Result<Parts> {
    let n = cfg.actors.num_actors;
    let gseed = seeds::segment(cfg.run.seed, generation);
    let envs = (0..n).map(|_| make_env(env_id, &cfg.env)).collect::<Result<Vec<_>, _>>()?;
    let eval_env = make_env(env_id, &EnvConfig { episodic_life: false, ..cfg.env.clone() })?;
    let kind = envs[0].obs_kind();
    let net = cfg.net_config(kind, envs[0].num_actions());
    tch::manual_seed(seeds::derive(gseed, Stream::NetworkInit) as i64);
    let mut dqn = Dqn::new(&net, cfg.agent.dqn(), device);
    dqn.set_compute(crate::device::enable_precision(cfg.learner.precision, device)?);
    let memory = Arc::new(new_memory(&cfg, kind));
    let shared = Arc::new(Shared::default());
    shared.actors_running.store(n as u64, Ordering::SeqCst);
    let cfg_text = cfg.to_toml();
    Ok(Parts {
        cfg,
        cfg_text,
        envs,
        eval_env,
        kind,
        net,
        dqn,
        memory,
        shared,
        gseed,
        generation,
        step_origin: 0,
        update_origin: 0,
        wall_before: 0.0,
        returns: Vec::new(),
    })
}

/// An empty replay memory for this config.
pub(super) fn new_memory(cfg: &Config, kind: ObsKind) -> AnyMemory {
    let (bytes, obs_len, stack) = kind.storage();
    AnyMemory::new(cfg.replay.capacity, cfg.actors.num_actors, bytes, obs_len, stack)
}

/// The replay thread's settings.
pub(super) fn replay_spec(p: &Parts, device: Device) -> replay::ReplaySpec {
    replay::ReplaySpec {
        batch_size: p.cfg.replay.batch_size,
        warmup: p.cfg.replay.warmup_steps,
        obs_shape: p.kind.shape(),
        seed: seeds::derive(p.gseed, Stream::ReplaySampling),
        prep: wndqn_agents::replay::BatchPrep::for_device(device).computing(p.dqn.online.compute()),
        idle_priority: p.cfg.learner.exclusive_cpu,
    }
}

/// The replay ratio's accounting of this segment.
pub(super) fn pace(p: &Parts) -> pace::Pace {
    pace::Pace {
        ratio: p.cfg.learner.replay_ratio,
        warmup: p.cfg.replay.warmup_steps,
        step_origin: p.step_origin,
        update_origin: p.update_origin,
    }
}

/// The learner thread's settings.
pub(super) fn learner_spec(p: &Parts, device: Device) -> learner::LearnerSpec {
    let cfg = &p.cfg;
    learner::LearnerSpec {
        device,
        pace: pace(p),
        publish_every: cfg.learner.publish_every,
        threads: cfg.learner_threads(),
        data_init: cfg.agent.variant.data_init().then_some((cfg.agent.init_batch, cfg.agent.init_scale)),
        scalars_every: cfg.log.scalars_every,
        histograms_every: cfg.log.histograms_every,
        diagnostics: (cfg.log.diagnostics_every > 0).then_some((cfg.log.diagnostics_every, cfg.log.diagnostics_batch)),
        obs_shape: p.kind.shape(),
        seed: p.gseed,
        cuda_graph: cfg.learner.cuda_graph,
    }
}

/// Actor `i`'s settings, with its environment.
pub(super) fn actor_spec(p: &Parts, i: usize, env: Box<dyn wndqn_envs::Env>) -> actor::ActorSpec {
    let cfg = &p.cfg;
    actor::ActorSpec {
        index: i,
        num_actors: cfg.actors.num_actors,
        env,
        env_seed: seeds::derive(p.gseed, Stream::ActorEnv(i)),
        rng_seed: seeds::derive(p.gseed, Stream::ActorExploration(i)),
        net: p.net.clone(),
        exploration: cfg.actors.exploration(),
        total_steps: cfg.run.total_env_steps,
        pace: pace(p),
        send_batch: cfg.actors.send_batch,
        idle_priority: cfg.learner.exclusive_cpu,
    }
}

/// The update the learner benchmark measures (and the PyTorch reference reproduces): the
/// config's network and update, for observations of `io`'s shape and its number of actions
/// (a game's), or the network's usual ones.
pub fn bench_dqn(
    arch: Arch,
    variant: Variant,
    update: DqnConfig,
    device: Device,
    io: Option<(Vec<i64>, i64)>,
) -> Result<(Dqn, Vec<i64>)> {
    let (shape, actions) = io.unwrap_or_else(|| match arch {
        Arch::Nature => (vec![4i64, 84, 84], 6),
        Arch::Mlp => (vec![4i64], 2),
        // Breakout's 4 channels and the six actions.
        Arch::Minatar => (vec![4i64, 10, 10], 6),
    });
    let net = QNetConfig {
        arch,
        variant,
        dueling: false,
        obs_shape: shape.clone(),
        num_actions: actions,
        hidden: 128,
        norm: Default::default(),
    };
    Ok((Dqn::new(&net, update, device), shape))
}
