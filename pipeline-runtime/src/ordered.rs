//! Where a worker's output goes: straight to the stage's output queue, or,
//! for an `ordered` stage, through a reorder step that releases each input
//! batch's output once every earlier batch's is out.
//!
//! The input batches of an ordered stage are numbered as they are sent
//! (senders take turns, so the numbers follow the queue's order); its
//! workers keep each batch's output apart, and hand it in when they move to
//! their next batch.
//! Output is released as soon as it is next in line: it streams. The worker
//! whose batch is next in line (the head) sends its output as it makes it,
//! so even one input item with an endless output streams. A worker ahead of
//! the head holds at most [`HOLD`] items of its batch's output before it
//! waits for its turn, and at most a window of batches past the head before
//! it waits too (more batches while they hold few items: see
//! `Reorder::budget`), so memory is bounded by the queues and the worker
//! count, however much output one item makes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

// Under `--cfg loom`, the reorder step's own locks are loom's, so that the
// model at the end of this file can check every interleaving of them.
#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::control::{Control, POLL};
use crate::error::Stop;
use crate::link::{MAX_BATCH, Recv, Rx, Tx, Waiting, batch_limit, per_item_ns};

/// The most output items a worker ahead of the head holds for its current
/// batch before it waits for its turn. Twice the largest input batch, so a
/// one-to-one stage never waits here (its workers stay parallel); a stage
/// that makes many items per input item waits once it has this many.
pub(crate) const HOLD: usize = 2 * MAX_BATCH;

/// A batch's output, and when its input left the source (profiled runs).
type Done<O> = (Vec<O>, Option<Instant>);

/// A worker's output.
pub(crate) enum Out<O> {
    /// Unordered: the worker's own sender on the output queue.
    Direct(Tx<O>),
    /// Ordered: the current batch's output, kept until its turn.
    Ordered(Box<Held<O>>),
}

/// An ordered worker's state.
pub(crate) struct Held<O> {
    order: Arc<Reorder<O>>,
    /// A sender on the output queue, only to see whether it is still
    /// read (the reorder step's own one is behind its lock).
    watch: Tx<O>,
    /// Number of the input batch being worked on, if any.
    seq: Option<u64>,
    /// Batches done and not handed in yet: the runs of a keyed stage's
    /// batch, handed in together once the last is done (see `hand_in`).
    deferred: Vec<(u64, Done<O>)>,
    held: Vec<O>,
    /// When the input batch left the source, in a profiled pipeline.
    born: Option<Instant>,
    /// How many held items make the worker offer them (send them if it is
    /// the head): adapted to the cost of making them, as a link's batches are.
    limit: usize,
    /// Since when the items held were made.
    mark: Instant,
}

/// Locks one of the reorder step's mutexes: no user code runs under them,
/// so a poisoned one still holds consistent state.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a reorder step releases batches: the stage's output queue (a
/// recording in the loom model).
pub(crate) trait Sink<O> {
    fn send_all(&mut self, items: Vec<O>, born: Option<Instant>, ctl: &Control)
    -> Result<(), Stop>;
}

impl<O> Sink<O> for Tx<O> {
    fn send_all(
        &mut self,
        items: Vec<O>,
        born: Option<Instant>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        Tx::send_all(self, items, born, ctl)
    }
}

/// The reorder step shared by an ordered stage's workers.
pub(crate) struct Reorder<O, S = Tx<O>> {
    state: Mutex<Pending<O, S>>,
    turn: Condvar,
    /// How many batches past the oldest unfinished one may be held.
    window: u64,
    /// Beyond `window`, while the batches held hold fewer items than this,
    /// and up to `max_window` batches: tiny batches (a keyed stage's runs,
    /// or costly items one at a time) would otherwise keep the workers in
    /// lockstep, each waiting for the others every few items, while the
    /// memory held stays small.
    budget: usize,
    max_window: u64,
    /// `Pending::next`, readable without the lock: a worker checks it
    /// before taking the lock to send its output early.
    head: AtomicU64,
}

struct Pending<O, S> {
    /// The number of the next batch to release.
    next: u64,
    /// Workers waiting for their turn.
    waiting: usize,
    done: BTreeMap<u64, Done<O>>,
    /// How many items `done` holds.
    held: usize,
    /// The output so far of batches whose worker stopped reading them and
    /// gave the rest back: the sibling that takes the rest starts from it.
    parked: BTreeMap<u64, (Vec<O>, Option<Instant>)>,
    /// Batches given back and not taken again yet. While there are any, no
    /// worker waits for its turn: the batch it would wait for may be one of
    /// them, and only a worker that moves on can take it.
    returned: usize,
    /// Workers that have not finished: the last one releases whatever is
    /// left, in order (output parked for a batch no sibling took).
    workers: usize,
    /// The output queue's reader is gone (or the pipeline stopped): every
    /// worker waiting here stops too.
    closed: bool,
    tx: S,
}

