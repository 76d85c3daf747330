//! Threads kept between runs, for programs that run small pipelines often:
//! see [`Threads`]. A run's threads are otherwise started for it and joined
//! when it ends (`launch.rs`); with `Threads`, a thread that ends a run's job
//! goes back to the set instead, and the next run takes it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};

use crate::control::lock;
use crate::error::into_panic_message;

/// A thread's work for one run: the body `launch.rs` wraps around a
/// stage's worker, a source or a consumer of the run.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A set of threads that pipelines run on and give back when they end, so
/// that a program running many small pipelines does not start threads for
/// each: `pipe!(...).on_threads(&threads)`.
///
/// It starts empty and grows to the most threads any one run (or runs at
/// the same time) used; a run that needs more starts them and leaves them
/// in the set. Dropping the `Threads` ends and joins its idle threads; a
/// thread still working for a run ends when that run lets it go, and a
/// pipeline started after the drop starts threads of its own. A stage with
/// its own [`stack_size`](crate::StageExt::stack_size) always gets a thread
/// of its own.
///
/// ```
/// use parapipe::prelude::*;
/// use parapipe::Threads;
///
/// #[map_stage(workers = 2)]
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// let threads = Threads::new();
/// for round in 0..100u64 {
///     let sum = pipe!(0..100u64 | double)
///         .on_threads(&threads)
///         .reduce(|a, b| a + b)?;
///     assert_eq!(sum, Some(9900), "round {round}");
/// }
/// // At most three threads did every round: the source and two workers.
/// assert!(threads.len() <= 3);
/// # Ok::<(), PipelineError>(())
/// ```
#[derive(Default)]
pub struct Threads {
    inner: Arc<Inner>,
}

/// The set, shared by the `Threads` (the owner), the runs starting on it
/// and, weakly, its threads.
pub(crate) struct Inner {
    /// The threads waiting for a job; `None` once the `Threads` is dropped.
    idle: Mutex<Option<Vec<Idle>>>,
    /// Threads started, for [`Threads::len`].
    started: AtomicUsize,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            idle: Mutex::new(Some(Vec::new())),
            started: AtomicUsize::new(0),
        }
    }
}

/// A thread of the set waiting for its next job.
struct Idle {
    jobs: flume::Sender<Message>,
    handle: JoinHandle<()>,
}

/// A job, how to say it is done, and the thread's own entry in the idle
/// list (it puts itself back, so only the list holds its sender).
struct Message {
    job: Job,
    done: flume::Sender<Result<(), String>>,
    jobs: flume::Sender<Message>,
    handle: JoinHandle<()>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads")
            .field("threads", &self.len())
            .field("idle", &self.idle())
            .finish()
    }
}

impl Threads {
    /// An empty set: threads are started as runs need them.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many threads the set has started (idle or working), of those
    /// still alive or kept.
    pub fn len(&self) -> usize {
        self.inner.started.load(SeqCst)
    }

    /// Whether it has started no thread yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many of its threads wait for work now.
    pub fn idle(&self) -> usize {
        lock(&self.inner.idle).as_ref().map_or(0, Vec::len)
    }

    /// A handle for pipelines to start on, which does not keep the set
    /// alive.
    pub(crate) fn handle(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }
}

impl Inner {
    /// Runs `job` on an idle thread of the set, or on a new one (named
    /// `parapipe-threads`) if none is idle; gives the job back if the set
    /// is closed.
    pub(crate) fn run(self: &Arc<Self>, job: Job) -> Result<std::io::Result<Done>, Job> {
        let (done, finished) = flume::bounded(1);
        let idle = match lock(&self.idle).as_mut() {
            Some(list) => list.pop(),
            None => return Err(job),
        };
        let Idle { jobs, handle } = match idle {
            Some(idle) => idle,
            None => match self.start() {
                Ok(idle) => idle,
                Err(e) => return Ok(Err(e)),
            },
        };
        let message = Message {
            job,
            done,
            jobs: jobs.clone(),
            handle,
        };
        match jobs.send(message) {
            Ok(()) => Ok(Ok(Done(finished))),
            // A thread of the set receives until its sender is dropped,
            // and the message carries one.
            Err(_) => unreachable!("an idle thread waits for its next job"),
        }
    }

    fn start(self: &Arc<Self>) -> std::io::Result<Idle> {
        let (jobs, inbox) = flume::bounded::<Message>(1);
        let set = Arc::downgrade(self);
        let handle = thread::Builder::new()
            .name("parapipe-threads".to_owned())
            .spawn(move || serve(&set, &inbox))?;
        self.started.fetch_add(1, SeqCst);
        Ok(Idle { jobs, handle })
    }
}

/// A thread of the set: runs jobs until the set no longer wants it.
fn serve(set: &Weak<Inner>, inbox: &flume::Receiver<Message>) {
    while let Ok(Message {
        job,
        done,
        jobs,
        handle,
    }) = inbox.recv()
    {
        // `launch.rs` catches the panics of a run's code; anything else
        // is reported as the thread's end, as a join would.
        let outcome = catch_unwind(AssertUnwindSafe(job)).map_err(into_panic_message);
        // Back in the list before the run hears it is done, so that the
        // run after it finds this thread idle.
        let back = set.upgrade().is_some_and(|inner| {
            let mut idle = lock(&inner.idle);
            match idle.as_mut() {
                Some(list) => {
                    list.push(Idle { jobs, handle });
                    true
                }
                None => false,
            }
        });
        let _ = done.send(outcome);
        if !back {
            // The set is gone: this thread ends (detached, as its handle
            // is dropped here).
            if let Some(inner) = set.upgrade() {
                inner.started.fetch_sub(1, SeqCst);
            }
            return;
        }
    }
}

impl Drop for Threads {
    /// Closes the set: its idle threads end and are joined; a thread still
    /// working for a run ends when its job does.
    fn drop(&mut self) {
        let idle = lock(&self.inner.idle).take();
        for Idle { jobs, handle } in idle.into_iter().flatten() {
            // Its inbox disconnects, and it returns.
            drop(jobs);
            if handle.join().is_ok() {
                self.inner.started.fetch_sub(1, SeqCst);
            }
        }
    }
}

/// The end of a job run on a thread of a set: what a run joins.
#[derive(Debug)]
pub(crate) struct Done(flume::Receiver<Result<(), String>>);

impl Done {
    /// Whether the job has ended.
    pub(crate) fn is_finished(&self) -> bool {
        !self.0.is_empty() || self.0.is_disconnected()
    }

    /// Waits for the job's end: `Err` with a panic's message if the thread
    /// ended with one outside any code of the run's.
    pub(crate) fn wait(self) -> Result<(), String> {
        self.0
            .recv()
            .unwrap_or_else(|_| Err("the thread of the set ended".to_owned()))
    }
}
