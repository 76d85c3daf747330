//! Typed, parallel data pipelines: write each stage as an ordinary function,
//! wire stages with `pipe!`, and let each stage run on its own workers.
//!
//! ```
//! use parapipe::prelude::*;
//!
//! /// One line in, many words out, on two workers.
//! #[stage(workers = 2)]
//! fn words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
//!     lines.flat_map(|l| l.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
//! }
//!
//! /// One item in, one item out, with a bound argument.
//! #[map_stage(workers = 4)]
//! fn longer_than(word: String, n: usize) -> Option<String> {
//!     (word.len() > n).then_some(word)
//! }
//!
//! let lines = vec!["The quick brown fox".to_string(), "jumps over the lazy dog".to_string()];
//! let mut long: Vec<String> = pipe!(lines | words | longer_than(4))
//!     .collect::<Vec<_>>()?
//!     .into_iter()
//!     .flatten()
//!     .collect();
//! long.sort();
//! assert_eq!(long, ["brown", "jumps", "quick"]);
//!
//! // The functions are still ordinary functions.
//! assert_eq!(longer_than("hello".into(), 3), Some("hello".to_string()));
//! # Ok::<(), PipelineError>(())
//! ```
//!
//! # Stages
//!
//! - [`#[stage]`](stage) turns a function from an iterator of inputs to an
//!   iterator of outputs into a stage. Each worker
//!   calls it once, with an iterator over its share of the input, so code
//!   before and after the loop is per-worker setup and teardown. A function
//!   without an input iterator is a *producer*: it starts a pipeline.
//! - [`#[map_stage]`](map_stage) turns a per-item function into a stage
//!   (one item in, one out).
//! - Parameters after the input are *bound arguments*, given where the stage
//!   is used: `add_n(7)`.
//! - Either attribute generates a struct of the same name as the function
//!   (`add_n::new(7)` builds it); the function itself is unchanged.
//! - Keys: `workers = N` (default 1), `qsize = N` (the stage's output queue,
//!   in items; default [`DEFAULT_QSIZE`]), `unbounded` (no queue limit),
//!   `filter_errors` (drop failing items and count them), `ordered` (keep
//!   the output in input order, whatever the number of workers),
//!   `name = "..."`.
//!   Where the stage is used, [`StageExt`] overrides them:
//!   `add_n(7).workers(2).qsize(5)`.
//! - [`partition_by(key)`](StageExt::partition_by) sends every item with an
//!   equal key to the same worker, each key's items in their order of
//!   arrival, for state per key: `count.workers(4).partition_by(|w: &String| w.clone())`.
//! - For state of your own, implement [`Stage`] by hand (its one method,
//!   [`apply`](Stage::apply), turns an iterator into an iterator of
//!   `Result`s) and put the value in braces in `pipe!`:
//!   `pipe!(src | { my_stage })`.
//! - [`segment!`] groups stages into one stage: parallel (each keeps its
//!   workers) or [`serial`](Segment::serial) (fused into one iterator chain
//!   per worker, no queue between them), nestable; [`Segment::iter`] runs one
//!   fused in the calling thread, at the cost of a hand-written iterator chain,
//!   and `pipe!(serial: source | a | b)` does the same for a whole pipeline.
//!
//! # Errors and panics
//!
//! A stage fails by returning `Err` (a map stage returning `Result<O, E>`,
//! an iterator stage yielding `Result<O, E>` items, for any
//! `E: std::error::Error + Send + Sync + 'static`) or by panicking. The first
//! failure stops the whole pipeline: the source stops, queued items are
//! dropped, every thread is joined. The consumer receives the items that
//! reached it before, then one [`PipelineError`] naming the task
//! (`add_one-0` is worker 0 of `add_one`; the source is `source`), holding
//! the original error (downcast it with [`PipelineError::downcast_ref`]) or
//! the panic message, and counting the failures that followed. With
//! `filter_errors`, `Err` items are dropped and counted
//! ([`Results::filtered`]) instead; panics always fail the pipeline.
//!
//! # Running
//!
//! A [`Pipeline`] does nothing until consumed:
//! [`results`](Pipeline::results) (an iterator of
//! `Result<T, PipelineError>` in arrival order), [`collect`](Pipeline::collect),
//! [`execute`](Pipeline::execute) (the last item) or [`run`](Pipeline::run)
//! (discard the items). Dropping the results early stops the pipeline and
//! joins its threads; nothing hangs, whatever the pipeline was doing.
//!
//! Items move between threads in batches sized to the work they carry, so
//! per-item overhead stays in the tens of nanoseconds, while slow items go one
//! at a time and a trickling channel source passes each item on at once.
//! Queues are bounded (in items), so a fast source never runs more than the
//! queue sizes ahead of a slow consumer: memory stays flat whatever the input
//! length.
//!
//! # Profiling and debugging
//!
//! [`Pipeline::profile`] measures a run: per-stage latency (mean, median,
//! p99) and throughput, keyed `MainPipeline`, `MainPipeline__stage` and
//! `MainPipeline__segment__stage`, returned by
//! [`Results::profile`] and stored, run after run, in a SQLite database
//! ([`profile`] defines each measure and the schema, and [`profile::load`]
//! reads a run back). [`Pipeline::debug`] reports on a run while it runs
//! counts, rates, per-stage CPU time, queue
//! depths and memory growth, to pluggable [`debug::Reporter`]s. Both are
//! off by default and cost nothing then.
//!
//! # Async stages
//!
//! With the `async` feature, `#[map_stage(concurrency = N)]` takes an
//! `async fn`: one future per item, polled inside a tokio runtime, at most `N` in
//! flight, beside thread stages in the same `pipe!`. `timeout_ms = T` (or
//! [`AsyncStageExt::timeout`](prelude)) fails an item whose future takes
//! longer. Blocking consumption runs the futures on a runtime of the
//! pipeline's own; `stream()`, `collect_async()`, `execute_async()` and
//! `run_async()` consume a pipeline from async code without blocking, and
//! run the futures on the caller's runtime. See the README's "Async stages".
//!
//! # Distributed runs
//!
//! With the `nats` feature, `pipe!(distributed(&job): source | a | b)` runs
//! the same stages across processes and machines, with NATS JetStream
//! carrying the (serde-serialised) items between them: see the `nats`
//! module (built with the feature).
//!
//! # Sources
//!
//! The left end of `pipe!` is any [`IntoSource`]: an `IntoIterator` of
//! `Send + 'static` items (a range, a `Vec`, ...), pulled on a thread of its
//! own; a `flume` or `std::sync::mpsc` receiver, which streams (each item is
//! passed on as it arrives, and the pipeline ends when every sender is
//! dropped); another [`Pipeline`]; or a producer stage built with `::new`.
//!
//! A plain iterator source is read in batches: one that blocks between
//! bursts of items (say, lines from a socket) may hold the end of a burst
//! until its next item arrives. Wrap such a source in
//! [`Pipeline::streaming`], or feed it through a channel.
//!
//! [`Stream`] covers input that arrives over time: a channel with an idle
//! timeout ([`Stream::idle_timeout`]), a closure that
//! pushes into a bucket on its own thread ([`Stream::feed`]), and a
//! real-time source ticking at a fixed period ([`Stream::every`]).
//! [`Pipeline::latest`] runs a pipeline in the background and
//! keeps only its newest result, never holding the producer back.
//!
//! # The API at a glance
//!
//! | where | what |
//! | --- | --- |
//! | [`prelude`] | what writing and running a pipeline needs: the four macros, [`Pipeline`], [`Results`], [`PipelineError`], [`IntoSource`], [`Stage`], [`Producer`], [`StageExt`], [`Configurable`], [`StageConfig`], [`QueueSize`], [`Segment`], [`Skip`], [`StageError`] |
//! | the crate root | the same, and [`Failure`], [`BoxError`], [`DEFAULT_QSIZE`], [`SerialPipeline`], [`Partitioned`], [`Stream`], [`Bucket`], [`Stopped`], [`Latest`] |
//! | [`stages`] | built-in stages for closures: `map`, `filter`, `filter_map`, `flat_map`, `inspect`, `flatten`, `chunk`, `take` |
//! | [`handwritten`] | for stages written by hand: a worker's [`Worker`](handwritten::Worker), [`Input`](handwritten::Input), [`Next`](handwritten::Next), a producer's [`Emitter`](handwritten::Emitter) |
//! | [`chain`] | a segment's building blocks, to build one without `segment!`: [`Leaf`](chain::Leaf), [`Then`](chain::Then), [`Chain`](chain::Chain), [`Tagged`](chain::Tagged) |
//! | [`profile`] | the profiler: [`Profiler`](profile::Profiler), [`Profile`](profile::Profile), reading stored runs |
//! | [`debug`] | the live debugger: [`Debugger`](debug::Debugger), [`Reporter`](debug::Reporter)s |
//! | `nats` (feature `nats`) | distributed runs: `Job`, `DistPipeline`, `Job::status`, `Job::cleanup` |
//! | the crate root, feature `async` | `AsyncStageExt` (also in the prelude: `.concurrency(n)`, `.timeout(d)`), `AsyncStage`, `ResultStream`, `TimedOut`, `DEFAULT_CONCURRENCY`; `Pipeline::{stream, collect_async, execute_async, run_async, on_runtime}`, `Results::into_stream` |

