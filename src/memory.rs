//! What a run, a benchmark or a sweep will hold in memory, estimated from its settings before
//! anything is allocated, and checked against what the machine has available. Without it a
//! replay memory too large for the machine aborts the process when it is allocated ("memory
//! allocation of N bytes failed", no error, no cleanup), a huge network fails inside libtorch,
//! and a huge batch gets the process killed by the kernel.
//!
//! The estimate is an upper bound of the big items: the replay memory (its rings are allocated
//! whole, though pages become resident only as they fill), every copy of the network's weights
//! (online, target, gradients, two optimizer moments, the published snapshot, each actor's and
//! the evaluator's policy, a checkpoint being written) and the learner's batches with their
//! activations (forward passes of the online network on both observations and of the target
//! network, kept for the backward pass). Measured against `wndqn bench replay`: 7,063 resident
//! bytes per stored Pong transition, 7,062 estimated.

use anyhow::{bail, Result};

use crate::config::Config;
use wndqn_agents::qnet::Arch;

/// Memory kept back for everything the estimate leaves out (the emulators, libtorch's own
/// buffers, the page cache): a run may use at most this fraction of the available memory.
const HEADROOM: f64 = 0.9;
/// The most actions any environment has (ALE's full action set); the head's size hardly matters.
const MAX_ACTIONS: f64 = 18.0;

/// What a wndqn process holds before any of its own data: libtorch with MKL, oneDNN and the CUDA
/// wheel's libraries loaded (`wndqn check` on CartPole peaks at 0.49 GB resident, a MinAtar run
/// sits at 0.43 GB with its 0.1 GB replay memory).
const RUNTIME: f64 = 0.4e9;

/// The estimated memory of a run, bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The replay memory.
    pub replay: f64,
    /// Bytes per stored transition.
    pub per_transition: f64,
    /// Every copy of the network's weights.
    pub networks: f64,
    /// The learner's batches: prefetched inputs and one update's activations.
    pub batches: f64,
    /// The diagnostics' probe: a forward pass on `log.diagnostics_batch` observations and the
    /// feature matrix's singular values.
    pub diagnostics: f64,
    /// The process itself ([`RUNTIME`]).
    pub runtime: f64,
}

impl Estimate {
    /// Everything.
    pub fn total(&self) -> f64 {
        self.replay + self.networks + self.batches + self.diagnostics + self.runtime
    }
}

/// Sizes the estimate needs, from the config alone.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Values of one observation frame (84 x 84), or of the vector.
    pub obs_len: f64,
    /// Bytes per observation value in the replay memory (u8 frames, f32 vectors).
    pub obs_bytes: f64,
    /// Frames per stacked observation (1 for vectors).
    pub stack: f64,
}

impl Shape {
    /// The observation shape a config asks for.
    pub fn of(cfg: &Config) -> Shape {
        match cfg.agent.network {
            Arch::Nature => {
                let s = cfg.env.frame_size as f64;
                Shape { obs_len: s * s, obs_bytes: 1.0, stack: cfg.env.frame_stack as f64 }
            }
            // CartPole: a 4-vector.
            Arch::Mlp => Shape { obs_len: 4.0, obs_bytes: 4.0, stack: 1.0 },
            // MinAtar: C x 10 x 10 bytes, C at most 10 (Seaquest).
            Arch::Minatar => Shape { obs_len: 1000.0, obs_bytes: 1.0, stack: 1.0 },
        }
    }
}

/// The Nature CNN's convolutions: output channels, kernel, stride.
const CONVS: [(f64, f64, f64); 3] = [(32.0, 8.0, 4.0), (64.0, 4.0, 2.0), (64.0, 3.0, 1.0)];

/// Weights of the Q-network (`f64`: huge settings must not overflow).
pub fn parameters(cfg: &Config, shape: Shape) -> f64 {
    let a = &cfg.agent;
    // Weights, and a bias and a weight-norm scale per output.
    let dense = |i: f64, o: f64| i * o + 2.0 * o;
    let (body, feat, width) = match a.network {
        Arch::Nature => {
            let (mut side, mut ci, mut p) = (cfg.env.frame_size as f64, shape.stack, 0.0);
            for (co, k, s) in CONVS {
                p += co * ci * k * k + 2.0 * co;
                side = ((side - k) / s).floor() + 1.0;
                ci = co;
            }
            (p, 64.0 * side.max(1.0).powi(2), 512.0)
        }
        Arch::Mlp => {
            let h = a.hidden as f64;
            (dense(shape.obs_len, h), h, h)
        }
        Arch::Minatar => (16.0 * 10.0 * 9.0 + 32.0, 16.0 * 64.0, 128.0),
    };
    let heads = if a.dueling {
        2.0 * dense(feat, width) + dense(width, 1.0) + dense(width, MAX_ACTIONS)
    } else {
        dense(feat, width) + dense(width, MAX_ACTIONS)
    };
    body + heads
}

