//! Ctrl-C / SIGTERM: the first one asks the running job to stop cleanly (events flushed,
//! checkpoint written); a second one exits at once, with `_exit`: a plain `exit` would run
//! libtorch's static destructors under threads that are still calling into it (an actor's
//! forward pass then fails with "Invalid (backend, op) pair" and a panic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static ABANDONED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Install the handler (idempotent).
pub fn install() {
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted twice: exiting now");
                exit_now(130);
            }
            eprintln!("\ninterrupt: stopping cleanly (press Ctrl-C again to exit at once)");
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

/// Whether Ctrl-C / SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