#![deny(missing_docs, missing_debug_implementations)]
#![warn(unreachable_pub)]

/// Turns a function from an iterator of inputs to an iterator of outputs
/// into a pipeline stage.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[stage(workers = 4, qsize = 30)]
/// fn fetch(urls: impl Iterator<Item = String>) -> impl Iterator<Item = usize> {
///     // Per-worker setup goes here, before the loop.
///     urls.map(|u| u.len())
/// }
///
/// let urls = vec!["http://a.example".to_string(), "http://bb.example".to_string()];
/// let total: usize = pipe!(urls | fetch).collect::<Vec<_>>()?.into_iter().sum();
/// assert_eq!(total, 33);
/// # Ok::<(), PipelineError>(())
/// ```
///
/// The first parameter is the input, `impl Iterator<Item = T>`; further
/// parameters are bound in `pipe!`. The return type is
/// `impl Iterator<Item = U>` or any `IntoIterator`. Items of type
/// `Result<U, E>` make the stage fallible: an `Err` fails the pipeline (or,
/// with `filter_errors`, is dropped and counted).
///
/// A function with no parameters, or marked `#[stage(producer)]`, is a
/// producer: it has no input and starts a pipeline, as in
/// `pipe!(numbers::new() | ...)`. With `workers = N`, each of its N workers
/// calls it once and their outputs are merged, so N workers produce N times
/// the items (N independent generators). Writing `pipe!(numbers() | ...)`
/// instead calls the function and reads its iterator as a plain source.
///
/// Keys: `workers = N` (at least 1; default 1), `qsize = N` (items queued
/// after the stage, at least 1; default [`DEFAULT_QSIZE`]), `unbounded`
/// (no queue limit), `filter_errors` (or `filter_errors = true`),
/// `name = "..."` (default: the function's name), `ordered` (output in
/// input order with any number of workers; it streams, and memory stays
/// bounded), `producer`. Integer keys
/// also take a constant (`workers = N_WORKERS`), checked when the pipeline
/// starts.
pub use parapipe_macros::stage;

