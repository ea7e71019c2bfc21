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
//!
//! A signal can come before `main`: libtorch registers its operators in static initializers,
//! about 0.4 s on a warm machine and seconds on a cold one. A handler in `.preinit_array` (run
//! before any shared library's initializer) records such a signal; [`settle`] then either hands
//! it to the clean stop ([`install`]) or, for a command that has nothing to stop, restores the
//! default action and re-raises it. A hang-up ignored at start (`nohup`) stays ignored.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static ABANDONED: AtomicBool = AtomicBool::new(false);
/// When the first stop request came, in nanoseconds after [`epoch`] (+1, so 0 means never).
static FIRST_AT: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// The first stop signal that came before [`install`] or [`settle`], 0 if none.
static EARLY: AtomicI32 = AtomicI32::new(0);
/// Whether SIGHUP was ignored when the process started.
static HUP_IGNORED: AtomicBool = AtomicBool::new(false);
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn record_early(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    let _ = EARLY.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

fn set_action(sig: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction with an empty mask and a handler that is async-signal-safe
    // (or SIG_DFL / SIG_IGN); the old action is read back into `old`.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler;
        new.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &new, &mut old);
        old.sa_sigaction
    }
}

extern "C" fn catch_early() {
    for sig in STOP_SIGNALS {
        let old = set_action(sig, record_early as extern "C" fn(libc::c_int) as libc::sighandler_t);
        if sig == libc::SIGHUP && old == libc::SIG_IGN {
            HUP_IGNORED.store(true, Ordering::SeqCst);
            set_action(sig, libc::SIG_IGN);
        }
    }
}

/// Runs before every shared library's initializer (the executable's `DT_PREINIT_ARRAY`).
#[used]
#[unsafe(link_section = ".preinit_array")]
static CATCH_EARLY: extern "C" fn() = catch_early;

/// Called once the command is known: a command that stops cleanly gets the handler (and a
/// signal that came before it, as its first stop request); any other gets the default actions
/// back, and a signal that came before now ends it as it would have then.
pub fn settle(stops_cleanly: bool) {
    if stops_cleanly {
        install();
        return;
    }
    for sig in STOP_SIGNALS {
        let keep_ignored = sig == libc::SIGHUP && HUP_IGNORED.load(Ordering::SeqCst);
        set_action(sig, if keep_ignored { libc::SIG_IGN } else { libc::SIG_DFL });
    }
    let early = EARLY.load(Ordering::SeqCst);
    if early != 0 {
        // SAFETY: raise(3) with the default action in place: the process ends by that signal.
        unsafe { libc::raise(early) };
    }
}

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
        let _ = ctrlc::set_handler(on_signal);
        if HUP_IGNORED.load(Ordering::SeqCst) {
            set_action(libc::SIGHUP, libc::SIG_IGN);
        }
        if EARLY.load(Ordering::SeqCst) != 0 {
            on_signal();
        }
    });
}

fn on_signal() {
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
