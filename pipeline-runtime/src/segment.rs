//! Sub-pipelines: a sequence of stages without a source, usable as a stage.
//!
//! A segment runs either *parallel* (the default: each of its stages gets
//! workers of its own, exactly as if written in the enclosing pipeline) or
//! *serial*: its stages are fused into one iterator chain, with no queue
//! between them, and that chain runs on the segment's own workers (N copies
//! of the chain for `workers = N`). A segment nested in a serial segment is
//! fused into it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use crate::config::StageConfig;
use crate::error::{BoxError, Counters, Failure, PipelineError, StageError, Tagged};
use crate::pipeline::Pipeline;
use crate::profile::Clocks;
use crate::stage::{Configurable, Stage};
use crate::worker::Worker;

/// A chain of stages, as a segment holds them. Implemented by [`Leaf`] (one
/// stage), [`Then`] (two chains in sequence) and [`Segment`] (a nested
/// segment). Not meant to be implemented elsewhere.
pub trait Chain: Send + Sync + 'static {
    /// The items the chain takes.
    type In: Send + 'static;
    /// The items the chain emits.
    type Out: Send + 'static;

    /// The chain as one iterator: a failure is recorded in `fail` and ends
    /// the iterator; items dropped by `filter_errors` or skipped are counted in `counters`.
    fn fuse<'a>(
        &'a self,
        input: impl Iterator<Item = Self::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
    ) -> impl Iterator<Item = Self::Out> + 'a;

    /// The chain's stages appended to `pipeline`, each with workers of its own.
    fn attach(self, pipeline: Pipeline<Self::In>) -> Pipeline<Self::Out>;

    /// Puts the chain's stages inside the segment named `segment`, for their
    /// names in profiles.
    #[doc(hidden)]
    fn enter_scope(&mut self, segment: &str) {
        let _ = segment;
    }

    /// [`fuse`](Chain::fuse), with each stage timed by the next probe of
    /// `clocks`: what a profiled serial segment runs.
    #[doc(hidden)]
    fn fuse_timed<'a>(
        &'a self,
        input: impl Iterator<Item = Self::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
        clocks: Rc<Clocks>,
    ) -> impl Iterator<Item = Self::Out> + 'a;

    /// The profile names of the chain's stages, in order, below `prefix`.
    #[doc(hidden)]
    fn stage_names(&self, prefix: &str, out: &mut Vec<String>);

    /// Makes every stage of the chain drop and count its failing items
    /// (a parallel segment's `filter_errors(true)`).
    #[doc(hidden)]
    fn filter_all_errors(&mut self);

    /// The name of a stage of the chain that must run on one worker
    /// (`take`), if any: a serial segment with more workers runs one copy of
    /// the chain per worker, so it must not have such a stage.
    #[doc(hidden)]
    fn single_worker_stage(&self) -> Option<String>;
}

/// One stage in a chain.
pub struct Leaf<S>(pub S);

impl<S: Configurable> std::fmt::Debug for Leaf<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("stage", &self.0.config().name())
            .finish_non_exhaustive()
    }
}

/// Two chains, one after the other.
pub struct Then<A, B>(pub A, pub B);

impl<A, B> std::fmt::Debug for Then<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Then").finish_non_exhaustive()
    }
}

/// The first failure inside a fused chain. One per worker, shared by the
/// links of its chain: single-threaded, hence `Cell`s.
#[derive(Default)]
pub struct FailSlot {
    failed: Cell<bool>,
    error: Cell<Option<Tagged>>,
    /// The chain is a segment with `filter_errors`: every stage's failing
    /// items are dropped and counted, whatever the stage's own setting.
    filter_all: bool,
}

impl std::fmt::Debug for FailSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailSlot")
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }
}

impl FailSlot {
    fn new(filter_all: bool) -> Rc<Self> {
        Rc::new(FailSlot {
            filter_all,
            ..FailSlot::default()
        })
    }

    fn set(&self, error: Tagged) {
        if !self.failed.replace(true) {
            self.error.set(Some(error));
        }
    }
}

