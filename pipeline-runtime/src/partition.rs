//! Keyed stages: [`StageExt::partition_by`](crate::StageExt::partition_by).
//!
//! A keyed stage's workers do not share the previous stage's queue. When
//! the pipeline starts, one router thread takes that queue's batches and
//! pushes each item to the queue of the worker its key hashes to; worker
//! `i` reads queue `i` alone. The router reads its input in order and each
//! worker's queue is FIFO, so a key's items reach their worker in the
//! order they reached the stage. The workers share one output queue, as
//! any stage's do.
//!
//! The router flushes every worker's queue at the end of each input batch
//! (and before it waits for the next), so nothing it took waits in its
//! buffers while it sleeps: a trickling input trickles on. Before it waits
//! for room in one worker's full queue, it sends what it holds for the
//! others, so a worker behind does not hold its siblings back.
//!
//! An `ordered` keyed stage releases its output in the order its input
//! arrived, across keys. The router numbers each run of consecutive items
//! that go to one worker; a worker's batches carry its runs with their
//! numbers, and its receiver hands each run out as a batch of its own
//! (`Tx::push_in_run`), so the stage's reorder step releases runs in
//! number order, as it releases batches for any ordered stage, while the
//! queues carry full batches. A run is as short as one item when
//! consecutive items have different workers: ordering costs an entry in
//! the reorder step per run (a worker hands a batch's runs in together,
//! under one lock). A worker whose function returns early reads the rest
//! of its queue without looking at it (its keys are nobody else's),
//! handing each run's number in empty, so the reorder step never waits for
//! a number that will not come.
//!
//! The router notices a worker that stopped reading when a send to it
//! fails or, at the latest, after each input batch (`prune`; an ordered
//! worker's queue stays open while it reads it unseen): no check per item.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use crate::config::{QueueSize, StageConfig};
use crate::control::Control;
use crate::error::{StageError, Stop, into_panic_message};
use crate::launch::Launch;
use crate::link::{Recv, Rx, Tx, Waiting, keyed_link};
use crate::pipeline::{Pipeline, Split};
use crate::stage::{Configurable, Stage};
use crate::worker::Worker;

/// A stage whose input is partitioned by a key, so that equal keys reach
/// the same worker, in their order of arrival: what
/// [`StageExt::partition_by`](crate::StageExt::partition_by) returns.
///
/// Its configuration is the stage's own, so the builder methods of
/// [`StageExt`](crate::StageExt) apply to it as to the stage.
///
/// The key function is kept hashed and type-erased, so this type does not
/// depend on it: a key function that does not fit the stage is an error
/// at `partition_by` alone, not again wherever the stage is used.
pub struct Partitioned<S: Stage> {
    stage: S,
    hash: KeyHash<S::In>,
}

/// An item's key's hash.
pub(crate) type KeyHash<T> = Box<dyn Fn(&T) -> u64 + Send + Sync>;

/// The hash of a key: the same in every run and process of a program,
/// since `DefaultHasher::new` has fixed keys.
pub(crate) fn hash_of<K: Hash>(key: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl<S: Stage + std::fmt::Debug> std::fmt::Debug for Partitioned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitioned")
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl<S: Stage> Partitioned<S> {
    pub(crate) fn new(stage: S, hash: KeyHash<S::In>) -> Self {
        Partitioned { stage, hash }
    }

    /// The stage whose input is partitioned.
    pub fn stage(&self) -> &S {
        &self.stage
    }
}

impl<S: Stage> Configurable for Partitioned<S> {
    fn config(&self) -> &StageConfig {
        self.stage.config()
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        self.stage.config_mut()
    }
}

impl<S: Stage> Stage for Partitioned<S> {
    type In = S::In;
    type Out = S::Out;
    type Error = S::Error;

    // Where no router runs (`Segment::iter`, a one-worker serial segment,
    // `pipe!(serial: ...)`), one thread sees every key, in order: the stage
    // runs as it is.
    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = S::In> + 'a,
    ) -> impl Iterator<Item = Result<S::Out, S::Error>> + 'a {
        self.stage.apply(input)
    }

    fn run(&self, worker: Worker<'_, S::In, S::Out>) -> Result<(), StageError> {
        self.stage.run(worker)
    }

    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = S::In> + 'a,
    ) -> impl Iterator<Item = Result<S::Out, S::Error>> + 'a {
        self.stage.apply_fused(input)
    }

    fn fused_stages(&self) -> Vec<String> {
        self.stage.fused_stages()
    }

    fn scope_into(&mut self, segment: &str) {
        self.stage.scope_into(segment);
    }

    fn runs_on_one_worker(&self) -> bool {
        self.stage.runs_on_one_worker()
    }

    fn splices(&self) -> bool {
        self.stage.splices()
    }

    fn unfit(&self) -> Option<(String, String)> {
        self.stage.unfit()
    }

    fn attach(self, pipeline: Pipeline<S::In>) -> Pipeline<S::Out> {
        let config = self.stage.config();
        if let Some(why) = unsupported(&self.stage) {
            return pipeline.misconfigured(config.name(), why);
        }
        // What the stage's own `attach` would have refused (a serial
        // segment's fused stages).
        if let Some((name, why)) = self.stage.unfit() {
            return pipeline.misconfigured(&name, why);
        }
        let Partitioned { stage, hash } = self;
        let split: Split<S::In> =
            Box::new(move |launch, input, config| start_router(launch, input, config, hash));
        pipeline.spawn_stage_split(stage, Some(split))
    }
}

