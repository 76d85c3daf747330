//! Where a pipeline's async stages run their futures: on a tokio runtime
//! the pipeline was given (see `Pipeline::on_runtime`, and the `_async`
//! ways of consuming it, which give it the caller's), or else on a runtime
//! of its own, started when its first async stage starts and stopped when
//! the pipeline ends.
//!
//! A pipeline consumed with a blocking call (`collect`, iterating its
//! results) is never given the caller's runtime implicitly: the caller's
//! thread blocks, and on a current-thread runtime (or a multi-thread one
//! whose workers are all blocked) the futures would never run.

use std::io;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::control::lock;

/// How long stopping a runtime of its own waits for its threads, when the
/// thread stopping it may block: its futures are cancelled at their next
/// `.await`, so this only bounds a future that blocks its thread.
const STOP_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Executor {
    given: OnceLock<Handle>,
    own: Mutex<Option<Runtime>>,
}

impl Executor {
    /// Runs the futures on `handle`'s runtime instead of one of its own.
    pub(crate) fn give(&self, handle: Handle) {
        // Given once, before any stage starts.
        let _ = self.given.set(handle);
    }

    /// The runtime to run futures on, started on first use if none was given.
    pub(crate) fn handle(&self) -> io::Result<Handle> {
        if let Some(handle) = self.given.get() {
            return Ok(handle.clone());
        }
        let mut own = lock(&self.own);
        match &*own {
            Some(runtime) => Ok(runtime.handle().clone()),
            None => {
                let runtime = start()?;
                let handle = runtime.handle().clone();
                *own = Some(runtime);
                Ok(handle)
            }
        }
    }

    /// Stops the runtime of its own, if one was started.
    pub(crate) fn stop(&self) {
        if let Some(runtime) = lock(&self.own).take() {
            stop(runtime);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A runtime of the pipeline's own, with the IO and time drivers that
/// clients such as `reqwest` need. An async stage polls its futures on its
/// own worker thread, so the runtime's one thread only drives sockets and
/// timers (and runs what the futures `tokio::spawn`).
pub(crate) fn start() -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("parapipe-async")
        .enable_all()
        .build()
}

/// Stops a runtime of the pipeline's own. Inside another runtime's thread
/// nothing may block, so it is left to stop in the background there.
pub(crate) fn stop(runtime: Runtime) {
    if Handle::try_current().is_ok() {
        runtime.shutdown_background();
    } else {
        runtime.shutdown_timeout(STOP_WAIT);
    }
}
