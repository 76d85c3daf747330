//! Building a pipeline, starting its threads, and consuming its results.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::{self, JoinHandle};

use crate::config::{QueueSize, StageConfig};
use crate::control::Control;
use crate::debug::{Debugger, Monitor};
use crate::error::{Counters, Failure, PipelineError, StageError, Stop, Tagged, panic_message};
use crate::link::{Gauge, Rx, Tx, link, link_with};
use crate::ordered::{Out, Reorder};
use crate::profile::{Outcome, Probe, Profile, Profiler, RunStats, StageStats};
use crate::source::Source;
use crate::stage::{Producer, Stage};
use crate::user_code::UserCode;
use crate::worker::{Emitter, Worker, WorkerIo};

/// A stage's output queue, its item type erased between the steps of a plan.
type AnyRx = Box<dyn Any + Send>;

/// One step of starting a pipeline: given the previous step's output queue
/// (none for the first step) and whether the stage after it is `ordered`
/// (its input queue is then numbered), starts its threads and returns its
/// own output queue.
type Step = Box<dyn FnOnce(&mut Launch, Option<AnyRx>, bool) -> AnyRx + Send>;

/// Starts threads of its own before a plan's steps (a feed closure's).
type Before = Box<dyn FnOnce(&mut Launch) + Send>;

/// How to start a pipeline. Steps run one after another in a loop rather
/// than as nested calls, so a pipeline of any length starts, and drops, on
/// any stack.
#[derive(Default)]
struct Plan {
    /// Run before the steps: threads that feed the first one.
    before: Vec<Before>,
    /// Each step, with whether its stage is `ordered`.
    steps: Vec<(Step, bool)>,
}

impl Plan {
    fn first(step: Step) -> Self {
        Plan {
            before: Vec::new(),
            steps: vec![(step, false)],
        }
    }

    fn start<T: Send + 'static>(self, launch: &mut Launch) -> Rx<T> {
        for before in self.before {
            before(launch);
        }
        let numbered: Vec<bool> = (self.steps.iter().skip(1).map(|(_, ordered)| *ordered))
            .chain([false])
            .collect();
        let mut queue = None;
        for ((step, _), numbered) in self.steps.into_iter().zip(numbered) {
            queue = Some(step(launch, queue, numbered));
        }
        match queue.map(|q| q.downcast::<Rx<T>>()) {
            Some(Ok(rx)) => *rx,
            // Every plan starts with a source, and each step returns the
            // queue of the type its `Pipeline<T>` names.
            _ => unreachable!("a plan's last step returns the pipeline's output queue"),
        }
    }
}

/// The input queue a step was given: the previous step's output.
fn input_of<T: Send + 'static>(queue: Option<AnyRx>) -> Rx<T> {
    match queue.map(|q| q.downcast::<Rx<T>>()) {
        Some(Ok(rx)) => *rx,
        _ => unreachable!("a stage's step follows a step that outputs its input type"),
    }
}

/// A pipeline: a source and a chain of stages, not started yet.
///
/// Build it with `pipe!` (or [`Pipeline::source`] and
/// [`then`](Pipeline::then)); nothing runs until it is consumed with
/// [`results`](Pipeline::results), [`collect`](Pipeline::collect),
/// [`execute`](Pipeline::execute) or [`run`](Pipeline::run).
#[must_use = "a pipeline does nothing until it is consumed"]
pub struct Pipeline<T> {
    plan: Plan,
    /// A configuration error found while building: reported when consumed,
    /// before any thread starts.
    invalid: Option<PipelineError>,
    observe: Observe,
    _items: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("steps", &self.plan.steps.len())
            .field("invalid", &self.invalid)
            .finish_non_exhaustive()
    }
}

/// What is measured while a pipeline runs: nothing, unless asked.
#[derive(Default)]
struct Observe {
    profiler: Option<Profiler>,
    debugger: Option<Debugger>,
}

