//! Building a pipeline: its source and stages as a plan of steps, started
//! by `results` (see `launch` for the threads, `results` for the rest).

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::config::{QueueSize, StageConfig};
use crate::control::Control;
use crate::debug::{Debugger, Monitor};
use crate::error::{Failure, PipelineError, StageError, into_panic_message};
use crate::launch::{Launch, PerWorker, WorkerStart};
use crate::link::{Rx, link, link_with};
use crate::ordered::Out;
use crate::profile::{Probe, Profiler, RunStats};
use crate::results::{Observed, Results, last_item};
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

/// Divides a stage's input into one queue per worker, when the pipeline
/// starts, starting the threads that fill them: `split(launch, input,
/// config)` returns the queues, in worker order.
pub(crate) type Split<T> = Box<dyn FnOnce(&mut Launch, Rx<T>, &StageConfig) -> Vec<Rx<T>> + Send>;

/// Where the workers of a stage read their input.
enum Inputs<T> {
    /// All from the previous stage's queue, a receiver each.
    Shared(Rx<T>),
    /// Worker `i` from queue `i` alone (see [`Split`]).
    Own(PerWorker<Rx<T>>),
}

// By hand: a derive would ask for `T: Clone`, which neither needs.
impl<T> Clone for Inputs<T> {
    fn clone(&self) -> Self {
        match self {
            Inputs::Shared(rx) => Inputs::Shared(rx.clone()),
            Inputs::Own(queues) => Inputs::Own(queues.clone()),
        }
    }
}

impl<T> Inputs<T> {
    /// Worker `index`'s input.
    fn take(self, index: usize) -> Rx<T> {
        match self {
            Inputs::Shared(rx) => rx,
            Inputs::Own(queues) => queues
                .take(index)
                .expect("each worker of a stage starts once"),
        }
    }
}

/// Starts threads of its own before a plan's steps (a feed closure's).
type Before = Box<dyn FnOnce(&mut Launch) + Send>;

/// How to start a pipeline. Steps run one after another in a loop rather
/// than as nested calls, so a pipeline of any length starts, and drops, on
/// any stack.
#[derive(Default)]
struct Plan {
    /// Run before the steps: threads that feed the first one.
    before: Vec<Before>,
    /// Each step, with whether its input queue is numbered: an `ordered`
    /// stage's is (but a keyed one's router numbers the queues it fills).
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
    pub(crate) observe: Observe,
    /// The set of threads to run on, if given ([`Pipeline::on_threads`]).
    threads: Option<std::sync::Weak<crate::threads::Inner>>,
    /// What a branch of this pipeline nobody reads may hold
    /// ([`Pipeline::branch_buffer`]).
    pub(crate) branch_buffer: usize,
    /// The tokio runtime its async stages' futures run on, if given.
    #[cfg(feature = "async")]
    pub(crate) runtime: Option<tokio::runtime::Handle>,
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

/// What is measured while a pipeline runs (nothing, unless asked), and
/// under which name.
#[derive(Default)]
pub(crate) struct Observe {
    profiler: Option<Profiler>,
    debugger: Option<Debugger>,
    /// For a branch of a fork, its path: see `Launch::branch`.
    pub(crate) branch: Option<String>,
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
            let (tx, mut rx) = link_with(config.queue(), 1, gauge.clone(), numbered);
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
            threads: None,
            branch_buffer: crate::fork::DEFAULT_BRANCH_BUFFER,
            #[cfg(feature = "async")]
            runtime: None,
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
        let config = producer.config().clone();
        let producer = Arc::new(producer);
        let mut pipeline = Self::from_workers(config, move |mut w| {
            let probe = w.probe();
            if let Some(probe) = &probe {
                probe.started();
                w.tx.stamp_batches();
            }
            let emitter = Emitter::new(&mut w.tx, &w.ctl, w.index, w.filter, &w.counters, probe);
            producer.produce(emitter)?;
            // What `emit` buffered last: `produce` need not flush.
            w.tx.flush(&w.ctl)?;
            Ok(())
        });
        pipeline.invalid = invalid;
        pipeline
    }

    /// A pipeline whose items come from `config.workers()` workers, each
    /// running `body`: a producer's, a merge's.
    pub(crate) fn from_workers<F>(config: StageConfig, body: F) -> Self
    where
        F: FnOnce(WorkerStart<T>) -> Result<(), StageError> + Clone + Send + 'static,
    {
        let step: Step = Box::new(move |launch: &mut Launch, _, numbered| {
            Box::new(launch.spawn_workers(&config, Vec::new(), numbered, body))
        });
        Pipeline {
            plan: Plan::first(step),
            invalid: None,
            observe: Observe::default(),
            threads: None,
            branch_buffer: crate::fork::DEFAULT_BRANCH_BUFFER,
            #[cfg(feature = "async")]
            runtime: None,
            _items: PhantomData,
        }
    }

