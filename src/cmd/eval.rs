//! `wndqn eval RUN`: greedy evaluation of a checkpoint on whole games (no episodic life,
//! unclipped rewards), with an optional video of the first game.

use crate::util::{out, say};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;
use wndqn_agents::policy::Policy;
use wndqn_envs::{make_env, EnvConfig};

use crate::play::{evaluate, stats};

/// `wndqn eval` flags.
#[derive(Debug, Args)]
pub struct EvalCmd {
    /// The run folder (runs/...).
    pub run: PathBuf,
    /// Checkpoint to evaluate, by its update count (default: the newest complete one).
    #[arg(long)]
    pub checkpoint: Option<u64>,
    /// Games to play.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub episodes: u64,
    /// Probability of a random action (the usual 0.001 avoids getting stuck).
    #[arg(long, default_value_t = 0.001, value_parser = crate::util::probability_arg)]
    pub epsilon: f64,
    /// Cap on env steps per game (27,000 = 108,000 frames = 30 minutes of play).
    #[arg(long, default_value_t = 27_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: u64,
    /// Seed of the evaluation games.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
    /// Write the first game as a video: `.gif`, or `.mp4` when ffmpeg is installed.
    #[arg(long, value_name = "FILE")]
    pub video: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Run `wndqn eval`. Play is on the CPU (as the actors act); `--device cuda` is still checked,
/// so that it fails where CUDA is missing, as it does for `train`.
pub fn run(cmd: EvalCmd, device: crate::device::DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    let run = &cmd.run;
    if !run.join("config.toml").is_file() {
        bail!("{} is not a wndqn run folder (no config.toml)", run.display());
    }
    if device.resolve()?.is_cuda() && device == crate::device::DeviceArg::Cuda {
        say!("note: evaluation plays on the CPU, as the actors do (one observation at a time)");
    }
    let (ckpt, state) = crate::run::checkpoint::find(run, cmd.checkpoint, &mut |w| say!("{w}"))?;
    let cfg = crate::config::load(&run.join("config.toml"), &[])?;
    // The network is built from the run's config: one edited since the checkpoint was written
    // (another width, network or game) would not fit its weights, so it is refused as a resume is.
    crate::run::dir::check_keys(run, &ckpt, &cfg)?;
    let env_cfg = EnvConfig { episodic_life: false, ..cfg.env.clone() };
    let (id, env_cfg) = env_cfg.resolve(rom_dir)?;
    let mut env = make_env(&id, &env_cfg)?;
    if let Some(v) = &cmd.video {
        if env.rgb_frame().is_none() {
            bail!("videos need a screen: {} has none", cfg.env.id);
        }
        match v.extension().and_then(|e| e.to_str()) {
            Some("gif") => {}
            Some("mp4") if which("ffmpeg") => {}
            Some("mp4") => bail!(
                "--video {}: MP4 needs ffmpeg on PATH (apt-get install ffmpeg); use a .gif name instead",
                v.display()
            ),
            _ => bail!("--video {}: use a .gif (or .mp4) file name", v.display()),
        }
        // Before any game is played: a video that cannot be written must not cost the results.
        let tmp = temporary(v);
        std::fs::File::create(&tmp).with_context(|| format!("--video {}: cannot write there", v.display()))?;
        let _ = std::fs::remove_file(&tmp);
    }
    crate::threads::limit_current_thread(1);
    let mut policy = Policy::new(&cfg.net_config(env.obs_kind(), env.num_actions()));
    crate::run::checkpoint::utf8_dir(&ckpt, |d| policy.load_file(&d.join("online.safetensors")))
        .with_context(|| format!("loading {}", ckpt.display()))?;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut size = (0, 0);
    let want_video = cmd.video.is_some();
    let episodes = cmd.episodes as usize;
    let returns = evaluate(env.as_mut(), &policy, episodes, cmd.epsilon, cmd.max_steps, cmd.seed, |ep, e| {
        if want_video && ep == 0 {
            if let Some((w, h, rgb)) = e.rgb_frame() {
                size = (w, h);
                frames.push(rgb);
            }
        }
        true
    })?;
    if let Some(v) = &cmd.video {
        write_video(v, size, &frames)?;
    }
    let [mean, median, std, min, max] = stats(&returns);
    if cmd.json {
        out!(
            "{}",
            json!({"run": run, "checkpoint": ckpt, "env_steps": state.env_steps, "updates": state.updates, "episodes": returns.len(), "epsilon": cmd.epsilon, "mean": mean, "median": median, "std": std, "min": min, "max": max, "returns": returns})
        );
    } else {
        out!(
            "{} @ {} updates / {} env steps, {} games, epsilon {}:",
            run.display(),
            state.updates,
            state.env_steps,
            returns.len(),
            cmd.epsilon
        );
        out!("  mean {mean:.2}  median {median:.2}  std {std:.2}  min {min:.2}  max {max:.2}");
        if let Some(v) = &cmd.video {
            out!("  video of game 1 ({} frames): {}", frames.len(), v.display());
        }
    }
    Ok(())
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The temporary file a video is written to before it is renamed into place.
fn temporary(path: &Path) -> PathBuf {
    path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("video")))
}

/// Write frames (RGB) as a GIF or, through ffmpeg, an MP4; into a temporary file first.
fn write_video(path: &Path, (w, h): (usize, usize), frames: &[Vec<u8>]) -> Result<()> {
    if frames.is_empty() {
        bail!("no frames recorded");
    }
    let tmp = temporary(path);
    let result = (|| -> Result<()> {
        if path.extension().is_some_and(|e| e == "gif") {
            let f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            let mut enc = gif::Encoder::new(f, w as u16, h as u16, &[])?;
            enc.set_repeat(gif::Repeat::Infinite)?;
            for rgb in frames {
                let mut fr = gif::Frame::from_rgb_speed(w as u16, h as u16, rgb, 10);
                fr.delay = 7; // 4 emulator frames at 60 Hz ~ 1/15 s
                enc.write_frame(&fr)?;
            }
        } else {
            let mut child = Command::new("ffmpeg")
                .args([
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    "rgb24",
                    "-s",
                    &format!("{w}x{h}"),
                    "-r",
                    "15",
                    "-i",
                    "-",
                    "-pix_fmt",
                    "yuv420p",
                    "-vf",
                    "scale=320:420",
                    "-f",
                    "mp4",
                ])
                .arg(&tmp)
                .stdin(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("ffmpeg stdin"))?;
            for rgb in frames {
                stdin.write_all(rgb)?;
            }
            drop(stdin);
            if !child.wait()?.success() {
                bail!("ffmpeg failed");
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(std::fs::rename(&tmp, path)?),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", path.display())))
        }
    }
}
