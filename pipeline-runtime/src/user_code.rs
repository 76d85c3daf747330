//! Whether a thread is inside the user's code, where the pipeline cannot
//! interrupt it: a source's iterator, a `Stream::feed` closure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A count of the thread's entries into and exits from the user's code:
/// odd while inside. Only its own thread writes it, so a plain load and
/// store (no read-modify-write) per crossing.
#[derive(Clone, Default)]
pub(crate) struct UserCode(Arc<AtomicU64>);

/// How long a thread must stay in one call of the user's code before a
/// pipeline being shut down stops waiting for it: long enough for any
/// iterator that is merely computing to come back, short enough that no
/// drop feels it.
const BLOCKED_AFTER: Duration = Duration::from_millis(5);

/// How long a thread in the runtime's own code may take to end once its
/// pipeline is cancelled: its waits poll for cancellation far more often,
/// so this only keeps a shutdown from hanging on a bug.
const NEVER_LONGER: Duration = Duration::from_secs(10);

impl UserCode {
    #[inline]
    pub(crate) fn enter(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }

    #[inline]
    pub(crate) fn leave(&self) {
        self.enter();
    }

    /// Runs `f`, counted as the user's code.
    #[inline]
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        self.enter();
        let r = f();
        self.leave();
        r
    }

    /// Runs `f`, counted as the runtime's code, from inside the user's.
    pub(crate) fn outside<R>(&self, f: impl FnOnce() -> R) -> R {
        self.leave();
        let r = f();
        self.enter();
        r
    }

    /// Waits until `finished` or until the thread has been inside one call
    /// of the user's code for [`BLOCKED_AFTER`]; `true` if it finished.
    pub(crate) fn wait_unless_blocked(&self, finished: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        let mut seen = self.0.load(Relaxed);
        let mut since = started;
        loop {
            if finished() {
                return true;
            }
            let now = Instant::now();
            let phase = self.0.load(Relaxed);
            if phase != seen {
                (seen, since) = (phase, now);
            } else if phase % 2 == 1 && now - since >= BLOCKED_AFTER {
                return false;
            }
            if now - started >= NEVER_LONGER {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
