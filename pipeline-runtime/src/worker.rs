//! What a stage's worker works with: its input, its output, and the loops
//! that connect them to the stage's function.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::error::{BoxError, Counters, StageError, Stop};
use crate::link::{Recv, Rx, Tx};
use crate::ordered::Out;
use crate::profile::Clocks;
use crate::profile::Probe;

/// The queues and state one worker thread owns.
pub(crate) struct WorkerIo<'c, I, O> {
    rx: RefCell<Rx<I>>,
    out: RefCell<Out<O>>,
    ctl: &'c Control,
    /// Set when the input ended because the pipeline was cancelled rather
    /// than because it was drained: what the stage does after that is not
    /// a result.
    cancelled: Cell<bool>,
    /// In a profiled or debugged pipeline, what this worker measures.
    probe: RefCell<Option<Probe>>,
    /// And, for a serial segment, the probes of its fused stages.
    clocks: RefCell<Option<Rc<Clocks>>>,
}

impl<'c, I, O> WorkerIo<'c, I, O> {
    pub(crate) fn new(
        rx: Rx<I>,
        out: Out<O>,
        ctl: &'c Control,
        probe: Option<Probe>,
        fused: Vec<Probe>,
    ) -> Self {
        WorkerIo {
            rx: RefCell::new(rx),
            out: RefCell::new(out),
            ctl,
            cancelled: Cell::new(false),
            probe: RefCell::new(probe),
            clocks: RefCell::new((!fused.is_empty()).then(|| Clocks::new(fused))),
        }
    }
}

/// Per-call timing of a map stage's loop, compiled out when not measuring:
/// the loop is generic over it, so an unprofiled pipeline runs the very
/// loop it ran before the profiler existed.
trait CallTimer {
    type Mark: Copy;
    fn now(&self) -> Self::Mark;
    fn took(&mut self, n: usize, asked: Self::Mark);
    fn call(&mut self, start: Self::Mark, emitted: bool);
}

impl CallTimer for () {
    type Mark = ();
    #[inline(always)]
    fn now(&self) {}
    #[inline(always)]
    fn took(&mut self, _: usize, _: ()) {}
    #[inline(always)]
    fn call(&mut self, _: (), _: bool) {}
}

impl CallTimer for Probe {
    type Mark = Instant;
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn took(&mut self, n: usize, asked: Instant) {
        let now = Instant::now();
        Probe::took(self, n, now, now.saturating_duration_since(asked));
    }
    #[inline]
    fn call(&mut self, start: Instant, emitted: bool) {
        Probe::call(self, start, Instant::now(), emitted);
    }
}

/// One worker of a [`Stage`](crate::Stage), handed to [`Stage::run`](crate::Stage::run).
///
/// Its methods are the worker's whole life: each takes the stage's function,
/// feeds it the worker's share of the input, sends what it returns on, and
/// returns when the input ends (or the pipeline stops).
pub struct Worker<'a, I, O> {
    io: &'a WorkerIo<'a, I, O>,
    index: usize,
    filter_errors: bool,
    counters: &'a Counters,
}

impl<I, O> std::fmt::Debug for Worker<'_, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a, I: 'a, O: 'a> Worker<'a, I, O> {
    pub(crate) fn new(
        io: &'a WorkerIo<'a, I, O>,
        index: usize,
        filter_errors: bool,
        counters: &'a Counters,
    ) -> Self {
        Worker {
            io,
            index,
            filter_errors,
            counters,
        }
    }

    /// This worker's index, from 0 to `workers - 1`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// In a profiled run, the probes of the stages fused into this one.
    pub(crate) fn fused_clocks(&self) -> Option<Rc<Clocks>> {
        self.io.clocks.borrow_mut().take()
    }

    /// The tokio runtime this pipeline's async stages run their futures on.
    #[cfg(feature = "async")]
    pub(crate) fn executor(&self) -> std::io::Result<tokio::runtime::Handle> {
        self.io.ctl.executor.handle()
    }

    /// In a profiled or debugged run, what an async stage measures of its
    /// futures.
    #[cfg(feature = "async")]
    pub(crate) fn flights(&self) -> Option<crate::profile::Flights> {
        self.io.probe.borrow_mut().as_mut().map(Probe::is_async)
    }

