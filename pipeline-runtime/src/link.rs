//! Batched, bounded links between the threads of a pipeline.
//!
//! A flume message per item costs a thread sleep and wake per hand-off (over
//! a microsecond on two cores); a batch of 64 costs a few nanoseconds per
//! item. So items travel in batches, sized adaptively: a batch holds about
//! [`BATCH_BUDGET_NS`] of work of the slower of its two ends, capped at
//! [`MAX_BATCH`] items. Fast stages get full batches; a slow stage or a
//! trickling source sends each item as soon as it has it, and a slow
//! consumer gets small batches, so its workers share the load evenly.
//! A worker also flushes whatever it holds before it waits for input, so no
//! item ever waits in a buffer while its thread sleeps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flume::{RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

use crate::config::QueueSize;
use crate::control::{Control, POLL, lock};
use crate::error::Stop;
use crate::user_code::UserCode;

/// The largest batch, for items whose cost is negligible. Measured on two
/// cores (1M `x + 1` items), 512 items per batch cost a third of what 64 do
/// per item; the time budget below keeps batches of costlier items small.
pub(crate) const MAX_BATCH: usize = 512;

/// About the work one batch should hold: long enough to amortise the
/// thread wake-ups a hand-off may cost (tens of microseconds on two busy
/// cores), short enough to keep latency and load imbalance between workers
/// small, and failures prompt (a worker checks for cancellation between
/// batches). On two cores, 200 us against 50 us: fib(15) per item 1.68x ->
/// 1.83x sequential, five uneven stages 1.84x -> 1.93x; 500 us gained
/// nothing more. (In an unordered pipeline, how many items pass a failing
/// one before it fails depends on the scheduler, not on this budget:
/// `tests/shutdown.rs` checks what the budget does bound, the work done
/// after the failure.)
const BATCH_BUDGET_NS: u64 = 200_000;

/// Cost of a link's consumer before it has measured itself: assume slow, so
/// the first items go one at a time rather than all to one worker.
const UNKNOWN_COST: u64 = u64::MAX;

/// Times a thread yields its core before it sleeps on a full or empty
/// queue. With more threads than cores, yielding lets the thread at the other
/// end run and free a slot or fill one: far cheaper than sleeping and being
/// woken, which a bounded channel otherwise does for every batch. With idle
/// cores, it costs a few microseconds before a sleep that was coming anyway.
const YIELDS: usize = 8;

struct Shared<T> {
    /// Nanoseconds per item the consumer of the link took on its last batch.
    consumer_cost_ns: AtomicU64,
    /// Only in a profiled or debugged run: its atomics are shared by both
    /// ends, and bouncing their cache line per batch cost 1.4 ns per item
    /// (+23%) on the 1-stage overhead bench.
    gauge: Option<Arc<Gauge>>,
    /// For the input of an `ordered` stage: the number the next batch sent
    /// gets. Senders hold the lock while they send, so that numbers follow
    /// the queue's order and the stage's workers, which take batches in
    /// that order, never wait for a number still behind them in the queue.
    numbering: Option<Mutex<u64>>,
    /// On a keyed `ordered` stage's worker queue, whose one sender, the
    /// router, numbers runs of items itself (see [`Tx::push_in_run`]):
    /// set when the worker stops reading before its input ends. The router
    /// then sends it nothing more, and the worker reads what was sent to
    /// the end, so that the reorder step gets every number (see
    /// [`Rx::abandon`]).
    abandoned: Option<AtomicBool>,
    /// Batches given back by a receiver that stopped reading (an iterator
    /// stage's worker that returned early) with items it never looked at:
    /// they belong to its siblings, who take them before the queue's.
    returned: Mutex<Vec<Batch<T>>>,
    /// Whether `returned` may hold a batch: read per batch, without the lock.
    has_returned: AtomicBool,
    /// Receivers that may hold items they have not looked at yet (see
    /// [`Rx::hold`]): one that finds the queue closed waits for them, since
    /// they may still give some back.
    holding: AtomicUsize,
    /// Live receivers, so that a batch is given back only if one can take it.
    receivers: AtomicUsize,
    /// On a link with more than [`CROWD`] receivers, only the holder of this
    /// lock waits on the empty queue; the others wait for the lock (see
    /// [`Rx::recv`]).
    gate: Mutex<()>,
    /// The same for more than [`CROWD`] senders waiting on a full queue.
    send_gate: Mutex<()>,
}

