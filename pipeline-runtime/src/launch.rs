//! Starting a pipeline's threads: every thread of a run is started here,
//! and here is the one panic policy: a thread's error or panic (even one
//! whose payload panics when dropped) becomes the run's failure, never an
//! unwinding of the runtime.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::config::StageConfig;
use crate::control::Control;
use crate::error::{
    Counters, Failure, PipelineError, StageError, Stop, Tagged, drop_payload, into_panic_message,
    panic_message,
};
use crate::link::{Gauge, Rx, Tx, link_with};
use crate::ordered::Reorder;
use crate::profile::{Probe, RunStats, StageStats};
use crate::threads::{Done, Job};
use crate::user_code::UserCode;

/// `key`, or, if a stage of the run already has that name (the same stage
/// function used twice), `key_2`, `key_3`...: a profile keeps every stage.
fn unique_key(stages: &[Arc<StageStats>], key: String) -> String {
    let taken = |k: &str| stages.iter().any(|s| s.key == k);
    if !taken(&key) {
        return key;
    }
    (2..)
        .map(|n| format!("{key}_{n}"))
        .find(|k| !taken(k))
        .expect("some suffix is free")
}

pub(crate) struct Thread {
    pub(crate) handle: Handle,
    /// Its name, for a failure no stage could report.
    pub(crate) name: String,
    /// For a thread that runs the user's code where we cannot interrupt it
    /// (a source's iterator, a feed closure): whether it is in there now.
    /// A shutdown does not wait for a thread blocked in the user's code.
    pub(crate) user: Option<UserCode>,
}

/// A thread of the run's own, or a job on a thread of a [`Threads`](crate::Threads) set.
pub(crate) enum Handle {
    Own(JoinHandle<()>),
    Pooled(Done),
}

impl Handle {
    pub(crate) fn is_finished(&self) -> bool {
        match self {
            Handle::Own(handle) => handle.is_finished(),
            Handle::Pooled(done) => done.is_finished(),
        }
    }
}

/// What starting a pipeline collects: its threads and shared state.
pub(crate) struct Launch {
    pub(crate) ctl: Arc<Control>,
    pub(crate) threads: Vec<Thread>,
    pub(crate) counters: Vec<(String, Arc<Counters>)>,
    /// What a profiled or debugged run measures.
    pub(crate) run: Option<Arc<RunStats>>,
    /// The set of threads the run's threads come from, if it has one.
    pub(crate) pool: Option<Arc<crate::threads::Inner>>,
    /// For a branch of a fork, its path (`tee0`, `split1__ok`), the level
    /// its stages' profile keys get after `MainPipeline`.
    pub(crate) branch: Option<String>,
}

/// One value per worker of a stage, each taken once by its worker: a
/// keyed worker's own input queue, a merge worker's input. Clones share
/// the values.
pub(crate) struct PerWorker<T>(Arc<Vec<std::sync::Mutex<Option<T>>>>);

impl<T> Clone for PerWorker<T> {
    fn clone(&self) -> Self {
        PerWorker(self.0.clone())
    }
}

impl<T> PerWorker<T> {
    /// Worker `i`'s value is `values[i]`.
    pub(crate) fn new(values: Vec<T>) -> Self {
        PerWorker(Arc::new(
            values.into_iter().map(|v| Some(v).into()).collect(),
        ))
    }

    /// `workers` empty places, filled with [`put`](PerWorker::put).
    pub(crate) fn empty(workers: usize) -> Self {
        PerWorker(Arc::new((0..workers).map(|_| Default::default()).collect()))
    }

    /// Worker `index`'s value is `value`.
    pub(crate) fn put(&self, index: usize, value: T) {
        *crate::control::lock(&self.0[index]) = Some(value);
    }

    /// Worker `index`'s value, if it is there and not taken yet.
    pub(crate) fn take(&self, index: usize) -> Option<T> {
        crate::control::lock(&self.0[index]).take()
    }
}

/// What one worker of a stage or producer starts with.
pub(crate) struct WorkerStart<O> {
    pub(crate) index: usize,
    /// The worker's own sender on the stage's output queue.
    pub(crate) tx: Tx<O>,
    /// For an ordered stage, the reorder step all its workers send through.
    pub(crate) order: Option<Arc<Reorder<O>>>,
    pub(crate) ctl: Arc<Control>,
    pub(crate) filter: bool,
    pub(crate) counters: Arc<Counters>,
    /// In a profiled or debugged run, the stage's counters.
    pub(crate) stats: Option<Arc<StageStats>>,
    /// And those of the stages fused into it.
    pub(crate) fused: Vec<Arc<StageStats>>,
}