    /// This pipeline, failing with `error` when consumed, before any thread
    /// starts (unless it already fails with an earlier error).
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
            threads: self.threads,
            branch_buffer: self.branch_buffer,
            #[cfg(feature = "async")]
            runtime: self.runtime,
            _items: PhantomData,
        }
    }

    /// Appends a stage with workers of its own.
    pub(crate) fn spawn_stage<S: Stage<In = T>>(self, stage: S) -> Pipeline<S::Out> {
        self.spawn_stage_split(stage, None)
    }

    /// Appends a stage with workers of its own, whose input `split`, if
    /// given, divides into one queue per worker when the pipeline starts (a
    /// keyed stage's); otherwise every worker reads the previous stage's
    /// queue.
    pub(crate) fn spawn_stage_split<S: Stage<In = T>>(
        self,
        stage: S,
        split: Option<Split<T>>,
    ) -> Pipeline<S::Out> {
        let invalid = self.invalid.or_else(|| check(stage.config()));
        // A keyed stage's router numbers its workers' queues itself: the
        // queue it reads needs no numbers.
        let numbered_input = stage.config().ordered() && split.is_none();
        let mut plan = self.plan;
        let step: Step = Box::new(move |launch: &mut Launch, input, numbered| {
            let config = stage.config().clone();
            let input: Rx<T> = input_of(input);
            let inputs = match split {
                None => Inputs::Shared(input),
                Some(split) => {
                    let queues = split(launch, input, &config);
                    Inputs::Own(PerWorker::new(queues))
                }
            };
            let fused = stage.fused_stages();
            let stage = Arc::new(stage);
            let rx = launch.spawn_workers(&config, fused, numbered, move |w| {
                let input = inputs.take(w.index);
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
        plan.steps.push((step, numbered_input));
        Pipeline {
            plan,
            invalid,
            observe: self.observe,
            threads: self.threads,
            branch_buffer: self.branch_buffer,
            #[cfg(feature = "async")]
            runtime: self.runtime,
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
            pool: self.threads.and_then(|set| set.upgrade()),
            branch: observe.branch.clone(),
        };
        #[cfg(feature = "async")]
        if let Some(handle) = self.runtime {
            launch.ctl.executor.give(handle);
        }
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
                    let failure = Failure::Panic(into_panic_message(payload));
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
        Results::new(rx, launch.ctl, launch.threads, launch.counters, observed)
    }

    /// Runs on the threads of `threads`, which stay for the next run,
    /// instead of starting threads of its own: for a program that runs
    /// small pipelines often, where starting threads would cost more than
    /// the work. See [`Threads`](crate::Threads).
    pub fn on_threads(mut self, threads: &crate::Threads) -> Self {
        self.threads = Some(threads.handle());
        self
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

    /// Runs the pipeline to the end and combines its items, in arrival
    /// order, with `op`: `None` if there were none, or its first failure.
    /// After a [`stages::fold`](crate::stages::fold) with `N` workers, this
    /// merges their `N` partial results: a parallel aggregation.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use parapipe::prelude::*;
    /// use parapipe::stages;
    ///
    /// fn count(mut counts: HashMap<char, u64>, c: char) -> HashMap<char, u64> {
    ///     *counts.entry(c).or_default() += 1;
    ///     counts
    /// }
    /// fn merge(mut a: HashMap<char, u64>, b: HashMap<char, u64>) -> HashMap<char, u64> {
    ///     for (c, n) in b {
    ///         *a.entry(c).or_default() += n;
    ///     }
    ///     a
    /// }
    ///
    /// let text = "a pipeline, a fold, a merge";
    /// let counts = pipe!(text.chars() | stages::fold(HashMap::new, count).workers(2))
    ///     .reduce(merge)?
    ///     .unwrap_or_default();
    /// assert_eq!(counts[&'a'], 3);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn reduce(self, mut op: impl FnMut(T, T) -> T) -> Result<Option<T>, PipelineError> {
        let mut acc = None;
        for item in self.results() {
            let item = item?;
            acc = Some(match acc {
                None => item,
                Some(acc) => op(acc, item),
            });
        }
        Ok(acc)
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

fn check(config: &StageConfig) -> Option<PipelineError> {
    config
        .validate()
        .err()
        .map(|msg| PipelineError::new(config.name(), None, Failure::Config(msg)))
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