/// Above this many receivers (or senders), a link lets one of them at a
/// time wait on its empty (or full) queue. Every waiter on a flume queue is
/// a hook in a list that each timed-out wait scans to remove itself, and
/// every waiter yields its core a few times first: with 4,096 workers sleeping on an empty queue in
/// `POLL` rounds, that was 8 s and 15 CPU-seconds for 5,000 items of 50 ms
/// (`benches/io_workers.rs`; hand-written threads: 0.9 s, 1 CPU-second).
/// Workers waiting on a lock cost nothing until it is theirs. Below it, a
/// worker that finds the queue empty waits on the queue at once: no hand-off
/// between waiters on the fine-grained path.
const CROWD: usize = 16;

/// How many items wait in a link's queue, for the profiler and debugger.
/// Updated once per batch, so it costs nothing per item.
#[derive(Default)]
pub(crate) struct Gauge {
    queued: AtomicU64,
    max: AtomicU64,
}

impl Gauge {
    /// Items in the queue now.
    pub(crate) fn depth(&self) -> u64 {
        self.queued.load(Relaxed)
    }

    /// The most items the queue has held.
    pub(crate) fn max_depth(&self) -> u64 {
        self.max.load(Relaxed)
    }

    fn add(&self, n: usize) {
        let now = self.queued.fetch_add(n as u64, Relaxed) + n as u64;
        self.max.fetch_max(now, Relaxed);
    }

    fn sub(&self, n: usize) {
        self.queued.fetch_sub(n as u64, Relaxed);
    }
}

/// What travels through a link: a batch of items, with, in a profiled
/// pipeline, when the oldest of them left the source.
pub(crate) struct Batch<T> {
    items: Vec<T>,
    born: Option<Instant>,
    /// Its number, on a numbered link (see [`Shared::numbering`]).
    seq: u64,
    /// On a keyed `ordered` stage's worker queue: the numbered runs its
    /// items make, `(number, items)`, in order (see [`Tx::push_in_run`]).
    runs: Vec<(u64, usize)>,
}

/// Batches for a queue of `queue` items filled by `senders` threads:
/// `(slots, items per batch)`. At least two slots where possible, so a
/// producer can fill one batch while another waits, and a slot for each
/// sender, so that many slow workers sending batches of one item are not
/// held to a few items in the queue in all; never more than `qsize` items
/// queued in all.
fn geometry(queue: QueueSize, senders: usize) -> (Option<usize>, usize) {
    match queue {
        QueueSize::Bounded(n) => {
            let n = n.max(1);
            let slots = n.div_ceil(MAX_BATCH).max(senders).max(2).min(n);
            (Some(slots), n / slots)
        }
        QueueSize::Unbounded => (None, MAX_BATCH),
    }
}

pub(crate) fn batch_limit(cost_ns: u64, max_batch: usize) -> usize {
    if cost_ns == 0 {
        return max_batch;
    }
    usize::try_from(BATCH_BUDGET_NS / cost_ns)
        .unwrap_or(usize::MAX)
        .clamp(1, max_batch)
}

pub(crate) fn per_item_ns(since: Instant, now: Instant, items: usize) -> u64 {
    let ns = u64::try_from(now.duration_since(since).as_nanos()).unwrap_or(u64::MAX);
    ns / items.max(1) as u64
}

/// A new link of the given queue size, with one sender; `numbered` if it
/// feeds an `ordered` stage.
pub(crate) fn link<T>(queue: QueueSize, numbered: bool) -> (Tx<T>, Rx<T>) {
    link_with(queue, 1, None, numbered)
}

/// A new link whose queue depth is kept in `gauge`.
pub(crate) fn link_with<T>(
    queue: QueueSize,
    senders: usize,
    gauge: Option<Arc<Gauge>>,
    numbered: bool,
) -> (Tx<T>, Rx<T>) {
    new_link(queue, senders, gauge, numbered, false)
}

