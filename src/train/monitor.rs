//! The main thread of a run: events from the other threads become TensorBoard records, the
//! progress bar and evaluation requests; it also decides when the run is over. One method per
//! event, no threads of its own, so it can be driven by hand in tests (events in, TensorBoard
//! calls and state out).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::run::Measured;
use crate::util::duration;
use crossbeam::channel::Sender;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tch::Tensor;

use super::shared::{next_multiple, Event, Shared};
use crate::config::Config;
use crate::play;
use crate::tensorboard::Board;

/// How long threads get to stop after a stop request before the run gives up on them.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The event file is flushed at least this often, so TensorBoard shows a live run.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often the run checks that its folder is still there.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// How often `progress.json` is rewritten.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// The counters of a run at one moment.
#[derive(Clone, Copy)]
pub struct Mark {
    t: Instant,
    steps: u64,
    updates: u64,
    actor_wait: u64,
    learner_wait: u64,
    learner_busy: u64,
}

impl Mark {
    /// The counters now.
    pub fn now(s: &Shared) -> Mark {
        Mark {
            t: Instant::now(),
            steps: s.env_steps.load(Ordering::Acquire),
            updates: s.updates.load(Ordering::Acquire),
            actor_wait: s.actor_wait_ns.load(Ordering::Relaxed),
            learner_wait: s.learner_wait_ns.load(Ordering::Relaxed),
            learner_busy: s.learner_busy_ns.load(Ordering::Relaxed),
        }
    }
    /// Rates from `a` to this mark, with `actors` actor threads.
    pub fn since(&self, a: &Mark, actors: usize) -> Measured {
        let secs = self.t.duration_since(a.t).as_secs_f64().max(1e-9);
        Measured {
            secs,
            env_steps_per_sec: (self.steps - a.steps) as f64 / secs,
            updates_per_sec: (self.updates - a.updates) as f64 / secs,
            actor_wait_frac: (self.actor_wait - a.actor_wait) as f64 * 1e-9 / (secs * actors as f64),
            learner_wait_frac: (self.learner_wait - a.learner_wait) as f64 * 1e-9 / secs,
            learner_busy_frac: (self.learner_busy - a.learner_busy) as f64 * 1e-9 / secs,
        }
    }
}

/// A weights snapshot to evaluate, with the env step it belongs to.
pub type EvalJob = (u64, Vec<(String, Tensor)>);

/// The main thread's state.
pub struct Monitor {
    cfg: Config,
    shared: Arc<Shared>,
    pub board: Board,
    pb: ProgressBar,
    /// Every whole-game return of the run (earlier segments' recent ones included).
    pub returns: Vec<f64>,
    /// The last 100 returns, for checkpoints.
    pub recent: Arc<std::sync::Mutex<Vec<f64>>>,
    pub last_eval: Option<f64>,
    pub best20: Option<f64>,
    pub solved_at: Option<u64>,
    latest_loss: Option<f64>,
    last_log: (Instant, u64),
    next_scalars: u64,
    next_eval: u64,
    eval_sent_final: bool,
    /// The env step of the last evaluation sent.
    last_eval_sent: Option<u64>,
    eval_tx: Option<Sender<EvalJob>>,
    pub learn_start: Option<Mark>,
    pub measured_end: Option<Mark>,
    measure_secs: Option<f64>,
    stop_deadline: Option<Instant>,
    last_flush: Instant,
    last_presence_check: Instant,
    last_progress: Option<(Instant, u64)>,
    /// Set when the run folder disappeared (deleted or moved): the run stops with this error and
    /// writes nothing more.
    pub lost: Option<anyhow::Error>,
    replay_len: Box<dyn Fn() -> usize>,
    /// `learner.exclusive_cpu`'s watch: when the last window began, and the learner's wait then.
    contention: Option<(Instant, u64)>,
}

/// How long the learner must have waited for data, as a share of a window of
/// [`CONTENTION_WINDOW`], for the background threads of `learner.exclusive_cpu` to get their
/// normal priority back ([`crate::threads::release`]).
const CONTENTION_SHARE: f64 = 0.5;
const CONTENTION_WINDOW: Duration = Duration::from_secs(3);