impl<O> WorkerStart<O> {
    /// What this worker measures, if anything: made on the worker's own
    /// thread, whose CPU time it reads.
    pub(crate) fn probe(&self) -> Option<Probe> {
        self.stats
            .clone()
            .map(|stats| Probe::of_worker(stats, self.index))
    }

    /// Those of the stages fused into it (none unless measured).
    pub(crate) fn fused_probes(&self) -> Vec<Probe> {
        self.fused.iter().cloned().map(Probe::fused).collect()
    }
}

impl Launch {
    /// The running pipeline's shared state.
    pub(crate) fn control(&self) -> Arc<Control> {
        self.ctl.clone()
    }

    /// In a profiled or debugged run, what it measures.
    #[cfg(feature = "nats")]
    pub(crate) fn run_stats(&self) -> Option<Arc<RunStats>> {
        self.run.clone()
    }

    /// Registers a stage whose `counters` the results report; in a
    /// profiled or debugged run, also its row, returned, measuring the
    /// output queue `gauge` if it has one.
    pub(crate) fn stage_stats(
        &mut self,
        config: &StageConfig,
        counters: Arc<Counters>,
        gauge: Option<Arc<Gauge>>,
    ) -> Option<Arc<StageStats>> {
        self.counters
            .push((config.name().to_owned(), counters.clone()));
        self.row(config, counters, gauge)
    }

    /// In a profiled or debugged run, a row measuring `config`'s stage (a
    /// source, which drops nothing, or a stage).
    pub(crate) fn row(
        &mut self,
        config: &StageConfig,
        counters: Arc<Counters>,
        gauge: Option<Arc<Gauge>>,
    ) -> Option<Arc<StageStats>> {
        let run = self.run.as_ref()?;
        let key = unique_key(&run.stages(), config.profile_key_in(self.branch.as_deref()));
        let mut stats = StageStats::new(
            key,
            run.epoch,
            config.workers(),
            gauge.unwrap_or_default(),
            counters,
        );
        stats.keyed = config.partitioned();
        let stats = Arc::new(stats);
        run.add_stage(stats.clone());
        Some(stats)
    }

    /// Starts the workers of a stage or producer, each running `body`, and
    /// returns the stage's output queue, `numbered` if an ordered stage
    /// reads it. `fused` names the stages fused into it, measured apart in a
    /// profiled run.
    pub(crate) fn spawn_workers<O, F>(
        &mut self,
        config: &StageConfig,
        fused: Vec<String>,
        numbered: bool,
        body: F,
    ) -> Rx<O>
    where
        O: Send + 'static,
        F: FnOnce(WorkerStart<O>) -> Result<(), StageError> + Clone + Send + 'static,
    {
        let gauge = self.run.as_ref().map(|_| Arc::default());
        let (tx, rx) = link_with(config.queue(), config.workers(), gauge.clone(), numbered);
        let order = config
            .ordered()
            .then(|| Arc::new(Reorder::new(tx.clone(), config.workers())));
        let counters = Arc::new(Counters::default());
        let stats = self.stage_stats(config, counters.clone(), gauge.clone());
        let mut fused_stats = Vec::new();
        if let (Some(run), Some(stats)) = (&self.run, &stats) {
            for name in fused {
                let key = unique_key(&run.stages(), format!("{}__{name}", stats.key));
                // No queue of its own; what it drops, the segment counts.
                let inner = StageStats::new(
                    key,
                    run.epoch,
                    config.workers(),
                    Arc::default(),
                    Arc::default(),
                );
                let inner = Arc::new(inner);
                run.add_stage(inner.clone());
                fused_stats.push(inner);
            }
        }
        // The last worker gets `body` itself, so that no reference to the
        // stage stays on this thread: the last one is dropped on a worker's
        // thread, where a panicking `Drop` of the user's fails the pipeline.
        let mut body = Some(body);
        let workers = config.workers();
        for index in 0..workers {
            let start = WorkerStart {
                index,
                tx: tx.clone(),
                order: order.clone(),
                ctl: self.ctl.clone(),
                filter: config.filter_errors(),
                counters: counters.clone(),
                stats: stats.clone(),
                fused: fused_stats.clone(),
            };
            let body = match index + 1 == workers {
                true => body.take(),
                false => body.clone(),
            };
            let Some(body) = body else { break };
            let stack = config.stack_size();
            self.spawn_sized(config.name(), Some(index), None, stack, move || body(start));
        }
        rx
    }