/// A keyed stage's worker queue, whose one sender is the stage's router;
/// if the stage is `ordered`, the router numbers runs of its items (see
/// [`Tx::push_in_run`]).
pub(crate) fn keyed_link<T>(
    queue: QueueSize,
    gauge: Option<Arc<Gauge>>,
    ordered: bool,
) -> (Tx<T>, Rx<T>) {
    new_link(queue, 1, gauge, false, ordered)
}

fn new_link<T>(
    queue: QueueSize,
    senders: usize,
    gauge: Option<Arc<Gauge>>,
    numbered: bool,
    runs: bool,
) -> (Tx<T>, Rx<T>) {
    let (slots, max_batch) = geometry(queue, senders);
    let (tx, rx) = match slots {
        Some(n) => flume::bounded(n),
        None => flume::unbounded(),
    };
    let shared = Arc::new(Shared {
        consumer_cost_ns: AtomicU64::new(UNKNOWN_COST),
        gauge,
        numbering: numbered.then(Mutex::default),
        abandoned: runs.then(AtomicBool::default),
        returned: Mutex::new(Vec::new()),
        has_returned: AtomicBool::new(false),
        holding: AtomicUsize::new(0),
        receivers: AtomicUsize::new(1),
        gate: Mutex::new(()),
        send_gate: Mutex::new(()),
    });
    let tx = Tx {
        tx,
        shared: shared.clone(),
        max_batch,
        limit: 1,
        buf: Vec::new(),
        runs: Vec::new(),
        mark: Instant::now(),
        born: None,
        stamps: false,
        blocked_ns: 0,
        user: None,
    };
    let rx = Rx {
        rx,
        shared,
        mark: None,
        last_len: 0,
        born: None,
        seq: 0,
        stamps: false,
        returned: false,
        holds: false,
        runs: VecDeque::new(),
    };
    (tx, rx)
}

/// The sending end of a link, owned by one thread; clone it per worker.
pub(crate) struct Tx<T> {
    tx: flume::Sender<Batch<T>>,
    shared: Arc<Shared<T>>,
    max_batch: usize,
    limit: usize,
    buf: Vec<T>,
    /// The numbered runs `buf` holds (see [`Tx::push_in_run`]).
    runs: Vec<(u64, usize)>,
    /// Start of the time the items in `buf` took to produce.
    mark: Instant,
    /// When the oldest item in `buf` left the source, in a profiled pipeline.
    born: Option<Instant>,
    /// Whether this is a source's sender, which stamps its batches.
    stamps: bool,
    /// Time spent waiting for room in the queue, in all.
    blocked_ns: u64,
    /// A source's sender: its thread is in the user's code (the source's
    /// iterator) except while this sends a batch.
    user: Option<UserCode>,
}

impl<T> Clone for Tx<T> {
    fn clone(&self) -> Self {
        Tx {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            max_batch: self.max_batch,
            limit: 1,
            buf: Vec::new(),
            runs: Vec::new(),
            mark: Instant::now(),
            born: None,
            stamps: self.stamps,
            blocked_ns: 0,
            user: None,
        }
    }
}

impl<T> Tx<T> {
    /// Makes this a producer's sender: its batches carry when they were
    /// started, for the profiler's end-to-end latency.
    pub(crate) fn stamp_batches(&mut self) {
        self.stamps = true;
    }

    /// The items about to be pushed descend from a batch that left the
    /// source at `born`: the output batch keeps the oldest such time.
    pub(crate) fn inherit(&mut self, born: Option<Instant>) {
        if self.buf.is_empty() || self.born.is_none() {
            self.born = born;
        }
    }

    /// The items about to be pushed left the source at `born`, elsewhere:
    /// a producer relaying a distributed job's results stamps its batches
    /// with that, not with when it emitted them.
    #[cfg(feature = "nats")]
    pub(crate) fn born_at(&mut self, born: Instant) {
        self.stamps = false;
        self.inherit(Some(born));
    }

    /// How long this sender has waited for room in its queue, in all.
    pub(crate) fn blocked_ns(&self) -> u64 {
        self.blocked_ns
    }

    /// Makes this the sender of a source whose thread runs the user's code
    /// (see [`UserCode`]) but while it sends a batch: marked per batch, not
    /// per item, which a cheap source would feel.
    pub(crate) fn in_user_code(&mut self, user: UserCode) {
        self.user = Some(user);
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T, ctl: &Control) -> Result<(), Stop> {
        self.buf.push(item);
        if self.buf.len() >= self.limit {
            self.flush(ctl)
        } else {
            Ok(())
        }
    }