/// Why `stage` cannot be keyed, if it cannot.
fn unsupported<S: Stage>(stage: &S) -> Option<String> {
    let config = stage.config();
    let name = config.name();
    if stage.splices() {
        return Some(format!(
            "`partition_by` on the parallel segment `{name}`: its stages have workers of their own; partition one of its stages, or make the segment serial"
        ));
    }
    match config.workers() {
        n if n > 1 && stage.runs_on_one_worker() => Some(format!(
            "`{name}` runs on one worker, not {n}: partitioning its input would run it once per worker"
        )),
        _ => None,
    }
}

/// Each worker's queue: the stage's `qsize` shared among its workers (at
/// least one item each), so a keyed stage holds no more items queued than
/// its output queue may.
fn worker_queue(queue: QueueSize, workers: usize) -> QueueSize {
    match queue {
        QueueSize::Bounded(n) => QueueSize::Bounded((n / workers.max(1)).max(1)),
        QueueSize::Unbounded => QueueSize::Unbounded,
    }
}

/// The worker of a key whose hash is `hash`, out of `workers`.
fn worker_of(hash: u64, workers: usize) -> usize {
    // The remainder is below `workers`, a `usize`.
    (hash % workers as u64) as usize
}

/// Starts the router of a keyed stage whose workers `config` tells: it
/// reads `input` and fills one queue per worker, returned in worker order.
fn start_router<T: Send + 'static>(
    launch: &mut Launch,
    input: Rx<T>,
    config: &StageConfig,
    hash: KeyHash<T>,
) -> Vec<Rx<T>> {
    let workers = config.workers();
    let queue = worker_queue(config.queue(), workers);
    let gauge = input.gauge();
    let ordered = config.ordered();
    let (txs, rxs): (Vec<Tx<T>>, Vec<Rx<T>>) = (0..workers)
        .map(|_| keyed_link(queue, gauge.clone(), ordered))
        .unzip();
    let ctl = launch.control();
    let queues = Queues {
        open: txs.len(),
        txs: txs.into_iter().map(Some).collect(),
        in_order: ordered,
        last: None,
        run: 0,
    };
    // If the thread cannot start, the run has failed already (or was
    // cancelled): the workers' queues close with it, and what the workers
    // emit then is refused.
    launch.spawn_helper(config.name(), "router", move || {
        route(input, queues, &hash, &ctl)
    });
    rxs
}

/// The router's loop: every item of `input` to its key's worker.
fn route<T>(
    mut input: Rx<T>,
    mut queues: Queues<T>,
    hash: &KeyHash<T>,
    ctl: &Control,
) -> Result<(), StageError> {
    let workers = queues.txs.len();
    loop {
        let batch = match input.recv(ctl, &mut queues, None)? {
            Recv::Batch(batch) => batch,
            Recv::Closed => break,
            Recv::TimedOut => continue,
        };
        let born = input.born();
        for item in batch {
            let worker = keyed(hash, &item, workers);
            queues.push(worker, item, born, ctl)?;
        }
        queues.flush(ctl)?;
        queues.prune(ctl)?;
        if queues.open == 0 {
            // Every worker stopped reading: so does the stage, and the
            // stages before it stop as they would for any stage.
            return Ok(());
        }
    }
    queues.flush(ctl)?;
    Ok(())
}

/// `item`'s worker. A panic of the key function (or of its key's `Hash`)
/// is the stage's failure, its message saying where it came from.
fn keyed<T>(hash: &KeyHash<T>, item: &T, workers: usize) -> usize {
    match catch_unwind(AssertUnwindSafe(|| worker_of(hash(item), workers))) {
        Ok(worker) => worker,
        Err(payload) => {
            let message = into_panic_message(payload);
            // Resumed, not panicked again: the hook already reported it.
            resume_unwind(Box::new(format!(
                "the key function (in the stage's router) panicked: {message}"
            )))
        }
    }
}

/// The router's senders, one per worker; `None` for a worker that
/// stopped reading (its function returned before its input ended).
struct Queues<T> {
    txs: Vec<Option<Tx<T>>>,
    /// How many workers still read.
    open: usize,
    /// The stage is `ordered`: each run of consecutive items that go to
    /// one worker is numbered (`Tx::push_in_run`), and the stage's reorder
    /// step releases the runs' output in number order.
    in_order: bool,
    /// Ordered: the worker of the last item, and its run's number.
    last: Option<usize>,
    run: u64,
}