    /// Starts one thread of the pipeline. Its body's error or panic becomes
    /// the pipeline's failure; a thread that cannot start fails it too.
    #[cfg(feature = "nats")]
    pub(crate) fn spawn(
        &mut self,
        stage: &str,
        worker: Option<usize>,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        self.spawn_sized(stage, worker, None, None, body);
    }

    /// [`spawn`](Launch::spawn) for a thread that runs the user's code
    /// where it cannot be interrupted, as `user` tells.
    pub(crate) fn spawn_watched(
        &mut self,
        stage: &str,
        user: UserCode,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        self.spawn_sized(stage, None, Some(user), None, body);
    }

    /// Starts a thread that serves a stage's workers rather than being one
    /// (a keyed stage's router), named `{stage}-{role}`: its error or panic
    /// fails the pipeline as the stage's, with no worker.
    pub(crate) fn spawn_helper(
        &mut self,
        stage: &str,
        role: &str,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        let name = format!("{stage}-{role}");
        self.spawn_named(name, stage, None, None, None, body);
    }

    /// [`spawn`](Launch::spawn), with a stack of `stack` bytes if given.
    fn spawn_sized(
        &mut self,
        stage: &str,
        worker: Option<usize>,
        user: Option<UserCode>,
        stack: Option<usize>,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        let name = match worker {
            Some(w) => format!("{stage}-{w}"),
            None => stage.to_owned(),
        };
        self.spawn_named(name, stage, worker, user, stack, body);
    }

    /// [`spawn_sized`](Launch::spawn_sized), on a thread named `name`.
    fn spawn_named(
        &mut self,
        name: String,
        stage: &str,
        worker: Option<usize>,
        user: Option<UserCode>,
        stack: Option<usize>,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        if self.ctl.is_cancelled() {
            return;
        }
        let ctl = self.ctl.clone();
        let stage_name = stage.to_owned();
        let run = move || {
            let failure = match catch_unwind(AssertUnwindSafe(body)) {
                Ok(Ok(())) | Ok(Err(StageError(Stop::Cancelled))) => return,
                Ok(Err(StageError(Stop::Failed(e)))) => match e.downcast::<Tagged>() {
                    // A stage inside a serial segment: report that stage.
                    Ok(tagged) => {
                        let Tagged { stage, error } = *tagged;
                        ctl.fail(PipelineError::new(&stage, worker, Failure::Error(error)));
                        return;
                    }
                    Err(e) => Failure::Error(e),
                },
                Err(payload) => {
                    let message = panic_message(&*payload);
                    // Recorded first: the payload's own `Drop` may panic.
                    ctl.fail(PipelineError::new(
                        &stage_name,
                        worker,
                        Failure::Panic(message),
                    ));
                    drop_payload(payload);
                    return;
                }
            };
            ctl.fail(PipelineError::new(&stage_name, worker, failure));
        };
        let job: Job = Box::new(run);
        let pooled = match (&self.pool, stack) {
            // A stack size of its own needs a thread of its own.
            (Some(pool), None) => pool.run(job),
            _ => Err(job),
        };
        let spawned = match pooled {
            Ok(started) => started.map(Handle::Pooled),
            // No set, or it was dropped: a thread of the run's own.
            Err(job) => {
                let mut builder = thread::Builder::new().name(name.clone());
                if let Some(bytes) = stack {
                    builder = builder.stack_size(bytes);
                }
                builder.spawn(job).map(Handle::Own)
            }
        };
        match spawned {
            Ok(handle) => self.threads.push(Thread { handle, name, user }),
            Err(e) => self
                .ctl
                .fail(PipelineError::new(stage, worker, Failure::Spawn(e))),
        }
    }
}

/// Joins one of the pipeline's threads. They catch every panic of the
/// user's code, so one that still ended in a panic (outside any stage's
/// code) must not pass unseen either.
pub(crate) fn join(handle: Handle, name: &str, ctl: &Control) {
    let message = match handle {
        Handle::Own(handle) => match handle.join() {
            Ok(()) => return,
            Err(payload) => into_panic_message(payload),
        },
        Handle::Pooled(done) => match done.wait() {
            Ok(()) => return,
            Err(message) => message,
        },
    };
    let message = format!("the thread ended with a panic: {message}");
    ctl.fail(PipelineError::new(name, None, Failure::Panic(message)));
}