impl Observe {
    fn any(&self) -> bool {
        self.profiler.is_some() || self.debugger.is_some()
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline whose items come from `items`, pulled on a thread of its own.
    /// An iterator that blocks (on a socket, say) cannot be interrupted when
    /// the pipeline stops: see [`results`](Pipeline::results).
    pub fn source<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T> + Send + 'static,
    {
        Self::from_source(Source::Iter(items))
    }

    /// A pipeline whose items come from a channel fed by other threads; it
    /// ends when every sender is dropped. Unlike a plain iterator source,
    /// each item is passed on as soon as it arrives, and a pipeline stopped
    /// early does not wait for the next item to arrive.
    pub fn from_receiver(receiver: flume::Receiver<T>) -> Self {
        Self::from_source(Source::<std::iter::Empty<T>>::Flume(
            crate::source::Channel {
                rx: receiver,
                idle: None,
                gate: None,
            },
        ))
    }

    /// Like [`from_receiver`](Pipeline::from_receiver), for a standard
    /// library channel.
    pub fn from_std_receiver(receiver: std::sync::mpsc::Receiver<T>) -> Self {
        Self::from_source(Source::<std::iter::Empty<T>>::Std(receiver))
    }

    /// A pipeline whose items come from an iterator that may block between
    /// items (lines from a socket or a terminal, events as they happen),
    /// passing each item on as soon as the iterator yields it.
    ///
    /// [`Pipeline::source`] reads its iterator in batches, which is fastest,
    /// but an iterator that blocks after a burst of items can hold the end of
    /// the burst until its next item. Here the iterator runs on a thread of
    /// its own and hands each item over a channel, so nothing waits; this
    /// costs a channel message per item.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn shout(line: String) -> String {
    ///     line.to_uppercase()
    /// }
    ///
    /// let lines = std::io::Cursor::new("one\ntwo\n");
    /// let lines = std::io::BufRead::lines(lines).map_while(Result::ok);
    /// let out: Vec<String> = pipe!(Pipeline::streaming(lines) | shout).collect()?;
    /// assert_eq!(out, ["ONE", "TWO"]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn streaming<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T> + Send + 'static,
    {
        crate::Stream::feed(move |bucket| {
            for item in items {
                if bucket.push(item).is_err() {
                    break;
                }
            }
        })
        .into_pipeline()
    }

    pub(crate) fn from_source<I>(source: Source<I>) -> Self
    where
        I: IntoIterator<Item = T> + Send + 'static,
    {
        let step: Step = Box::new(move |launch: &mut Launch, _, numbered| {
            let config = StageConfig::new("source");
            let gauge = launch.run.as_ref().map(|_| Arc::default());
            let (tx, mut rx) = link_with(config.queue(), gauge.clone(), numbered);
            if launch.run.is_some() {
                rx.stamp_batches();
            }
            // In a profiled or debugged run the source has a row of its own,
            // so a slow source shows.
            let stats = launch.row(&config, Arc::default(), gauge);
            let ctl = launch.ctl.clone();
            let user = UserCode::default();
            launch.spawn_watched("source", user.clone(), move || {
                let mut tx = tx;
                let probe = stats.map(|stats| {
                    let probe = Probe::new(stats);
                    probe.started();
                    probe
                });
                source.run(&mut tx, &ctl, &user, probe)
            });
            Box::new(rx)
        });
        Pipeline {
            plan: Plan::first(step),
            invalid: None,
            observe: Observe::default(),
            _items: PhantomData,
        }
    }

    /// A pipeline whose items come from a producer stage's workers.
    pub fn from_producer<P: Producer<Out = T>>(producer: P) -> Self {
        let invalid = check(producer.config()).or_else(|| {
            producer.config().ordered().then(|| {
                let why = "a producer has no input order to keep: remove `ordered`".to_owned();
                PipelineError::new(producer.config().name(), None, Failure::Config(why))
            })
        });
        let step: Step = Box::new(move |launch: &mut Launch, _, numbered| {
            let config = producer.config().clone();
            let producer = Arc::new(producer);
            let rx = launch.spawn_workers(&config, Vec::new(), numbered, move |mut w| {
                let probe = w.probe();
                if let Some(probe) = &probe {
                    probe.started();
                    w.tx.stamp_batches();
                }
                let emitter =
                    Emitter::new(&mut w.tx, &w.ctl, w.index, w.filter, &w.counters, probe);
                producer.produce(emitter)?;
                // What `emit` buffered last: `produce` need not flush.
                w.tx.flush(&w.ctl)?;
                Ok(())
            });
            Box::new(rx)
        });
        Pipeline {
            plan: Plan::first(step),
            invalid,
            observe: Observe::default(),
            _items: PhantomData,
        }
    }

    /// This pipeline, failing with `error` when consumed, before any thread
    /// starts.
    #[cfg(feature = "nats")]
    pub(crate) fn failing(mut self, error: PipelineError) -> Self {
        self.invalid.get_or_insert(error);
        self
    }

    /// Runs `start` (which starts threads of its own) when the pipeline
    /// starts, before the rest of it.
    pub(crate) fn with_thread(mut self, start: impl FnOnce(&mut Launch) + Send + 'static) -> Self {
        self.plan.before.insert(0, Box::new(start));
        self
    }

    /// Runs the pipeline in the background, keeping only its newest result:
    /// see [`Latest`](crate::Latest).
    pub fn latest(self) -> crate::Latest<T> {
        crate::Latest::start(self.results())
    }

    /// Appends a stage (or a segment). Its input type must be this
    /// pipeline's item type.
    pub fn then<S: Stage<In = T>>(self, stage: S) -> Pipeline<S::Out> {
        stage.attach(self)
    }

    /// This pipeline, failing with a configuration error of `stage` when
    /// consumed (unless it already fails with an earlier one).
    pub(crate) fn misconfigured<U: Send + 'static>(self, stage: &str, why: String) -> Pipeline<U> {
        let invalid = self
            .invalid
            .unwrap_or_else(|| PipelineError::new(stage, None, Failure::Config(why)));
        // Never started: a misconfigured pipeline fails before its plan runs.
        let step: Step =
            Box::new(|_: &mut Launch, _, _| Box::new(link::<U>(QueueSize::Bounded(1), false).1));
        Pipeline {
            plan: Plan::first(step),
            invalid: Some(invalid),
            observe: self.observe,
            _items: PhantomData,
        }
    }

