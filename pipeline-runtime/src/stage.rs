//! The stage traits: what `#[stage]` and `#[map_stage]` implement, and what
//! you implement by hand for a stateful, class-like stage.

use std::borrow::Cow;

use crate::config::{QueueSize, StageConfig};
use crate::error::StageError;
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
/// for a stage with state of its own. [`run`](Stage::run) is called once per
/// worker, on the worker's thread, so per-worker state is just local
/// variables of `run`:
///
/// ```
/// use parapipe::prelude::*;
/// use std::collections::HashSet;
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
///     fn run(&self, worker: Worker<'_, u32, u32>) -> Result<(), StageError> {
///         let mut seen = HashSet::new();
///         worker.transform(|input| input.filter(move |x| seen.insert(*x)))
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

    /// Runs one worker until its input ends. Use one of the [`Worker`]'s
    /// methods ([`map`](Worker::map), [`transform`](Worker::transform) and
    /// their `try_` forms) and return what it returns.
    fn run(&self, worker: Worker<'_, Self::In, Self::Out>) -> Result<(), StageError>;
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
/// what its `#[stage(...)]` attribute set (parallelpipe's `setup()`).
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

    /// Renames the stage (in errors and thread names).
    fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config_mut().set_name(name);
        self
    }
}

impl<S: Configurable> StageExt for S {}