/// A stage's output with its errors taken out: `Ok` items pass, an `Err`
/// is dropped and counted (with `filter_errors`) or ends the chain.
struct Shunt<'a, I> {
    inner: I,
    fail: Rc<FailSlot>,
    stage: &'a StageConfig,
    counters: &'a Counters,
    done: bool,
}

impl<I, T, E> Iterator for Shunt<'_, I>
where
    I: Iterator<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    type Item = T;

    // Every link of a fused chain must inline into one loop for the chain
    // to cost what a hand-written one does; with the chain used in two
    // places, a plain hint was not enough (6.6x slower in benches/serial.rs).
    #[inline(always)]
    fn next(&mut self) -> Option<T> {
        if self.done {
            return None;
        }
        loop {
            match self.inner.next() {
                Some(Ok(item)) => return Some(item),
                Some(Err(e)) => {
                    let filter = self.stage.filter_errors() || self.fail.filter_all;
                    let dropped = self.counters.drop_or_fail(filter, e.into());
                    if let Err(error) = dropped {
                        self.fail.set(Tagged {
                            stage: self.stage.name().to_owned(),
                            error,
                        });
                        self.done = true;
                        return None;
                    }
                }
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl<S: Stage> Chain for Leaf<S> {
    type In = S::In;
    type Out = S::Out;

    fn fuse<'a>(
        &'a self,
        input: impl Iterator<Item = S::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
    ) -> impl Iterator<Item = S::Out> + 'a {
        Shunt {
            inner: self.0.apply_fused(input),
            fail,
            stage: self.0.config(),
            counters,
            done: false,
        }
    }

    fn attach(self, pipeline: Pipeline<S::In>) -> Pipeline<S::Out> {
        pipeline.then(self.0)
    }

    fn enter_scope(&mut self, segment: &str) {
        self.0.scope_into(segment);
    }

    fn fuse_timed<'a>(
        &'a self,
        input: impl Iterator<Item = S::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
        clocks: Rc<Clocks>,
    ) -> impl Iterator<Item = S::Out> + 'a {
        clocks.stage(self.fuse(input, fail, counters))
    }

    fn stage_names(&self, prefix: &str, out: &mut Vec<String>) {
        out.push(format!("{prefix}{}", self.0.config().name()));
    }

    fn filter_all_errors(&mut self) {
        self.0.config_mut().set_filter_errors(true);
    }

    fn single_worker_stage(&self) -> Option<String> {
        self.0
            .runs_on_one_worker()
            .then(|| self.0.config().name().to_owned())
    }
}

impl<A, B> Chain for Then<A, B>
where
    A: Chain,
    B: Chain<In = A::Out>,
{
    type In = A::In;
    type Out = B::Out;

    fn fuse<'a>(
        &'a self,
        input: impl Iterator<Item = A::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
    ) -> impl Iterator<Item = B::Out> + 'a {
        self.1
            .fuse(self.0.fuse(input, fail.clone(), counters), fail, counters)
    }

    fn attach(self, pipeline: Pipeline<A::In>) -> Pipeline<B::Out> {
        self.1.attach(self.0.attach(pipeline))
    }

    fn enter_scope(&mut self, segment: &str) {
        self.0.enter_scope(segment);
        self.1.enter_scope(segment);
    }

    fn fuse_timed<'a>(
        &'a self,
        input: impl Iterator<Item = A::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
        clocks: Rc<Clocks>,
    ) -> impl Iterator<Item = B::Out> + 'a {
        // The upstream chain is built (and takes its probes) first.
        let upstream = self
            .0
            .fuse_timed(input, fail.clone(), counters, clocks.clone());
        self.1.fuse_timed(upstream, fail, counters, clocks)
    }

    fn stage_names(&self, prefix: &str, out: &mut Vec<String>) {
        self.0.stage_names(prefix, out);
        self.1.stage_names(prefix, out);
    }

    fn filter_all_errors(&mut self) {
        self.0.filter_all_errors();
        self.1.filter_all_errors();
    }

    fn single_worker_stage(&self) -> Option<String> {
        self.0
            .single_worker_stage()
            .or_else(|| self.1.single_worker_stage())
    }
}

