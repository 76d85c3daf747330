//! The stage traits: what `#[stage]` and `#[map_stage]` implement, and what
//! you implement by hand for a stateful, class-like stage.

use std::borrow::Cow;
use std::hash::Hash;

use crate::config::{QueueSize, StageConfig};
use crate::error::{BoxError, StageError};
// Within the same cycle: a keyed stage is a stage that attaches itself
// with a router in front of its workers.
use crate::partition::{Partitioned, hash_of};
// The one cycle between the runtime's modules, and a genuine one: a
// pipeline appends a stage by asking the stage to attach itself
// (`Stage::attach`), so that a parallel segment can splice its stages in
// one by one; every other module only uses those below it.
use crate::pipeline::Pipeline;
use crate::worker::{Emitter, Worker};

/// Anything with a [`StageConfig`]: stages and producers.
pub trait Configurable {
    /// The configuration.
    fn config(&self) -> &StageConfig;
    /// The configuration, to change it.
    fn config_mut(&mut self) -> &mut StageConfig;
}

/// A pipeline stage: its workers take items of type `In` from the previous
/// stage and emit items of type `Out` to the next.
///
/// `#[stage]` and `#[map_stage]` implement it for you. Implement it by hand
/// for a stage with state of its own: [`apply`](Stage::apply) is called once
/// per worker with an iterator over the worker's share of the input, so
/// per-worker state is just local variables of `apply`:
///
/// ```
/// use parapipe::prelude::*;
/// use std::collections::HashSet;
/// use std::convert::Infallible;
///
/// /// Drops repeated items (per worker: run it with one worker to drop all).
/// struct Dedup(StageConfig);
///
/// impl Configurable for Dedup {
///     fn config(&self) -> &StageConfig { &self.0 }
///     fn config_mut(&mut self) -> &mut StageConfig { &mut self.0 }
/// }
///
/// impl Stage for Dedup {
///     type In = u32;
///     type Out = u32;
///     type Error = Infallible;
///     fn apply<'a>(
///         &'a self,
///         input: impl Iterator<Item = u32> + 'a,
///     ) -> impl Iterator<Item = Result<u32, Infallible>> + 'a {
///         let mut seen = HashSet::new();
///         input.filter(move |x| seen.insert(*x)).map(Ok)
///     }
/// }
///
/// let dedup = Dedup(StageConfig::new("dedup"));
/// let mut out: Vec<u32> = pipe!(vec![3, 1, 3, 2, 1] | { dedup }).collect()?;
/// out.sort();
/// assert_eq!(out, [1, 2, 3]);
/// # Ok::<(), PipelineError>(())
/// ```
pub trait Stage: Configurable + Send + Sync + 'static {
    /// The items the stage takes.
    type In: Send + 'static;
    /// The items the stage emits.
    type Out: Send + 'static;
    /// What an `Err` item of the stage holds; [`Infallible`](std::convert::Infallible)
    /// for a stage that cannot fail.
    type Error: Into<BoxError> + 'static;

    /// One worker's work: turns an iterator over the worker's share of the
    /// input into the stage's output. An `Err` item fails the pipeline (or,
    /// with `filter_errors`, is dropped and counted). Called once per worker,
    /// on the worker's thread; code before and after the loop is per-worker
    /// setup and teardown.
    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = Self::In> + 'a,
    ) -> impl Iterator<Item = Result<Self::Out, Self::Error>> + 'a;

    /// Runs one worker of the stage when it has threads of its own. The
    /// default feeds [`apply`](Stage::apply); override it only for a faster
    /// loop through one of [`Worker`]'s methods.
    fn run(&self, worker: Worker<'_, Self::In, Self::Out>) -> Result<(), StageError> {
        worker.try_transform(|input| self.apply(input))
    }

    /// [`apply`](Stage::apply) as a link of a serial segment's fused chain.
    ///
    /// The default erases the input's type first. Without that, every stage
    /// written with closures in its generic `apply` would double the type of
    /// the chain (a closure's type carries its function's type parameters),
    /// and the compile time and memory with it. `#[map_stage]` overrides it
    /// with a static call, since its closure does not depend on the input type.
    #[doc(hidden)]
    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = Self::In> + 'a,
    ) -> impl Iterator<Item = Result<Self::Out, Self::Error>> + 'a {
        let input: Box<dyn Iterator<Item = Self::In> + 'a> = Box::new(input);
        self.apply(input)
    }

    /// The names (below the stage's own) of the stages fused into it, which
    /// the profiler measures one by one: a serial segment's stages.
    #[doc(hidden)]
    fn fused_stages(&self) -> Vec<String> {
        Vec::new()
    }

    /// Puts the stage inside the segment named `segment`, for its name in
    /// profiles. A segment passes it on to its own stages.
    #[doc(hidden)]
    fn scope_into(&mut self, segment: &str) {
        self.config_mut().enter_scope(segment);
    }

    /// Whether the stage must run on one worker (`take`): a serial segment
    /// holding it must have one worker too.
    #[doc(hidden)]
    fn runs_on_one_worker(&self) -> bool {
        false
    }

    /// Whether appending the stage splices other stages into the pipeline
    /// (a parallel segment) instead of giving it workers of its own: such a
    /// stage has no input of its own to partition.
    #[doc(hidden)]
    fn splices(&self) -> bool {
        false
    }

    /// Why the stage cannot run on workers of its own, beyond what its
    /// configuration's own checks find: the name to report and why. A
    /// serial segment checks the stages it fuses; what attaches the stage
    /// other than through [`attach`](Stage::attach) (a keyed stage's
    /// router) asks it.
    #[doc(hidden)]
    fn unfit(&self) -> Option<(String, String)> {
        None
    }

    /// Appends the stage to a pipeline. The default gives it workers of its
    /// own; a parallel segment appends its stages one by one instead.
    #[doc(hidden)]
    fn attach(self, pipeline: Pipeline<Self::In>) -> Pipeline<Self::Out>
    where
        Self: Sized,
    {
        pipeline.spawn_stage(self)
    }
}

