//! Where a worker's output goes: straight to the stage's output queue, or,
//! for an `ordered` stage, through a reorder step that releases each input
//! batch's output once every earlier batch's is out.
//!
//! Ordered stages number their input batches as they take them from the
//! queue (under a lock, so the numbers follow the queue's order), keep each
//! batch's output apart, and hand it in when they move to their next batch.
//! Output is released as soon as it is next in line: it streams. A worker
//! that gets more than a window of batches ahead of the oldest unfinished one
//! waits, so memory stays bounded even when one batch is very slow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Under `--cfg loom`, the reorder step's own locks are loom's, so that the
// model at the end of this file can check every interleaving of them.
#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::control::Control;
use crate::error::Stop;
use crate::link::{Recv, Rx, Tx};
use crate::worker::Waiting;

/// How often a worker waiting for its turn checks for cancellation.
const POLL: Duration = Duration::from_millis(20);

/// A worker's output.
pub(crate) enum Out<O> {
    /// Unordered: the worker's own sender on the output queue.
    Direct(Tx<O>),
    /// Ordered: the current batch's output, kept until the batch is done.
    Ordered {
        order: Arc<Reorder<O>>,
        /// Number of the input batch being worked on, if any.
        seq: Option<u64>,
        held: Vec<O>,
        /// When the input batch left the source, in a profiled pipeline.
        born: Option<Instant>,
    },
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
    /// The number the next input batch taken gets.
    taken: Mutex<u64>,
    state: Mutex<Pending<O, S>>,
    turn: Condvar,
    /// How many batches past the oldest unfinished one may be held.
    window: u64,
}

struct Pending<O, S> {
    /// The number of the next batch to release.
    next: u64,
    /// Workers waiting for their turn.
    waiting: usize,
    done: BTreeMap<u64, (Vec<O>, Option<Instant>)>,
    tx: S,
}

impl<O, S: Sink<O>> Reorder<O, S> {
    pub(crate) fn new(tx: S, workers: usize) -> Self {
        Self::with_window(tx, 2 * workers.max(1) as u64)
    }

    fn with_window(tx: S, window: u64) -> Self {
        Reorder {
            taken: Mutex::new(0),
            state: Mutex::new(Pending {
                next: 0,
                waiting: 0,
                done: BTreeMap::new(),
                tx,
            }),
            turn: Condvar::new(),
            window,
        }
    }

    /// Hands in batch `seq`'s output and releases whatever is now in line.
    fn submit(&self, seq: u64, done: (Vec<O>, Option<Instant>), ctl: &Control) -> Result<(), Stop> {
        let mut state = lock(&self.state);
        // The worker holding batch `next` never waits here, so this ends.
        while seq >= state.next + self.window {
            if ctl.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            state.waiting += 1;
            state = self
                .turn
                .wait_timeout(state, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.waiting -= 1;
        }
        if seq != state.next {
            state.done.insert(seq, done);
            return Ok(());
        }
        let mut ready = done;
        loop {
            state.tx.send_all(ready.0, ready.1, ctl)?;
            state.next += 1;
            let next = state.next;
            match state.done.remove(&next) {
                Some(items) => ready = items,
                None => break,
            }
        }
        // Sent under the lock, so batches leave in order; a full queue
        // holds back the other workers here, as it would anyway.
        if state.waiting > 0 {
            self.turn.notify_all();
        }
        Ok(())
    }
}

/// Nothing to flush before waiting: an ordered worker hands its batch in first.
struct NoFlush;

impl Waiting for NoFlush {
    fn before_wait(&mut self, _: &Control) -> Result<(), Stop> {
        Ok(())
    }
    fn after_wait(&mut self, _: Instant) {}
}

impl<O> Out<O> {
    pub(crate) fn ordered(order: Arc<Reorder<O>>) -> Self {
        Out::Ordered {
            order,
            seq: None,
            held: Vec::new(),
            born: None,
        }
    }