/// A sequence of stages used as one stage: what `segment!` builds.
///
/// Parallel by default; [`serial`](Segment::serial) fuses its stages into one
/// chain per worker. Name it with [`StageExt::name`](crate::StageExt::name)
/// and, when serial, give it workers with
/// [`StageExt::workers`](crate::StageExt::workers).
pub struct Segment<C> {
    chain: C,
    config: StageConfig,
    serial: bool,
    /// Dropped items of a serial segment used through [`Stage::apply`] or
    /// [`iter`](Segment::iter), where there is no worker to count them.
    counters: Counters,
}

impl<C> std::fmt::Debug for Segment<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("config", &self.config)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl<C: Chain> Segment<C> {
    /// A parallel segment of the given chain, named `segment`.
    pub fn new(chain: C) -> Self {
        Segment {
            chain,
            config: StageConfig::new("segment"),
            serial: false,
            counters: Counters::default(),
        }
    }

    /// Runs the segment's stages fused, as one iterator chain with no queue
    /// between them, on the segment's own workers (one by default).
    pub fn serial(mut self) -> Self {
        self.serial = true;
        self
    }

    /// Gives each of the segment's stages workers of its own (the default).
    pub fn parallel(mut self) -> Self {
        self.serial = false;
        self
    }

    /// Whether the segment runs serial.
    pub fn is_serial(&self) -> bool {
        self.serial
    }

    /// Runs the segment over `input` in the calling thread, fused, as a
    /// plain iterator: no thread, no queue, no batching. The first `Err` of a stage ends the iterator as its last
    /// item; items dropped by `filter_errors` are counted in
    /// [`filtered`](Segment::filtered). A panic in a stage unwinds into the
    /// caller, as in any iterator chain.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn add_n(x: u64, n: u64) -> u64 {
    ///     x + n
    /// }
    ///
    /// let seg = segment!(add_n(1) | add_n(2));
    /// let out: Vec<u64> = seg.iter(0..3).collect::<Result<_, _>>()?;
    /// assert_eq!(out, [3, 4, 5]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn iter<'a>(
        &'a self,
        input: impl IntoIterator<Item = C::In> + 'a,
    ) -> impl Iterator<Item = Result<C::Out, PipelineError>> + 'a {
        self.fused(input.into_iter(), &self.counters).map(|item| {
            item.map_err(|Tagged { stage, error }| {
                PipelineError::new(&stage, None, Failure::Error(error))
            })
        })
    }

    /// How many failing items `filter_errors` dropped in [`iter`](Segment::iter)
    /// runs of this segment.
    pub fn filtered(&self) -> u64 {
        self.counters.filtered.load(Relaxed)
    }

    /// How many items stages skipped with [`Skip`](crate::Skip) in
    /// [`iter`](Segment::iter) runs of this segment.
    pub fn skipped(&self) -> u64 {
        self.counters.skipped.load(Relaxed)
    }
}

/// The items of a fused chain, with its first failure as the last item.
struct Fused<I> {
    inner: I,
    fail: Rc<FailSlot>,
}

impl<I: Iterator> Iterator for Fused<I> {
    type Item = Result<I::Item, Tagged>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next();
        // An item produced after a failure upstream (an aggregation over a
        // cut-short input, say) is not a result: report the failure instead.
        if self.fail.failed.get() {
            return self.fail.error.take().map(Err);
        }
        item.map(Ok)
    }
}

impl<C: Chain> Segment<C> {
    fn fused<'a>(
        &'a self,
        input: impl Iterator<Item = C::In> + 'a,
        counters: &'a Counters,
    ) -> Fused<impl Iterator<Item = C::Out> + 'a> {
        let fail = FailSlot::new(self.config.filter_errors());
        Fused {
            inner: self.chain.fuse(input, fail.clone(), counters),
            fail,
        }
    }
}