impl<O, S: Sink<O>> Reorder<O, S> {
    pub(crate) fn new(tx: S, workers: usize) -> Self {
        let window = 2 * workers.max(1) as u64;
        Self::with_window(tx, workers, window, workers.max(1) * HOLD, 64 * window)
    }

    fn with_window(tx: S, workers: usize, window: u64, budget: usize, max_window: u64) -> Self {
        Reorder {
            state: Mutex::new(Pending {
                next: 0,
                waiting: 0,
                done: BTreeMap::new(),
                held: 0,
                parked: BTreeMap::new(),
                returned: 0,
                workers,
                closed: false,
                tx,
            }),
            turn: Condvar::new(),
            window,
            budget,
            max_window,
            head: AtomicU64::new(0),
        }
    }

    /// Waits for a turn, for up to one poll: `Err` once nothing more can be
    /// released.
    fn wait<'a>(
        &self,
        mut state: MutexGuard<'a, Pending<O, S>>,
        ctl: &Control,
    ) -> Result<MutexGuard<'a, Pending<O, S>>, Stop> {
        if state.closed || ctl.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        state.waiting += 1;
        state = self
            .turn
            .wait_timeout(state, POLL)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        state.waiting -= 1;
        Ok(state)
    }

    /// Sends `items` under the lock; a failed send closes the step, and
    /// every waiter stops.
    fn send(
        &self,
        state: &mut Pending<O, S>,
        items: Vec<O>,
        born: Option<Instant>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        if items.is_empty() {
            return Ok(());
        }
        state.tx.send_all(items, born, ctl).inspect_err(|_| {
            state.closed = true;
            self.turn.notify_all();
        })
    }

    /// Sends output that belongs to no input batch, now.
    fn release_now(&self, items: Vec<O>, born: Option<Instant>, ctl: &Control) -> Result<(), Stop> {
        let mut state = lock(&self.state);
        self.send(&mut state, items, born, ctl)
    }

    /// Offers part of batch `seq`'s output before the batch is done: sent
    /// at once if the batch is the head (`true`), else kept by the caller,
    /// or, if `wait`, sent once the batch becomes the head.
    fn offer(
        &self,
        seq: u64,
        items: &mut Vec<O>,
        born: Option<Instant>,
        wait: bool,
        ctl: &Control,
    ) -> Result<bool, Stop> {
        if !wait && self.head.load(Ordering::Acquire) != seq {
            return Ok(false);
        }
        let mut state = lock(&self.state);
        loop {
            if state.next == seq {
                self.send(&mut state, std::mem::take(items), born, ctl)?;
                return Ok(true);
            }
            if !wait || state.returned > 0 {
                return Ok(false);
            }
            state = self.wait(state, ctl)?;
        }
    }

    /// Hands in batch `seq`'s output and releases whatever is now in line.
    fn submit(&self, seq: u64, done: Done<O>, ctl: &Control) -> Result<(), Stop> {
        self.submit_all(std::iter::once((seq, done)), ctl)
    }

    /// Hands in the output of several batches, in number order, under one
    /// lock: a keyed stage's worker hands in the runs of a batch together
    /// (see [`Held::hand_in`]). Every batch now in line goes out in one
    /// send: small batches would otherwise cost a hand-off each.
    fn submit_all(
        &self,
        batches: impl IntoIterator<Item = (u64, Done<O>)>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        let mut state = lock(&self.state);
        let mut ready: Vec<O> = Vec::new();
        let mut born = None;
        for (seq, (items, first_born)) in batches {
            if self.too_far(seq, &state) {
                // Out before waiting: while this waits, another worker may
                // release the batches after them.
                self.send(&mut state, std::mem::take(&mut ready), born, ctl)?;
                if state.waiting > 0 {
                    self.turn.notify_all();
                }
                // The worker holding batch `next` never waits here (nor
                // does anyone while that batch may be among those given
                // back), so this ends.
                while self.too_far(seq, &state) {
                    state = self.wait(state, ctl)?;
                }
            }
            if seq != state.next {
                state.held += items.len();
                state.done.insert(seq, (items, first_born));
                continue;
            }
            match ready.is_empty() {
                // Moved, not copied: most releases are one batch.
                true => {
                    born = first_born;
                    ready = items;
                }
                false => ready.extend(items),
            }
            loop {
                state.next += 1;
                let next = state.next;
                match state.done.remove(&next) {
                    Some((items, _)) => {
                        state.held -= items.len();
                        ready.extend(items);
                    }
                    None => break,
                }
            }
            self.head.store(state.next, Ordering::Release);
        }
        // Sent under the lock, so batches leave in order; a full queue
        // holds back the other workers here, as it would anyway.
        self.send(&mut state, ready, born, ctl)?;
        if state.waiting > 0 {
            self.turn.notify_all();
        }
        Ok(())
    }

    /// Whether batch `seq` is too far past the head to be held: past the
    /// window, and past the item budget or the largest window.
    fn too_far(&self, seq: u64, state: &Pending<O, S>) -> bool {
        let past = seq.saturating_sub(state.next);
        state.returned == 0
            && past >= self.window
            && (state.held >= self.budget || past >= self.max_window)
    }

    /// Keeps batch `seq`'s output so far for the sibling that takes the rest
    /// of its input (sent now if the batch is the head).
    fn park(
        &self,
        seq: u64,
        items: Vec<O>,
        born: Option<Instant>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        let mut state = lock(&self.state);
        state.returned += 1;
        if state.waiting > 0 {
            self.turn.notify_all();
        }
        if state.next == seq {
            self.send(&mut state, items, born, ctl)
        } else {
            state.parked.insert(seq, (items, born));
            Ok(())
        }
    }

    /// What was parked for batch `seq`, now taken up again.
    fn adopt(&self, seq: u64) -> (Vec<O>, Option<Instant>) {
        let mut state = lock(&self.state);
        state.returned = state.returned.saturating_sub(1);
        state.parked.remove(&seq).unwrap_or_default()
    }

    /// One worker has finished. The last one releases what is left: output
    /// parked for, or waiting behind, a batch that no worker took again.
    fn finished(&self, ctl: &Control) -> Result<(), Stop> {
        let mut state = lock(&self.state);
        state.workers = state.workers.saturating_sub(1);
        if state.workers > 0 {
            return Ok(());
        }
        let mut left = std::mem::take(&mut state.done);
        state.held = 0;
        left.append(&mut std::mem::take(&mut state.parked));
        for (_, (items, born)) in left {
            self.send(&mut state, items, born, ctl)?;
        }
        Ok(())
    }
}

