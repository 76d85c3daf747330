//! State shared by every thread of one running pipeline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::PipelineError;

/// How often a thread blocked where it cannot be woken directly (a flume
/// queue whose other end is itself stuck, a condition variable of the
/// reorder step) checks for cancellation. Data never waits on this: it only
/// bounds how long a stopped pipeline takes to notice.
pub(crate) const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
pub(crate) struct Control {
    cancelled: AtomicBool,
    /// Wakes the threads sleeping in [`Control::sleep_until`] when the
    /// pipeline is cancelled.
    wake: Mutex<()>,
    woken: Condvar,
    first: Mutex<Option<PipelineError>>,
    followers: AtomicUsize,
    /// In a distributed run, this process's name, given to its failures.
    process: OnceLock<String>,
    /// Where the pipeline's async stages run their futures.
    #[cfg(feature = "async")]
    pub(crate) executor: crate::executor::Executor,
}

impl Control {
    /// Checked by every thread at each batch, and while it waits on a queue.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::Relaxed) {
            // Under the lock, so a sleeper that just found the flag unset
            // is already waiting and cannot miss the notification.
            let _guard = lock(&self.wake);
            self.woken.notify_all();
        }
    }

    /// Sleeps until `deadline` (forever if `None`) or until the pipeline is
    /// cancelled, whichever comes first; `false` if it was cancelled. The
    /// one wait of the runtime's own that nothing but time ends (a ticker's
    /// period, a wait for a sibling), so it must end with the pipeline.
    pub(crate) fn sleep_until(&self, deadline: Option<Instant>) -> bool {
        let mut guard = lock(&self.wake);
        loop {
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            match deadline {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => {
                    guard = self
                        .woken
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                None => guard = self.woken.wait(guard).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Records a failure (the first one wins; later ones are counted) and
    /// cancels the pipeline.
    pub(crate) fn fail(&self, mut error: PipelineError) {
        if let (None, Some(process)) = (error.process(), self.process.get()) {
            error.set_process(process);
        }
        {
            let mut first = lock(&self.first);
            if first.is_none() {
                *first = Some(error);
            } else {
                self.followers.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.cancel();
    }

    /// Names this process in its failures (a distributed run).
    #[cfg(feature = "nats")]
    pub(crate) fn set_process(&self, process: &str) {
        let _ = self.process.set(process.to_owned());
    }

    /// Looks at the first failure so far, without taking it.
    #[cfg(feature = "nats")]
    pub(crate) fn peek_failure<R>(&self, f: impl FnOnce(Option<&PipelineError>) -> R) -> R {
        f(lock(&self.first).as_ref())
    }

    /// The first failure, once every thread has been joined.
    pub(crate) fn take_failure(&self) -> Option<PipelineError> {
        let mut first = lock(&self.first);
        let mut error = first.take()?;
        error.set_followed_by(self.followers.load(Ordering::Relaxed));
        Some(error)
    }
}

/// Locks one of the runtime's own mutexes. No user code runs under them, so
/// a user panic cannot poison them; recover anyway rather than lose state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
