//! The Slurm executor, through Slurm's own commands (`sbatch --parsable`, `squeue`, `scontrol`,
//! `scancel`; `sacct` needs an accounting database most clusters' test set-ups lack, so a run's
//! fate is read from its folder and from `squeue`).
//!
//! One job array per submission, one task per run that is not done: task `i` trains the `i`-th
//! run of `DIR/slurm/runs.txt` with `wndqn train --run-dir` (so a task starts, resumes or finds
//! complete its run). The task script (`DIR/slurm/task.sh`, written for a user to read) traps
//! the signal sbatch sends before the time limit (`--signal=B:USR1@120` by default), asks wndqn
//! to stop (SIGINT), waits for its checkpoint and requeues itself (`scontrol requeue`); the
//! requeued task resumes the run. A preempted or requeued task (SIGTERM to every process of the
//! task) stops the same way, and Slurm requeues it. The binary, config and ROM paths in the
//! script are absolute: the sweep folder must be on a file system the nodes share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::spec::{Plan, SlurmTable};
use super::state::{self, Folders, SlurmTask, State};
use crate::util::{out, say, shell_quote};

/// `sbatch` and friends are here, or an error saying what to do instead.
pub fn available() -> Result<()> {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sbatch").is_file()));
    if !found {
        bail!("--executor slurm needs Slurm's sbatch on PATH, and it is not there: run on the cluster's login node, or use --executor local (this machine), or --dry-run to see the job script");
    }
    Ok(())
}

fn slurm_dir(dir: &Path) -> PathBuf {
    dir.join("slurm")
}

