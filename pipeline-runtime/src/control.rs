//! State shared by every thread of one running pipeline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::PipelineError;

#[derive(Default)]
pub(crate) struct Control {
    cancelled: AtomicBool,
    first: Mutex<Option<PipelineError>>,
    followers: AtomicUsize,
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
    pub(crate) fn fail(&self, error: PipelineError) {
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
