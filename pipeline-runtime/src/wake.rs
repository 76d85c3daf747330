//! A waker that unparks a thread: how a thread of the pipeline's that polls
//! futures itself (an async stage's worker, a stream source) sleeps until
//! one of them can make progress.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::thread::{self, Thread, ThreadId};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker for the current thread, made again if the thread changed (an
/// iterator may be moved to another thread between two calls).
#[derive(Default)]
pub(crate) struct ThreadWaker(Option<(ThreadId, Waker)>);

impl ThreadWaker {
    /// The waker of the calling thread: wakes its next
    /// [`park`](thread::park) (or one in progress).
    pub(crate) fn get(&mut self) -> &Waker {
        let me = thread::current();
        if self.0.as_ref().is_none_or(|(id, _)| *id != me.id()) {
            self.0 = Some((me.id(), Waker::from(Arc::new(Unpark(me)))));
        }
        match &self.0 {
            Some((_, waker)) => waker,
            None => unreachable!("set just above"),
        }
    }
}
