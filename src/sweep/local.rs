//! The local executor: a pool of child `wndqn train` processes, one per run (a crash stays in its
//! run), `--jobs` at a time.
//!
//! Each child trains `DIR/runs/NAME` from `DIR/configs/NAME.toml` with `--run-dir`, so the same
//! command starts a run, resumes an interrupted one, or finds it complete; its output goes to
//! `DIR/logs/NAME.log`. Children run in their own process groups (a terminal's Ctrl-C reaches
//! only the sweep, which asks each child once to stop, and each writes its checkpoint) and get
//! SIGINT from the kernel if the sweep process dies (`PR_SET_PDEATHSIG`): a `kill -9` of the
//! sweep leaves every run stopped cleanly, and the next `sweep run` resumes them. A run that an
//! earlier sweep process is still finishing (its folder locked) is waited for, never doubled.
//! A child that fails leaves `DIR/failed/NAME` (exit status, the tail of its log); failed runs
//! are retried only with `--retry-failed`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::spec::{Plan, RunSpec};
use super::state::{self, Folders, State};
use crate::device::DeviceArg;
use crate::util::say;

/// How the pool runs.
pub struct LocalOptions {
    /// Runs at once (`None`: from the cores and the memory).
    pub jobs: Option<usize>,
    /// Run failed runs again.
    pub retry_failed: bool,
    /// No progress bar.
    pub quiet: bool,
    /// The learner's device for every run.
    pub device: DeviceArg,
    /// The ROM folder for every run.
    pub rom_dir: Option<PathBuf>,
}

/// How many runs go at once, and the overrides that share the machine between them.
struct Pool {
    jobs: usize,
    sets: Vec<String>,
    gpus: usize,
}

/// How many runs go at once on this machine (an error when `--jobs` runs do not fit in its
/// memory): what `sweep run` checks before it writes anything.
pub fn jobs(plan: &Plan, opts: &LocalOptions) -> Result<usize> {
    pool(plan, opts).map(|p| p.jobs)
}

fn pool(plan: &Plan, opts: &LocalOptions) -> Result<Pool> {
    let cores = crate::threads::cores();
    let base = &plan.base;
    let nature = base.agent.network == wndqn_agents::qnet::Arch::Nature;
    // A small MLP or MinAtar learner and its actor fit on a core; a Nature-CNN run wants a few.
    let per_run = if nature { 4 } else { 1 };
    let avail = crate::memory::available();
    let fits = |jobs: usize| avail.is_none_or(|a| crate::memory::check_fits(base, jobs, a).is_ok());
    let jobs = match opts.jobs {
        Some(j) => {
            if let Some(a) = avail {
                crate::memory::check_fits(base, j, a).with_context(|| format!("--jobs {j}"))?;
            }
            j
        }
        None => {
            let want = (cores / per_run).max(1);
            let jobs = (1..=want).rev().find(|&j| fits(j)).unwrap_or(1);
            if let Some(a) = avail {
                crate::memory::check_fits(base, 1, a)?;
            }
            jobs
        }
    };
    let mut sets = Vec::new();
    if nature && base.learner.threads == 0 {
        sets.push(format!("learner.threads={}", (cores / jobs).max(1)));
    }
    if jobs > 1 {
        sets.push("learner.exclusive_cpu=false".into());
    }
    let gpus = if opts.device == DeviceArg::Cpu { 0 } else { tch::Cuda::device_count().max(0) as usize };
    Ok(Pool { jobs, sets, gpus })
}

/// A running child.
struct Running {
    run: RunSpec,
    child: Child,
    slot: usize,
    asked_to_stop: bool,
}

