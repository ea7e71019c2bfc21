//! State shared by the threads of a run: counters, the stop flag, the weight slot, and the
//! messages they send to the main (logging) thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tch::Tensor;

/// Counters and flags, all lock-free.
#[derive(Default)]
pub struct Shared {
    /// Set by Ctrl-C, by a failing thread, or at the end: every loop checks it.
    pub stop: AtomicBool,
    /// Env steps claimed by actors (the x-axis of every curve).
    pub env_steps: AtomicU64,
    /// Env steps whose transitions are in the replay memory.
    pub inserted: AtomicU64,
    /// Learner updates done.
    pub updates: AtomicU64,
    /// Episodes finished (whole games).
    pub episodes: AtomicU64,
    /// Actors still running.
    pub actors_running: AtomicU64,
    /// Nanoseconds actors spent waiting for the learner (replay-ratio throttle), all actors.
    pub actor_wait_ns: AtomicU64,
    /// Nanoseconds the learner spent waiting for data.
    pub learner_wait_ns: AtomicU64,
    /// Nanoseconds the learner spent in updates.
    pub learner_busy_ns: AtomicU64,
    /// Nanoseconds the learner spent on diagnostics.
    pub diagnostics_ns: AtomicU64,
    /// Latest published weights.
    pub weights: WeightSlot,
    /// Wakes threads waiting on the replay-ratio gate (after an update or an insertion).
    pub gate: Gate,
}

/// A condition variable for "a counter moved": waiters sleep until notified (or a short
/// timeout, so that a stop request is always seen), instead of polling.
#[derive(Default)]
pub struct Gate {
    m: Mutex<()>,
    cv: std::sync::Condvar,
}

impl Gate {
    /// Wake every waiter.
    pub fn notify(&self) {
        self.cv.notify_all();
    }
    /// Sleep until notified or 5 ms passed, adding the time to `counter`.
    pub fn wait(&self, counter: &AtomicU64) {
        let t0 = std::time::Instant::now();
        let g = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout(g, Duration::from_millis(5));
        counter.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Shared {
    /// Whether the run should stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Ask every thread to stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The learner's latest weights as CPU tensors, with a version the actors poll.
#[derive(Default)]
pub struct WeightSlot {
    version: AtomicU64,
    data: Mutex<Vec<(String, Tensor)>>,
}

impl WeightSlot {
    /// Publish a new snapshot.
    pub fn publish(&self, snap: Vec<(String, Tensor)>) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        *d = snap;
        self.version.fetch_add(1, Ordering::Release);
    }
    /// Current version (0 = nothing published yet).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
    /// Run `f` on the current snapshot; returns its version.
    pub fn read<R>(&self, f: impl FnOnce(&[(String, Tensor)]) -> R) -> (u64, R) {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        (self.version(), f(&d))
    }
}

/// Messages to the main thread.
pub enum Event {
    /// A whole game ended (in any actor).
    Episode { step: u64, ret: f64, length: u64 },
    /// Learner statistics averaged over the interval.
    Learner { step: u64, updates: u64, loss: f64, q: f64, grad_norm: f64, updates_per_sec: f64 },
    /// Weight-norm scales per layer.
    Scales { step: u64, layers: Vec<(String, Vec<f32>)> },
    /// The learner's diagnostics.
    Diagnostics { step: u64, report: wndqn_agents::diagnostics::Report },
    /// A greedy evaluation finished.
    Eval { step: u64, returns: Vec<f64> },
    /// Something worth a line in the log.
    Note(String),
    /// Something the user must see: on stderr and in TensorBoard's text (`learner/warnings`).
    Warning { step: u64, text: String },
}

/// The first multiple of `every` after `step` (`u64::MAX` when `every` is 0: never): when the
/// next periodic log, histogram or evaluation is due.
pub fn next_multiple(step: u64, every: u64) -> u64 {
    step.checked_div(every).map_or(u64::MAX, |k| (k + 1) * every)
}

/// Sleep briefly (warm-up waits), and account the time.
pub fn backoff(counter: &AtomicU64) {
    let d = Duration::from_millis(1);
    std::thread::sleep(d);
    counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
}
