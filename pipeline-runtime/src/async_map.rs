//! An async map stage: one worker thread that starts a future per input
//! item on a tokio runtime, keeps at most `concurrency` of them in flight,
//! and emits their outputs (in input order if the stage is `ordered`).
//!
//! Each future runs as a task of its own on the runtime, so futures run in
//! parallel on the runtime's threads, a panic inside one is caught where it
//! happens, and a future can be cancelled (aborted) at its next `.await`.
//! A task reports how it ended on a channel the worker waits on. The worker
//! thread itself never runs a future: it moves items between the stage's
//! queues and the tasks, so a slow downstream queue holds back new futures
//! (backpressure), not the ones in flight.
//!
//! While futures are in flight and more input may come, the worker looks at
//! its input and at the tasks' channel in turn, waiting at most
//! [`INPUT_POLL`] on the second: the input queue cannot wake a thread that
//! waits on another channel. Once the input has ended, or `concurrency`
//! futures are in flight, it only waits for tasks.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Runtime};
use tokio::task::AbortHandle;

use crate::config::StageConfig;
use crate::control::POLL;
use crate::error::{BoxError, StageError};
use crate::profile::Flights;
use crate::worker::{Input, Next, Worker};

/// How long the worker waits for a task before it looks at its input again,
/// while it has room for more futures and the input has not ended: the most
/// an item that arrives then waits before its future starts.
const INPUT_POLL: Duration = Duration::from_millis(1);

/// An item's future, as an async stage's function returns it: boxed (its
/// task is spawned boxed anyway) and `Send`, since it may run on any of the
/// runtime's threads.
pub type BoxFuture<O> = Pin<Box<dyn Future<Output = Result<O, BoxError>> + Send + 'static>>;

/// The error of an item whose future took longer than the stage's
/// `timeout`: the pipeline's error names the stage, this the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// The stage's timeout.
    pub after: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the item's future timed out after {:?}", self.after)
    }
}

impl std::error::Error for TimedOut {}

/// The error of an item whose future its runtime dropped before it finished:
/// the runtime was shut down while the pipeline still ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DroppedByRuntime;

impl std::fmt::Display for DroppedByRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the item's future was dropped by its tokio runtime before it finished (was the runtime shut down?)",
        )
    }
}

impl std::error::Error for DroppedByRuntime {}

/// Runs one worker of an async map stage: what `#[map_stage] async fn`
/// generates as the stage's `run`.
pub(crate) fn run<I, O: Send + 'static>(
    worker: Worker<'_, I, O>,
    config: &StageConfig,
    make: impl FnMut(I) -> BoxFuture<O>,
) -> Result<(), StageError> {
    let handle = worker.executor().map_err(|e| {
        StageError::failed(format!(
            "could not start a tokio runtime for the async stage: {e}"
        ))
    })?;
    let flights = worker.flights();
    worker.try_transform(|input| {
        let mut map = AsyncMap::new(input, make, handle, None, config);
        map.flights = flights;
        map
    })
}

/// An async map stage over a plain iterator, on a tokio runtime of its own
/// that lives as long as the iterator: what the stage's `apply` returns (in
/// a serial segment, or when called directly).
pub(crate) fn apply<'a, I: 'a, O: Send + 'static>(
    input: impl Iterator<Item = I> + 'a,
    config: &StageConfig,
    make: impl FnMut(I) -> BoxFuture<O> + 'a,
) -> impl Iterator<Item = Result<O, BoxError>> + 'a {
    let started = crate::executor::start();
    let (map, failed) = match started {
        Ok(runtime) => {
            let handle = runtime.handle().clone();
            let map = AsyncMap::new(Blocking(input), make, handle, Some(runtime), config);
            (Some(map), None)
        }
        Err(e) => {
            let e: BoxError =
                format!("could not start a tokio runtime for the async stage: {e}").into();
            (None, Some(Err(e)))
        }
    };
    failed.into_iter().chain(map.into_iter().flatten())
}

/// Where the items come from.
trait Feed<T> {
    /// The next item, waiting no longer than `wait` (`None`: as long as it
    /// takes).
    fn next_within(&mut self, wait: Option<Duration>) -> Next<T>;
    /// Whether the pipeline has stopped, so the stage should too.
    fn cancelled(&self) -> bool;
}

impl<T> Feed<T> for Input<'_, T> {
    fn next_within(&mut self, wait: Option<Duration>) -> Next<T> {
        self.next_timeout(wait.unwrap_or(Duration::MAX))
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }
}

/// A plain iterator as a feed: it cannot wait less than it takes.
struct Blocking<I>(I);