fn spawn(f: &Folders, plan: &Plan, r: &RunSpec, p: &Pool, slot: usize, opts: &LocalOptions) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the wndqn binary")?;
    let log_path = f.log(&r.name);
    let log = crate::run::dir::open_no_follow(std::fs::OpenOptions::new().create(true).append(true), &log_path)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--device").arg(match opts.device {
        DeviceArg::Auto => "auto",
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
    });
    if let Some(d) = &opts.rom_dir {
        cmd.arg("--rom-dir").arg(d);
    }
    cmd.args(["train", "--quiet", "--config"]).arg(f.config(&r.name)).arg("--run-dir").arg(f.run(&r.name));
    for s in &p.sets {
        cmd.arg("--set").arg(s);
    }
    if plan.save_replay {
        cmd.arg("--save-replay");
    }
    if p.gpus > 0 {
        cmd.env("CUDA_VISIBLE_DEVICES", (slot % p.gpus).to_string());
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls: prctl(2).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("cannot start the run {}", r.name))
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Record a failed run: its exit status and the tail of its log.
pub fn record_failure(f: &Folders, name: &str, status: &str) -> Result<()> {
    let text = format!("{status}\n{}\n", tail(&f.log(name), 40));
    crate::run::dir::write_atomic(&f.failed(name), text.as_bytes())
}

fn exit_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// The sweep's counts, for the progress line and the end.
#[derive(Default)]
struct Counts {
    done: usize,
    failed: usize,
    interrupted: usize,
}

/// Run every run of the plan in `dir` that is not done, `jobs` at a time; with a test stage,
/// once every tuning run is done, choose and run the test stage too.
pub fn run(dir: &Path, plan: &Plan, opts: &LocalOptions) -> Result<()> {
    let _lock = crate::run::dir::lock(dir)?;
    crate::signals::install();
    let mut plan = plan.clone();
    loop {
        let stopped = run_stage(dir, &plan, opts)?;
        if stopped || !plan.needs_choice() {
            return Ok(());
        }
        plan = super::choose_if_ready(dir, plan, opts.rom_dir.as_deref())?;
        if plan.needs_choice() {
            // Not every tuning run is done (none failed, or `finish` said so): nothing to choose.
            return Ok(());
        }
        say!("the tuning stage is done: the test stage runs each variant at its chosen point");
    }
}

/// Run every run of the plan that is not done; returns whether a stop was asked for.
fn run_stage(dir: &Path, plan: &Plan, opts: &LocalOptions) -> Result<bool> {
    let f = Folders::new(dir);
    let p = pool(plan, opts)?;
    let none = BTreeMap::new();
    let runs = plan.runs();
    let mut counts = Counts::default();
    let mut queue: std::collections::VecDeque<RunSpec> = Default::default();
    for r in &runs {
        match state::status(&f, plan, r, &none).state {
            State::Done => counts.done += 1,
            State::Failed if !opts.retry_failed => counts.failed += 1,
            State::Failed => {
                let _ = std::fs::remove_file(f.failed(&r.name));
                queue.push_back(r.clone());
            }
            _ => queue.push_back(r.clone()),
        }
    }
    say!(
        "sweep {} in {}: {} runs, {} done, {} failed{}, {} to run, {} at a time{}",
        plan.name,
        dir.display(),
        runs.len(),
        counts.done,
        counts.failed,
        if counts.failed > 0 && !opts.retry_failed { " (retried with --retry-failed)" } else { "" },
        queue.len(),
        p.jobs,
        if p.sets.is_empty() { String::new() } else { format!(" (each with --set {})", p.sets.join(" --set ")) }
    );
    let bar = progress_bar(runs.len() as u64, opts.quiet);
    let mut running: Vec<Running> = Vec::new();
    let mut stopping = false;
    let mut waited_for: Vec<RunSpec> = Vec::new();
    loop {
        if crate::signals::interrupted() && !stopping {
            stopping = true;
            note(&bar, format!("stopping {} running run(s): each writes a checkpoint first", running.len()));
            for r in &mut running {
                // SAFETY: kill(2) of a child process we started.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
                r.asked_to_stop = true;
            }
        }
        reap(&mut running, &f, &mut counts, &bar)?;
        // Runs another process was finishing: back in the queue once their folders are free.
        waited_for.retain(|r| {
            let busy = crate::run::dir::holder(&f.run(&r.name)).is_some();
            if !busy {
                queue.push_front(r.clone());
            }
            busy
        });
        // Launch.
        while !stopping && running.len() < p.jobs {
            let Some(r) = queue.pop_front() else { break };
            if let Some(pid) = crate::run::dir::holder(&f.run(&r.name)) {
                note(&bar, format!("{} is being trained by process {pid}: waiting for it", r.name));
                waited_for.push(r);
                continue;
            }
            let used: Vec<usize> = running.iter().map(|x| x.slot).collect();
            let slot = (0..).find(|s| !used.contains(s)).unwrap_or(0);
            let child = spawn(&f, plan, &r, &p, slot, opts)?;
            note(&bar, format!("started {}", r.name));
            running.push(Running { run: r, child, slot, asked_to_stop: false });
        }
        if running.is_empty() && (stopping || (queue.is_empty() && waited_for.is_empty())) {
            break;
        }
        update(&bar, &f, plan, &runs, &counts, running.len(), queue.len() + waited_for.len());
        std::thread::sleep(Duration::from_millis(250));
    }
    bar.finish_and_clear();
    finish(dir, &counts, runs.len(), stopping)?;
    Ok(stopping)
}