    /// Pushes an item of the run numbered `run`. A keyed `ordered` stage's
    /// router numbers each run of consecutive input items that go to one
    /// worker; its batches carry several runs, and the worker's receiver
    /// hands each out as a batch of its own, with its number: the reorder
    /// step then releases runs in input order, while the queues carry full
    /// batches rather than one per run (as small as one item when
    /// consecutive items have different workers).
    pub(crate) fn push_in_run(&mut self, item: T, run: u64, ctl: &Control) -> Result<(), Stop> {
        match self.runs.last_mut() {
            Some((last, n)) if *last == run => *n += 1,
            _ => self.runs.push((run, 1)),
        }
        self.push(item, ctl)
    }

    /// Whether nothing is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Sends a whole batch as it is (after what is buffered), without
    /// copying its items one by one, unless it is larger than the link's
    /// batches.
    pub(crate) fn send_all(
        &mut self,
        items: Vec<T>,
        born: Option<Instant>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        if items.is_empty() {
            return Ok(());
        }
        self.flush(ctl)?;
        self.born = born;
        if items.len() <= self.max_batch {
            self.buf = items;
        } else {
            for item in items {
                self.push(item, ctl)?;
            }
        }
        self.flush(ctl)
    }

    /// Sends what is buffered, waiting for room in the queue.
    pub(crate) fn flush(&mut self, ctl: &Control) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match self.user.clone() {
            None => self.send_buffered(ctl),
            Some(user) => user.outside(|| self.send_buffered(ctl)),
        }
    }

    fn send_buffered(&mut self, ctl: &Control) -> Result<(), Stop> {
        if ctl.is_cancelled() {
            // Items of a cancelled pipeline must not reach the consumer.
            self.buf.clear();
            self.runs.clear();
            return Err(Stop::Cancelled);
        }
        let now = Instant::now();
        let own = per_item_ns(self.mark, now, self.buf.len());
        let downstream = self.shared.consumer_cost_ns.load(Relaxed);
        self.limit = batch_limit(own.max(downstream), self.max_batch);
        let items = std::mem::replace(&mut self.buf, Vec::with_capacity(self.limit));
        let born = match self.stamps {
            true => Some(self.mark),
            false => self.born.take(),
        };
        let n = items.len();
        // Counted before it can be received, so the gauge never goes below 0.
        if let Some(gauge) = &self.shared.gauge {
            gauge.add(n);
        }
        // Held until the batch is in the queue (see `Shared::numbering`).
        let mut numbering = self.shared.numbering.as_ref().map(crate::control::lock);
        let seq = numbering.as_deref().copied().unwrap_or(0);
        let runs = std::mem::take(&mut self.runs);
        let sent = match self.tx.try_send(Batch {
            items,
            born,
            seq,
            runs,
        }) {
            Ok(()) => {
                self.mark = now;
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(Stop::Cancelled),
            Err(TrySendError::Full(batch)) => {
                let sent = self.send_blocking(batch, ctl);
                // Time spent waiting for room is not the cost of producing.
                self.mark = Instant::now();
                self.blocked_ns += crate::time::nanos(self.mark.duration_since(now));
                sent
            }
        };
        match (&sent, numbering.as_deref_mut()) {
            (Ok(()), Some(next)) => *next += 1,
            (Ok(()), None) => {}
            (Err(_), _) => {
                if let Some(gauge) = &self.shared.gauge {
                    gauge.sub(n);
                }
            }
        }
        sent
    }

    #[cold]
    fn send_blocking(&self, mut batch: Batch<T>, ctl: &Control) -> Result<(), Stop> {
        // One sender at a time waits on a crowded link's full queue (see
        // `CROWD`); the others wait for the gate.
        let _gate = (self.tx.sender_count() > CROWD).then(|| lock(&self.shared.send_gate));
        for _ in 0..YIELDS {
            thread::yield_now();
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(Stop::Cancelled),
                Err(TrySendError::Full(b)) => batch = b,
            }
        }
        loop {
            match self.tx.send_timeout(batch, POLL) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Disconnected(_)) => return Err(Stop::Cancelled),
                Err(SendTimeoutError::Timeout(b)) => {
                    if ctl.is_cancelled() {
                        return Err(Stop::Cancelled);
                    }
                    batch = b;
                }
            }
        }
    }

    /// Whether the next push sends a batch, and the queue has no room for
    /// it now: a thread feeding several links (a keyed stage's router)
    /// sends what it holds for the others before it waits on this one.
    pub(crate) fn next_push_waits(&self) -> bool {
        self.buf.len() + 1 >= self.limit && self.tx.is_full()
    }

    /// Whether every receiver of the link is gone, or (a keyed ordered
    /// worker's queue) its receiver stopped reading.
    pub(crate) fn is_disconnected(&self) -> bool {
        self.tx.is_disconnected()
            || (self.shared.abandoned.as_ref()).is_some_and(|a| a.load(Relaxed))
    }

    /// Restarts the production-time measurement after the owner waited for
    /// input, so the wait does not count as the cost of its items.
    pub(crate) fn restart_clock(&mut self, now: Instant) {
        if self.buf.is_empty() {
            self.mark = now;
        }
    }
}

