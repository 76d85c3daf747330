//! Where a worker's output goes: straight to the stage's output queue, or,
//! for an `ordered` stage, through a reorder step that releases each input
//! batch's output once every earlier batch's is out.
//!
//! The input batches of an ordered stage are numbered as they are sent
//! (senders take turns, so the numbers follow the queue's order); its
//! workers keep each batch's output apart, and hand it in when they move to
//! their next batch.
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
        /// A sender on the output queue, only to see whether it is still
        /// read (the reorder step's own one is behind its lock).
        watch: Tx<O>,
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

    /// Sends output that belongs to no input batch, now.
    fn release_now(&self, items: Vec<O>, born: Option<Instant>, ctl: &Control) -> Result<(), Stop> {
        lock(&self.state).tx.send_all(items, born, ctl)
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
    /// An ordered worker's output; `watch` is its sender on the output
    /// queue.
    pub(crate) fn ordered(order: Arc<Reorder<O>>, watch: Tx<O>) -> Self {
        Out::Ordered {
            order,
            watch,
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
            Out::Direct(tx) | Out::Ordered { watch: tx, .. } => tx.is_disconnected(),
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
                ..
            } => {
                // Hand the current batch in before waiting, so nothing is held
                // back while this worker sleeps. A timed wait keeps it, so a
                // stage that acts on the time-out (a partial chunk) still
                // emits into the batch its items came from.
                if deadline.is_none() {
                    hand_in(order, seq, held, *born, ctl)?;
                }
                let received = rx.recv(ctl, &mut NoFlush, deadline)?;
                match &received {
                    Recv::Batch(batch) => {
                        hand_in(order, seq, held, *born, ctl)?;
                        *seq = Some(rx.seq());
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

    /// Sends what is left once the input has ended (or the worker stopped
    /// reading it).
    pub(crate) fn finish(&mut self, ctl: &Control) -> Result<(), Stop> {
        match self {
            Out::Direct(tx) => tx.flush(ctl),
            Out::Ordered {
                order,
                seq,
                held,
                born,
                ..
            } => match seq {
                Some(_) => hand_in(order, seq, held, *born, ctl),
                // A worker that never took a batch: its output belongs to
                // no input, and goes out now.
                None if held.is_empty() => Ok(()),
                None => order.release_now(std::mem::take(held), *born, ctl),
            },
        }
    }
}

/// Hands in the current batch's output. Output emitted before the worker's
/// first batch stays held, and goes out with that batch's (or, if it never
/// gets one, when it finishes).
fn hand_in<O>(
    order: &Reorder<O>,
    seq: &mut Option<u64>,
    held: &mut Vec<O>,
    born: Option<Instant>,
    ctl: &Control,
) -> Result<(), Stop> {
    match seq.take() {
        Some(done) => order.submit(done, (std::mem::take(held), born), ctl),
        None => Ok(()),
    }
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

    /// A worker as `Out::Ordered` runs it: take the next batch (numbered in
    /// queue order by its senders), work on it, hand it in; `batches` times.
    fn worker(order: &Reorder<u64, Released>, queue: &Mutex<u64>, ctl: &Control, batches: usize) {
        for _ in 0..batches {
            let seq = {
                let mut next = lock(queue);
                *next += 1;
                *next - 1
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
            let queue = Arc::new(Mutex::new(0));
            let ctl = Arc::new(Control::default());
            let others: Vec<_> = (1..workers)
                .map(|_| {
                    let (order, queue, ctl) = (order.clone(), queue.clone(), ctl.clone());
                    thread::spawn(move || worker(&order, &queue, &ctl, batches))
                })
                .collect();
            worker(&order, &queue, &ctl, batches);
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