/// Turns a per-item function into a pipeline stage.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage(workers = 4)]
/// fn add_n(x: i64, n: i64) -> i64 {
///     x + n
/// }
///
/// let mut v: Vec<i64> = pipe!(0..100 | add_n(7)).collect()?;
/// v.sort();
/// assert_eq!(v, (7..107).collect::<Vec<_>>());
/// assert_eq!(add_n(1, 2), 3);
/// # Ok::<(), PipelineError>(())
/// ```
///
/// The first parameter is the item; further parameters are bound in
/// `pipe!`, stored in the stage and cloned for each call (a `&T` parameter
/// stores `T::Owned` and lends it). Returning `Result<U, E>` (or an alias such
/// as `io::Result<U>`) makes the stage fallible: an `Err` fails the pipeline,
/// or with `filter_errors` drops the item. To pass `Result`s on as items,
/// wrap them in a type of your own.
///
/// Keys: as for [`macro@stage`], except `producer`.
///
/// With the `async` feature it also takes an `async fn`, whose futures run
/// on tokio, `concurrency = N` of them in flight at most (default
/// `DEFAULT_CONCURRENCY`, 100), each failing its item with `TimedOut`
/// after `timeout_ms = T` milliseconds if given. An async stage runs from
/// one worker thread, so it takes `concurrency` instead of `workers`:
///
/// ```
/// # #[cfg(feature = "async")] {
/// use parapipe::prelude::*;
///
/// #[map_stage(concurrency = 64, timeout_ms = 5_000)]
/// async fn lookup(key: u32, offset: u32) -> Result<u32, std::io::Error> {
///     // An IO call would be awaited here.
///     Ok(key + offset)
/// }
///
/// let mut v: Vec<u32> = pipe!(0..100u32 | lookup(1)).collect()?;
/// v.sort();
/// assert_eq!(v, (1..101).collect::<Vec<_>>());
/// # }
/// # Ok::<(), parapipe::PipelineError>(())
/// ```
pub use parapipe_macros::map_stage;