impl Monitor {
    /// A monitor for a run starting at `start_step` with `returns` from earlier segments.
    pub fn new(
        cfg: &Config,
        shared: Arc<Shared>,
        board: Board,
        returns: Vec<f64>,
        eval_tx: Sender<EvalJob>,
        opts: &super::RunOptions,
        replay_len: Box<dyn Fn() -> usize>,
    ) -> Monitor {
        let (quiet, measure_secs) = (opts.quiet, opts.measure_secs);
        let start_step = shared.env_steps.load(Ordering::SeqCst);
        let recent = returns.iter().rev().take(100).rev().copied().collect();
        Monitor {
            cfg: cfg.clone(),
            board,
            pb: progress_bar(cfg.run.total_env_steps, quiet),
            returns,
            recent: Arc::new(std::sync::Mutex::new(recent)),
            last_eval: None,
            best20: None,
            solved_at: None,
            latest_loss: None,
            last_log: (Instant::now(), start_step),
            next_scalars: next_multiple(start_step, cfg.log.scalars_every),
            next_eval: next_multiple(start_step, cfg.log.eval_every),
            eval_sent_final: false,
            last_eval_sent: None,
            eval_tx: Some(eval_tx),
            learn_start: None,
            measured_end: None,
            measure_secs,
            stop_deadline: None,
            last_flush: Instant::now(),
            last_presence_check: Instant::now(),
            last_progress: None,
            lost: None,
            replay_len,
            contention: cfg.learner.exclusive_cpu.then(|| (Instant::now(), 0)),
            shared,
        }
    }

    /// `learner.exclusive_cpu` puts the actors, the replay thread and the evaluator under idle
    /// priority once the learner learns ([`crate::threads::Background`]); when the learner then
    /// waits for data most of a window, something else has the CPU they need (another process):
    /// they get their normal priority back for the rest of the run, and the run says so.
    fn watch_contention(&mut self) {
        let Some((t0, w0)) = self.contention else { return };
        if self.learn_start.is_none() {
            return;
        }
        let waited = self.shared.learner_wait_ns.load(Ordering::Relaxed);
        let elapsed = t0.elapsed();
        if elapsed < CONTENTION_WINDOW {
            return;
        }
        let share = waited.saturating_sub(w0) as f64 / elapsed.as_nanos() as f64;
        if w0 > 0 && share > CONTENTION_SHARE {
            let n = crate::threads::release();
            self.contention = None;
            let step = self.shared.env_steps.load(Ordering::Acquire);
            self.handle(Event::Warning {
                step,
                text: format!(
                    "the learner waited for data {:.0}% of the last {:.0} s: other work is using the CPU that learner.exclusive_cpu leaves the actors, so {n} actor, replay and evaluator thread(s) are back at normal priority for the rest of the run",
                    100.0 * share,
                    elapsed.as_secs_f64()
                ),
            });
        } else {
            self.contention = Some((Instant::now(), waited.max(1)));
        }
    }

    /// Print a line above the progress bar.
    pub fn note(&self, s: String) {
        self.pb.println(s);
    }

    /// One event from a thread.
    pub fn handle(&mut self, e: Event) {
        match e {
            Event::Episode { step, ret, length } => self.episode(step, ret, length),
            Event::Learner { step, updates, loss, q, grad_norm, updates_per_sec } => {
                let b = &mut self.board;
                b.scalar("losses/td_loss", loss, step);
                b.scalar("losses/q_values", q, step);
                b.scalar("learner/grad_norm", grad_norm, step);
                b.scalar("learner/updates_per_sec", updates_per_sec, step);
                b.scalar("learner/updates", updates as f64, step);
                self.latest_loss = Some(loss);
            }
            Event::Scales { step, layers } => {
                for (name, g) in layers {
                    let mean = g.iter().map(|&x| x as f64).sum::<f64>() / g.len().max(1) as f64;
                    self.board.scalar(&format!("weight_norm/g_mean/{name}"), mean, step);
                    self.board.histogram(&format!("weight_norm/g/{name}"), &g, step);
                }
            }
            Event::Diagnostics { step, report } => {
                for l in &report.layers {
                    let n = &l.name;
                    self.board.scalar(&format!("diag/weight_norm/{n}"), l.weight_norm, step);
                    if let Some(r) = l.relative_update {
                        self.board.scalar(&format!("diag/relative_update/{n}"), r, step);
                    }
                    if let Some(g) = l.g_mean {
                        self.board.scalar(&format!("diag/g_mean/{n}"), g, step);
                    }
                    if let Some(s) = l.sigma {
                        self.board.scalar(&format!("diag/sigma/{n}"), s, step);
                    }
                }
                self.board.scalar("diag/dormant_fraction", report.dormant_fraction, step);
                self.board.scalar("diag/feature_rank", report.feature_rank as f64, step);
            }
            Event::Eval { step, returns } => {
                let [mean, _, std, _, _] = play::stats(&returns);
                self.board.scalar("eval/episodic_return", mean, step);
                self.board.scalar("eval/episodic_return_std", std, step);
                self.last_eval = Some(mean);
                self.pb.println(format!(
                    "eval @ {step} steps: mean return {mean:.1} ± {std:.1} over {} games",
                    returns.len()
                ));
            }
            Event::Note(s) => self.pb.println(s),
            Event::Warning { step, text } => {
                self.pb.suspend(|| crate::util::say_line(&format!("warning: {text}")));
                self.board.text("learner/warnings", &text, step);
            }
        }
    }