/// What a link's receiver does around a wait: a worker flushes its output
/// first, so nothing it holds waits while it sleeps.
pub(crate) trait Waiting {
    fn before_wait(&mut self, ctl: &Control) -> Result<(), Stop>;
    fn after_wait(&mut self, now: Instant);
    /// Whether the receiver may wait for siblings that could still give
    /// items back, once the queue is closed. Not an ordered worker that
    /// keeps its batch open through a timed wait: a sibling ahead of it may
    /// be waiting for that batch's turn.
    fn may_wait_for_siblings(&self) -> bool {
        true
    }
}

impl<O> Waiting for Tx<O> {
    fn before_wait(&mut self, ctl: &Control) -> Result<(), Stop> {
        self.flush(ctl)
    }
    fn after_wait(&mut self, now: Instant) {
        self.restart_clock(now);
    }
}

/// What a receive got.
pub(crate) enum Recv<T> {
    Batch(Vec<T>),
    /// Every sender is gone and the queue is drained.
    Closed,
    /// Nothing came before the deadline.
    TimedOut,
}

/// The receiving end of a link; clone it per worker.
pub(crate) struct Rx<T> {
    rx: flume::Receiver<Batch<T>>,
    shared: Arc<Shared<T>>,
    /// When the last batch was handed out, if one was.
    mark: Option<Instant>,
    last_len: usize,
    /// When the oldest item of the last batch entered the pipeline, if stamped.
    born: Option<Instant>,
    /// The last batch's number, on a numbered link.
    seq: u64,
    /// Whether this receives from a source, and stamps the batches it takes.
    stamps: bool,
    /// Whether the last batch handed out was one a sibling gave back.
    returned: bool,
    /// Whether this receiver is counted in `Shared::holding`.
    holds: bool,
    /// The runs of the last batch not handed out yet, each with its number
    /// (see [`Tx::push_in_run`]).
    runs: VecDeque<(u64, Vec<T>)>,
}

impl<T> Drop for Rx<T> {
    fn drop(&mut self) {
        self.let_go();
        self.shared.receivers.fetch_sub(1, SeqCst);
    }
}

impl<T> Clone for Rx<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, SeqCst);
        Rx {
            rx: self.rx.clone(),
            shared: self.shared.clone(),
            mark: None,
            last_len: 0,
            born: None,
            seq: 0,
            stamps: self.stamps,
            returned: false,
            holds: false,
            runs: VecDeque::new(),
        }
    }
}

impl<T> Rx<T> {
    /// Makes this a source's receiver: a batch taken from it enters the
    /// pipeline then, for the profiler's end-to-end latency.
    pub(crate) fn stamp_batches(&mut self) {
        self.stamps = true;
    }

    /// When the oldest item of the last batch handed out left the source,
    /// in a profiled pipeline.
    pub(crate) fn born(&self) -> Option<Instant> {
        self.born
    }

    /// The number of the last batch handed out, on a numbered link.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The gauge counting the items in the link's queue, in a profiled or
    /// debugged run: a keyed stage's router counts the items it moves on
    /// to its workers' queues in it too, as still waiting for the stage.
    pub(crate) fn gauge(&self) -> Option<Arc<Gauge>> {
        self.shared.gauge.clone()
    }