    /// Appends a stage with workers of its own.
    pub(crate) fn spawn_stage<S: Stage<In = T>>(self, stage: S) -> Pipeline<S::Out> {
        let invalid = self.invalid.or_else(|| check(stage.config()));
        let ordered = stage.config().ordered();
        let mut plan = self.plan;
        let step: Step = Box::new(move |launch: &mut Launch, input, numbered| {
            let config = stage.config().clone();
            let input: Rx<T> = input_of(input);
            let fused = stage.fused_stages();
            let stage = Arc::new(stage);
            let rx = launch.spawn_workers(&config, fused, numbered, move |w| {
                let probe = w.probe();
                let fused = w.fused_probes();
                let out = match w.order {
                    Some(order) => {
                        debug_assert!(input.is_numbered(), "an ordered stage's input is numbered");
                        Out::ordered(order, w.tx)
                    }
                    None => Out::Direct(w.tx),
                };
                let io = WorkerIo::new(input, out, &w.ctl, probe, fused);
                stage.run(Worker::new(&io, w.index, w.filter, &w.counters))
            });
            Box::new(rx)
        });
        plan.steps.push((step, ordered));
        Pipeline {
            plan,
            invalid,
            observe: self.observe,
            _items: PhantomData,
        }
    }

    /// Starts the pipeline and returns its results as they come, in arrival
    /// order: every item as `Ok`, then, if the pipeline failed, one `Err`
    /// with the first failure. Dropping the iterator early stops the
    /// pipeline and joins its threads, except one blocked inside your own
    /// code (a source iterator waiting in `next`, a `Stream::feed` closure
    /// waiting outside `push`): nothing can interrupt that, so the drop does
    /// not wait for it, and the thread ends when your code returns, seeing
    /// the pipeline stopped. Feed a channel source from a thread of yours
    /// where that matters.
    pub fn results(self) -> Results<T> {
        let observe = self.observe;
        let mut launch = Launch {
            ctl: Arc::new(Control::default()),
            threads: Vec::new(),
            counters: Vec::new(),
            run: (observe.any() && self.invalid.is_none()).then(|| Arc::new(RunStats::new())),
        };
        let rx = match self.invalid {
            Some(error) => {
                launch.ctl.fail(error);
                // A closed queue: the results end at once, with the error.
                link(QueueSize::Bounded(1), false).1
            }
            // A value of the user's dropped here (a stage's last reference,
            // when a thread could not start) may panic: that fails the
            // pipeline like any panic of theirs, never escapes.
            None => match catch_unwind(AssertUnwindSafe(|| self.plan.start(&mut launch))) {
                Ok(rx) => rx,
                Err(payload) => {
                    let message = panic_message(&*payload);
                    drop_payload(payload);
                    let failure = Failure::Panic(message);
                    launch.ctl.fail(PipelineError::new("start", None, failure));
                    link(QueueSize::Bounded(1), false).1
                }
            },
        };
        let observed = launch.run.map(|run| Observed {
            monitor: Some(Monitor::start(
                run.clone(),
                observe.profiler.as_ref(),
                observe.debugger,
            )),
            run,
            profiler: observe.profiler,
        });
        Results {
            rx: Some(rx),
            batch: Vec::new().into_iter(),
            ctl: launch.ctl,
            threads: launch.threads,
            counters: launch.counters,
            observed,
            profile: None,
        }
    }

