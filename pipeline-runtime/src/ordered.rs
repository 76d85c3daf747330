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
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::control::{Control, lock};
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

/// The reorder step shared by an ordered stage's workers.
pub(crate) struct Reorder<O> {
    /// The number the next input batch taken gets.
    taken: Mutex<u64>,
    state: Mutex<Pending<O>>,
    turn: Condvar,
    /// How many batches past the oldest unfinished one may be held.
    window: u64,
}

struct Pending<O> {
    /// The number of the next batch to release.
    next: u64,
    /// Workers waiting for their turn.
    waiting: usize,
    done: BTreeMap<u64, (Vec<O>, Option<Instant>)>,
    tx: Tx<O>,
}

impl<O> Reorder<O> {
    pub(crate) fn new(tx: Tx<O>, workers: usize) -> Self {
        Reorder {
            taken: Mutex::new(0),
            state: Mutex::new(Pending {
                next: 0,
                waiting: 0,
                done: BTreeMap::new(),
                tx,
            }),
            turn: Condvar::new(),
            window: 2 * workers.max(1) as u64,
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
