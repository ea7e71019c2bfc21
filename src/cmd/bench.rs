//! `wndqn bench ...`: throughput measurements. Numbers, not assertions: scripts in `scripts/`
//! run these side by side with reference implementations and report ratios.

use crate::util::out;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use tch::{Device, Kind, Tensor};
use wndqn_agents::dqn::Dqn;
use wndqn_agents::gemm;
use wndqn_agents::normalization::Variant;
use wndqn_agents::qnet::{Arch, QNetConfig};
use wndqn_agents::replay::{BatchPrep, FrameMemory, ObsRef, TensorBatch, Transition};
use wndqn_envs::{make_env, EnvConfig, EnvId};

use crate::device::{name as device_name, DeviceArg};
use crate::train::learner::{Acc, Updater};

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Preprocessed env steps per second (random actions), one env per thread.
    Env(EnvBench),
    /// Full DQN updates per second (batch 32, double DQN, Adam or RMSProp) on synthetic batches.
    Learner(LearnerBench),
    /// Replay sampling rate and resident memory per stored transition.
    Replay(ReplayBench),
    /// The whole training system (actors + learner) on a game, steady state after warm-up.
    E2e(E2eBench),
    /// An actor's greedy step (the Q-network on one observation) by the loops and by tensor
    /// ops, in turn, and a weight load.
    Acting(ActingBench),
}