    /// Profiles the run: per-stage latency and throughput, stored in the
    /// default profile database, read with [`Results::profile`]. See
    /// [`profile`](crate::profile).
    pub fn profile(self) -> Self {
        self.profile_with(Profiler::new())
    }

    /// Profiles the run with the given options (database folder, run name,
    /// sampling period).
    pub fn profile_with(mut self, profiler: Profiler) -> Self {
        self.observe.profiler = Some(profiler);
        self
    }

    /// Reports on the run while it runs, and once at the end: see
    /// [`debug`](crate::debug).
    pub fn debug(mut self, debugger: Debugger) -> Self {
        self.observe.debugger = Some(debugger);
        self
    }

    /// Runs the pipeline to the end and collects its items (in arrival
    /// order), or returns its first failure.
    pub fn collect<C: FromIterator<T>>(self) -> Result<C, PipelineError> {
        self.results().collect()
    }

    /// Runs the pipeline to the end and returns its last item.
    pub fn execute(self) -> Result<Option<T>, PipelineError> {
        last_item(self.results())
    }

    /// Runs the pipeline to the end, discarding its items.
    pub fn run(self) -> Result<(), PipelineError> {
        self.results().try_for_each(|item| item.map(drop))
    }
}

impl<T: Send + 'static> Default for Pipeline<T> {
    /// A pipeline with no items.
    fn default() -> Self {
        Pipeline::source(std::iter::empty())
    }
}

/// The last item of a pipeline's results, or its failure: what `execute`
/// returns, for parallel and serial pipelines alike.
pub(crate) fn last_item<T>(
    results: impl Iterator<Item = Result<T, PipelineError>>,
) -> Result<Option<T>, PipelineError> {
    let mut last = None;
    for item in results {
        last = Some(item?);
    }
    Ok(last)
}

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

fn check(config: &StageConfig) -> Option<PipelineError> {
    config
        .validate()
        .err()
        .map(|msg| PipelineError::new(config.name(), None, Failure::Config(msg)))
}

struct Thread {
    handle: JoinHandle<()>,
    /// Its name, for a failure no stage could report.
    name: String,
    /// For a thread that runs the user's code where we cannot interrupt it
    /// (a source's iterator, a feed closure): whether it is in there now.
    /// A shutdown does not wait for a thread blocked in the user's code.
    user: Option<UserCode>,
}

/// What starting a pipeline collects: its threads and shared state.
pub(crate) struct Launch {
    ctl: Arc<Control>,
    threads: Vec<Thread>,
    counters: Vec<(String, Arc<Counters>)>,
    /// What a profiled or debugged run measures.
    run: Option<Arc<RunStats>>,
}

/// What one worker of a stage or producer starts with.
struct WorkerStart<O> {
    index: usize,
    /// The worker's own sender on the stage's output queue.
    tx: Tx<O>,
    /// For an ordered stage, the reorder step all its workers send through.
    order: Option<Arc<Reorder<O>>>,
    ctl: Arc<Control>,
    filter: bool,
    counters: Arc<Counters>,
    /// In a profiled or debugged run, the stage's counters.
    stats: Option<Arc<StageStats>>,
    /// And those of the stages fused into it.
    fused: Vec<Arc<StageStats>>,
}

impl<O> WorkerStart<O> {
    /// What this worker measures, if anything: made on the worker's own
    /// thread, whose CPU time it reads.
    fn probe(&self) -> Option<Probe> {
        self.stats.clone().map(Probe::new)
    }