/// A stage with no input: it produces the items a pipeline starts with.
///
/// `#[stage]` on a function without an input iterator implements it. With
/// `workers = N`, each of the N workers calls the function once and their
/// outputs are merged: use it for N independent generators (N pollers, N
/// random samplers). To split a range of work between workers, use
/// [`Emitter::index`] in a hand-written producer.
pub trait Producer: Configurable + Send + Sync + 'static {
    /// The items the producer emits.
    type Out: Send + 'static;

    /// Runs one worker of the producer.
    fn produce(&self, emitter: Emitter<'_, Self::Out>) -> Result<(), StageError>;
}

/// Builder methods for any stage or producer: override at the place of use
/// what its `#[stage(...)]` attribute set.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage(workers = 4)]
/// fn add_n(x: i64, n: i64) -> i64 { x + n }
///
/// let stage = add_n::new(7).workers(2).qsize(5);
/// assert_eq!(stage.config().workers(), 2);
/// assert_eq!(stage.config().queue(), QueueSize::Bounded(5));
/// ```
pub trait StageExt: Configurable + Sized {
    /// Runs the stage on `n` workers (at least 1).
    fn workers(mut self, n: usize) -> Self {
        self.config_mut().set_workers(n);
        self
    }

    /// Bounds the stage's output queue to `n` items (at least 1).
    fn qsize(mut self, n: usize) -> Self {
        self.config_mut().set_queue(QueueSize::Bounded(n));
        self
    }

    /// Removes the bound on the stage's output queue.
    fn unbounded(mut self) -> Self {
        self.config_mut().set_queue(QueueSize::Unbounded);
        self
    }

    /// Drops failing items (counted in [`Results::filtered`](crate::Results::filtered))
    /// instead of failing the pipeline. Panics still fail it.
    fn filter_errors(mut self, filter: bool) -> Self {
        self.config_mut().set_filter_errors(filter);
        self
    }

    /// Keeps the stage's output in its input order, whatever the number of
    /// workers. Each item is released as soon as every item before it is
    /// out (it streams); a worker that gets far ahead of a slow one waits,
    /// so memory stays bounded. An iterator stage's outputs follow the input
    /// item they were produced from (an output made from several items, such
    /// as a chunk, follows the last of them).
    fn ordered(mut self, ordered: bool) -> Self {
        self.config_mut().set_ordered(ordered);
        self
    }