/// Array indices as sbatch writes them: `0-3,5,7-9`.
pub fn ranges(idx: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && idx[j + 1] == idx[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { idx[i].to_string() } else { format!("{}-{}", idx[i], idx[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// The `#SBATCH` lines of a plan.
fn directives(dir: &Path, plan: &Plan) -> Vec<String> {
    let s: &SlurmTable = &plan.slurm;
    let base = &plan.base;
    let cpus = s.cpus_per_task.unwrap_or(base.actors.num_actors as u32 + 2);
    let mem = s.mem.clone().unwrap_or_else(|| {
        let est = crate::memory::estimate(base).total();
        format!("{}M", ((est + 2e9) / 1e6).ceil() as u64)
    });
    let mut d = vec![
        format!("--job-name=wndqn-{}", plan.name),
        format!("--output={}/%A_%a.out", slurm_dir(dir).display()),
        "--open-mode=append".into(),
        "--requeue".into(),
        format!("--signal={}", s.signal.as_deref().unwrap_or("B:USR1@120")),
        format!("--cpus-per-task={cpus}"),
        format!("--mem={mem}"),
    ];
    let opt = |k: &str, v: &Option<String>| v.as_ref().map(|v| format!("--{k}={v}"));
    d.extend(
        [opt("partition", &s.partition), opt("account", &s.account), opt("qos", &s.qos), opt("time", &s.time)]
            .into_iter()
            .flatten(),
    );
    if let Some(g) = s.gpus_per_task {
        d.push(format!("--gpus-per-task={g}"));
    }
    d.extend(s.extra.iter().cloned());
    d
}

/// The task script.
pub fn script(dir: &Path, plan: &Plan, exe: &Path, rom_dir: Option<&Path>) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let directives: String = directives(dir, plan).iter().map(|d| format!("#SBATCH {d}\n")).collect();
    let mut sets = vec!["learner.exclusive_cpu=false".to_string()];
    if plan.base.agent.network == wndqn_agents::qnet::Arch::Nature && plan.base.learner.threads == 0 {
        sets.push("learner.threads=$THREADS".into());
    }
    let sets: String = sets.iter().map(|s| format!(" --set {s}")).collect();
    let replay = if plan.save_replay { " --save-replay" } else { "" };
    let roms = rom_dir.map(|d| format!("export WNDQN_ROM_DIR={}\n", q(d))).unwrap_or_default();
    format!(
        r#"#!/bin/bash
# One run of the wndqn sweep `{name}` per array task, written by `wndqn sweep run --executor slurm`.
# Task i trains the run on line i of runs.txt: a new run, or its continuation from its newest
# checkpoint (`--run-dir`). Before the time limit (--signal) the run is asked to stop, writes its
# checkpoint, and the task requeues itself; a requeued or preempted task resumes the run.
{directives}set -u
WNDQN={exe}
DIR={dir}
{roms}NAME=$(awk -v i="$SLURM_ARRAY_TASK_ID" '$1 == i {{ print $2 }}' "$DIR/slurm/runs.txt")
if [ -z "$NAME" ]; then echo "no run for task $SLURM_ARRAY_TASK_ID" >&2; exit 2; fi
LOG="$DIR/logs/$NAME.log"
THREADS=$(( ${{SLURM_CPUS_PER_TASK:-3}} > 3 ? ${{SLURM_CPUS_PER_TASK:-3}} - 2 : 1 ))
echo "[$(date -Is)] slurm task ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}" >> "$LOG"
requeue=0
child=
stop() {{ [ -n "$child" ] && kill -INT "$child" 2>/dev/null; }}
trap 'requeue=1; stop' USR1
trap 'stop' TERM INT
"$WNDQN" train --quiet --config "$DIR/configs/$NAME.toml" --run-dir "$DIR/runs/$NAME"{sets}{replay} >> "$LOG" 2>&1 &
child=$!
while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
done
if [ "$requeue" = 1 ] && [ "$rc" = 0 ]; then
    echo "[$(date -Is)] time limit near: stopped with a checkpoint, requeueing" >> "$LOG"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
    exit 0
fi
if [ "$rc" != 0 ]; then
    {{ echo "exit status $rc"; tail -n 40 "$LOG"; }} > "$DIR/failed/$NAME"
fi
exit "$rc"
"#,
        name = plan.name,
        exe = q(exe),
        dir = q(dir),
    )
}

/// The sweep's Slurm jobs (`DIR/slurm/jobs.txt`).
fn jobs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(slurm_dir(dir).join("jobs.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Run index -> name, from `runs.txt`.
fn index(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(slurm_dir(dir).join("runs.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(i, n)| (i.to_string(), n.to_string())))
        .collect()
}

/// What `squeue` says of the sweep's tasks, by run name (empty for a sweep never submitted).
pub fn queue(dir: &Path) -> Result<BTreeMap<String, SlurmTask>> {
    let jobs = jobs(dir);
    let mut out = BTreeMap::new();
    if jobs.is_empty() {
        return Ok(out);
    }
    available()?;
    let names = index(dir);
    for job in jobs {
        let o = Command::new("squeue")
            .args(["-h", "-r", "-j", &job, "-o", "%i|%T|%R"])
            .output()
            .context("running squeue")?;
        if !o.status.success() {
            continue; // a job Slurm has forgotten: its tasks ended long ago
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let f: Vec<&str> = line.splitn(3, '|').collect();
            let (Some(id), Some(st)) = (f.first(), f.get(1)) else { continue };
            let Some(task) = id.rsplit('_').next() else { continue };
            if let Some(name) = names.get(task) {
                let reason = f.get(2).map(|r| r.trim_matches(|c| c == '(' || c == ')').to_string()).unwrap_or_default();
                out.insert(name.clone(), SlurmTask { id: id.to_string(), state: st.to_string(), reason });
            }
        }
    }
    Ok(out)
}

/// The sweep folder's path goes into `#SBATCH --output=`, which sbatch reads without a shell:
/// only a path of plain characters can be written there as one word.
pub fn check_folder(dir: &Path) -> Result<()> {
    let shown = dir.display().to_string();
    if !shown.chars().all(|c| c.is_ascii_alphanumeric() || "/_.,+-@%=".contains(c)) {
        bail!(
            "--executor slurm: the sweep folder {shown:?} has characters sbatch cannot take in a directive (spaces, quotes, $, ; and the like); use a folder whose path has only letters, digits and / _ . , + - @ % =, or --executor local"
        );
    }
    Ok(())
}

/// Submit every run that is not done, queued or running as one job array.
pub fn submit(dir: &Path, plan: &Plan, retry_failed: bool, rom_dir: Option<&Path>, dry_run: bool) -> Result<()> {
    check_folder(dir)?;
    let exe = std::env::current_exe().context("cannot find the wndqn binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let runs = plan.runs();
    let f = Folders::new(dir);
    let queued = if dry_run { BTreeMap::new() } else { queue(dir)? };
    let mut todo = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let st = state::status(&f, plan, r, &queued);
        let go = match st.state {
            State::Queued => !queued.contains_key(&r.name),
            State::Interrupted => true,
            State::Failed => retry_failed,
            State::Running | State::Done => false,
        };
        if go {
            todo.push(i);
        }
    }
    let fitted;
    let plan = if dry_run {
        plan
    } else {
        fitted = fit_cpus(plan, node_cpus())?;
        &fitted
    };
    let text = script(dir, plan, &exe, rom_dir);
    let k = plan.slurm.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    let array = format!("--array={}{k}", ranges(&todo));
    if dry_run {
        out!("{}/slurm/task.sh would be:\n\n{text}", dir.display());
        out!("and submitted with: sbatch --parsable {array} {}/slurm/task.sh", dir.display());
        return Ok(());
    }
    if todo.is_empty() {
        say!("nothing to submit: every run is done, queued or running (wndqn sweep status {})", dir.display());
        return Ok(());
    }
    let sd = slurm_dir(dir);
    std::fs::create_dir_all(&sd).with_context(|| format!("cannot create {}", sd.display()))?;
    let listing: String = runs.iter().enumerate().map(|(i, r)| format!("{i} {}\n", r.name)).collect();
    crate::run::dir::write_atomic(&sd.join("runs.txt"), listing.as_bytes())?;
    let script_path = sd.join("task.sh");
    crate::run::dir::write_atomic(&script_path, text.as_bytes())?;
    for r in todo.iter().map(|&i| &runs[i]) {
        let _ = std::fs::remove_file(f.failed(&r.name));
    }
    let o = Command::new("sbatch").args(["--parsable", &array]).arg(&script_path).output().context("running sbatch")?;
    if !o.status.success() {
        bail!("sbatch refused the job: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    let job = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() {
        return Err(anyhow!("sbatch printed no job id"));
    }
    let mut jobs_txt = std::fs::read_to_string(sd.join("jobs.txt")).unwrap_or_default();
    jobs_txt.push_str(&format!("{job} {}\n", ranges(&todo)));
    crate::run::dir::write_atomic(&sd.join("jobs.txt"), jobs_txt.as_bytes())?;
    say!(
        "submitted Slurm job {job}: {} task(s){}, script {}",
        todo.len(),
        plan.slurm.max_parallel.map(|k| format!(", {k} at a time")).unwrap_or_default(),
        script_path.display()
    );
    say!("follow it: wndqn sweep status {}", shell_quote(&dir.display().to_string()));
    Ok(())
}

/// The most CPUs a node of the cluster has (`sinfo`), when Slurm says.
fn node_cpus() -> Option<u32> {
    let o = Command::new("sinfo").args(["-h", "-o", "%c"]).output().ok()?;
    String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().trim_end_matches('+').parse().ok()).max()
}

/// A task must fit on a node, or it pends forever (Reason=PartitionConfig): the default CPU
/// request (actors + 2) is lowered to the largest node with a warning; one the spec sets is
/// refused.
fn fit_cpus(plan: &Plan, node: Option<u32>) -> Result<Plan> {
    let mut p = plan.clone();
    let Some(node) = node else { return Ok(p) };
    match plan.slurm.cpus_per_task {
        Some(c) if c > node => bail!(
            "[slurm] cpus_per_task = {c}, but the largest node of this cluster has {node} CPUs (sinfo): no task could start. Set cpus_per_task to at most {node}"
        ),
        Some(_) => {}
        None => {
            let want = plan.base.actors.num_actors as u32 + 2;
            if want > node {
                say!("warning: each task would ask for {want} CPUs (actors + 2) but the largest node has {node}: asking for {node}; the run's threads share them");
                p.slurm.cpus_per_task = Some(node);
            }
        }
    }
    Ok(p)
}

/// Stop a Slurm sweep cleanly: pending tasks are cancelled, running ones get SIGINT (the task
/// script passes it on; wndqn writes its checkpoint; the task is not requeued).
pub fn cancel(dir: &Path) -> Result<usize> {
    available()?;
    let jobs = jobs(dir);
    let running = queue(dir)?.values().filter(|t| t.state == "RUNNING").count();
    // scancel's own complaints (a job with nothing left in that state) are not the user's news.
    let quiet = |args: &[&str]| {
        let _ = Command::new("scancel")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    for job in &jobs {
        quiet(&["--state=PENDING", job]);
        if running > 0 {
            quiet(&["--signal=INT", "--full", job]);
        }
    }
    Ok(running)
}