    fn episode(&mut self, step: u64, ret: f64, length: u64) {
        self.board.scalar("charts/episodic_return", ret, step);
        self.board.scalar("charts/episodic_length", length as f64, step);
        self.returns.push(ret);
        if let Ok(mut r) = self.recent.lock() {
            r.push(ret);
            if r.len() > 100 {
                r.remove(0);
            }
        }
        if self.returns.len() >= 20 {
            let m = self.returns[self.returns.len() - 20..].iter().sum::<f64>() / 20.0;
            self.best20 = Some(self.best20.map_or(m, |b| b.max(m)));
            let goal = self.cfg.run.stop_at_return;
            if goal.is_some_and(|g| m >= g) && self.solved_at.is_none() {
                self.solved_at = Some(step);
                self.pb.println(format!(
                    "the 20-game mean return reached {m:.1} at {step} steps: stopping (run.stop_at_return)"
                ));
                self.shared.request_stop();
            }
        }
    }

    /// Periodic work after each event or timeout: scalars, evaluation requests, the progress
    /// bar, the benchmark clock. `learner_done`: the learner thread has ended.
    pub fn tick(&mut self, learner_done: bool) {
        let s = self.shared.clone();
        if self.learn_start.is_none() && s.updates.load(Ordering::Acquire) > 0 {
            self.learn_start = Some(Mark::now(&s));
        }
        if let (Some(m), Some(limit), None) = (self.learn_start, self.measure_secs, self.measured_end) {
            if m.t.elapsed().as_secs_f64() >= limit {
                self.measured_end = Some(Mark::now(&s));
                s.request_stop();
            }
        }
        self.watch_contention();
        let step = s.env_steps.load(Ordering::Acquire);
        if step >= self.next_scalars {
            self.scalars(step);
        }
        self.request_eval(step, learner_done);
        self.progress(step);
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.board.flush();
            self.last_flush = Instant::now();
        }
        if self.last_presence_check.elapsed() >= PRESENCE_EVERY {
            self.check_presence();
        }
        if self.last_progress.is_none_or(|(t, _)| t.elapsed() >= PROGRESS_EVERY) && self.lost.is_none() {
            self.write_progress(step);
        }
        if s.stopping() && self.stop_deadline.is_none() {
            self.stop_deadline = Some(Instant::now() + STOP_GRACE);
        }
    }

    /// Stop the run, with an error, when its folder or event file is gone.
    fn check_presence(&mut self) {
        self.last_presence_check = Instant::now();
        let file = self.board.path();
        let dir = file.parent().unwrap_or(file);
        if self.lost.is_none() && !file.exists() {
            let what = if dir.exists() { file } else { dir };
            self.lost = Some(anyhow::anyhow!(
                "{} disappeared while the run was training (deleted or moved): stopped without writing a checkpoint or summary",
                what.display()
            ));
            self.pb.println(format!("error: {} is gone; stopping", what.display()));
            self.shared.request_stop();
        }
    }

    /// Rewrite `progress.json` (a failure is not worth stopping a run for: it is only news).
    fn write_progress(&mut self, step: u64) {
        let now = Instant::now();
        let rate = match self.last_progress {
            Some((t, s)) => step.saturating_sub(s) as f64 / t.elapsed().as_secs_f64().max(1e-9),
            None => 0.0,
        };
        self.last_progress = Some((now, step));
        let p = crate::run::summary::Progress {
            env_steps: step,
            total_env_steps: self.cfg.run.total_env_steps,
            updates: self.shared.updates.load(Ordering::Relaxed),
            env_steps_per_sec: rate,
            last_return: self.returns.last().copied(),
            time: crate::util::unix_now(),
        };
        if let Some(dir) = self.board.path().parent() {
            let _ = p.write(dir);
        }
    }

    /// The most recent returns, for a checkpoint.
    pub fn recent_returns(&self) -> Vec<f64> {
        self.recent.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn scalars(&mut self, step: u64) {
        let c = &self.cfg;
        let (t, s0) = self.last_log;
        let sps = (step - s0) as f64 / t.elapsed().as_secs_f64().max(1e-9);
        // Actor 0's: the schedule's value, or Ape-X's largest epsilon.
        let eps = c.actors.exploration().epsilon(0, step);
        self.board.scalar("charts/sps", sps, step);
        self.board.scalar("charts/epsilon", eps, step);
        self.board.scalar("replay/size", (self.replay_len)() as f64, step);
        self.last_log = (Instant::now(), step);
        self.next_scalars = next_multiple(step, c.log.scalars_every);
    }

    /// Send the evaluator the latest weights when an evaluation is due (and once more at the
    /// end); hang up on it when no more will come, so that it finishes.
    fn request_eval(&mut self, step: u64, learner_done: bool) {
        let every = self.cfg.log.eval_every;
        let stopping = self.shared.stopping();
        let published = self.shared.weights.version() > 0;
        let final_due = learner_done && !self.eval_sent_final && every > 0 && !stopping;
        if final_due && self.last_eval_sent == Some(step) {
            // The periodic evaluation at this very step was the final one (the budget is a
            // multiple of log.eval_every): a second one would log the step twice.
            self.eval_sent_final = true;
        } else if (step >= self.next_eval || final_due) && published {
            if let Some(tx) = &self.eval_tx {
                let (_, snap) = self
                    .shared
                    .weights
                    .read(|s| s.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>());
                if tx.try_send((step, snap)).is_ok() {
                    self.last_eval_sent = Some(step);
                    self.eval_sent_final |= learner_done;
                }
            }
        }
        if step >= self.next_eval {
            self.next_eval = next_multiple(step, every);
        }
        // Nothing more to evaluate: the final one went out, evaluation is off, the run is
        // stopping, or the learner ended without ever publishing weights.
        if stopping || (learner_done && (self.eval_sent_final || every == 0 || !published)) {
            self.eval_tx = None;
        }
    }

    fn progress(&mut self, step: u64) {
        let total = self.cfg.run.total_env_steps;
        self.pb.set_position(step.min(total));
        let warmup_end = self.cfg.replay.warmup_steps;
        let updates = self.shared.updates.load(Ordering::Relaxed);
        let elapsed = self.pb.elapsed().as_secs_f64().max(1e-9);
        let rate = |steps: u64, secs: f64| steps as f64 / secs.max(1e-9);
        let phase = match self.learn_start {
            None if updates == 0 => format!("warm-up {}/{} (no learning yet)", human(step), human(warmup_end)),
            None => String::new(),
            Some(m) => {
                let r = rate(step.saturating_sub(m.steps), m.t.elapsed().as_secs_f64());
                let left = total.saturating_sub(step) as f64 / r.max(1e-9);
                format!("ETA {}", if r > 0.0 { duration(left) } else { "?".into() })
            }
        };
        let sps = rate(step.saturating_sub(self.last_log.1), self.last_log.0.elapsed().as_secs_f64()).max(0.0);
        let sps = if sps > 0.0 { sps } else { rate(step, elapsed) };
        let last = self.returns.last().map(|r| format!("  return {r:.1}")).unwrap_or_default();
        let loss = self.latest_loss.map(|l| format!("  loss {l:.4}")).unwrap_or_default();
        self.pb.set_message(format!("{sps:.0} steps/s  {phase}{last}  upd {updates}{loss}"));
    }

    /// Whether the run has given its threads the grace time to stop and they did not.
    pub fn past_stop_deadline(&self) -> bool {
        self.stop_deadline.is_some_and(|d| Instant::now() > d)
    }

    /// Clear the progress bar.
    pub fn finish_bar(&self) {
        self.pb.finish_and_clear();
    }
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// `1234567` -> `1.2M`.
fn human(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.0}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam::channel::bounded;

    fn monitor(cfg: &Config) -> (tempfile::TempDir, Monitor, Arc<Shared>, crossbeam::channel::Receiver<EvalJob>) {
        let d = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = bounded(1);
        let opts = crate::train::RunOptions { quiet: true, ..Default::default() };
        let m = Monitor::new(cfg, shared.clone(), Board::new(d.path()).unwrap(), vec![], tx, &opts, Box::new(|| 0));
        (d, m, shared, rx)
    }

    #[test]
    fn twenty_games_at_the_goal_stop_the_run_and_record_the_step() {
        let mut cfg = Config::default();
        cfg.run.stop_at_return = Some(10.0);
        let (_d, mut m, shared, _rx) = monitor(&cfg);
        for k in 0..19 {
            m.handle(Event::Episode { step: 100 * k, ret: 12.0, length: 100 });
        }
        assert!(!shared.stopping() && m.solved_at.is_none());
        m.handle(Event::Episode { step: 2000, ret: 12.0, length: 100 });
        assert!(shared.stopping());
        assert_eq!(m.solved_at, Some(2000));
        assert_eq!(m.best20, Some(12.0));
        assert_eq!(m.recent.lock().unwrap().len(), 20);
    }

    #[test]
    fn the_evaluator_is_released_when_the_learner_ends_without_weights() {
        // A resume whose budget was already spent: the learner ends before publishing.
        let (_d, mut m, _shared, rx) = monitor(&Config::default());
        m.tick(false);
        assert!(m.eval_tx.is_some());
        m.tick(true);
        assert!(m.eval_tx.is_none(), "the evaluator would wait forever");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn the_final_evaluation_is_requested_once_weights_exist() {
        let (_d, mut m, shared, rx) = monitor(&Config::default());
        shared.weights.publish(vec![("w".into(), Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))]);
        m.tick(true);
        assert!(rx.try_recv().is_ok(), "a final evaluation");
        assert!(m.eval_tx.is_none());
    }

    #[test]
    fn an_evaluation_at_the_last_step_is_not_sent_twice() {
        let mut cfg = Config::default();
        cfg.log.eval_every = 100;
        let (_d, mut m, shared, rx) = monitor(&cfg);
        shared.weights.publish(vec![("w".into(), Tensor::zeros([2], (tch::Kind::Float, tch::Device::Cpu)))]);
        shared.env_steps.store(300, Ordering::SeqCst);
        m.tick(false);
        assert_eq!(rx.try_recv().unwrap().0, 300, "the periodic evaluation at the budget");
        m.tick(true);
        assert!(rx.try_recv().is_err(), "the final evaluation repeated step 300");
        assert!(m.eval_tx.is_none());
    }

    #[test]
    fn events_reach_the_file_while_the_run_goes_on() {
        let (d, mut m, _shared, _rx) = monitor(&Config::default());
        let size = || {
            let events = std::fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("events."));
            events.map(|e| e.metadata().unwrap().len()).sum::<u64>()
        };
        let before = size();
        m.handle(Event::Episode { step: 10, ret: 1.0, length: 5 });
        m.tick(false);
        assert_eq!(size(), before, "buffered until the next flush");
        m.last_flush -= FLUSH_EVERY;
        m.tick(false);
        assert!(size() > before, "a live run must reach TensorBoard within {FLUSH_EVERY:?}");
    }

    #[test]
    fn a_stop_request_starts_the_grace_period() {
        let (_d, mut m, shared, _rx) = monitor(&Config::default());
        m.tick(false);
        assert!(m.stop_deadline.is_none());
        shared.request_stop();
        m.tick(false);
        assert!(m.stop_deadline.is_some() && !m.past_stop_deadline());
    }

    #[test]
    fn a_vanished_run_folder_stops_the_run_with_an_error() {
        let (d, mut m, shared, _rx) = monitor(&Config::default());
        m.tick(false);
        assert!(m.lost.is_none());
        std::fs::remove_dir_all(d.path()).unwrap();
        m.last_presence_check -= PRESENCE_EVERY;
        m.tick(false);
        assert!(shared.stopping());
        let e = format!("{:#}", m.lost.as_ref().expect("noticed"));
        assert!(e.contains(&d.path().display().to_string()) && e.contains("disappeared"), "{e}");
    }

    #[test]
    fn progress_numbers_are_rounded() {
        assert_eq!(human(1884), "1884");
        assert_eq!(human(80_000), "80k");
        assert_eq!(human(10_000_000), "10.0M");
        assert_eq!(duration(5400.0), "1h30m");
        assert_eq!(duration(75.0), "1m15s");
    }
}
