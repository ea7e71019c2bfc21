//! Ctrl-C / SIGTERM / SIGHUP: the first one asks the running job to stop cleanly (events
//! flushed, checkpoint written); a second one, from the user and clearly apart in time, exits at
//! once, with `_exit`: a plain `exit` would run libtorch's static destructors under threads that
//! are still calling into it (an actor's forward pass then fails with "Invalid (backend, op)
//! pair" and a panic).
//!
//! One stop request often arrives as several signals within microseconds: `timeout` signals
//! its child and then its whole process group, a terminal's Ctrl-C reaches every process of the
//! foreground group, Slurm signals every process of a job. Signals within [`SAME_REQUEST`] of the
//! first are therefore the same request, never a reason to exit at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static ABANDONED: AtomicBool = AtomicBool::new(false);
/// When the first stop request came, in nanoseconds after [`epoch`] (+1, so 0 means never).
static FIRST_AT: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Signals closer than this to the first one belong to the same stop request.
pub const SAME_REQUEST: Duration = Duration::from_millis(1000);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What a stop signal means, given when the first one came.
#[derive(Debug, PartialEq, Eq)]
pub enum Meaning {
    /// The first request: stop cleanly.
    Stop,
    /// A copy of the first request (within [`SAME_REQUEST`]): nothing more to do.
    Duplicate,
    /// A second request, apart from the first: exit at once.
    ExitNow,
}

/// Classify a signal that arrives `now` nanoseconds after the epoch; `first` is [`FIRST_AT`].
fn classify(first: &AtomicU64, now: u64) -> Meaning {
    match first.compare_exchange(0, now + 1, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Meaning::Stop,
        Err(at) if now + 1 - at.min(now + 1) < SAME_REQUEST.as_nanos() as u64 => Meaning::Duplicate,
        Err(_) => Meaning::ExitNow,
    }
}

/// Install the handler (idempotent).
pub fn install() {
    epoch();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let now = epoch().elapsed().as_nanos() as u64;
            match classify(&FIRST_AT, now) {
                Meaning::Stop => {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                    crate::util::say_line("\ninterrupt: stopping cleanly (press Ctrl-C again to exit at once)");
                }
                Meaning::Duplicate => {}
                Meaning::ExitNow => {
                    crate::util::say_line("\ninterrupted twice: exiting now");
                    exit_now(130);
                }
            }
        });
    });
}

/// End the process at once: no destructors, no atexit handlers (see the module doc).
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: ends the process; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Record that a run gave up on threads that did not stop: the process must end with
/// [`exit_now`], since those threads may still be inside libtorch or the emulator.
pub fn set_abandoned() {
    ABANDONED.store(true, Ordering::SeqCst);
}

/// Whether threads were abandoned.
pub fn abandoned() -> bool {
    ABANDONED.load(Ordering::SeqCst)
}

/// Whether Ctrl-C / SIGTERM / SIGHUP arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_one_request_are_one_stop_and_a_later_one_exits() {
        let first = AtomicU64::new(0);
        let ms = |m: u64| m * 1_000_000;
        assert_eq!(classify(&first, ms(5_000)), Meaning::Stop);
        // `timeout`: the same signal again to the process group, microseconds later.
        assert_eq!(classify(&first, ms(5_000) + 30_000), Meaning::Duplicate);
        assert_eq!(classify(&first, ms(5_900)), Meaning::Duplicate);
        assert_eq!(classify(&first, ms(6_200)), Meaning::ExitNow);
        // A request at the very start (t = 0) is recorded too.
        let first = AtomicU64::new(0);
        assert_eq!(classify(&first, 0), Meaning::Stop);
        assert_eq!(classify(&first, 10), Meaning::Duplicate);
    }
}