impl<C: Chain> Configurable for Segment<C> {
    fn config(&self) -> &StageConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.config
    }
}

impl<C: Chain> Stage for Segment<C> {
    type In = C::In;
    type Out = C::Out;
    type Error = Tagged;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = C::In> + 'a,
    ) -> impl Iterator<Item = Result<C::Out, Tagged>> + 'a {
        self.fused(input, &self.counters)
    }

    fn run(&self, worker: Worker<'_, C::In, C::Out>) -> Result<(), StageError> {
        let counters = worker.counters();
        match worker.fused_clocks() {
            None => worker.try_transform(|input| self.fused(input, counters)),
            Some(clocks) => worker.try_transform(|input| {
                let fail = FailSlot::new(self.config.filter_errors());
                let input = clocks.input(input);
                Fused {
                    inner: self.chain.fuse_timed(input, fail.clone(), counters, clocks),
                    fail,
                }
            }),
        }
    }

    fn fused_stages(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.serial {
            self.chain.stage_names("", &mut names);
        }
        names
    }

    fn scope_into(&mut self, segment: &str) {
        Chain::enter_scope(self, segment);
    }

    fn attach(self, pipeline: Pipeline<C::In>) -> Pipeline<C::Out> {
        let config = &self.config;
        if self.serial {
            if let (true, Some(stage)) = (config.workers() > 1, self.chain.single_worker_stage()) {
                let why = format!(
                    "`{stage}` runs on one worker, and this serial segment runs {} copies of its chain (one per worker): each would apply it on its own; give the segment one worker, or move `{stage}` out of it",
                    config.workers()
                );
                return pipeline.misconfigured(config.name(), why);
            }
            pipeline.spawn_stage(self)
        } else if let Some(setting) = parallel_only_setting(config) {
            let why = format!(
                "{setting} applies to a serial segment's workers and output queue: call .serial(), or set it on the segment's stages"
            );
            pipeline.misconfigured(config.name(), why)
        } else if self.config.workers() != 1 || self.config.ordered() {
            // Its stages keep their own settings: these would be ignored.
            let workers = format!("workers({})", self.config.workers());
            let what = match (self.config.workers() != 1, self.config.ordered()) {
                (true, true) => format!("{workers} and ordered apply"),
                (true, false) => format!("{workers} applies"),
                _ => "ordered applies".to_owned(),
            };
            let why = format!(
                "{what} to a serial segment: call .serial(), or set it on the segment's stages"
            );
            pipeline.misconfigured(self.config.name(), why)
        } else {
            // In profiles, its stages are `MainPipeline__<segment>__<stage>`.
            let mut chain = self.chain;
            chain.enter_scope(self.config.name());
            if self.config.filter_errors() {
                // The segment's failing items are those of its stages.
                chain.filter_all_errors();
            }
            chain.attach(pipeline)
        }
    }
}

impl<C: Chain> Chain for Segment<C> {
    type In = C::In;
    type Out = C::Out;

    fn fuse<'a>(
        &'a self,
        input: impl Iterator<Item = C::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
    ) -> impl Iterator<Item = C::Out> + 'a {
        // Inside a serial segment, a nested segment is fused too. With
        // `filter_errors` of its own, none of its stages' failures reach the
        // slot, so it gets one that filters them all.
        let fail = match self.config.filter_errors() && !fail.filter_all {
            true => FailSlot::new(true),
            false => fail,
        };
        self.chain.fuse(input, fail, counters)
    }

    fn attach(self, pipeline: Pipeline<C::In>) -> Pipeline<C::Out> {
        Stage::attach(self, pipeline)
    }

    fn enter_scope(&mut self, segment: &str) {
        self.config.enter_scope(segment);
        self.chain.enter_scope(segment);
    }

    fn fuse_timed<'a>(
        &'a self,
        input: impl Iterator<Item = C::In> + 'a,
        fail: Rc<FailSlot>,
        counters: &'a Counters,
        clocks: Rc<Clocks>,
    ) -> impl Iterator<Item = C::Out> + 'a {
        self.chain.fuse_timed(input, fail, counters, clocks)
    }

    fn stage_names(&self, prefix: &str, out: &mut Vec<String>) {
        // A nested segment is a level of its own in profile names.
        self.chain
            .stage_names(&format!("{prefix}{}__", self.config.name()), out);
    }

    fn filter_all_errors(&mut self) {
        self.config.set_filter_errors(true);
        self.chain.filter_all_errors();
    }

    fn single_worker_stage(&self) -> Option<String> {
        self.chain.single_worker_stage()
    }
}