    /// How long this worker has waited for room in its output queue, in all
    /// (an ordered worker waits while handing in, which counts as input
    /// waiting).
    pub(crate) fn blocked_ns(&self) -> u64 {
        match self {
            Out::Direct(tx) => tx.blocked_ns(),
            Out::Ordered { .. } => 0,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, item: O, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(tx) => tx.push(item, ctl),
            Out::Ordered { held, .. } => {
                held.push(item);
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
            Out::Ordered { order, .. } => lock(&order.state).tx.is_disconnected(),
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
            Out::Ordered {
                order,
                seq,
                held,
                born,
            } => {
                // Hand the current batch in before waiting, so nothing is held
                // back while this worker sleeps. A timed wait keeps it, so a
                // stage that acts on the time-out (a partial chunk) still
                // emits into the batch its items came from.
                if deadline.is_none() {
                    hand_in(order, seq, held, *born, ctl)?;
                }
                let mut taken = lock(&order.taken);
                let received = rx.recv(ctl, &mut NoFlush, deadline)?;
                match &received {
                    Recv::Batch(batch) => {
                        let next = *taken;
                        *taken += 1;
                        drop(taken);
                        hand_in(order, seq, held, *born, ctl)?;
                        *seq = Some(next);
                        *born = rx.born();
                        held.reserve(batch.len());
                    }
                    // Kept until `finish`: what the stage still emits
                    // belongs with the last batch.
                    Recv::Closed | Recv::TimedOut => {}
                }
                Ok(received)
            }
        }
    }

    /// Sends what is left once the input has ended.
    pub(crate) fn finish(&mut self, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(tx) => tx.flush(ctl),
            Out::Ordered {
                order,
                seq,
                held,
                born,
            } => hand_in(order, seq, held, *born, ctl),
        }
    }
}

/// Hands in the current batch's output. Output emitted outside any batch
/// (before the first, say) gets a number of its own, in line after the
/// batches taken so far.
fn hand_in<O>(
    order: &Reorder<O>,
    seq: &mut Option<u64>,
    held: &mut Vec<O>,
    born: Option<Instant>,
    ctl: &Control,
) -> Result<(), Stop> {
    let done = match seq.take() {
        Some(done) => done,
        None if held.is_empty() => return Ok(()),
        None => {
            let mut taken = lock(&order.taken);
            let n = *taken;
            *taken += 1;
            n
        }
    };
    order.submit(done, (std::mem::take(held), born), ctl)
}

/// A model of the reorder step, checked over every interleaving by loom:
/// `RUSTFLAGS="--cfg loom" cargo test -p pipeline-runtime --lib --release ordered::model`.
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

    /// A worker as `Out::Ordered` runs it: number a batch under the `taken`
    /// lock, work on it, hand it in; `batches` times.
    fn worker(order: &Reorder<u64, Released>, ctl: &Control, batches: usize) {
        for _ in 0..batches {
            let seq = {
                let mut taken = lock(&order.taken);
                let n = *taken;
                *taken += 1;
                n
            };
            // The batch's output is its own number.
            order.submit(seq, (vec![seq], None), ctl).unwrap();
        }
    }

    /// Runs `workers` workers of `batches` batches each (one of them on the
    /// model's main thread) through a reorder step of the given window, and
    /// checks that every batch was released exactly once, in number order,
    /// and that no worker is left waiting.
    fn check(workers: usize, batches: usize, window: u64) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(move || {
            let order = Arc::new(Reorder::with_window(Released::default(), window));
            let ctl = Arc::new(Control::default());
            let others: Vec<_> = (1..workers)
                .map(|_| {
                    let (order, ctl) = (order.clone(), ctl.clone());
                    thread::spawn(move || worker(&order, &ctl, batches))
                })
                .collect();
            worker(&order, &ctl, batches);
            for t in others {
                t.join().unwrap();
            }
            let state = lock(&order.state);
            let all: Vec<u64> = (0..(workers * batches) as u64).collect();
            assert_eq!(state.tx.0, all);
            assert!(state.done.is_empty());
            assert_eq!(state.waiting, 0);
        });
    }

    /// A window of one batch: a worker that is ahead must wait for the
    /// slower one to notify it (loom treats the timed wait as a plain one,
    /// so the 20 ms poll cannot hide a missing notification; removing the
    /// `notify_all` makes this report a deadlock).
    #[test]
    fn three_workers_window_one() {
        check(3, 1, 1);
    }

    #[test]
    fn two_workers_two_batches_window_one() {
        check(2, 2, 1);
    }

    /// The production window for two workers.
    #[test]
    fn two_workers_three_batches_window_four() {
        check(2, 3, 4);
    }
}