/// `wndqn bench env`
#[derive(Debug, Args)]
pub struct EnvBench {
    /// Game or env id.
    #[arg(long, default_value = "Pong")]
    pub game: String,
    /// Threads, each stepping its own env(s).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Envs per thread (stepped round-robin).
    #[arg(long, default_value_t = 1)]
    pub envs_per_thread: usize,
    /// Measurement time, seconds.
    #[arg(long, default_value_t = 5.0, value_parser = crate::util::seconds_arg)]
    pub seconds: f64,
    /// Env settings: `--set env.repeat_action_probability=0` (repeatable).
    #[arg(long = "set", value_name = "env.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `wndqn bench learner`
#[derive(Debug, Args)]
pub struct LearnerBench {
    /// The network, with its preset (`nature`: configs/pong.toml, 4x84x84 frames, 6 actions;
    /// `minatar`: configs/minatar.toml, 4x10x10; `mlp`: configs/cartpole.toml). Default: the
    /// `--config`'s, else `nature`.
    #[arg(long, value_enum)]
    pub network: Option<Arch>,
    /// The config whose update is timed (optimizer, double DQN, loss, clipping); default: the
    /// network's preset.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Overrides on the config, as `train --set` (`agent.double_dqn=true`,
    /// `agent.optimizer=adam`); repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Network variant.
    #[arg(long, value_enum, default_value = "weight_norm")]
    pub variant: Variant,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    /// Intra-op threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Measurement time, seconds (after 5 warm-up updates).
    #[arg(long, default_value_t = 10.0, value_parser = crate::util::seconds_arg)]
    pub seconds: f64,
    /// Train on real frames of this game (random play, 4-frame stacks) instead of uniform noise.
    /// Real frames are mostly flat background, which changes the numbers the network sees
    /// (and, after a data-dependent init, its scales); `nature` only.
    #[arg(long)]
    pub game: Option<String>,
    /// On CUDA, replay the update as a captured CUDA graph, copying the pinned host batch in
    /// before each replay as training does (`false`: eager updates, the reference). Ignored on
    /// the CPU.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cuda_graph: bool,
    /// What the forward and backward passes compute in (`learner.precision`).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::config::Precision,
    /// bf16: run the convolutions in channels-last memory format (the learner does).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub channels_last: bool,
    /// Time this variant too, its updates taking turns with `--variant`'s (A B B A ..., same
    /// batch, eager), and print the ratio of the two median update times: what one variant
    /// costs over the other, with the machine's drift cancelled out.
    #[arg(long, value_enum)]
    pub vs: Option<Variant>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `wndqn bench replay`
#[derive(Debug, Args)]
pub struct ReplayBench {
    /// Transitions to store (84x84 frames).
    #[arg(long, default_value_t = 200_000)]
    pub fill: usize,
    /// Shards (actors).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Sampling time, seconds.
    #[arg(long, default_value_t = 3.0, value_parser = crate::util::seconds_arg)]
    pub seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `wndqn bench e2e`
#[derive(Debug, Args)]
pub struct E2eBench {
    /// Game.
    #[arg(long, default_value = "Pong")]
    pub game: String,
    /// Network variant.
    #[arg(long, value_enum, default_value = "weight_norm")]
    pub variant: Variant,
    /// Measurement time after warm-up, seconds.
    #[arg(long, default_value_t = 60.0, value_parser = crate::util::seconds_arg)]
    pub seconds: f64,
    /// Config to start from (its env id is replaced by --game). Default: configs/minatar.toml
    /// for a MinAtar game, configs/pong.toml otherwise.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Config overrides (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `wndqn bench acting`
#[derive(Debug, Args)]
pub struct ActingBench {
    /// Game: its observations (random play) and its preset's network (configs/minatar.toml for
    /// a MinAtar game, configs/pong.toml otherwise).
    #[arg(long, default_value = "MinAtar/Breakout-v0")]
    pub game: String,
    /// Network variant.
    #[arg(long, value_enum, default_value = "weight_norm")]
    pub variant: Variant,
    /// Measurement time, seconds (both ways together).
    #[arg(long, default_value_t = 4.0, value_parser = crate::util::seconds_arg)]
    pub seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Run a benchmark.
pub fn run(cmd: BenchCmd, device: DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    match cmd {
        BenchCmd::Env(b) => bench_env(b, rom_dir),
        BenchCmd::Learner(b) => bench_learner(b, device, rom_dir),
        BenchCmd::Replay(b) => bench_replay(b),
        BenchCmd::E2e(b) => bench_e2e(b, device, rom_dir),
        BenchCmd::Acting(b) => bench_acting(b, rom_dir),
    }
}

fn env_config(game: &str, sets: &[String]) -> Result<EnvConfig> {
    let mut t = toml::Table::new();
    let mut sets: Vec<String> = sets.to_vec();
    sets.insert(0, format!("env.id=\"{game}\""));
    for s in &sets {
        if !s.starts_with("env.") {
            bail!("--set {s}: bench env only takes env.* settings");
        }
    }
    crate::config::apply_sets(&mut t, &sets)?;
    let env = t.remove("env").unwrap_or(toml::Value::Table(Default::default()));
    EnvConfig::deserialize(env).map_err(|e| anyhow::anyhow!("--set: {e}"))
}

/// One benchmark thread: make `n` envs, wait for the start, then play uniformly random actions
/// round-robin until the deadline; the env steps and the returns of the games that ended.
fn random_play(
    id: &EnvId,
    cfg: &EnvConfig,
    t: usize,
    n: usize,
    start: &std::sync::Barrier,
    deadline: &std::sync::OnceLock<Instant>,
) -> Result<(u64, Vec<f64>)> {
    let made = (0..n)
        .map(|k| {
            let mut e = make_env(id, cfg)?;
            e.reset(Some((t * 1000 + k) as u64))?;
            Ok(e)
        })
        .collect::<Result<Vec<_>>>();
    start.wait();
    let mut envs = made?;
    let mut rng = StdRng::seed_from_u64(t as u64);
    let end = *deadline.wait();
    let (mut steps, mut returns) = (0u64, Vec::new());
    loop {
        for e in envs.iter_mut() {
            let a = rng.gen_range(0..e.num_actions());
            let s = e.step(a);
            if let Some(ep) = s.episode {
                returns.push(ep.ret);
            }
            if s.terminated || s.truncated {
                let _ = e.reset(None);
            }
            steps += 1;
        }
        if steps % 64 < envs.len() as u64 && Instant::now() >= end {
            return Ok((steps, returns));
        }
    }
}

fn bench_env(b: EnvBench, rom_dir: Option<&Path>) -> Result<()> {
    let cores = crate::threads::cores();
    if b.threads == 0 || b.envs_per_thread == 0 {
        bail!("--threads and --envs-per-thread must be positive");
    }
    if b.threads > 4 * cores || b.envs_per_thread > 1024 {
        bail!(
            "--threads {} --envs-per-thread {}: at most {} threads (4 per CPU thread of this machine) and 1024 envs per thread",
            b.threads,
            b.envs_per_thread,
            4 * cores
        );
    }
    let (id, cfg) = env_config(&b.game, &b.sets)?.resolve(rom_dir)?;
    // Every thread makes its own envs (in parallel), then all start together with the main
    // thread, which times the whole span: the rate is steps over wall-clock time.
    let start = std::sync::Arc::new(std::sync::Barrier::new(b.threads + 1));
    let deadline = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut handles = Vec::new();
    for t in 0..b.threads {
        let (id, cfg, start, deadline, n) =
            (id.clone(), cfg.clone(), start.clone(), deadline.clone(), b.envs_per_thread);
        handles.push(std::thread::spawn(move || random_play(&id, &cfg, t, n, &start, &deadline)));
    }
    start.wait();
    let t0 = Instant::now();
    let _ = deadline.set(t0 + Duration::from_secs_f64(b.seconds));
    let (mut steps, mut returns) = (0, Vec::new());
    for h in handles {
        let (n, r) = h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        steps += n;
        returns.extend(r);
    }
    // The random policy's score, from the whole games the benchmark played.
    let random_return = (!returns.is_empty()).then(|| returns.iter().sum::<f64>() / returns.len() as f64);
    let secs = t0.elapsed().as_secs_f64();
    let sps = steps as f64 / secs;
    let frameskip = cfg.frameskip.unwrap_or(1) as f64;
    if b.json {
        out!(
            "{}",
            json!({"game": id.short_name(), "threads": b.threads, "envs_per_thread": b.envs_per_thread, "env_steps_per_sec": sps, "frames_per_sec": sps * frameskip, "seconds": secs, "frameskip": frameskip, "random_policy_games": returns.len(), "random_policy_mean_return": random_return})
        );
    } else {
        out!(
            "{}: {:.0} env steps/s ({:.0} frames/s) on {} thread(s), {} env(s) each, {:.1}s",
            id.short_name(),
            sps,
            sps * frameskip,
            b.threads,
            b.envs_per_thread,
            secs
        );
        if let Some(r) = random_return {
            out!("random policy: mean return {r:.3} over {} whole games", returns.len());
        }
    }
    Ok(())
}

/// The update in words: `double DQN, rmsprop` or `rmsprop`.
fn update_name(cfg: &crate::config::Config) -> String {
    let rule = match cfg.agent.optimizer {
        wndqn_agents::optim::OptimizerKind::Adam(_) => "adam",
        wndqn_agents::optim::OptimizerKind::Adamax(_) => "adamax",
        wndqn_agents::optim::OptimizerKind::RmsProp(_) => "rmsprop",
    };
    if cfg.agent.double_dqn {
        format!("double DQN, {rule}")
    } else {
        rule.to_string()
    }
}

/// The config `bench learner` times: `--config`, else the network's preset, with `--set`;
/// its network and the variant of `--variant`.
fn learner_config(b: &LearnerBench) -> Result<crate::config::Config> {
    // As `bench e2e`: the presets of the checkout this runs in.
    let presets = PathBuf::from("configs");
    let preset = match (&b.config, b.network) {
        (Some(c), _) => c.clone(),
        (None, Some(Arch::Minatar)) => presets.join("minatar.toml"),
        (None, Some(Arch::Mlp)) => presets.join("cartpole.toml"),
        (None, _) => presets.join("pong.toml"),
    };
    let cfg = crate::config::load_run(&preset, &b.sets, Some(b.variant), None)?;
    if let Some(n) = b.network.filter(|&n| n != cfg.agent.network) {
        bail!(
            "--network {} but {} has agent.network = {}: drop one of the two",
            n.name(),
            preset.display(),
            cfg.agent.network.name()
        );
    }
    Ok(cfg)
}

/// A batch of noise as host tensors (`u8` frames or `f32` vectors).
fn synthetic_batch(shape: &[i64], batch: i64) -> TensorBatch {
    let mut s = vec![batch];
    s.extend_from_slice(shape);
    let frames = shape.len() == 3;
    let obs = if frames {
        Tensor::randint(256, s.as_slice(), (Kind::Uint8, Device::Cpu))
    } else {
        Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu))
    };
    let next = if frames {
        Tensor::randint(256, s.as_slice(), (Kind::Uint8, Device::Cpu))
    } else {
        Tensor::randn(s.as_slice(), (Kind::Float, Device::Cpu))
    };
    TensorBatch {
        obs,
        next_obs: next,
        actions: Tensor::randint(2, [batch], (Kind::Int64, Device::Cpu)),
        rewards: Tensor::randn([batch], (Kind::Float, Device::Cpu)),
        terminated: Tensor::zeros([batch], (Kind::Float, Device::Cpu)),
    }
}

/// Two batches of real observations: `batch` consecutive stacks from random play, and the
/// stacks one step later; with the game's observation shape and number of actions. The game
/// must be one `network` plays (Atari: nature, MinAtar: minatar).
fn game_batch(game: &str, network: Arch, batch: i64, rom_dir: Option<&Path>) -> Result<(TensorBatch, (Vec<i64>, i64))> {
    let (id, cfg) = env_config(game, &[])?.resolve(rom_dir)?;
    let fits = match &id {
        wndqn_envs::EnvId::Atari { .. } => network == Arch::Nature,
        wndqn_envs::EnvId::MinAtar { .. } => network == Arch::Minatar,
        wndqn_envs::EnvId::CartPole => false,
    };
    if !fits {
        bail!("--game {game} needs the network of its observations: --network nature for Atari, minatar for MinAtar");
    }
    let mut env = make_env(&id, &cfg)?;
    let mut rng = StdRng::seed_from_u64(0);
    env.reset(Some(0))?;
    // Skip the first seconds of a game, where the screen barely changes.
    for _ in 0..200 {
        let a = rng.gen_range(0..env.num_actions());
        if env.step(a).terminated {
            env.reset(None)?;
        }
    }
    let mut stacks: Vec<u8> = Vec::new();
    let shape = env.obs_kind().shape();
    for _ in 0..=batch {
        if let wndqn_envs::Obs::Frames { stack, .. } = env.obs() {
            stacks.extend_from_slice(stack);
        }
        let a = rng.gen_range(0..env.num_actions());
        if env.step(a).terminated {
            env.reset(None)?;
        }
    }
    let all = Tensor::from_slice(&stacks).view([batch + 1, shape[0], shape[1], shape[2]]);
    let actions = env.num_actions() as i64;
    let b = TensorBatch {
        obs: all.narrow(0, 0, batch).contiguous(),
        next_obs: all.narrow(0, 1, batch).contiguous(),
        actions: Tensor::randint(actions, [batch], (Kind::Int64, Device::Cpu)),
        rewards: Tensor::zeros([batch], (Kind::Float, Device::Cpu)),
        terminated: Tensor::zeros([batch], (Kind::Float, Device::Cpu)),
    };
    Ok((b, (shape, actions)))
}

fn bench_learner(b: LearnerBench, device: DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    if b.batch < 1 {
        bail!("--batch {} must be at least 1", b.batch);
    }
    let cfg = learner_config(&b)?;
    let network = cfg.agent.network;
    let update = cfg.agent.dqn();
    let shape = crate::memory::Shape::of(&cfg);
    crate::memory::check_bytes(
        &format!("--batch {}", b.batch),
        crate::memory::batch_bytes(&cfg, shape, b.batch as f64, 1.0),
    )?;
    let device = device.resolve()?;
    let variant = b.variant;
    let threads = if b.threads == 0 { crate::threads::cores() } else { b.threads };
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    let game = b.game.as_deref().map(|g| game_batch(g, network, b.batch, rom_dir)).transpose()?;
    let io = game.as_ref().map(|g| g.1.clone());
    let (mut dqn, shape) = crate::train::bench_dqn(network, variant, update, device, io.clone())?;
    let compute = match crate::device::enable_precision(b.precision, device)? {
        wndqn_agents::layers::Compute::Bf16 { .. } => {
            wndqn_agents::layers::Compute::Bf16 { channels_last: b.channels_last }
        }
        c => c,
    };
    dqn.set_compute(compute);
    let batch = match game {
        Some((batch, _)) => batch,
        None => synthetic_batch(&shape, b.batch),
    };
    // As in training: the batch as the replay thread hands it to this device's learner.
    let prep = BatchPrep::for_device(device).computing(compute);
    let host = prep.host(batch);
    let batch = prep.to_learner(host.shallow_clone());
    if let Some(other) = b.vs {
        drop(dqn);
        return bench_learner_pair(&b, &cfg, [variant, other], compute, device, &batch, io, threads);
    }
    if variant.data_init() {
        dqn.data_init(&batch.obs, 1.0);
    }
    let (n, secs, graph_used) = timed_updates(&mut dqn, &host, &prep, b.cuda_graph, device, b.seconds)?;
    let ups = n as f64 / secs;
    let net = dqn.online.config().clone();
    let flops = net.update_flops(b.batch, cfg.agent.double_dqn);
    let p = (device == Device::Cpu).then(|| Products::measure(&net, b.batch, cfg.agent.double_dqn));
    let (floor, floor_torch) = (p.map(|p| p.floor), p.map(|p| p.floor_torch));
    let (sgemm, own) = (p.map(|p| p.sgemm), p.and_then(|p| p.own));
    let optimizer = update_name(&cfg);
    if b.json {
        out!(
            "{}",
            json!({"updates_per_sec": ups, "variant": variant.name(), "network": network, "double_dqn": cfg.agent.double_dqn, "cuda_graph": graph_used, "obs": b.game.as_deref().unwrap_or("noise"), "device": device_name(device), "threads": threads, "batch": b.batch, "updates": n, "seconds": secs, "precision": b.precision.name(), "channels_last": b.channels_last, "optimizer": optimizer, "update_mflop": flops / 1e6, "gflops": flops * ups / 1e9, "products_alone_us": floor.map(|f| f * 1e6), "products_alone_libtorch_us": floor_torch.map(|f| f * 1e6), "fraction_of_products_rate": floor.map(|f| f * ups), "sgemm_32x1024x128_gflops": sgemm, "own_kernel_32x1024x128_gflops": own, "fraction_of_sgemm_rate": sgemm.map(|s| flops * ups / 1e9 / s)})
        );
    } else {
        out!(
            "{} {} {} on {}{} ({} threads): {:.1} updates/s (batch {}, {optimizer})",
            network.name(),
            variant.name(),
            b.precision.name(),
            device_name(device),
            if graph_used { ", CUDA graph" } else { "" },
            threads,
            ups,
            b.batch
        );
        out!("  {:.1} MFLOP of matrix products per update: {:.1} GFLOP/s", flops / 1e6, flops * ups / 1e9);
        if let Some(p) = p {
            p.print(flops, ups);
        }
    }
    Ok(())
}

/// What the matrix products alone take on this core, in this process (CPU only): the floor
/// they set under an update.
#[derive(Clone, Copy)]
struct Products {
    /// Seconds per update, by the kernels the update uses ([`products_alone`]).
    floor: f64,
    /// The same by libtorch's products alone.
    floor_torch: f64,
    /// A 32x1024x128 sgemm's GFLOP/s (libtorch's: MKL).
    sgemm: f64,
    /// The same product by the crate's own kernel, where it runs here.
    own: Option<f64>,
}

impl Products {
    fn measure(net: &QNetConfig, batch: i64, double_dqn: bool) -> Products {
        Products {
            floor: products_alone(net, batch, double_dqn, 1.0, true),
            floor_torch: products_alone(net, batch, double_dqn, 1.0, false),
            sgemm: sgemm_rate(32, 1024, 128, 0.5, false).unwrap_or(f64::NAN),
            own: sgemm_rate(32, 1024, 128, 0.5, true),
        }
    }

