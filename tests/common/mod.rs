//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A hang is a failure: runs `f` on its own thread and panics if it has not
/// finished within `limit` (generous: this detects hangs, not slowness).
pub fn watchdog<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::Builder::new()
        .name(format!("watchdog:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: `{what}` did not finish within {limit:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: re-raise its panic here.
            match handle.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!(),
            }
        }
    }
}

/// The default watchdog bound.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Threads of this process, from /proc (Linux).
pub fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits (up to a generous bound) for the thread count to fall back to
/// `baseline`: a joined thread may take a moment to leave /proc.
pub fn assert_threads_back_to(baseline: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = thread_count();
        if now <= baseline {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: {now} threads still running, expected {baseline}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// An error type of the tests' own, to check downcasting.
#[derive(Debug, PartialEq, Eq)]
pub struct Boom(pub u64);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "boom at {}", self.0)
    }
}

impl std::error::Error for Boom {}

/// A stage that fails with [`Boom`] at item `at` (3 workers).
#[parapipe::map_stage(workers = 3)]
pub fn fail_at(x: u64, at: u64) -> Result<u64, Boom> {
    if x == at { Err(Boom(x)) } else { Ok(x) }
}

/// A stage that panics (`boom`) at item `at` (2 workers).
#[parapipe::map_stage(workers = 2)]
pub fn panic_at(x: u64, at: u64) -> u64 {
    assert_ne!(x, at, "boom");
    x
}