    /// Whether runs of the last batch wait to be handed out (see
    /// [`Tx::push_in_run`]): the next receive takes one without waiting.
    pub(crate) fn has_runs(&self) -> bool {
        !self.runs.is_empty()
    }

    /// Whether the link's batches (or runs) are numbered.
    pub(crate) fn is_numbered(&self) -> bool {
        self.shared.numbering.is_some() || self.shared.abandoned.is_some()
    }

    /// The next batch, or `None` once every sender is gone and the queue is
    /// drained; `Err` once the pipeline is cancelled. Before it would wait,
    /// it lets `waiting` flush what it holds.
    /// With a `deadline`, waits no longer than that.
    pub(crate) fn recv(
        &mut self,
        ctl: &Control,
        waiting: &mut impl Waiting,
        deadline: Option<Instant>,
    ) -> Result<Recv<T>, Stop> {
        if ctl.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if let Some((seq, items)) = self.runs.pop_front() {
            self.seq = seq;
            return Ok(Recv::Batch(items));
        }
        self.publish_cost();
        if let Some(items) = self.given_back() {
            return Ok(Recv::Batch(items));
        }
        Ok(match self.rx.try_recv() {
            Ok(batch) => Recv::Batch(self.handed_out(batch)),
            Err(TryRecvError::Disconnected) => self.closed(ctl, waiting, deadline)?,
            Err(TryRecvError::Empty) => {
                waiting.before_wait(ctl)?;
                let received = match self.wait(ctl, deadline)? {
                    Some(received) => received,
                    // Out of the gate: waiting for siblings that hold items
                    // must not keep one of them from reading its own.
                    None => self.closed(ctl, waiting, deadline)?,
                };
                waiting.after_wait(Instant::now());
                received
            }
        })
    }

    /// Waits for a batch on an empty queue: `None` once it is closed and
    /// drained. On a crowded link (more than [`CROWD`] receivers), one
    /// receiver at a time waits on the queue, the others on the gate; a
    /// receiver with a deadline waits on the queue (a lock cannot time out).
    fn wait(&mut self, ctl: &Control, deadline: Option<Instant>) -> Result<Option<Recv<T>>, Stop> {
        let crowded = deadline.is_none() && self.shared.receivers.load(Relaxed) > CROWD;
        // Its own handle on the lock: the guard outlives borrows of `self`.
        let shared = crowded.then(|| self.shared.clone());
        let _gate = shared.as_ref().map(|shared| lock(&shared.gate));
        if crowded {
            // What happened while this one waited for the gate.
            if ctl.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            if let Some(items) = self.given_back() {
                return Ok(Some(Recv::Batch(items)));
            }
        }
        match self.try_recv_yielding() {
            Ok(batch) => Ok(Some(Recv::Batch(self.handed_out(batch)))),
            Err(TryRecvError::Disconnected) => Ok(None),
            Err(TryRecvError::Empty) => self.recv_blocking(ctl, deadline),
        }
    }