    /// The lines `bench learner` prints for an update of `flops` at `ups` updates/s.
    fn print(&self, flops: f64, ups: f64) {
        let kernels = match self.own {
            Some(_) => format!("own AVX-512 kernels; libtorch's: {:.0} us", self.floor_torch * 1e6),
            None => "libtorch's sgemm".to_string(),
        };
        out!(
            "  the same products alone ({kernels}, contiguous operands, this process): {:.0} us = {:.1} GFLOP/s; the update runs at {:.0}% of their rate",
            self.floor * 1e6,
            flops / self.floor / 1e9,
            100.0 * self.floor * ups
        );
        let own = self.own.map_or(String::new(), |o| format!("; own kernel: {o:.1} GFLOP/s"));
        out!(
            "  sgemm [32,1024]x[1024,128] (libtorch's, MKL): {:.1} GFLOP/s; the update runs at {:.0}% of it{own}",
            self.sgemm,
            100.0 * flops * ups / 1e9 / self.sgemm
        );
    }
}

/// Seconds per update that the update's matrix products alone take (one thread's worth of the
/// intra-op threads set), each as one contiguous product into a kept output, by the kernels
/// the update uses (with `own`: `wndqn_agents::gemm` where it takes them) or by libtorch's
/// alone: the online forward
/// products (on twice the batch under double DQN), the target's, every weight gradient's and
/// every input gradient's but the observation's. The median over repeats within `secs`.
fn products_alone(net: &QNetConfig, batch: i64, double_dqn: bool, secs: f64, own: bool) -> f64 {
    let opts = (Kind::Float, Device::Cpu);
    let mut ops: Vec<(Tensor, Tensor, Tensor)> = Vec::new();
    let mut mm = |m: i64, k: i64, n: i64| {
        ops.push((Tensor::randn([m, k], opts), Tensor::randn([k, n], opts), Tensor::empty([m, n], opts)))
    };
    for (i, p) in net.products().iter().enumerate() {
        let rows = batch * p.positions;
        mm(rows * (1 + i64::from(double_dqn)), p.inputs, p.outputs);
        mm(rows, p.inputs, p.outputs);
        mm(p.outputs, rows, p.inputs);
        if i > 0 {
            mm(rows, p.outputs, p.inputs);
        }
    }
    let mut times = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs || times.len() < 5 {
        let t = Instant::now();
        for (a, b, o) in &ops {
            if own {
                gemm::product_into(o, a, b);
            } else {
                let _ = a.mm_out(o, b);
            }
        }
        times.push(t.elapsed().as_secs_f64());
    }
    median(times)
}

/// One `[m, k] x [k, n]` product's GFLOP/s, the median over repeats within `secs`: libtorch's
/// sgemm (MKL's), or with `own` the crate's kernel (`None` where it does not run here).
fn sgemm_rate(m: i64, k: i64, n: i64, secs: f64, own: bool) -> Option<f64> {
    let opts = (Kind::Float, Device::Cpu);
    let (a, b, o) = (Tensor::randn([m, k], opts), Tensor::randn([k, n], opts), Tensor::empty([m, n], opts));
    if own && !gemm::mm_into(&o, None, &a, &b) {
        return None;
    }
    let mut times = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs || times.len() < 5 {
        let t = Instant::now();
        if !own {
            let _ = a.mm_out(&o, &b);
        } else {
            gemm::mm_into(&o, None, &a, &b);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    Some(2.0 * (m * k * n) as f64 / median(times) / 1e9)
}

/// Updates on `host` for `seconds` after five untimed ones, with the learner's own updater:
/// the updates, the seconds, and whether they replayed a CUDA graph.
fn timed_updates(
    dqn: &mut Dqn,
    host: &TensorBatch,
    prep: &BatchPrep,
    cuda_graph: bool,
    device: Device,
    seconds: f64,
) -> Result<(u64, f64, bool)> {
    // The learner's own updater: eager, or a CUDA graph captured (and checked against an eager
    // update) on the first batch; a fresh copy of the pinned batch each time, as in training,
    // and the statistics read (a wait for the GPU) as often as the learner publishes weights.
    let (events, notes) = crossbeam::channel::unbounded();
    let mut stats = Acc::new(0);
    let mut updater = Updater::new(cuda_graph, device);
    let mut update = |dqn: &mut Dqn, n: u64| -> Result<()> {
        updater.update(dqn, host.shallow_clone(), prep, &mut stats, &events, n)?;
        if n.is_multiple_of(50) {
            updater.flush_stats(&mut stats);
        }
        Ok(())
    };
    for i in 0..5 {
        update(dqn, i)?;
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < seconds {
        n += 1;
        update(dqn, n)?;
    }
    updater.flush_stats(&mut stats);
    for e in notes.try_iter() {
        if let crate::train::shared::Event::Warning { text, .. } = e {
            crate::util::say!("warning: {text}");
        }
    }
    Ok((n, t0.elapsed().as_secs_f64(), updater.graphed()))
}

/// `bench learner --vs`: the two variants' updates in turn (A B B A ...), each timed; the
/// medians and their ratio. Where a network's memory lies changes its speed by a few percent
/// (the first one built was up to 8% slower than the second, whichever variant it was), so
/// half the time runs with A built first and half with B built first.
#[allow(clippy::too_many_arguments)]
fn bench_learner_pair(
    b: &LearnerBench,
    cfg: &crate::config::Config,
    variants: [Variant; 2],
    compute: wndqn_agents::layers::Compute,
    device: Device,
    batch: &TensorBatch,
    io: Option<(Vec<i64>, i64)>,
    threads: usize,
) -> Result<()> {
    let build = |v: Variant| -> Result<Dqn> {
        tch::manual_seed(0);
        let (mut dqn, _) = crate::train::bench_dqn(cfg.agent.network, v, cfg.agent.dqn(), device, io.clone())?;
        dqn.set_compute(compute);
        if v.data_init() {
            dqn.data_init(&batch.obs, 1.0);
        }
        Ok(dqn)
    };
    let mut times = [Vec::new(), Vec::new()];
    for built_first in [0usize, 1] {
        let order = [built_first, 1 - built_first];
        let mut nets = Vec::new();
        for k in order {
            nets.push((k, build(variants[k])?));
        }
        let t0 = Instant::now();
        let mut i = 0u64;
        while t0.elapsed().as_secs_f64() < b.seconds / 2.0 || i < 10 {
            // A B, then B A: an update pays for what the one before it left in the caches, so
            // each goes first half the time.
            let turn = if i.is_multiple_of(2) { [0, 1] } else { [1, 0] };
            for n in turn {
                let (k, dqn) = &mut nets[n];
                let t = Instant::now();
                dqn.update(batch);
                if let Device::Cuda(index) = device {
                    tch::Cuda::synchronize(index as i64);
                }
                if i >= 5 {
                    times[*k].push(t.elapsed().as_secs_f64());
                }
            }
            i += 1;
        }
    }
    let count = times[0].len();
    let [a, o] = times.map(median);
    let ratio = a / o;
    let [va, vo] = variants.map(Variant::name);
    if b.json {
        out!(
            "{}",
            json!({"variant": va, "vs": vo, "median_ms": a * 1e3, "vs_median_ms": o * 1e3, "ratio": ratio, "updates_each": count, "network": cfg.agent.network, "double_dqn": cfg.agent.double_dqn, "device": device_name(device), "threads": threads, "batch": b.batch, "precision": b.precision.name(), "channels_last": b.channels_last, "optimizer": update_name(cfg)})
        );
    } else {
        out!(
            "{} {} on {} ({} threads, {}), {count} updates each, in turn: {va} {:.2} ms, {vo} {:.2} ms per update (medians): {va} takes {ratio:.3}x the time of {vo}",
            cfg.agent.network.name(),
            b.precision.name(),
            device_name(device),
            threads,
            update_name(cfg),
            a * 1e3,
            o * 1e3,
        );
    }
    Ok(())
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn bench_replay(b: ReplayBench) -> Result<()> {
    if b.fill < 1000 || b.shards == 0 || b.shards > 256 || b.batch == 0 {
        bail!("--fill must be >= 1000, --shards 1..=256 and --batch >= 1");
    }
    crate::memory::check_bytes(&format!("--fill {}", b.fill), b.fill as f64 * (84.0 * 84.0 + 6.0))?;
    let before = rss_bytes();
    let mem = FrameMemory::new(b.fill, b.shards, 84 * 84, 4);
    let mut frame = vec![0u8; 84 * 84];
    let mut rng = StdRng::seed_from_u64(0);
    let per = b.fill / b.shards;
    for s in 0..b.shards {
        mem.start_episode(s, ObsRef::Frame(&frame));
        for t in 0..per {
            rng.fill(&mut frame[..]);
            let end = t % 1000 == 999;
            mem.record_step(
                s,
                Transition {
                    action: t % 6,
                    reward: 0.0,
                    terminated: end,
                    truncated: false,
                    next: ObsRef::Frame(&frame),
                },
            );
            if end {
                mem.start_episode(s, ObsRef::Frame(&frame));
            }
        }
    }
    let after = rss_bytes();
    let stored = mem.len();
    let per_transition = (after.saturating_sub(before)) as f64 / stored as f64;
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < b.seconds {
        let batch = mem.sample(b.batch, &mut rng).ok_or_else(|| anyhow::anyhow!("sampling failed"))?;
        let _t = batch.to_tensors(&[4, 84, 84], Device::Cpu);
        n += 1;
    }
    let bps = n as f64 / t0.elapsed().as_secs_f64();
    let projected_gb = per_transition * 1e6 / 1e9;
    if b.json {
        out!(
            "{}",
            json!({"batches_per_sec": bps, "transitions_per_sec": bps * b.batch as f64, "stored": stored, "rss_bytes_per_transition": per_transition, "projected_rss_gb_for_1m": projected_gb, "batch": b.batch})
        );
    } else {
        out!("replay: {stored} transitions stored; {per_transition:.0} resident bytes per transition (1M transitions: {projected_gb:.2} GB)");
        out!("sampling: {bps:.0} batches/s of {} as u8 tensors (the learner takes one per update: 25-55/s on 2 CPU cores, hundreds on a GPU)", b.batch);
    }
    Ok(())
}

/// A game's preset (of the checkout this runs in): configs/minatar.toml for a MinAtar game,
/// configs/pong.toml otherwise.
fn game_preset(game: &str) -> PathBuf {
    let minatar = matches!(wndqn_envs::ids::classify(game), Ok(wndqn_envs::ids::IdKind::MinAtar));
    PathBuf::from(if minatar { "configs/minatar.toml" } else { "configs/pong.toml" })
}

fn bench_e2e(b: E2eBench, device: DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    let mut sets = b.sets.clone();
    sets.insert(0, format!("env.id=\"{}\"", b.game));
    sets.push("run.total_env_steps=1000000000".into());
    let preset = game_preset(&b.game);
    let cfg = crate::config::load_run(b.config.as_ref().unwrap_or(&preset), &sets, Some(b.variant), None)?;
    let dev = device.resolve()?;
    let (s, m) = crate::train::measure(cfg, dev, rom_dir, b.seconds)?;
    if b.json {
        out!(
            "{}",
            json!({"game": s.env, "variant": s.variant, "device": device_name(dev), "env_steps_per_sec": m.env_steps_per_sec, "updates_per_sec": m.updates_per_sec, "seconds": m.secs, "actor_wait_frac": m.actor_wait_frac, "learner_wait_frac": m.learner_wait_frac, "learner_busy_frac": m.learner_busy_frac})
        );
    } else {
        out!(
            "{} {} ({}): {:.1} env steps/s, {:.1} updates/s over {:.0}s after warm-up",
            s.env,
            s.variant.name(),
            device_name(dev),
            m.env_steps_per_sec,
            m.updates_per_sec,
            m.secs
        );
        out!(
            "time: actors waited {:.0}% for the learner; learner busy {:.0}%, waited {:.0}% for data",
            100.0 * m.actor_wait_frac,
            100.0 * m.learner_busy_frac,
            100.0 * m.learner_wait_frac
        );
    }
    Ok(())
}

/// The median of some timings.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_acting(b: ActingBench, rom_dir: Option<&Path>) -> Result<()> {
    let sets = [format!("env.id=\"{}\"", b.game)];
    let cfg = crate::config::load_run(&game_preset(&b.game), &sets, Some(b.variant), None)?;
    let (id, env_cfg) = cfg.env.clone().resolve(rom_dir)?;
    let mut env = make_env(&id, &env_cfg)?;
    let net = cfg.net_config(env.obs_kind(), env.num_actions());
    crate::threads::limit_current_thread(1);
    // Observations of random play, as an actor sees them.
    env.reset(Some(0))?;
    let mut rng = StdRng::seed_from_u64(0);
    let (mut frames, mut vectors) = (Vec::new(), Vec::new());
    for _ in 0..256 {
        match crate::play::observation(env.obs()) {
            ObsRef::Frame(f) => frames.push(f.to_vec()),
            ObsRef::Vector(v) => vectors.push(v.to_vec()),
        }
        let s = env.step(rng.gen_range(0..env.num_actions()));
        if s.terminated || s.truncated {
            env.reset(None)?;
        }
    }
    let obs: Vec<ObsRef> =
        frames.iter().map(|f| ObsRef::Frame(f)).chain(vectors.iter().map(|v| ObsRef::Vector(v))).collect();
    // Weights loaded as an actor loads them: a learner's snapshot, copied and folded.
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _source = wndqn_agents::qnet::QNetwork::new(&vs.root(), &net);
    let snap: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    let mut policy = wndqn_agents::policy::Policy::new(&net);
    policy.load_snapshot(&snap);
    // Blocks of greedy steps over the observations, loops and tensor ops in turn (A B B A ...).
    let (mut loops, mut ops, mut checksum) = (Vec::new(), Vec::new(), 0usize);
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed().as_secs_f64() < b.seconds || i < 4 {
        for k in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let t = Instant::now();
            for o in &obs {
                checksum += if k == 0 { policy.greedy(*o) } else { policy.greedy_by_tensor_ops(*o) };
            }
            let per = t.elapsed().as_secs_f64() / obs.len() as f64;
            if i > 0 {
                [&mut loops, &mut ops][k].push(per);
            }
        }
        i += 1;
    }
    let mut loads = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        policy.load_snapshot(&snap);
        loads.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(checksum);
    let (l, o, load) = (median(loops), median(ops), median(loads));
    if b.json {
        out!(
            "{}",
            json!({"game": id.short_name(), "variant": b.variant.name(), "network": net.arch.name(), "loops_us": l * 1e6, "tensor_ops_us": o * 1e6, "speedup": o / l, "load_us": load * 1e6, "blocks": i - 1})
        );
    } else {
        out!(
            "{} {} ({} network), one observation at a time, {} blocks of {} in turn: loops {:.1} us, tensor ops {:.1} us per greedy step (medians): {:.2}x; a weight load {:.1} us",
            id.short_name(),
            b.variant.name(),
            net.arch.name(),
            i - 1,
            obs.len(),
            l * 1e6,
            o * 1e6,
            o / l,
            load * 1e6
        );
    }
    Ok(())
}