/// A setting that a parallel segment has no place for (its stages each
/// have their own workers and queues), if one was made.
fn parallel_only_setting(config: &StageConfig) -> Option<&'static str> {
    use crate::config::{DEFAULT_QSIZE, QueueSize};
    match config.queue() {
        QueueSize::Unbounded => Some("unbounded"),
        QueueSize::Bounded(n) if n != DEFAULT_QSIZE => Some("qsize"),
        QueueSize::Bounded(_) => config.stack_size().map(|_| "stack_size"),
    }
}

/// A whole pipeline run serial, in the calling thread, with no thread and no
/// queue at all: what `pipe!(serial: source | stage | ...)` builds: the zero-overhead
/// mode for single-threaded work.
///
/// Its stages are fused into one iterator chain over the source, as in
/// [`Segment::iter`]: a 20-stage chain costs what the same hand-written
/// iterator chain costs. Worker counts, queue sizes and `ordered` have no
/// effect (one thread, in order); a panic in a stage unwinds into the
/// caller, as in any iterator chain.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage(workers = 4)]
/// fn add_n(x: u64, n: u64) -> u64 {
///     x + n
/// }
///
/// #[stage]
/// fn evens(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
///     xs.filter(|x| x % 2 == 0)
/// }
///
/// let got: Vec<u64> = pipe!(serial: 0..10u64 | add_n(1) | evens).collect()?;
/// assert_eq!(got, [2, 4, 6, 8, 10]);
///
/// let pipeline = pipe!(serial: 0..3u64 | add_n(10));
/// for item in pipeline.results() {
///     println!("{}", item?);
/// }
/// # Ok::<(), PipelineError>(())
/// ```
pub struct SerialPipeline<S, C> {
    source: std::cell::Cell<Option<S>>,
    segment: Segment<C>,
}

impl<S, C> std::fmt::Debug for SerialPipeline<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPipeline")
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

impl<S, C> SerialPipeline<S, C>
where
    C: Chain,
    S: IntoIterator<Item = C::In>,
{
    /// The pipeline `source | chain`.
    pub fn new(source: S, chain: C) -> Self {
        SerialPipeline {
            source: std::cell::Cell::new(Some(source)),
            segment: Segment::new(chain),
        }
    }

    /// Runs the pipeline as its results are taken: every item as `Ok`, then,
    /// if a stage failed, one `Err`. A pipeline runs once: a second call
    /// yields nothing.
    pub fn results(&self) -> impl Iterator<Item = Result<C::Out, PipelineError>> + '_ {
        self.source
            .take()
            .into_iter()
            .flat_map(|source| self.segment.iter(source))
    }

    /// Runs the pipeline to the end and collects its items, or returns its
    /// first failure.
    pub fn collect<B: FromIterator<C::Out>>(self) -> Result<B, PipelineError> {
        self.results().collect()
    }

    /// Runs the pipeline to the end and returns its last item.
    pub fn execute(self) -> Result<Option<C::Out>, PipelineError> {
        crate::pipeline::last_item(self.results())
    }

    /// Runs the pipeline to the end, discarding its items.
    pub fn run(self) -> Result<(), PipelineError> {
        self.results().try_for_each(|item| item.map(drop))
    }

    /// How many failing items `filter_errors` dropped.
    pub fn filtered(&self) -> u64 {
        self.segment.filtered()
    }

    /// How many items stages skipped with [`Skip`](crate::Skip).
    pub fn skipped(&self) -> u64 {
        self.segment.skipped()
    }
}