impl<I: Iterator> Feed<I::Item> for Blocking<I> {
    fn next_within(&mut self, _: Option<Duration>) -> Next<I::Item> {
        match self.0.next() {
            Some(item) => Next::Item(item),
            None => Next::End,
        }
    }

    fn cancelled(&self) -> bool {
        false
    }
}

/// How an item's task ended.
enum Outcome<R> {
    Done(R),
    Panicked(Box<dyn std::any::Any + Send>),
    /// Dropped before it finished: aborted by the stage, or dropped by a
    /// runtime shutting down.
    Dropped,
}

struct Ended<R> {
    seq: u64,
    outcome: Outcome<R>,
}

/// An item's future, as a task: catches a panic where it happens, and
/// reports how the future ended, even when it is dropped unfinished.
struct Task<O> {
    future: BoxFuture<O>,
    seq: u64,
    report: Option<flume::Sender<Ended<Result<O, BoxError>>>>,
}

impl<O> Future for Task<O> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let outcome = match catch_unwind(AssertUnwindSafe(|| this.future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Outcome::Done(output),
            Err(payload) => Outcome::Panicked(payload),
        };
        this.report(outcome);
        Poll::Ready(())
    }
}

impl<O> Task<O> {
    fn report(&mut self, outcome: Outcome<Result<O, BoxError>>) {
        if let Some(report) = self.report.take() {
            // The stage may be gone: then nobody needs to know.
            let _ = report.send(Ended {
                seq: self.seq,
                outcome,
            });
        }
    }
}

impl<O> Drop for Task<O> {
    fn drop(&mut self) {
        self.report(Outcome::Dropped);
    }
}

/// A future in flight.
struct Flight {
    abort: AbortHandle,
    deadline: Option<Instant>,
    /// When it started, in a profiled run.
    started: Option<Instant>,
}

/// The stage's loop, as an iterator over its outputs and failing items.
struct AsyncMap<Fd, F, I, O> {
    feed: Fd,
    input_ended: bool,
    make: F,
    handle: Handle,
    /// The runtime it started itself, stopped when it is dropped.
    own: Option<Runtime>,
    limit: usize,
    ordered: bool,
    timeout: Option<Duration>,
    report: flume::Sender<Ended<Result<O, BoxError>>>,
    reports: flume::Receiver<Ended<Result<O, BoxError>>>,
    next_seq: u64,
    flying: HashMap<u64, Flight>,
    /// Outputs waiting to be emitted, by input position; `None` marks an
    /// item already emitted out of turn (a failure, which fails or is
    /// dropped at once), which the order skips.
    finished: BTreeMap<u64, Option<O>>,
    /// In an ordered stage, the position of the next output to emit.
    next_out: u64,
    /// In a profiled or debugged run, what is measured of the futures.
    flights: Option<Flights>,
    _input: PhantomData<fn(I)>,
}