    /// The queue is closed and drained: the input has ended, unless a
    /// sibling still holds items it may give back (see [`Rx::give_back`]).
    fn closed(
        &mut self,
        ctl: &Control,
        waiting: &mut impl Waiting,
        deadline: Option<Instant>,
    ) -> Result<Recv<T>, Stop> {
        // This one holds nothing now; it takes a batch given back only once
        // counted again, so that a sibling never sees it as not holding
        // while it takes one.
        let held = self.holds;
        self.let_go();
        loop {
            if self.shared.has_returned.load(SeqCst) {
                self.hold();
                if let Some(batch) = self.take_returned() {
                    return Ok(Recv::Batch(self.handed_back(batch)));
                }
                self.let_go();
            }
            if self.shared.holding.load(SeqCst) == 0 || !waiting.may_wait_for_siblings() {
                // A holder gives back before it lets go: look once more.
                if held {
                    self.hold();
                }
                return Ok(match self.take_returned() {
                    Some(batch) => Recv::Batch(self.handed_back(batch)),
                    None => Recv::Closed,
                });
            }
            waiting.before_wait(ctl)?;
            let wake = Instant::now() + Duration::from_millis(1);
            let wake = deadline.map_or(wake, |d| d.min(wake));
            if !ctl.sleep_until(Some(wake)) {
                return Err(Stop::Cancelled);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Recv::TimedOut);
            }
        }
    }

    /// Gives the unread rest of the last batch back to the link's other
    /// receivers, who take it before anything else; `false` (and the items
    /// are dropped) if no other receiver is left to take them.
    pub(crate) fn give_back(&mut self, items: Vec<T>) -> bool {
        if items.is_empty() {
            return true;
        }
        let mut returned = lock(&self.shared.returned);
        if self.shared.receivers.load(SeqCst) < 2 {
            return false;
        }
        if let Some(gauge) = &self.shared.gauge {
            gauge.add(items.len());
        }
        returned.push(Batch {
            items,
            born: self.born,
            seq: self.seq,
            runs: Vec::new(),
        });
        self.shared.has_returned.store(true, SeqCst);
        true
    }

    /// Stops reading a keyed `ordered` worker's queue before it ends:
    /// `true` if the link is one, and the caller must then read it to its
    /// end (the router sends nothing more), handing in each batch's number
    /// empty. The batches already sent are numbered, and the reorder step
    /// waits for every number; no sibling may take them, since their keys
    /// are this worker's. Elsewhere `false`: dropping the receiver is enough.
    pub(crate) fn abandon(&mut self) -> bool {
        match &self.shared.abandoned {
            Some(abandoned) => {
                abandoned.store(true, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether another receiver of the link is still alive.
    pub(crate) fn has_siblings(&self) -> bool {
        self.shared.receivers.load(SeqCst) > 1
    }

    /// Counts this receiver as one that may hold unread items: an
    /// iterator stage's input calls it before it takes a batch (so a sibling
    /// that then finds the queue closed waits for it), and
    /// [`let_go`](Rx::let_go) once it has read the batch to its end.
    pub(crate) fn hold(&mut self) {
        if !self.holds {
            self.holds = true;
            self.shared.holding.fetch_add(1, SeqCst);
        }
    }

    /// No longer counted as holding unread items.
    pub(crate) fn let_go(&mut self) {
        if self.holds {
            self.holds = false;
            self.shared.holding.fetch_sub(1, SeqCst);
        }
    }

    /// Whether the last batch handed out was given back by a sibling.
    pub(crate) fn was_returned(&self) -> bool {
        self.returned
    }

    fn take_returned(&mut self) -> Option<Batch<T>> {
        let mut returned = lock(&self.shared.returned);
        // The oldest first: an ordered stage waits for the lowest number.
        let oldest = (0..returned.len()).min_by_key(|&i| returned[i].seq)?;
        let batch = returned.swap_remove(oldest);
        if returned.is_empty() {
            self.shared.has_returned.store(false, SeqCst);
        }
        Some(batch)
    }

    /// A batch a sibling gave back, if there is one, handed out: the flag is
    /// read first, so the common case takes no lock.
    fn given_back(&mut self) -> Option<Vec<T>> {
        if !self.shared.has_returned.load(Relaxed) {
            return None;
        }
        let batch = self.take_returned()?;
        Some(self.handed_back(batch))
    }

    /// [`handed_out`](Rx::handed_out) for a batch a sibling gave back.
    fn handed_back(&mut self, batch: Batch<T>) -> Vec<T> {
        let items = self.handed_out(batch);
        self.returned = true;
        items
    }

    /// The consumer's receive: every batch already produced is delivered,
    /// cancelled or not, until the last sender is gone, or, once the
    /// pipeline is cancelled, until the queue is empty (a sender may be
    /// stuck in the user's code, and sends nothing more once cancelled).
    pub(crate) fn recv_to_end(&mut self, ctl: &Control) -> Option<Vec<T>> {
        self.publish_cost();
        let batch = match self.try_recv_yielding() {
            Ok(batch) => batch,
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => loop {
                match self.rx.recv_timeout(POLL) {
                    Ok(batch) => break batch,
                    Err(RecvTimeoutError::Disconnected) => return None,
                    Err(RecvTimeoutError::Timeout) if ctl.is_cancelled() => {
                        return self.rx.try_recv().ok().map(|b| self.handed_out(b));
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            },
        };
        Some(self.handed_out(batch))
    }

    /// A batch, if one comes while this thread yields its core a few times.
    fn try_recv_yielding(&self) -> Result<Batch<T>, TryRecvError> {
        let mut received = self.rx.try_recv();
        for _ in 0..YIELDS {
            if !matches!(received, Err(TryRecvError::Empty)) {
                break;
            }
            thread::yield_now();
            received = self.rx.try_recv();
        }
        received
    }

    #[cold]
    fn recv_blocking(
        &mut self,
        ctl: &Control,
        deadline: Option<Instant>,
    ) -> Result<Option<Recv<T>>, Stop> {
        loop {
            let wait = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(POLL),
                    _ => return Ok(Some(Recv::TimedOut)),
                },
                None => POLL,
            };
            match self.rx.recv_timeout(wait) {
                Ok(batch) => return Ok(Some(Recv::Batch(self.handed_out(batch)))),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    if ctl.is_cancelled() {
                        return Err(Stop::Cancelled);
                    }
                    // A sibling that stopped reading may have given its
                    // rest back while this one slept on the queue.
                    if let Some(items) = self.given_back() {
                        return Ok(Some(Recv::Batch(items)));
                    }
                }
            }
        }
    }

    fn publish_cost(&mut self) {
        if let Some(mark) = self.mark.take() {
            let cost = per_item_ns(mark, Instant::now(), self.last_len);
            self.shared.consumer_cost_ns.store(cost, Relaxed);
        }
    }

    fn handed_out(&mut self, batch: Batch<T>) -> Vec<T> {
        self.returned = false;
        if let Some(gauge) = &self.shared.gauge {
            gauge.sub(batch.items.len());
        }
        self.last_len = batch.items.len();
        self.seq = batch.seq;
        let now = Instant::now();
        self.born = match self.stamps {
            true => Some(now),
            false => batch.born,
        };
        self.mark = Some(now);
        if batch.runs.is_empty() {
            return batch.items;
        }
        // Each run a batch of its own, the first now.
        let mut items = batch.items.into_iter();
        for (seq, n) in batch.runs {
            self.runs.push_back((seq, items.by_ref().take(n).collect()));
        }
        let (seq, first) = self.runs.pop_front().unwrap_or_default();
        self.seq = seq;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_never_exceeds_qsize() {
        for n in 1..=5000 {
            let (slots, batch) = geometry(QueueSize::Bounded(n), 1);
            let slots = slots.unwrap();
            assert!(slots >= 1 && (1..=MAX_BATCH).contains(&batch), "qsize {n}");
            assert!(slots * batch <= n, "qsize {n}: {slots} x {batch}");
            if n >= 2 {
                assert!(slots >= 2, "qsize {n}");
            }
        }
        assert_eq!(geometry(QueueSize::Bounded(4096), 1), (Some(8), 512));
        assert_eq!(geometry(QueueSize::Bounded(4096), 2), (Some(8), 512));
        assert_eq!(geometry(QueueSize::Bounded(30), 1), (Some(2), 15));
        assert_eq!(geometry(QueueSize::Bounded(1), 1), (Some(1), 1));
        // A slot per sender, within the bound.
        assert_eq!(geometry(QueueSize::Bounded(4096), 64), (Some(64), 64));
        assert_eq!(geometry(QueueSize::Bounded(4096), 4096), (Some(4096), 1));
        assert_eq!(geometry(QueueSize::Bounded(100), 4096), (Some(100), 1));
        for senders in [3, 17, 1000, 5000] {
            for n in [1, 7, 100, 4096, 10_000] {
                let (slots, batch) = geometry(QueueSize::Bounded(n), senders);
                assert!(slots.unwrap() * batch <= n, "qsize {n}, {senders} senders");
                assert!(batch >= 1);
            }
        }
    }

    #[test]
    fn batch_limit_follows_cost() {
        assert_eq!(batch_limit(0, 64), 64);
        assert_eq!(batch_limit(10, 64), 64);
        assert_eq!(batch_limit(10_000, 64), 20);
        assert_eq!(batch_limit(100_000, 64), 2);
        assert_eq!(batch_limit(UNKNOWN_COST, 64), 1);
    }
}