/// Activations of one forward pass per sample (values), for the learner's batch estimate.
fn activations(cfg: &Config, shape: Shape) -> f64 {
    match cfg.agent.network {
        Arch::Nature => {
            let mut side = cfg.env.frame_size as f64;
            let mut v = 0.0;
            for (co, k, s) in CONVS {
                side = ((side - k) / s).floor() + 1.0;
                v += co * side.max(1.0) * side.max(1.0);
            }
            v + 1024.0 + shape.stack * shape.obs_len
        }
        Arch::Mlp => 3.0 * cfg.agent.hidden as f64 + shape.obs_len,
        Arch::Minatar => 2.0 * 16.0 * 64.0 + 128.0 + shape.obs_len,
    }
}

/// The estimate for a training run of `cfg`.
pub fn estimate(cfg: &Config) -> Estimate {
    let shape = Shape::of(cfg);
    let per_transition = shape.obs_len * shape.obs_bytes + 6.0;
    let params = parameters(cfg, shape);
    let copies = 9.0 + cfg.actors.num_actors as f64;
    Estimate {
        replay: cfg.replay.capacity as f64 * per_transition,
        per_transition,
        networks: copies * params * 4.0,
        batches: batch_bytes(cfg, shape, cfg.replay.batch_size as f64, cfg.learner.prefetch as f64),
        diagnostics: diagnostics_bytes(cfg, shape),
        runtime: RUNTIME,
    }
}

/// The diagnostics' probe ([`Estimate::diagnostics`]): the batch's inputs and activations, its
/// penultimate features in f64, and LAPACK's work on them (a few copies).
fn diagnostics_bytes(cfg: &Config, shape: Shape) -> f64 {
    if cfg.log.diagnostics_every == 0 {
        return 0.0;
    }
    let batch = cfg.log.diagnostics_batch as f64;
    let width = match cfg.agent.network {
        Arch::Nature => 512.0,
        Arch::Minatar => 128.0,
        Arch::Mlp => cfg.agent.hidden as f64,
    };
    batch * (activations(cfg, shape) * 4.0 + 4.0 * width * 8.0)
}

/// Bytes of `prefetch` waiting batches of `batch` samples and of one update on a batch.
pub fn batch_bytes(cfg: &Config, shape: Shape, batch: f64, prefetch: f64) -> f64 {
    let input = 2.0 * shape.stack * shape.obs_len * 4.0;
    // Three forward passes (online on obs and next obs, target on next obs), kept for the
    // backward pass, plus their gradients.
    let update = 3.0 * 3.0 * activations(cfg, shape) * 4.0;
    batch * (input * (prefetch + 2.0) + update)
}