/// Wires a source and stages into a [`Pipeline`], checked at compile time.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage]
/// fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
///     s.trim().parse()
/// }
///
/// #[map_stage(workers = 4)]
/// fn add_n(x: i64, n: i64) -> i64 {
///     x + n
/// }
///
/// let lines = vec!["1".to_string(), " 2".to_string(), "x".to_string()];
/// let mut ok = 0;
/// let mut failed = None;
/// for r in pipe!(lines | parse | add_n(1).workers(2)).results() {
///     match r {
///         Ok(_) => ok += 1,
///         Err(e) => failed = Some(e),
///     }
/// }
/// let e = failed.unwrap();
/// assert_eq!(e.stage(), "parse");
/// assert!(e.downcast_ref::<std::num::ParseIntError>().is_some());
/// assert!(ok <= 2);
/// ```
///
/// `pipe!(source | stage | stage ...)`:
/// - the source is any expression implementing [`IntoSource`] (put `|`
///   inside parentheses if the source expression needs one);
/// - a stage is the name of a `#[stage]` or `#[map_stage]` function
///   (`add_n`, `stages::add_n`), with its bound arguments if it has any
///   (`add_n(7)`); `pipe!` builds it with `add_n::new(7)`, so a hand-written
///   stage type with a `new` function can be named the same way;
/// - or any stage value in braces: `{ my_stage }`;
/// - either may be followed by [`StageExt`] methods: `add_n(7).workers(2)`.
///
/// A stage whose input type is not the previous stage's output type is a
/// compile error, reported on that stage.
///
/// `pipe!(serial: source | stage | ...)` runs the whole pipeline in the
/// calling thread instead, fused into one iterator chain with no thread and
/// no queue: see [`SerialPipeline`].
pub use parapipe_macros::pipe;

/// A sequence of stages without a source, usable as one stage: in `pipe!`,
/// in other segments, to any depth.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage]
/// fn add_n(x: u64, n: u64) -> u64 {
///     x + n
/// }
///
/// #[stage]
/// fn evens(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
///     xs.filter(|x| x % 2 == 0)
/// }
///
/// // Parallel (the default): each stage gets workers of its own.
/// let inner = segment!(add_n(1) | evens);
/// // Serial: fused into one iterator chain, run by two workers.
/// let fused = segment!(add_n(10) | evens).serial().workers(2).name("Child");
///
/// let mut got: Vec<u64> = pipe!(0..10u64 | { inner } | { fused } | add_n(100)).collect()?;
/// got.sort();
/// assert_eq!(got, [112, 114, 116, 118, 120]);
/// # Ok::<(), PipelineError>(())
/// ```
///
/// `segment!(stage | stage | ...)` takes the same stages as [`pipe!`], without
/// a source; a nested `segment!(...)` is written in place. The result is a
/// [`Segment`], which is a [`Stage`]:
/// - [`parallel`](Segment::parallel) (the default) appends each of its stages
///   with workers of its own, exactly as if written in the enclosing pipeline;
/// - [`serial`](Segment::serial) fuses its stages into one iterator chain
///   (no queue, no thread between them), run
///   by the segment's own workers (`.workers(N)` runs N copies of the chain).
///   A segment nested in a serial one is fused into it. An `Err` of a stage
///   inside is reported with that stage's name; a panic inside is reported
///   with the segment's name.
///
/// Type mismatches between its stages are compile errors on the stage, as
/// in `pipe!`.
pub use parapipe_macros::segment;

pub use parapipe_runtime::{
    BoxError, Bucket, Configurable, DEFAULT_BRANCH_BUFFER, DEFAULT_CONCURRENCY, DEFAULT_QSIZE,
    Failure, IntoSource, KeepErrors, Latest, NoSuchBranch, Partitioned, Pipeline, PipelineError,
    Producer, QueueSize, Results, Segment, SerialPipeline, Skip, Stage, StageConfig, StageError,
    StageExt, Stopped, Stream, Threads, Uneven, Unread,
};
pub use parapipe_runtime::{chain, debug, handwritten, profile, stages};

#[cfg(feature = "nats")]
pub use parapipe_runtime::nats;
#[cfg(feature = "async")]
pub use parapipe_runtime::{AsyncStage, AsyncStageExt, ResultStream, TimedOut};

#[doc(hidden)]
pub use parapipe_runtime::__private;

/// What writing and running a pipeline needs: `use parapipe::prelude::*;`.
pub mod prelude {
    pub use crate::{map_stage, pipe, segment, stage};
    #[cfg(feature = "async")]
    pub use parapipe_runtime::AsyncStageExt;
    pub use parapipe_runtime::{
        Configurable, IntoSource, Pipeline, PipelineError, Producer, QueueSize, Results, Segment,
        Skip, Stage, StageConfig, StageError, StageExt,
    };
}