    /// Where the stage counts the items it drops instead of failing.
    pub(crate) fn counters(&self) -> &'a Counters {
        self.counters
    }

    /// Emits `f(item)` for every input item.
    pub fn map(self, mut f: impl FnMut(I) -> O) -> Result<(), StageError> {
        self.try_map(|item| Ok::<O, std::convert::Infallible>(f(item)))
    }

    /// Emits `f(item)` for every input item; an `Err` fails the stage, or,
    /// with `filter_errors`, drops the item and counts it.
    pub fn try_map<E: Into<BoxError>>(
        self,
        f: impl FnMut(I) -> Result<O, E>,
    ) -> Result<(), StageError> {
        let probe = self.io.probe.borrow_mut().take();
        match probe {
            None => self.map_loop(f, ()),
            Some(probe) => {
                probe.is_map();
                self.map_loop(f, probe)
            }
        }
    }

    fn map_loop<E: Into<BoxError>, T: CallTimer>(
        self,
        mut f: impl FnMut(I) -> Result<O, E>,
        mut timer: T,
    ) -> Result<(), StageError> {
        let ctl = self.io.ctl;
        let mut rx = self.io.rx.borrow_mut();
        let mut out = self.io.out.borrow_mut();
        loop {
            let asked = timer.now();
            let Some(batch) = out.next_batch(&mut rx, ctl)? else {
                break;
            };
            timer.took(batch.len(), asked);
            for item in batch {
                let start = timer.now();
                match f(item) {
                    Ok(item) => {
                        timer.call(start, true);
                        out.push(item, ctl)?
                    }
                    Err(e) => {
                        timer.call(start, false);
                        self.reject(e)?
                    }
                }
            }
        }
        out.finish(ctl)?;
        Ok(())
    }

    /// Calls `f` once with an iterator over this worker's share of the input
    /// and emits every item of what it returns: what `#[stage]` runs.
    /// Code before and after the loop in `f` is per-worker setup and teardown.
    pub fn transform<R>(self, f: impl FnOnce(Input<'a, I>) -> R) -> Result<(), StageError>
    where
        R: IntoIterator<Item = O>,
    {
        self.try_transform(|input| f(input).into_iter().map(Ok::<O, std::convert::Infallible>))
    }

    /// Like [`transform`](Worker::transform), for a function that yields
    /// `Result`s: an `Err` fails the stage, or, with `filter_errors`, is
    /// dropped and counted.
    pub fn try_transform<R, E>(self, f: impl FnOnce(Input<'a, I>) -> R) -> Result<(), StageError>
    where
        R: IntoIterator<Item = Result<O, E>>,
        E: Into<BoxError>,
    {
        let io = self.io;
        let input = Input {
            source: io,
            batch: Vec::new().into_iter(),
        };
        if io.probe.borrow().is_none() {
            for item in f(input) {
                match item {
                    Ok(out) => io.out.borrow_mut().push(out, io.ctl)?,
                    Err(e) => self.reject(e)?,
                }
            }
        } else {
            for item in f(input) {
                let mut out = io.out.borrow_mut();
                if let Some(probe) = io.probe.borrow_mut().as_mut() {
                    probe.emitted(out.blocked_ns());
                }
                match item {
                    Ok(item) => out.push(item, io.ctl)?,
                    Err(e) => self.reject(e)?,
                }
            }
        }
        if io.cancelled.get() {
            return Err(StageError(Stop::Cancelled));
        }
        io.skip_rest()?;
        io.out.borrow_mut().finish(io.ctl)?;
        Ok(())
    }

    fn reject(&self, error: impl Into<BoxError>) -> Result<(), Stop> {
        self.counters
            .drop_or_fail(self.filter_errors, error.into())
            .map_err(Stop::Failed)
    }
}

trait BatchSource<T> {
    /// The next batch; `Closed` also once the pipeline is cancelled.
    fn next_batch(&self, deadline: Option<Instant>) -> Recv<T>;
    /// The worker holds unread items of its batch, or no longer.
    fn set_holding(&self, holding: bool);
    /// The worker stopped reading with these items unread: they go to its
    /// siblings (or, with none left, nowhere: the stage stopped reading).
    fn give_back(&self, items: Vec<T>);
    /// Whether the pipeline has stopped.
    #[cfg(feature = "async")]
    fn is_cancelled(&self) -> bool;
}

impl<I, O> WorkerIo<'_, I, O> {
    /// After the stage's function returned: a keyed `ordered` worker that
    /// stopped before its input ended reads the rest unseen, handing each
    /// batch in empty, so its stage's reorder step gets every number (see
    /// [`Rx::abandon`]). Elsewhere, and once the input has ended, nothing.
    fn skip_rest(&self) -> Result<(), Stop> {
        let mut rx = self.rx.borrow_mut();
        if !rx.abandon() {
            return Ok(());
        }
        let mut out = self.out.borrow_mut();
        while out.next_batch(&mut rx, self.ctl)?.is_some() {}
        Ok(())
    }
}

impl<I, O> BatchSource<I> for WorkerIo<'_, I, O> {
    fn next_batch(&self, deadline: Option<Instant>) -> Recv<I> {
        if self.cancelled.get() {
            return Recv::Closed;
        }
        let mut rx = self.rx.borrow_mut();
        let mut out = self.out.borrow_mut();
        let mut probe = self.probe.borrow_mut();
        let asked = probe.as_ref().map(|_| Instant::now());
        match out.next_batch_until(&mut rx, self.ctl, deadline) {
            Ok(received) => {
                if let (Some(probe), Some(asked)) = (probe.as_mut(), asked) {
                    let now = Instant::now();
                    let n = match &received {
                        Recv::Batch(batch) => batch.len(),
                        _ => 0,
                    };
                    probe.took(n, now, now.saturating_duration_since(asked));
                }
                received
            }
            Err(_) => {
                self.cancelled.set(true);
                Recv::Closed
            }
        }
    }

    fn set_holding(&self, holding: bool) {
        let mut rx = self.rx.borrow_mut();
        match holding {
            true => rx.hold(),
            false => rx.let_go(),
        }
    }

    fn give_back(&self, items: Vec<I>) {
        if self.cancelled.get() || self.ctl.is_cancelled() {
            return;
        }
        let mut rx = self.rx.borrow_mut();
        if !rx.has_siblings() {
            return;
        }
        // An ordered worker's output so far waits for the sibling that
        // takes the rest; the step releases it in order either way.
        if self.out.borrow_mut().park(self.ctl).is_ok() {
            rx.give_back(items);
        }
    }

    #[cfg(feature = "async")]
    fn is_cancelled(&self) -> bool {
        self.cancelled.get() || self.ctl.is_cancelled()
    }
}

/// What [`Input::next_timeout`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// An item.
    Item(T),
    /// The input has ended.
    End,
    /// No item came in time.
    Timeout,
}