    /// Those of the stages fused into it (none unless measured).
    fn fused_probes(&self) -> Vec<Probe> {
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
    fn row(
        &mut self,
        config: &StageConfig,
        counters: Arc<Counters>,
        gauge: Option<Arc<Gauge>>,
    ) -> Option<Arc<StageStats>> {
        let run = self.run.as_ref()?;
        let key = unique_key(&run.stages(), config.profile_key());
        let stats = Arc::new(StageStats::new(
            key,
            run.epoch,
            config.workers(),
            gauge.unwrap_or_default(),
            counters,
        ));
        run.add_stage(stats.clone());
        Some(stats)
    }

    /// Starts the workers of a stage or producer, each running `body`, and
    /// returns the stage's output queue, `numbered` if an ordered stage
    /// reads it. `fused` names the stages fused into it, measured apart in a
    /// profiled run.
    fn spawn_workers<O, F>(
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
        let (tx, rx) = link_with(config.queue(), gauge.clone(), numbered);
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

    /// [`spawn`](Launch::spawn), with a stack of `stack` bytes if given.
    fn spawn_sized(
        &mut self,
        stage: &str,
        worker: Option<usize>,
        user: Option<UserCode>,
        stack: Option<usize>,
        body: impl FnOnce() -> Result<(), StageError> + Send + 'static,
    ) {
        if self.ctl.is_cancelled() {
            return;
        }
        let name = match worker {
            Some(w) => format!("{stage}-{w}"),
            None => stage.to_owned(),
        };
        let ctl = self.ctl.clone();
        let stage_name = stage.to_owned();
        let mut builder = thread::Builder::new().name(name.clone());
        if let Some(bytes) = stack {
            builder = builder.stack_size(bytes);
        }
        let spawned = builder.spawn(move || {
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
        });
        match spawned {
            Ok(handle) => self.threads.push(Thread { handle, name, user }),
            Err(e) => self
                .ctl
                .fail(PipelineError::new(stage, worker, Failure::Spawn(e))),
        }
    }
}

/// Drops a caught panic's payload, whose own `Drop` may panic too: that
/// second payload is leaked rather than dropped, so this never unwinds.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// The results of a running pipeline, as they come: see [`Pipeline::results`].
pub struct Results<T> {
    rx: Option<Rx<T>>,
    batch: std::vec::IntoIter<T>,
    ctl: Arc<Control>,
    threads: Vec<Thread>,
    counters: Vec<(String, Arc<Counters>)>,
    observed: Option<Observed>,
    profile: Option<Profile>,
}

impl<T> std::fmt::Debug for Results<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("threads", &self.threads.len())
            .field("ended", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}

/// A profiled or debugged run in progress.
struct Observed {
    run: Arc<RunStats>,
    monitor: Option<Monitor>,
    profiler: Option<Profiler>,
}

impl<T> Results<T> {
    /// The pipeline's shared state, to cancel it from elsewhere.
    pub(crate) fn control(&self) -> Arc<Control> {
        self.ctl.clone()
    }

    /// How many failing items were dropped so far by stages with
    /// `filter_errors`, in all.
    pub fn filtered(&self) -> u64 {
        self.counters
            .iter()
            .map(|(_, c)| c.filtered.load(Relaxed))
            .sum()
    }

    /// How many items stages skipped so far with [`Skip`](crate::Skip), in all.
    pub fn skipped(&self) -> u64 {
        self.counters
            .iter()
            .map(|(_, c)| c.skipped.load(Relaxed))
            .sum()
    }

    /// How many failing items each stage dropped so far, by stage name, in
    /// pipeline order.
    pub fn filtered_by_stage(&self) -> Vec<(String, u64)> {
        self.counters
            .iter()
            .map(|(name, c)| (name.clone(), c.filtered.load(Relaxed)))
            .collect()
    }

    /// The run's profile, once the results have ended (or the pipeline
    /// failed); `None` before that or if the pipeline was not profiled.
    /// See [`profile`](crate::profile).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Ends the observation of a run whose threads are all joined: the
    /// monitor's final report, then the profile, stored.
    fn finish_observing(&mut self, outcome: Outcome) {
        let Some(mut observed) = self.observed.take() else {
            return;
        };
        let writer = observed.monitor.take().and_then(Monitor::stop);
        if let Some(profiler) = &observed.profiler {
            let duration = observed.run.epoch.elapsed();
            let mut profile = crate::profile::summarize(&observed.run, profiler, duration, outcome);
            if let Some(writer) = writer {
                let stored = writer.finish(&profile);
                profile.stored(stored);
            }
            self.profile = Some(profile);
        }
    }

    /// Joins every thread. Worker threads always end once the pipeline ends
    /// or is cancelled. A thread blocked in the user's code (a source's
    /// iterator, a feed closure) cannot be interrupted: it is left to end
    /// on its own when that code returns, and sees the pipeline stopped.
    fn join_all(&mut self) {
        let mut watched = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.user {
                Some(user) => watched.push((thread.handle, thread.name, user)),
                None => join(thread.handle, &thread.name, &self.ctl),
            }
        }
        for (handle, name, user) in watched {
            if user.wait_unless_blocked(|| handle.is_finished()) {
                join(handle, &name, &self.ctl);
            }
        }
    }
}

/// Joins one of the pipeline's threads. They catch every panic of the
/// user's code, so one that still ended in a panic (outside any stage's
/// code) must not pass unseen either.
fn join(handle: JoinHandle<()>, name: &str, ctl: &Control) {
    if let Err(payload) = handle.join() {
        let message = format!(
            "the thread ended with a panic: {}",
            panic_message(&*payload)
        );
        ctl.fail(PipelineError::new(name, None, Failure::Panic(message)));
        drop_payload(payload);
    }
}

/// Once it has returned `None`, it always does.
impl<T> std::iter::FusedIterator for Results<T> {}

impl<T> Iterator for Results<T> {
    type Item = Result<T, PipelineError>;

