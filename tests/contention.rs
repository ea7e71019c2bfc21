//! A run beside other work on the machine: an Atari preset (`learner.exclusive_cpu`, whose
//! actors go to idle priority once the learner learns) beside two busy processes of normal
//! priority slows down, and never stalls. Alone in its own test binary, so that no other test's
//! load is added to the two busy loops.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Two processes that spin until dropped.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(n: usize) -> Busy {
        Busy(
            (0..n)
                .map(|_| {
                    Command::new("sh").args(["-c", "while :; do :; done"]).stdout(Stdio::null()).spawn().expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 3,000 env steps of Pong (about 30 s on a quiet 2-core machine) beside two busy loops: done
/// within 90 s. With the actors under `SCHED_IDLE` from the start and for the whole run it had
/// not finished after 300 s.
#[test]
fn an_atari_run_beside_two_busy_loops_slows_down_and_finishes() {
    let runs = tempfile::tempdir().unwrap();
    let _busy = Busy::start(2);
    let t0 = Instant::now();
    let mut child = bin()
        .args(train_args(
            "configs/pong.toml",
            runs.path(),
            &["run.total_env_steps=3000", "replay.warmup_steps=500", "actors.num_actors=2", "log.eval_every=0"],
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            assert!(status.success(), "{}", text(&o));
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("not done within {limit:?} beside two busy loops: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("3000 env steps of Pong beside two busy loops: {:.1} s", t0.elapsed().as_secs_f64());
    let s = summary(&only_run_dir(runs.path()));
    assert_eq!((s["env_steps"].as_u64(), s["complete"].as_bool()), (Some(3000), Some(true)), "{s}");
}