/// Nothing to flush before waiting: an ordered worker hands its batch in
/// first, unless it keeps it open through a timed wait (`true`).
struct NoFlush(bool);

impl Waiting for NoFlush {
    fn before_wait(&mut self, _: &Control) -> Result<(), Stop> {
        Ok(())
    }
    fn after_wait(&mut self, _: Instant) {}
    fn may_wait_for_siblings(&self) -> bool {
        !self.0
    }
}

impl<O> Held<O> {
    /// Out of the item loop: a worker's hot path stays small.
    #[cold]
    #[inline(never)]
    fn offer_held(&mut self, ctl: &Control) -> Result<(), Stop> {
        // A worker ahead of the head waits here once it holds `HOLD`
        // items: its memory stays bounded.
        let wait = self.held.len() >= HOLD;
        self.offer(wait, ctl)
    }

    /// Sends the held output if this batch is the head (or, with `wait`,
    /// once it is); adapts when to offer next.
    fn offer(&mut self, wait: bool, ctl: &Control) -> Result<(), Stop> {
        let Some(seq) = self.seq else {
            // Output before the first batch: it goes out with that batch.
            self.limit = HOLD;
            return Ok(());
        };
        if wait {
            // Nobody may wait holding batches done: one may be the head.
            self.hand_in_deferred(ctl)?;
        }
        let n = self.held.len();
        if self
            .order
            .offer(seq, &mut self.held, self.born, wait, ctl)?
        {
            let now = Instant::now();
            self.limit = batch_limit(per_item_ns(self.mark, now, n), MAX_BATCH);
            self.mark = now;
        } else {
            self.limit = (2 * n).clamp(1, HOLD);
        }
        Ok(())
    }

    /// Hands in the current batch's output, if there is a current batch,
    /// with any deferred before it; or, with `defer` (more runs of a keyed
    /// stage's batch follow, taken without waiting), keeps it to hand in
    /// with them: one lock of the reorder step per batch, not per run.
    /// Output emitted before the worker's first batch stays held, and goes
    /// out with that batch's (or, if it never gets one, when it finishes).
    fn hand_in(&mut self, defer: bool, ctl: &Control) -> Result<(), Stop> {
        if let Some(seq) = self.seq.take() {
            let done = (std::mem::take(&mut self.held), self.born);
            if defer || !self.deferred.is_empty() {
                self.deferred.push((seq, done));
            } else {
                return self.order.submit(seq, done, ctl);
            }
        }
        match defer {
            true => Ok(()),
            false => self.hand_in_deferred(ctl),
        }
    }

