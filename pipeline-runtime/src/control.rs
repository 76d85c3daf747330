//! State shared by every thread of one running pipeline.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
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
    /// The other runs of the same graph (a fork's upstream and branches, a
    /// merge and its inputs): each run's first failure becomes the first
    /// failure of every run of the graph, so every consumer hears of it.
    peers: Mutex<Vec<Weak<Control>>>,
    /// Runs whose results this one consumes (a merge's inputs): cancelled
    /// with it, since a thread of ours blocked reading them cannot see our
    /// cancellation.
    feeds: Mutex<Vec<Weak<Control>>>,
    /// Whether the consumer has asked for a batch of results yet: a fork
    /// waits for a branch only once somebody reads it (see `outlet.rs`).
    reading: AtomicBool,
    /// The thread that last asked for a batch of results (a number of
    /// ours, see [`thread_number`]; 0 before any), and whether it is
    /// waiting for one now: a fork tells from them that a branch it waits
    /// for is read by the very thread that waits for another branch.
    reader: AtomicU64,
    waiting: AtomicBool,
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
            {
                // Under the lock, so a sleeper that just found the flag unset
                // is already waiting and cannot miss the notification.
                let _guard = lock(&self.wake);
                self.woken.notify_all();
            }
            for feed in live(&self.feeds) {
                feed.cancel();
            }
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
        let first = {
            let mut first = lock(&self.first);
            if first.is_none() {
                *first = Some(error);
                true
            } else {
                self.followers.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        self.cancel();
        if first {
            self.spread();
        }
    }

    /// Records a failure of another run of the graph, unless this run
    /// already failed (then it is not counted: it is one failure, seen
    /// from here).
    pub(crate) fn fail_elsewhere(&self, error: PipelineError) {
        if self.record(error) {
            self.cancel();
            self.spread();
        }
    }

    /// Records `error` as the first failure unless there is one; whether
    /// it did.
    fn record(&self, error: PipelineError) -> bool {
        let mut first = lock(&self.first);
        if first.is_some() {
            return false;
        }
        *first = Some(error);
        true
    }

    /// Fails each of `runs` with its own copy of one failure (`make`
    /// makes it) before any of them spreads it, so each consumer gets the
    /// failure itself (with its type) rather than another run's report of
    /// it: for a failure of something all of them share (a fork).
    pub(crate) fn fail_together(runs: &[Arc<Control>], make: impl Fn() -> PipelineError) {
        let recorded: Vec<bool> = runs.iter().map(|run| run.record(make())).collect();
        for (run, recorded) in runs.iter().zip(recorded) {
            if recorded {
                run.cancel();
                run.spread();
            }
        }
    }

    /// Gives this run's first failure to every peer. A peer passes it on
    /// to its own peers, so a graph of any shape hears of it; a run that
    /// already failed stops it there.
    fn spread(&self) {
        for peer in live(&self.peers) {
            let Some(copy) = self.failure_copy() else {
                return;
            };
            peer.fail_elsewhere(copy);
        }
    }

    /// This run's first failure so far, as another run of its graph reports it.
    pub(crate) fn failure_copy(&self) -> Option<PipelineError> {
        lock(&self.first).as_ref().map(PipelineError::elsewhere)
    }

    /// Makes `a` and `b` runs of one graph: from now on the first failure of
    /// either is the other's, and a failure either already had is given to
    /// the other now.
    pub(crate) fn join_graph(a: &Arc<Control>, b: &Arc<Control>) {
        lock(&a.peers).push(Arc::downgrade(b));
        lock(&b.peers).push(Arc::downgrade(a));
        for (from, to) in [(a, b), (b, a)] {
            if let Some(copy) = from.failure_copy() {
                to.fail_elsewhere(copy);
            }
        }
    }

    /// Cancels `input` whenever this run is cancelled (now, if it is).
    pub(crate) fn feed_from(&self, input: &Arc<Control>) {
        lock(&self.feeds).push(Arc::downgrade(input));
        if self.is_cancelled() {
            input.cancel();
        }
    }

    /// Notes that the consumer asked for results before any thread of
    /// ours reads them (a merge's input).
    pub(crate) fn mark_reading(&self) {
        self.reading.store(true, Ordering::Relaxed);
    }

    /// The consumer waits for a batch of results on this thread (once per
    /// batch: cheap).
    #[inline]
    pub(crate) fn consumer_waits(&self) {
        if !self.reading.load(Ordering::Relaxed) {
            self.reading.store(true, Ordering::Relaxed);
        }
        self.reader.store(thread_number(), Ordering::Relaxed);
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// The consumer's wait for a batch is over.
    #[inline]
    pub(crate) fn consumer_got(&self) {
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// The thread that last asked for results (0 before any), and whether
    /// it is waiting for them now.
    pub(crate) fn consumer(&self) -> (u64, bool) {
        let reader = self.reader.load(Ordering::Relaxed);
        (reader, self.waiting.load(Ordering::Relaxed))
    }

    /// Whether the consumer has asked for results yet.
    pub(crate) fn is_reading(&self) -> bool {
        self.reading.load(Ordering::Relaxed)
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

/// This thread's number, unique in the process (from 1): cheaper to keep
/// in an atomic than a `ThreadId`.
fn thread_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static NUMBER: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// The runs of a list still alive, copied out so no lock is held while
/// they are told something.
fn live(runs: &Mutex<Vec<Weak<Control>>>) -> Vec<Arc<Control>> {
    lock(runs).iter().filter_map(Weak::upgrade).collect()
}

/// Locks one of the runtime's own mutexes. No user code runs under them, so
/// a user panic cannot poison them; recover anyway rather than lose state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