/// Count the runs that ended: done, stopped before their budget, or failed (recorded in
/// `failed/`).
fn reap(running: &mut Vec<Running>, f: &Folders, counts: &mut Counts, bar: &ProgressBar) -> Result<()> {
    let mut i = 0;
    while i < running.len() {
        match running[i].child.try_wait()? {
            None => i += 1,
            Some(status) => {
                let r = running.swap_remove(i);
                let run_dir = f.run(&r.run.name);
                let complete = crate::run::summary::read(&run_dir).is_ok_and(|s| s.complete);
                if status.success() && complete {
                    counts.done += 1;
                    note(bar, format!("done {}", r.run.name));
                } else if status.success() || r.asked_to_stop {
                    counts.interrupted += 1;
                } else {
                    counts.failed += 1;
                    let why = exit_status(status);
                    record_failure(f, &r.run.name, &why)?;
                    note(bar, format!("failed {} ({why}): {}", r.run.name, tail(&f.log(&r.run.name), 1)));
                }
            }
        }
    }
    Ok(())
}

fn finish(dir: &Path, c: &Counts, total: usize, stopped: bool) -> Result<()> {
    let again = format!("wndqn sweep run ... --dir {}", crate::util::shell_quote(&dir.display().to_string()));
    say!("{} of {total} runs done, {} failed, {} stopped before their budget", c.done, c.failed, c.interrupted);
    if stopped {
        say!("stopped: every running run wrote a checkpoint; the same command continues ({again})");
        return Ok(());
    }
    if c.failed > 0 {
        bail!(
            "{} run(s) failed: their exit status and log tail are in {}/failed/, their output in {}/logs/; after a fix, rerun with --retry-failed",
            c.failed,
            dir.display(),
            dir.display()
        );
    }
    say!("report: wndqn sweep report {}", crate::util::shell_quote(&dir.display().to_string()));
    Ok(())
}

/// A line above the progress bar (also when the bar is hidden: output to a file or --quiet).
fn note(bar: &ProgressBar, line: String) {
    bar.suspend(|| say!("{line}"));
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(2));
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:25}] {pos}/{len} runs done  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// The progress line: runs done / running / failed / queued, the env steps per second of the
/// running runs together, and the time left at that rate.
fn update(bar: &ProgressBar, f: &Folders, plan: &Plan, runs: &[RunSpec], c: &Counts, running: usize, queued: usize) {
    bar.set_position(c.done as u64);
    let (mut rate, mut left) = (0.0, 0u64);
    let fresh = crate::util::unix_now() - 15.0;
    for r in runs {
        let total = plan.config(r).map(|c| c.run.total_env_steps).unwrap_or(0);
        let run = f.run(&r.name);
        let p = crate::run::summary::Progress::read(&run);
        let done = crate::run::summary::read(&run).is_ok_and(|s| s.complete);
        if done {
            continue;
        }
        let steps = p.as_ref().map_or(0, |p| p.env_steps);
        left += total.saturating_sub(steps);
        if let Some(p) = p.filter(|p| p.time > fresh) {
            rate += p.env_steps_per_sec;
        }
    }
    let eta = if rate > 0.0 { crate::util::duration(left as f64 / rate) } else { "?".into() };
    bar.set_message(format!(
        "{running} running, {} failed, {queued} queued  {rate:.0} env steps/s  ETA {eta}",
        c.failed
    ));
}