    /// Hands in the batches done and deferred, if any.
    fn hand_in_deferred(&mut self, ctl: &Control) -> Result<(), Stop> {
        match self.deferred.is_empty() {
            true => Ok(()),
            false => self.order.submit_all(self.deferred.drain(..), ctl),
        }
    }
}

impl<O> Out<O> {
    /// An ordered worker's output; `watch` is its sender on the output
    /// queue.
    pub(crate) fn ordered(order: Arc<Reorder<O>>, watch: Tx<O>) -> Self {
        Out::Ordered(Box::new(Held {
            order,
            watch,
            seq: None,
            deferred: Vec::new(),
            held: Vec::new(),
            born: None,
            limit: 1,
            mark: Instant::now(),
        }))
    }

    /// How long this worker has waited for room in its output queue, in all
    /// (an ordered worker waits while handing in, which counts as input
    /// waiting).
    pub(crate) fn blocked_ns(&self) -> u64 {
        match self {
            Out::Direct(tx) => tx.blocked_ns(),
            Out::Ordered(_) => 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: O, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(tx) => tx.push(item, ctl),
            Out::Ordered(h) => {
                h.held.push(item);
                if h.held.len() >= h.limit {
                    h.offer_held(ctl)?;
                }
                Ok(())
            }
        }
    }

    /// The next input batch, with the current one's output handed in first.
    pub(crate) fn next_batch<I>(
        &mut self,
        rx: &mut Rx<I>,
        ctl: &Control,
    ) -> Result<Option<Vec<I>>, Stop> {
        Ok(match self.next_batch_until(rx, ctl, None)? {
            Recv::Batch(batch) => Some(batch),
            Recv::Closed | Recv::TimedOut => None,
        })
    }

    /// Like [`next_batch`](Out::next_batch), waiting no longer than `deadline`.
    pub(crate) fn next_batch_until<I>(
        &mut self,
        rx: &mut Rx<I>,
        ctl: &Control,
        deadline: Option<Instant>,
    ) -> Result<Recv<I>, Stop> {
        // Every worker of the next stage has stopped (it took what it
        // needed): stop too, even if this stage would not emit again for a
        // long time.
        let downstream_gone = match self {
            Out::Direct(tx) => tx.is_disconnected(),
            Out::Ordered(h) => h.watch.is_disconnected(),
        };
        if downstream_gone {
            return Err(Stop::Cancelled);
        }
        match self {
            Out::Direct(tx) => {
                let received = rx.recv(ctl, tx, deadline)?;
                if let Recv::Batch(_) = received {
                    tx.inherit(rx.born());
                }
                Ok(received)
            }
            Out::Ordered(h) => {
                // Hand the current batch in before waiting, so nothing is held
                // back while this worker sleeps. A timed wait keeps it, so a
                // stage that acts on the time-out (a partial chunk) still
                // emits into the batch its items came from; what it holds
                // goes out now if its batch is the head.
                let defer = rx.has_runs();
                match deadline {
                    None => h.hand_in(defer, ctl)?,
                    Some(_) => {
                        if !defer {
                            // This may wait: nothing done stays behind.
                            h.hand_in_deferred(ctl)?;
                        }
                        if !h.held.is_empty() {
                            h.offer(false, ctl)?;
                        }
                    }
                }
                let open = h.seq.is_some();
                let received = rx.recv(ctl, &mut NoFlush(open), deadline)?;
                match &received {
                    Recv::Batch(batch) => {
                        h.hand_in(defer, ctl)?;
                        let seq = rx.seq();
                        h.seq = Some(seq);
                        h.born = rx.born();
                        if rx.was_returned() {
                            // The rest of a batch a sibling stopped reading:
                            // its output so far comes first.
                            let (held, born) = h.order.adopt(seq);
                            h.held = held;
                            h.born = born.or(h.born);
                        }
                        h.held.reserve(batch.len());
                        h.mark = Instant::now();
                    }
                    // Kept until `finish`: what the stage still emits
                    // belongs with the last batch.
                    Recv::Closed | Recv::TimedOut => {}
                }
                Ok(received)
            }
        }
    }

