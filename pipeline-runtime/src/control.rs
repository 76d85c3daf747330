//! State shared by every thread of one running pipeline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::PipelineError;

#[derive(Default)]
pub(crate) struct Control {
    cancelled: AtomicBool,
    first: Mutex<Option<PipelineError>>,
    followers: AtomicUsize,
    /// In a distributed run, this process's name, given to its failures.
    process: OnceLock<String>,
}

impl Control {
    /// Checked by every thread at each batch, and while it waits on a queue.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
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