/// A worker's share of a stage's input, as an iterator: what an iterator
/// stage's function receives.
///
/// It ends when the previous stage has finished and the queue is drained,
/// or when the pipeline stops; in the second case anything the stage emits
/// afterwards is discarded.
///
/// A worker that stops reading before its input ends (its function returns
/// early) gives the items it took but never looked at back to the stage's
/// other workers, who process them; only when no other worker is left
/// reading are they dropped (the stage has stopped reading its input).
pub struct Input<'a, T> {
    source: &'a dyn BatchSource<T>,
    batch: std::vec::IntoIter<T>,
}

impl<T> std::fmt::Debug for Input<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("buffered", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl<T> Input<'_, T> {
    /// The next item, waiting for it no longer than `timeout`: for stages
    /// that act on time as well as on items (a partial chunk flushed after
    /// a while, say). `Duration::MAX` waits as long as it takes.
    pub fn next_timeout(&mut self, timeout: Duration) -> Next<T> {
        let deadline = crate::time::deadline_after(timeout);
        loop {
            if let Some(item) = self.batch.next() {
                self.read();
                return Next::Item(item);
            }
            match self.refill(deadline) {
                Next::Item(()) => {}
                Next::End => return Next::End,
                Next::Timeout => return Next::Timeout,
            }
        }
    }

    /// Whether the pipeline has stopped: the input then ends early, and
    /// what the stage emits afterwards is discarded.
    #[cfg(feature = "async")]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.source.is_cancelled()
    }

    /// An item was taken: once the batch's last one is, nothing unread is
    /// held.
    #[inline]
    fn read(&mut self) {
        if self.batch.len() == 0 {
            self.source.set_holding(false);
        }
    }

    /// Takes the next batch, once the current one is read. Counted as
    /// holding first, so that a sibling that finds the queue closed waits
    /// until this one has either read what it takes or given it back.
    #[cold]
    fn refill(&mut self, deadline: Option<Instant>) -> Next<()> {
        self.source.set_holding(true);
        let got = match self.source.next_batch(deadline) {
            Recv::Batch(batch) => {
                self.batch = batch.into_iter();
                Next::Item(())
            }
            Recv::Closed => Next::End,
            Recv::TimedOut => Next::Timeout,
        };
        if self.batch.len() == 0 {
            self.source.set_holding(false);
        }
        got
    }
}

