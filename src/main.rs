//! `wndqn`: the command-line application. Thin: parse, run, map errors to an exit code.

mod cli;
mod cmd;
mod config;
mod device;
mod memory;
mod play;
mod plot;
mod results;
mod roms;
mod run;
mod seeds;
mod signals;
mod stats;
mod sweep;
mod tensorboard;
mod threads;
mod train;
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // libtorch allocates multi-megabyte temporaries every update (gradients, optimizer terms of
    // the 1.6M-weight dense layer). glibc would hand them back to the kernel on free and fault
    // the pages in again on the next update: keep freed memory instead (`wndqn bench learner`
    // shows what it buys; docs/BENCHMARKS.md).
    // SAFETY: mallopt only sets two of glibc's allocator thresholds, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
    // A closed pipe (`wndqn train ... | head`) must never stop a run: SIGPIPE stays ignored (as
    // Rust sets it up) and all output goes through `util::say` / `util::out`, which drop what
    // cannot be written.
    // A bug should read as one line, not a backtrace (RUST_BACKTRACE=1 still shows it).
    if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
        std::panic::set_hook(Box::new(|info| {
            let msg = util::panic_message(info.payload());
            let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            util::say_line(&format!("internal error{loc}: {msg}"));
        }));
    }
    let cli = cli::Cli::parse();
    signals::settle(cli.command.stops_cleanly());
    let code = match cli::run(cli) {
        Ok(()) => 0,
        Err(e) => {
            util::say_line(&format!("error: {e:#}"));
            2
        }
    };
    if signals::abandoned() {
        signals::exit_now(code);
    }
    ExitCode::from(code as u8)
}