impl<Fd, F, I, O> AsyncMap<Fd, F, I, O>
where
    Fd: Feed<I>,
    F: FnMut(I) -> BoxFuture<O>,
    O: Send + 'static,
{
    fn new(feed: Fd, make: F, handle: Handle, own: Option<Runtime>, config: &StageConfig) -> Self {
        let (report, reports) = flume::unbounded();
        AsyncMap {
            feed,
            input_ended: false,
            make,
            handle,
            own,
            // Validated at start; a stage called directly may not be.
            limit: config.concurrency().unwrap_or(1).max(1),
            ordered: config.ordered(),
            timeout: config.timeout(),
            report,
            reports,
            next_seq: 0,
            flying: HashMap::new(),
            finished: BTreeMap::new(),
            next_out: 0,
            flights: None,
            _input: PhantomData,
        }
    }

    /// Whether another future may start: fewer than `limit` in flight, and,
    /// in an ordered stage, fewer than `limit` outputs held back behind a
    /// slow one.
    fn has_room(&self) -> bool {
        self.flying.len() < self.limit && self.finished.len() < self.limit
    }

    fn start(&mut self, item: I) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let task = Task {
            future: (self.make)(item),
            seq,
            report: Some(self.report.clone()),
        };
        let abort = self.handle.spawn(task).abort_handle();
        let deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        let started = self.flights.as_mut().map(|flights| {
            let now = Instant::now();
            flights.started(now, self.flying.len());
            now
        });
        self.flying.insert(
            seq,
            Flight {
                abort,
                deadline,
                started,
            },
        );
    }

    /// Takes in what a task reported; a failure is returned at once.
    fn ended(&mut self, ended: Ended<Result<O, BoxError>>) -> Option<Result<O, BoxError>> {
        // An aborted task reports too: it is no longer in flight then.
        let flight = self.flying.remove(&ended.seq)?;
        if let (Some(flights), Some(started)) = (&mut self.flights, flight.started) {
            flights.ended(started, Instant::now(), self.flying.len());
        }
        match ended.outcome {
            Outcome::Done(Ok(output)) => {
                self.finished.insert(ended.seq, Some(output));
                None
            }
            Outcome::Done(Err(e)) => self.failed(ended.seq, e),
            Outcome::Dropped => self.failed(ended.seq, Box::new(DroppedByRuntime)),
            // On the worker's thread, as if the stage's code had panicked
            // there: the pipeline fails naming the stage and worker. The
            // futures still in flight are aborted as the iterator drops.
            Outcome::Panicked(payload) => resume_unwind(payload),
        }
    }

    fn failed(&mut self, seq: u64, error: BoxError) -> Option<Result<O, BoxError>> {
        self.finished.insert(seq, None);
        Some(Err(error))
    }

    /// The next output that may be emitted.
    fn ready(&mut self) -> Option<O> {
        loop {
            let mut entry = self.finished.first_entry()?;
            if self.ordered && *entry.key() != self.next_out {
                return None;
            }
            self.next_out = entry.key() + 1;
            if let Some(output) = entry.get_mut().take() {
                entry.remove();
                return Some(output);
            }
            entry.remove();
        }
    }

    /// Fails the first future past its deadline, if any.
    fn expire(&mut self, now: Instant) -> Option<Result<O, BoxError>> {
        let (&seq, _) = self
            .flying
            .iter()
            .find(|(_, f)| f.deadline.is_some_and(|d| d <= now))?;
        let flight = self.flying.remove(&seq)?;
        flight.abort.abort();
        if let Some(flights) = &mut self.flights {
            flights.cancelled(self.flying.len());
        }
        let after = self.timeout.unwrap_or_default();
        self.failed(seq, Box::new(TimedOut { after }))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.flying.values().filter_map(|f| f.deadline).min()
    }
}

impl<Fd, F, I, O> Iterator for AsyncMap<Fd, F, I, O>
where
    Fd: Feed<I>,
    F: FnMut(I) -> BoxFuture<O>,
    O: Send + 'static,
{
    type Item = Result<O, BoxError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(output) = self.ready() {
                return Some(Ok(output));
            }
            while let Ok(ended) = self.reports.try_recv() {
                if let Some(failure) = self.ended(ended) {
                    return Some(failure);
                }
            }
            if self.ready_now() {
                continue;
            }
            if self.timeout.is_some()
                && let Some(failure) = self.expire(Instant::now())
            {
                return Some(failure);
            }
            if self.feed.cancelled() {
                return None;
            }
            let room = !self.input_ended && self.has_room();
            if room {
                // With nothing in flight there is nothing else to wait for.
                let wait = (!self.flying.is_empty()).then_some(Duration::ZERO);
                match self.feed.next_within(wait) {
                    Next::Item(item) => {
                        self.start(item);
                        continue;
                    }
                    Next::End => {
                        self.input_ended = true;
                        continue;
                    }
                    Next::Timeout => {}
                }
            }
            if self.flying.is_empty() {
                if self.input_ended {
                    // Everything started has ended and been emitted (an
                    // ordered stage's held outputs follow every gap).
                    debug_assert!(self.finished.is_empty());
                    return None;
                }
                continue;
            }
            let mut wait = if room { INPUT_POLL } else { POLL };
            if let Some(deadline) = self.next_deadline() {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            if let Ok(ended) = self.reports.recv_timeout(wait)
                && let Some(failure) = self.ended(ended)
            {
                return Some(failure);
            }
        }
    }
}

impl<Fd, F, I, O> AsyncMap<Fd, F, I, O> {
    /// Whether an output can be emitted now (checked after taking reports).
    fn ready_now(&self) -> bool {
        match self.finished.first_key_value() {
            None => false,
            Some((&seq, _)) => !self.ordered || seq == self.next_out,
        }
    }
}

impl<Fd, F, I, O> Drop for AsyncMap<Fd, F, I, O> {
    fn drop(&mut self) {
        // The stage is done or stopped: what is still in flight is not
        // awaited. Aborted tasks are dropped at their next `.await`.
        for flight in self.flying.values() {
            flight.abort.abort();
        }
        if let Some(flights) = &mut self.flights {
            for left in (0..self.flying.len()).rev() {
                flights.cancelled(left);
            }
        }
        if let Some(runtime) = self.own.take() {
            crate::executor::stop(runtime);
        }
    }
}
