//! An async map stage: one worker thread that starts a future per input
//! item, keeps at most `concurrency` of them in flight, polls them itself
//! inside a tokio runtime's context (their timers and sockets are the
//! runtime's, which wakes them), and emits their outputs, in input order
//! if the stage is `ordered`.
//!
//! The futures are polled where `futures`' `buffer_unordered` polls them:
//! on the one thread that drives them, so one that is ready at once costs
//! no hand-off between threads, and one that is cancelled (the stage
//! failed, its results were dropped, its item timed out) is dropped on the
//! spot. A panic inside a future is caught where it happens and raised on
//! the worker's thread, where the runtime's panic policy reports it. CPU
//! work inside a future holds up the stage's other futures: it belongs in
//! a thread stage.
//!
//! While futures are in flight and more input may come, the worker looks at
//! its input and at its futures in turn, sleeping at most [`INPUT_POLL`]
//! between the two: the input queue cannot wake a thread that sleeps until
//! a future wakes it. Once the input has ended, or `concurrency` futures
//! are in flight, only the futures (or a deadline) wake it.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use tokio::runtime::{Handle, Runtime};

use crate::config::StageConfig;
use crate::control::POLL;
use crate::error::{BoxError, StageError};
use crate::profile::Flights;
use crate::wake::ThreadWaker;
use crate::worker::{Input, Next, Worker};

/// How long the worker sleeps before it looks at its input again, while it
/// has room for more futures and the input has not ended: the most an item
/// that arrives then waits before its future starts.
const INPUT_POLL: Duration = Duration::from_millis(1);

/// An item's future, as an async stage's function returns it: boxed, so
/// that futures of one stage share a type, and `Send`, so that the stage,
/// and the pipeline, may move between threads.
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

/// How an item's future ended.
enum Outcome<R> {
    Done(R),
    Panicked(Box<dyn std::any::Any + Send>),
    /// Past its deadline: the stage has failed the item already.
    Expired,
}

/// Tells a future in flight that its item timed out, and wakes it so that
/// it is polled, ends, and is dropped at once.
#[derive(Default)]
struct Expiry {
    expired: AtomicBool,
    waker: AtomicWaker,
}

impl Expiry {
    fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// An item's future in flight: catches a panic where it happens, and ends
/// early once its item timed out.
struct InFlight<O> {
    future: BoxFuture<O>,
    seq: u64,
    expiry: Option<Arc<Expiry>>,
}

impl<O> Future for InFlight<O> {
    type Output = (u64, Outcome<Result<O, BoxError>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(expiry) = &this.expiry {
            if expiry.expired.load(Ordering::Acquire) {
                return Poll::Ready((this.seq, Outcome::Expired));
            }
            expiry.waker.register(cx.waker());
        }
        match catch_unwind(AssertUnwindSafe(|| this.future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready((this.seq, Outcome::Done(output))),
            Err(payload) => Poll::Ready((this.seq, Outcome::Panicked(payload))),
        }
    }
}

/// What the stage knows of a future in flight.
struct Flight {
    deadline: Option<Instant>,
    expiry: Option<Arc<Expiry>>,
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
    futures: FuturesUnordered<InFlight<O>>,
    waker: ThreadWaker,
    next_seq: u64,
    /// By input position. Every item gets the same timeout, so the first
    /// entry is also the first to expire.
    flying: BTreeMap<u64, Flight>,
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
            futures: FuturesUnordered::new(),
            waker: ThreadWaker::default(),
            next_seq: 0,
            flying: BTreeMap::new(),
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
        let deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        let expiry = deadline.map(|_| Arc::new(Expiry::default()));
        let started = self.flights.as_mut().map(|flights| {
            let now = Instant::now();
            flights.started(now, self.flying.len());
            now
        });
        self.futures.push(InFlight {
            future: (self.make)(item),
            seq,
            expiry: expiry.clone(),
        });
        self.flying.insert(
            seq,
            Flight {
                deadline,
                expiry,
                started,
            },
        );
    }

    /// Polls the futures in flight (inside the runtime's context), taking
    /// in every one that has ended; a failure is returned at once.
    fn poll_futures(&mut self) -> Option<Result<O, BoxError>> {
        if self.futures.is_empty() {
            return None;
        }
        let handle = self.handle.clone();
        let _runtime = handle.enter();
        loop {
            let mut cx = Context::from_waker(self.waker.get());
            match Pin::new(&mut self.futures).poll_next(&mut cx) {
                Poll::Ready(Some((seq, outcome))) => {
                    if let Some(failure) = self.ended(seq, outcome) {
                        return Some(failure);
                    }
                }
                Poll::Ready(None) | Poll::Pending => return None,
            }
        }
    }

    /// Takes in how a future ended; a failure is returned at once.
    fn ended(
        &mut self,
        seq: u64,
        outcome: Outcome<Result<O, BoxError>>,
    ) -> Option<Result<O, BoxError>> {
        // An expired future ends too: it is no longer in flight then.
        let flight = self.flying.remove(&seq)?;
        if let (Some(flights), Some(started)) = (&mut self.flights, flight.started) {
            flights.ended(started, Instant::now(), self.flying.len());
        }
        match outcome {
            Outcome::Done(Ok(output)) => {
                self.finished.insert(seq, Some(output));
                None
            }
            Outcome::Done(Err(e)) => self.failed(seq, e),
            // Removed from `flying` when it expired: not reached.
            Outcome::Expired => None,
            // On the worker's thread, as if the stage's code had panicked
            // there: the pipeline fails naming the stage and worker. The
            // futures still in flight are dropped as the iterator drops.
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
        let entry = self.flying.first_entry()?;
        if entry.get().deadline.is_none_or(|d| d > now) {
            return None;
        }
        let seq = *entry.key();
        let flight = entry.remove();
        if let Some(expiry) = &flight.expiry {
            expiry.expire();
        }
        if let Some(flights) = &mut self.flights {
            flights.cancelled(self.flying.len());
        }
        let after = self.timeout.unwrap_or_default();
        self.failed(seq, Box::new(TimedOut { after }))
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.flying.first_key_value()?.1.deadline
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
            if let Some(failure) = self.poll_futures() {
                return Some(failure);
            }
            if let Some(output) = self.ready() {
                return Some(Ok(output));
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
            // A future's wake-up, or one that came since the last poll,
            // ends the sleep at once.
            thread::park_timeout(wait);
        }
    }
}

impl<Fd, F, I, O> Drop for AsyncMap<Fd, F, I, O> {
    fn drop(&mut self) {
        // The stage is done or stopped: what is still in flight is
        // dropped now, not awaited, inside the runtime's context (a
        // future's sockets and timers deregister from it).
        {
            let _runtime = self.handle.enter();
            self.futures = FuturesUnordered::new();
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