/// Available memory (`MemAvailable` of /proc/meminfo), bytes; `None` where it cannot be read.
pub fn available() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Gigabytes, for messages.
pub fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// An error unless `copies` runs of `cfg` fit in `avail` bytes (with headroom), naming what
/// takes the memory and the largest replay capacity that fits.
pub fn check_fits(cfg: &Config, copies: usize, avail: f64) -> Result<Estimate> {
    let e = estimate(cfg);
    let budget = avail * HEADROOM / copies.max(1) as f64;
    if e.total() <= budget {
        return Ok(e);
    }
    let who = if copies > 1 { format!("{copies} runs at once need") } else { "this run needs".to_string() };
    let room = budget - e.networks - e.batches - e.diagnostics - e.runtime;
    let most = (avail * HEADROOM / e.total()).floor() as usize;
    let fit = if copies > 1 && most >= 1 {
        format!("At most {most} such runs fit at once (--jobs {most}).")
    } else if room > 0.0 {
        // Rounded down to two significant figures, at least one batch.
        let c = (room / e.per_transition).floor();
        let mag = 10f64.powf(c.log10().floor() - 1.0).max(1.0);
        let c = ((c / mag).floor() * mag) as u64;
        format!("The largest replay.capacity that fits is about {c}.")
    } else {
        "Even an empty replay memory does not fit: the network or the batches are too large (agent.hidden, replay.batch_size, learner.prefetch).".to_string()
    };
    let per = match cfg.agent.network {
        Arch::Nature => format!("{:.0} bytes: env.frame_size = {}", e.per_transition, cfg.env.frame_size),
        Arch::Mlp | Arch::Minatar => format!("{:.0} bytes", e.per_transition),
    };
    bail!(
        "{who} about {} of memory, more than the {} this machine has available ({}% of it is the most a run may take): replay memory {} (replay.capacity = {} transitions x {per}), networks {} (the weights, agent.hidden for an MLP, x {} copies: actors.num_actors + 9), batches {} (replay.batch_size = {}, learner.prefetch = {}), diagnostics {} (log.diagnostics_batch = {}), the process itself {}. {fit}",
        gb(e.total() * copies.max(1) as f64),
        gb(avail),
        (HEADROOM * 100.0) as u32,
        gb(e.replay),
        cfg.replay.capacity,
        gb(e.networks),
        9 + cfg.actors.num_actors,
        gb(e.batches),
        cfg.replay.batch_size,
        cfg.learner.prefetch,
        gb(e.diagnostics),
        cfg.log.diagnostics_batch,
        gb(e.runtime)
    )
}

/// An error when `bytes` for `what` exceed the memory this machine has available (with headroom).
pub fn check_bytes(what: &str, bytes: f64) -> Result<()> {
    match available() {
        Some(avail) if bytes > avail * HEADROOM => {
            bail!("{what} needs about {} of memory, more than the {} this machine has available", gb(bytes), gb(avail))
        }
        _ => Ok(()),
    }
}

/// [`check_fits`] against this machine (no check where the available memory cannot be read).
pub fn check(cfg: &Config, copies: usize) -> Result<()> {
    match available() {
        Some(avail) => check_fits(cfg, copies, avail).map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong() -> Config {
        crate::config::load(&crate::config::presets_dir().join("pong.toml"), &[]).unwrap()
    }

    #[test]
    fn the_nature_cnn_has_its_known_size_and_pong_transitions_their_measured_bytes() {
        let cfg = pong();
        let p = parameters(&cfg, Shape::of(&cfg));
        // conv 8x8x4x32, 4x4x32x64, 3x3x64x64, dense 3136x512, head 512 x actions (+ biases and
        // weight-norm scales): 1.69M weights with 6 actions; the estimate assumes 18.
        assert!((1.68e6..1.70e6).contains(&p), "{p}");
        assert_eq!(estimate(&cfg).per_transition, 7062.0);
    }

    #[test]
    fn replay_memories_beyond_the_machine_are_refused_with_the_capacity_that_fits() {
        let mut cfg = pong();
        let avail = 23e9;
        cfg.replay.capacity = 1_000_000;
        check_fits(&cfg, 1, avail).expect("1M Pong transitions (7 GB) fit in 23 GB");
        cfg.replay.capacity = 4_000_000;
        let e = check_fits(&cfg, 1, avail).unwrap_err().to_string();
        assert!(
            e.contains("replay.capacity = 4000000") && e.contains("28.2 GB") && e.contains("env.frame_size = 84"),
            "{e}"
        );
        let fit: u64 = e.split("fits is about ").nth(1).unwrap().trim_end_matches('.').parse().unwrap();
        cfg.replay.capacity = fit as usize;
        check_fits(&cfg, 1, avail).expect("the capacity the message names fits");
        cfg.replay.capacity = 1_000_000;
        let e = check_fits(&cfg, 4, avail).unwrap_err().to_string();
        assert!(e.contains("4 runs at once"), "{e}");
    }

    #[test]
    fn a_huge_network_or_batch_is_refused_even_with_an_empty_replay() {
        let mut cfg = crate::config::load(&crate::config::presets_dir().join("cartpole.toml"), &[]).unwrap();
        cfg.agent.hidden = 100_000;
        let e = check_fits(&cfg, 1, 23e9).unwrap_err().to_string();
        assert!(e.contains("Even an empty replay memory does not fit"), "{e}");
        let mut cfg = pong();
        cfg.replay.batch_size = 100_000;
        assert!(check_fits(&cfg, 1, 23e9).is_err());
    }
}
