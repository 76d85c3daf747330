//! The hang watchdog of the viewer's tests (as in the workspace's own
//! tests/common: a package is published on its own, so it keeps a copy).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

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