    // Inlined into the consumer's loop. The batch is read here and refilled
    // by a call that is handed neither it nor `self`, so the compiler can
    // keep the batch's cursor in a register: passing `&mut self` out of line
    // instead cost 0.7 ns an item (+10%) on the one-stage overhead bench.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(Ok(item));
            }
            match receive(&mut self.rx, &self.ctl, &self.observed) {
                Some(batch) => self.batch = batch.into_iter(),
                None => return self.end(),
            }
        }
    }
}

/// The consumer's next batch; `None` once the results have ended.
#[inline(never)]
fn receive<T>(
    rx: &mut Option<Rx<T>>,
    ctl: &Control,
    observed: &Option<Observed>,
) -> Option<Vec<T>> {
    let link = rx.as_mut()?;
    match link.recv_to_end(ctl) {
        Some(batch) => {
            if let Some(observed) = observed {
                observed.run.received(batch.len(), link.born());
            }
            Some(batch)
        }
        None => {
            *rx = None;
            None
        }
    }
}

impl<T> Results<T> {
    #[cold]
    fn end(&mut self) -> Option<Result<T, PipelineError>> {
        // The results are complete, but threads upstream of a stage that
        // stopped early (`take`) may still run, or wait: for a turn in a
        // reorder step, for input from an idle source. Nothing they do now
        // can reach the consumer, so they are stopped, not waited for.
        self.ctl.cancel();
        // Every thread is joined before the failure is read, so a failure
        // recorded by a thread that had already dropped its queue is seen.
        self.join_all();
        let failure = self.ctl.take_failure();
        let outcome = match &failure {
            Some(error) => Outcome::Failed(error.to_string()),
            None => Outcome::Completed,
        };
        self.finish_observing(outcome);
        failure.map(Err)
    }
}

impl<T> Drop for Results<T> {
    fn drop(&mut self) {
        if self.threads.is_empty() && self.observed.is_none() {
            return;
        }
        self.ctl.cancel();
        // Dropping the receiver lets the last stage's workers fail their
        // sends at once; the others see the cancellation.
        self.rx = None;
        self.join_all();
        self.finish_observing(Outcome::Cancelled);
    }
}

/// What can start a pipeline: the left end of `pipe!(source | ...)`.
///
/// Implemented for every [`IntoIterator`] whose items are `Send + 'static`
/// (pulled on a thread of its own), for [`Stream`](crate::Stream), for
/// [`Pipeline`] (so a pipeline can be extended), and by `#[stage]` for
/// producer stages. In `pipe!`, a
/// `flume::Receiver` or `std::sync::mpsc::Receiver` source streams: see
/// [`Pipeline::from_receiver`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the source of a pipeline",
    label = "not an iterable of `Send + 'static` items",
    note = "a source is an `IntoIterator` (a range, a `Vec`, a channel receiver...) whose items are `Send + 'static`, a `Stream`, a `Pipeline`, or a producer stage"
)]
pub trait IntoSource {
    /// The items of the pipeline.
    type Item: Send + 'static;
    /// The pipeline reading this source.
    fn into_pipeline(self) -> Pipeline<Self::Item>;
}

impl<I> IntoSource for I
where
    I: IntoIterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Item = I::Item;
    fn into_pipeline(self) -> Pipeline<I::Item> {
        Pipeline::source(self)
    }
}

impl<T: Send + 'static> IntoSource for Pipeline<T> {
    type Item = T;
    fn into_pipeline(self) -> Pipeline<T> {
        self
    }
}