    /// Partitions the stage's input by `key`: every item whose key is equal
    /// goes to the same worker, and each key's items reach it in the order
    /// they arrived at the stage. So an iterator stage can keep state per
    /// key (counts, sessions, running totals) in its workers without
    /// sharing it.
    ///
    /// The worker of a key is its hash ([`DefaultHasher::new`](std::hash::DefaultHasher::new),
    /// whose keys are fixed) modulo the number of workers: the same in every
    /// run and process of a program. One router thread reads the stage's
    /// input and hands each item to its worker's queue. A panic of `key`
    /// fails the pipeline, naming the stage. Builder methods (`workers`,
    /// `qsize`...) still apply after it.
    ///
    /// Across keys, the workers go at their own pace, unless the stage is
    /// also [`ordered`](StageExt::ordered): then its output keeps the order
    /// of its input, across keys, as any ordered stage's does. The router
    /// then numbers each run of consecutive items that go to one worker
    /// (down to one item when consecutive items have different workers),
    /// and the stage puts the runs' output back in order: ordering costs
    /// more per item here than on an unkeyed stage.
    ///
    /// A keyed stage cannot run in a distributed pipeline, nor sit in a
    /// serial segment of more than one worker: each fails the pipeline with
    /// [`Failure::Config`](crate::Failure::Config) when it is consumed (in
    /// `pipe!(serial: ...)` and a one-worker serial segment, every key is on
    /// the one thread anyway). A worker that stops reading early drops the
    /// rest of its keys' items: no other worker may take them.
    ///
    /// ```
    /// use parapipe::prelude::*;
    /// use std::collections::HashMap;
    ///
    /// #[stage]
    /// fn count_words(words: impl Iterator<Item = String>) -> impl Iterator<Item = HashMap<String, u64>> {
    ///     let mut counts = HashMap::new();
    ///     for word in words {
    ///         *counts.entry(word).or_default() += 1;
    ///     }
    ///     std::iter::once(counts)
    /// }
    ///
    /// let words = "a b a c b a".split(' ').map(str::to_owned).collect::<Vec<_>>();
    /// let partials: Vec<HashMap<String, u64>> =
    ///     pipe!(words.clone() | count_words.workers(4).partition_by(|w: &String| w.clone())).collect()?;
    /// // One map per worker, and each word counted by one worker only.
    /// assert_eq!(partials.len(), 4);
    /// let with_a: Vec<_> = partials.iter().filter(|m| m.contains_key("a")).collect();
    /// assert_eq!(with_a.len(), 1);
    /// assert_eq!(with_a[0]["a"], 3);
    ///
    /// // Ordered: each word numbered by its own worker, in the input's order.
    /// #[stage]
    /// fn nth(words: impl Iterator<Item = String>) -> impl Iterator<Item = (String, u64)> {
    ///     let mut seen = HashMap::new();
    ///     words.map(move |word| {
    ///         let n = seen.entry(word.clone()).or_insert(0);
    ///         *n += 1;
    ///         (word, *n)
    ///     })
    /// }
    /// let numbered: Vec<(String, u64)> =
    ///     pipe!(words | nth.workers(4).ordered(true).partition_by(|w: &String| w.clone()))
    ///         .collect()?;
    /// let order: Vec<&str> = numbered.iter().map(|(w, _)| w.as_str()).collect();
    /// assert_eq!(order, ["a", "b", "a", "c", "b", "a"]);
    /// assert_eq!(numbered[5], ("a".to_owned(), 3));
    /// # Ok::<(), PipelineError>(())
    /// ```
    fn partition_by<K, F>(mut self, key: F) -> Partitioned<Self>
    where
        Self: Stage,
        K: Hash,
        F: Fn(&Self::In) -> K + Send + Sync + 'static,
    {
        if self.config().partitioned() {
            self.config_mut()
                .set_invalid("`partition_by` was called twice: give the stage one key");
        }
        self.config_mut().set_partitioned();
        Partitioned::new(self, Box::new(move |item| hash_of(&key(item))))
    }

    /// Gives the stage's worker threads stacks of `bytes` (the standard
    /// library's default is 2 MiB), for deep recursion in the stage. A size
    /// the system cannot give fails the pipeline when it starts, with
    /// [`Failure::Spawn`](crate::Failure::Spawn).
    fn stack_size(mut self, bytes: usize) -> Self {
        self.config_mut().set_stack_size(bytes);
        self
    }

    /// Passes each item's `Err` on as an item instead of failing the
    /// pipeline: the stage's output becomes `Result<Out, Error>`, for a
    /// dead-letter path ([`Pipeline::split_result`]) or any code that wants
    /// to see the errors. A [`Skip`](crate::Skip) returned as the error is
    /// an `Err` item too; panics still fail the pipeline.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn parse(line: &'static str) -> Result<u32, std::num::ParseIntError> {
    ///     line.parse()
    /// }
    ///
    /// let out: Vec<Result<u32, _>> = pipe!(vec!["1", "x"] | parse.keep_errors()).collect()?;
    /// assert_eq!(out[0], Ok(1));
    /// assert!(out[1].is_err());
    /// # Ok::<(), PipelineError>(())
    /// ```
    fn keep_errors(self) -> crate::keep_errors::KeepErrors<Self>
    where
        Self: Stage,
    {
        crate::keep_errors::KeepErrors(self)
    }

    /// Renames the stage (in errors and thread names).
    fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config_mut().set_name(name);
        self
    }
}

impl<S: Configurable> StageExt for S {}

/// An async stage: what `#[map_stage] async fn` generates. Its one worker
/// thread polls its futures inside a tokio runtime's context, at most
/// [`concurrency`](StageConfig::concurrency) in flight.
#[cfg(feature = "async")]
pub trait AsyncStage: Stage {}

/// Builder methods of async stages, beside those of [`StageExt`]:
///
/// ```
/// use parapipe::prelude::*;
/// use std::time::Duration;
///
/// #[map_stage(concurrency = 100)]
/// async fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// let stage = double::new().concurrency(8).timeout(Duration::from_secs(5));
/// assert_eq!(stage.config().concurrency(), Some(8));
/// let out: Vec<u64> = pipe!(0..10u64 | { stage }).collect()?;
/// assert_eq!(out.len(), 10);
/// # Ok::<(), PipelineError>(())
/// ```
#[cfg(feature = "async")]
pub trait AsyncStageExt: AsyncStage + Sized {
    /// Keeps at most `n` of the stage's futures in flight (at least 1).
    fn concurrency(mut self, n: usize) -> Self {
        self.config_mut().set_concurrency(n);
        self
    }

    /// Fails an item whose future takes longer than `timeout` (with
    /// [`TimedOut`](crate::TimedOut), or, with `filter_errors`, drops and
    /// counts it); the future is cancelled.
    fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config_mut().set_timeout(timeout);
        self
    }
}

#[cfg(feature = "async")]
impl<S: AsyncStage> AsyncStageExt for S {}