impl<T> Queues<T> {
    fn push(
        &mut self,
        worker: usize,
        item: T,
        born: Option<Instant>,
        ctl: &Control,
    ) -> Result<(), Stop> {
        let Some(tx) = &self.txs[worker] else {
            // Its worker stopped reading its keys, and no other may take
            // them: dropped, as a stage drops what it stops reading.
            return Ok(());
        };
        if tx.next_push_waits() {
            // This worker is behind: the others get what is theirs first,
            // rather than wait with it.
            self.flush_except(Some(worker), ctl)?;
        }
        let Some(tx) = &mut self.txs[worker] else {
            return Ok(());
        };
        tx.inherit(born);
        let sent = match self.in_order {
            false => tx.push(item, ctl),
            true => {
                // A new run at each change of worker, and where the last
                // one's items have been sent (a run never spans two
                // batches: the receiver hands each batch's runs out one
                // by one, each to be handed in once).
                let last = self.last.replace(worker);
                if last.is_some() && (last != Some(worker) || tx.is_empty()) {
                    self.run += 1;
                }
                tx.push_in_run(item, self.run, ctl)
            }
        };
        self.sent(worker, sent, ctl)
    }

    /// Sends what every worker's buffer holds.
    fn flush(&mut self, ctl: &Control) -> Result<(), Stop> {
        self.flush_except(None, ctl)
    }

    /// Sends what the buffers of every worker but `except` hold.
    fn flush_except(&mut self, except: Option<usize>, ctl: &Control) -> Result<(), Stop> {
        for worker in (0..self.txs.len()).filter(|&w| Some(w) != except) {
            self.flush_one(worker, ctl)?;
        }
        Ok(())
    }

    /// Sends what `worker`'s buffer holds.
    fn flush_one(&mut self, worker: usize, ctl: &Control) -> Result<(), Stop> {
        match &mut self.txs[worker] {
            Some(tx) => {
                let sent = tx.flush(ctl);
                self.sent(worker, sent, ctl)
            }
            None => Ok(()),
        }
    }

    /// Closes the queues of the workers that stopped reading, whether or
    /// not a key of theirs came since: once none reads, the router stops.
    fn prune(&mut self, ctl: &Control) -> Result<(), Stop> {
        for worker in 0..self.txs.len() {
            if self.txs[worker].as_ref().is_some_and(Tx::is_disconnected) {
                self.close(worker, ctl)?;
            }
        }
        Ok(())
    }

    /// `worker` stopped reading: its queue closes. Unordered, what its
    /// buffer holds is dropped with the sender. Ordered, the worker reads
    /// what was sent to its end, handing each run's number in (see
    /// `Rx::abandon`), and the runs in the buffer have numbers too: they
    /// are sent first.
    fn close(&mut self, worker: usize, ctl: &Control) -> Result<(), Stop> {
        let Some(mut tx) = self.forget(worker) else {
            return Ok(());
        };
        match self.in_order {
            true => match tx.flush(ctl) {
                // Its reader is gone after all: the run is ending.
                Err(Stop::Cancelled) if !ctl.is_cancelled() => Ok(()),
                flushed => flushed,
            },
            false => Ok(()),
        }
    }

    /// Sends nothing more to `worker`: its sender, if it still had one.
    fn forget(&mut self, worker: usize) -> Option<Tx<T>> {
        let tx = self.txs[worker].take();
        if tx.is_some() {
            self.open -= 1;
        }
        tx
    }

    /// A send to `worker` refused because the worker stopped reading is
    /// not the run's end: the other workers go on.
    fn sent(&mut self, worker: usize, sent: Result<(), Stop>, ctl: &Control) -> Result<(), Stop> {
        match sent {
            Err(Stop::Cancelled)
                if !ctl.is_cancelled()
                    && self.txs[worker].as_ref().is_some_and(Tx::is_disconnected) =>
            {
                // Nothing can reach it: not even, ordered, its numbered
                // runs (the run is ending: its reader is gone).
                self.forget(worker);
                Ok(())
            }
            sent => sent,
        }
    }
}

impl<T> Waiting for Queues<T> {
    fn before_wait(&mut self, ctl: &Control) -> Result<(), Stop> {
        self.flush(ctl)
    }

    fn after_wait(&mut self, now: Instant) {
        for tx in self.txs.iter_mut().flatten() {
            tx.restart_clock(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_goes_to_the_same_worker() {
        for workers in [1, 2, 3, 64] {
            for key in ["a", "b", "hot", ""] {
                let first = worker_of(hash_of(&key), workers);
                assert!(first < workers);
                assert_eq!(worker_of(hash_of(&key), workers), first);
                assert_eq!(
                    worker_of(hash_of(&key.to_owned()), workers),
                    first,
                    "str and String hash alike"
                );
            }
        }
    }

    #[test]
    fn keys_spread_over_the_workers() {
        let mut seen = [false; 8];
        for key in 0..1000u32 {
            seen[worker_of(hash_of(&key), 8)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn worker_queues_share_the_bound() {
        assert_eq!(
            worker_queue(QueueSize::Bounded(4096), 4),
            QueueSize::Bounded(1024)
        );
        assert_eq!(
            worker_queue(QueueSize::Bounded(3), 64),
            QueueSize::Bounded(1)
        );
        assert_eq!(worker_queue(QueueSize::Unbounded, 4), QueueSize::Unbounded);
    }
}