    /// The worker stopped reading its batch, whose unread rest goes back to
    /// its siblings: the output so far waits for the one that takes it.
    pub(crate) fn park(&mut self, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(_) => Ok(()),
            Out::Ordered(h) => match h.seq.take() {
                Some(seq) => h.order.park(seq, std::mem::take(&mut h.held), h.born, ctl),
                None => Ok(()),
            },
        }
    }

    /// Sends what is left once the input has ended (or the worker stopped
    /// reading it).
    pub(crate) fn finish(&mut self, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(tx) => tx.flush(ctl),
            Out::Ordered(h) => {
                let current = h.seq.is_some();
                // The current batch, and any deferred.
                h.hand_in(false, ctl)?;
                if !current && !h.held.is_empty() {
                    // Output held with no batch: it belongs to no input, and
                    // goes out now.
                    h.order
                        .release_now(std::mem::take(&mut h.held), h.born, ctl)?;
                }
                h.order.finished(ctl)
            }
        }
    }
}

/// A model of the reorder step, checked over every interleaving by loom:
/// `RUSTFLAGS="--cfg loom" cargo test -p parapipe-runtime --lib --release ordered::model`.
#[cfg(all(test, loom))]
mod model {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Records the batches released, in order.
    #[derive(Default)]
    struct Released(Vec<u64>);

    impl Sink<u64> for Released {
        fn send_all(
            &mut self,
            items: Vec<u64>,
            _: Option<Instant>,
            _: &Control,
        ) -> Result<(), Stop> {
            self.0.extend(items);
            Ok(())
        }
    }

    /// A worker as `Out::Ordered` runs it: take the next batch (numbered in
    /// queue order by its senders), work on it, hand it in; `batches` times.
    /// `together`: as a keyed stage's worker does with the runs of one
    /// batch, it takes all its batches first and hands them in at once.
    fn worker(
        order: &Reorder<u64, Released>,
        queue: &Mutex<u64>,
        ctl: &Control,
        batches: usize,
        together: bool,
    ) {
        let mut deferred = Vec::new();
        for _ in 0..batches {
            let seq = {
                let mut next = lock(queue);
                *next += 1;
                *next - 1
            };
            // The batch's output is its own number.
            match together {
                true => deferred.push((seq, (vec![seq], None))),
                false => order.submit(seq, (vec![seq], None), ctl).unwrap(),
            }
        }
        order.submit_all(deferred, ctl).unwrap();
    }

    /// Runs `workers` workers of `batches` batches each (one of them on the
    /// model's main thread) through a reorder step of the given window, and
    /// checks that every batch was released exactly once, in number order,
    /// and that no worker is left waiting.
    fn check(
        workers: usize,
        batches: usize,
        window: u64,
        budget: usize,
        max_window: u64,
        together: bool,
    ) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let order = Arc::new(Reorder::with_window(
                Released::default(),
                workers,
                window,
                budget,
                max_window,
            ));
            let queue = Arc::new(Mutex::new(0));
            let ctl = Arc::new(Control::default());
            let others: Vec<_> = (1..workers)
                .map(|_| {
                    let (order, queue, ctl) = (order.clone(), queue.clone(), ctl.clone());
                    thread::spawn(move || worker(&order, &queue, &ctl, batches, together))
                })
                .collect();
            worker(&order, &queue, &ctl, batches, together);
            for t in others {
                t.join().unwrap();
            }
            let state = lock(&order.state);
            let all: Vec<u64> = (0..(workers * batches) as u64).collect();
            assert_eq!(state.tx.0, all);
            assert!(state.done.is_empty());
            assert_eq!(state.held, 0);
            assert_eq!(state.waiting, 0);
        });
    }

    /// A window of one batch: a worker that is ahead must wait for the
    /// slower one to notify it (loom treats the timed wait as a plain one,
    /// so the 20 ms poll cannot hide a missing notification; removing the
    /// `notify_all` makes this report a deadlock).
    #[test]
    fn three_workers_window_one() {
        check(3, 1, 1, 0, 1, false);
    }

    #[test]
    fn two_workers_two_batches_window_one() {
        check(2, 2, 1, 0, 1, false);
    }

    /// The production window for two workers.
    #[test]
    fn two_workers_three_batches_window_four() {
        check(2, 3, 4, 0, 4, false);
    }

    /// Past the window of one batch while fewer than 2 items are held, up
    /// to 3 batches: a worker waits on the budget, then on the largest
    /// window (each batch's output is one item).
    #[test]
    fn two_workers_three_batches_item_budget() {
        check(2, 3, 1, 2, 3, false);
    }

    /// Batches handed in together (a keyed stage's runs): a worker past the
    /// window sends what it released before it waits, and the other, which
    /// holds the head, is not kept waiting by it.
    #[test]
    fn two_workers_two_batches_together_window_one() {
        check(2, 2, 1, 0, 1, true);
    }
}