impl<T> Drop for Input<'_, T> {
    fn drop(&mut self) {
        let rest: Vec<T> = std::mem::take(&mut self.batch).collect();
        if !rest.is_empty() {
            self.source.give_back(rest);
        }
        // Let go only once given back, so that a sibling that finds the
        // queue closed and nobody holding also finds what was given back.
        self.source.set_holding(false);
    }
}

impl<T> Iterator for Input<'_, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.batch.next() {
                self.read();
                return Some(item);
            }
            match self.refill(None) {
                Next::Item(()) => {}
                Next::End | Next::Timeout => return None,
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.batch.len(), None)
    }
}

/// One worker of a [`Producer`](crate::Producer): where it sends its items.
pub struct Emitter<'a, O> {
    tx: &'a mut Tx<O>,
    ctl: &'a Control,
    index: usize,
    filter_errors: bool,
    counters: &'a Counters,
    probe: Option<Probe>,
}

impl<O> std::fmt::Debug for Emitter<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a, O> Emitter<'a, O> {
    pub(crate) fn new(
        tx: &'a mut Tx<O>,
        ctl: &'a Control,
        index: usize,
        filter_errors: bool,
        counters: &'a Counters,
        probe: Option<Probe>,
    ) -> Self {
        Emitter {
            tx,
            ctl,
            index,
            filter_errors,
            counters,
            probe,
        }
    }

    /// This worker's index, from 0 to `workers - 1`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The items emitted next left the source at `born` (see
    /// [`Tx::born_at`]).
    #[cfg(feature = "nats")]
    pub(crate) fn born_at(&mut self, born: std::time::Instant) {
        self.tx.born_at(born);
    }

    /// Sends one item on. Fails (with a cancellation, not an error of yours)
    /// once the pipeline stops; return that error from `produce`.
    pub fn emit(&mut self, item: O) -> Result<(), StageError> {
        if let Some(probe) = &mut self.probe {
            probe.emitted(self.tx.blocked_ns());
        }
        self.tx.push(item, self.ctl)?;
        Ok(())
    }

    /// Sends every item of `items` on, then flushes.
    pub fn emit_all(self, items: impl IntoIterator<Item = O>) -> Result<(), StageError> {
        self.try_emit_all(items.into_iter().map(Ok::<O, std::convert::Infallible>))
    }

    /// Sends every `Ok` item on; an `Err` fails the producer, or, with
    /// `filter_errors`, is dropped and counted.
    pub fn try_emit_all<E: Into<BoxError>>(
        mut self,
        items: impl IntoIterator<Item = Result<O, E>>,
    ) -> Result<(), StageError> {
        for item in items {
            if let Some(probe) = &mut self.probe {
                probe.emitted(self.tx.blocked_ns());
            }
            match item {
                Ok(out) => self.tx.push(out, self.ctl)?,
                Err(e) => self
                    .counters
                    .drop_or_fail(self.filter_errors, e.into())
                    .map_err(StageError::failed)?,
            }
        }
        self.tx.flush(self.ctl)?;
        Ok(())
    }
}

impl From<Stop> for StageError {
    fn from(stop: Stop) -> Self {
        StageError(stop)
    }
}
