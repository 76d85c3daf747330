//! Built-in stages for closures, where a named function would be overkill.
//!
//! In `pipe!` and `segment!` they are named like stage functions:
//!
//! ```
//! use parapipe::prelude::*;
//! use parapipe::stages;
//!
//! let got: Vec<Vec<u64>> = pipe!(
//!     0..10u64
//!         | stages::map(|x: u64| x * 3).workers(2).ordered(true)
//!         | stages::filter(|x: &u64| x % 2 == 0).ordered(true)
//!         | stages::chunk(2)
//! )
//! .collect()?;
//! assert_eq!(got, [vec![0, 6], vec![12, 18], vec![24]]);
//! # Ok::<(), PipelineError>(())
//! ```
//!
//! [`fold`] with [`Pipeline::reduce`] aggregates in parallel: each worker
//! folds its share, and the consumer merges one partial result per worker.
//!
//! The closures are shared by all of a stage's workers, so they are `Fn`
//! (not `FnMut`), `Send` and `Sync`. Each stage is a struct with a `new`
//! function, usable outside the macros too: `stages::map::new(f)`.
#![allow(
    non_camel_case_types,
    reason = "stage types are named like the functions pipe! calls them as"
)]

use std::convert::Infallible;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::config::StageConfig;
use crate::error::StageError;
use crate::pipeline::Pipeline;
use crate::stage::{Configurable, Stage};
use crate::worker::{Input, Next, Worker};

/// Implements `Configurable`, and `apply_fused` as a static call: none of
/// these stages builds a closure over its input type.
macro_rules! builtin {
    ($name:ident < $($p:ident),* >) => {
        impl<$($p),*> Configurable for $name<$($p),*> {
            fn config(&self) -> &StageConfig {
                &self.config
            }
            fn config_mut(&mut self) -> &mut StageConfig {
                &mut self.config
            }
        }
    };
}

/// `f(item)` for every item.
pub struct map<F, I, O> {
    f: F,
    config: StageConfig,
    _items: PhantomData<fn(I) -> O>,
}

impl<F, I, O> map<F, I, O>
where
    F: Fn(I) -> O + Send + Sync + 'static,
{
    /// The stage, named `map`.
    pub fn new(f: F) -> Self {
        map {
            f,
            config: StageConfig::new("map"),
            _items: PhantomData,
        }
    }
}

builtin!(map<F, I, O>);

impl<F, I, O> std::fmt::Debug for map<F, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("map")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<F, I, O> Stage for map<F, I, O>
where
    F: Fn(I) -> O + Send + Sync + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    type In = I;
    type Out = O;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = I> + 'a,
    ) -> impl Iterator<Item = Result<O, Infallible>> + 'a {
        input.map(&self.f).map(Ok)
    }

    fn run(&self, worker: Worker<'_, I, O>) -> Result<(), StageError> {
        worker.map(&self.f)
    }

    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = I> + 'a,
    ) -> impl Iterator<Item = Result<O, Infallible>> + 'a {
        self.apply(input)
    }
}

/// Generates a stage that runs one `Iterator` adapter with a shared closure.
macro_rules! adapter {
    (
        $(#[$doc:meta])*
        $name:ident, $adapter:ident, fn($f_in:ty) $(-> $f_out:ty)?, $in:ty => $out:ty, [$($p:ident),*] $(where $($bound:tt)*)?
    ) => {
        $(#[$doc])*
        pub struct $name<F, $($p),*> {
            f: F,
            config: StageConfig,
            _items: PhantomData<fn($($p),*)>,
        }

        impl<F, $($p),*> $name<F, $($p),*>
        where
            F: Fn($f_in) $(-> $f_out)? + Send + Sync + 'static,
        {
            #[doc = concat!("The stage, named `", stringify!($name), "`.")]
            pub fn new(f: F) -> Self {
                $name {
                    f,
                    config: StageConfig::new(stringify!($name)),
                    _items: PhantomData,
                }
            }
        }

        builtin!($name<F, $($p),*>);

        impl<F, $($p),*> std::fmt::Debug for $name<F, $($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("config", &self.config)
                    .finish_non_exhaustive()
            }
        }

        impl<F, $($p),*> Stage for $name<F, $($p),*>
        where
            F: Fn($f_in) $(-> $f_out)? + Send + Sync + 'static,
            $($p: Send + 'static,)*
            $($($bound)*)?
        {
            type In = $in;
            type Out = $out;
            type Error = Infallible;

            fn apply<'a>(
                &'a self,
                input: impl Iterator<Item = $in> + 'a,
            ) -> impl Iterator<Item = Result<$out, Infallible>> + 'a {
                input.$adapter(&self.f).map(Ok)
            }

            fn apply_fused<'a>(
                &'a self,
                input: impl Iterator<Item = $in> + 'a,
            ) -> impl Iterator<Item = Result<$out, Infallible>> + 'a {
                self.apply(input)
            }
        }
    };
}

adapter!(
    /// Keeps the items for which `f(&item)` is true.
    filter, filter, fn(&T) -> bool, T => T, [T]
);

adapter!(
    /// Keeps `x` for every item for which `f(item)` is `Some(x)`.
    filter_map, filter_map, fn(T) -> Option<U>, T => U, [T, U]
);

adapter!(
    /// Every item of `f(item)`, for every item.
    flat_map, flat_map, fn(T) -> U, T => U::Item, [T, U]
    where U: IntoIterator, U::Item: Send + 'static
);

adapter!(
    /// Calls `f(&item)` and passes the item on unchanged.
    inspect, inspect, fn(&T), T => T, [T]
);

/// Every item of every item: `Vec<Vec<T>>` becomes `Vec<T>`.
pub struct flatten<T> {
    config: StageConfig,
    _items: PhantomData<fn(T)>,
}

impl<T> flatten<T> {
    /// The stage, named `flatten`.
    pub fn new() -> Self {
        flatten {
            config: StageConfig::new("flatten"),
            _items: PhantomData,
        }
    }
}

impl<T> Default for flatten<T> {
    fn default() -> Self {
        Self::new()
    }
}

builtin!(flatten<T>);

impl<T> std::fmt::Debug for flatten<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("flatten")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T> Stage for flatten<T>
where
    T: IntoIterator + Send + 'static,
    T::Item: Send + 'static,
{
    type In = T;
    type Out = T::Item;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<T::Item, Infallible>> + 'a {
        input.flatten().map(Ok)
    }

    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<T::Item, Infallible>> + 'a {
        self.apply(input)
    }
}

/// Groups items into `Vec`s of `n`; the last may be shorter.
/// Each worker groups its own share of the input. With
/// [`timeout`](chunk::timeout), a partial chunk is emitted once it has waited
/// that long for more items.
pub struct chunk<T> {
    n: usize,
    timeout: Option<Duration>,
    config: StageConfig,
    _items: PhantomData<fn(T)>,
}

impl<T> chunk<T> {
    /// The stage, named `chunk`. `n` must be at least 1 (checked when the
    /// pipeline starts).
    pub fn new(n: usize) -> Self {
        let mut config = StageConfig::new("chunk");
        if n == 0 {
            config.set_invalid("chunk(0): a chunk holds at least 1 item");
        }
        chunk {
            n,
            timeout: None,
            config,
            _items: PhantomData,
        }
    }

    /// Emits a partial chunk once `timeout` has passed since its first item,
    /// so a chunk never waits long on a stream that slowed down. Applies
    /// when the stage has workers of its own; fused in a serial segment it
    /// groups by count only.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

builtin!(chunk<T>);

impl<T> std::fmt::Debug for chunk<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("chunk")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `Vec`s of up to `n` items of an iterator.
struct Chunks<I> {
    input: I,
    n: usize,
}

impl<I: Iterator> Iterator for Chunks<I> {
    type Item = Vec<I::Item>;
    fn next(&mut self) -> Option<Vec<I::Item>> {
        let chunk: Vec<I::Item> = self.input.by_ref().take(self.n).collect();
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// Chunks that are cut short when their items stop coming.
struct TimedChunks<'a, T> {
    input: Input<'a, T>,
    n: usize,
    timeout: Duration,
    ended: bool,
}

impl<T> Iterator for TimedChunks<'_, T> {
    type Item = Vec<T>;
    fn next(&mut self) -> Option<Vec<T>> {
        if self.ended {
            return None;
        }
        // A chunk's first item may take as long as it takes.
        let first = self.input.next()?;
        // `Duration::MAX`: no time limit.
        let deadline = crate::time::deadline_after(self.timeout);
        // Room for the items a batch brings; a chunk of millions (or of
        // `usize::MAX`, "all of them") grows as its items come.
        let mut chunk = Vec::with_capacity(self.n.min(crate::link::MAX_BATCH));
        chunk.push(first);
        while chunk.len() < self.n {
            let next = match deadline {
                Some(deadline) => self
                    .input
                    .next_timeout(deadline.saturating_duration_since(Instant::now())),
                None => match self.input.next() {
                    Some(item) => Next::Item(item),
                    None => Next::End,
                },
            };
            match next {
                Next::Item(item) => chunk.push(item),
                Next::Timeout => break,
                Next::End => {
                    self.ended = true;
                    break;
                }
            }
        }
        Some(chunk)
    }
}

impl<T: Send + 'static> Stage for chunk<T> {
    type In = T;
    type Out = Vec<T>;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<Vec<T>, Infallible>> + 'a {
        Chunks {
            input,
            n: self.n.max(1),
        }
        .map(Ok)
    }

    fn run(&self, worker: Worker<'_, T, Vec<T>>) -> Result<(), StageError> {
        match self.timeout {
            None => worker.try_transform(|input| self.apply(input)),
            Some(timeout) => worker.transform(|input| TimedChunks {
                input,
                n: self.n.max(1),
                timeout,
                ended: false,
            }),
        }
    }
}

/// Folds each worker's share of the items into one value, `step(acc, item)`
/// from `init()`, and emits it when the input ends: one partial result per
/// worker (a worker that got no items emits `init()`). Merge the partials
/// with [`Pipeline::reduce`]:
///
/// ```
/// use parapipe::prelude::*;
/// use parapipe::stages;
///
/// let sum = pipe!(1..=1000u64 | stages::fold(|| 0, |acc: u64, x: u64| acc + x).workers(2))
///     .reduce(|a, b| a + b)?;
/// assert_eq!(sum, Some(500_500));
/// # Ok::<(), PipelineError>(())
/// ```
///
/// This is how fine-grained items stay cheap: the items cross a queue once,
/// into the fold, and only one value per worker crosses to the consumer,
/// where a single counting worker would take every item over another queue.
pub struct fold<A, T, I, F> {
    init: I,
    step: F,
    config: StageConfig,
    _items: PhantomData<fn(T) -> A>,
}

impl<A, T, I, F> fold<A, T, I, F>
where
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(A, T) -> A + Send + Sync + 'static,
{
    /// The stage, named `fold`.
    pub fn new(init: I, step: F) -> Self {
        fold {
            init,
            step,
            config: StageConfig::new("fold"),
            _items: PhantomData,
        }
    }
}

builtin!(fold<A, T, I, F>);

impl<A, T, I, F> std::fmt::Debug for fold<A, T, I, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("fold")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<A, T, I, F> Stage for fold<A, T, I, F>
where
    A: Send + 'static,
    T: Send + 'static,
    I: Fn() -> A + Send + Sync + 'static,
    F: Fn(A, T) -> A + Send + Sync + 'static,
{
    type In = T;
    type Out = A;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<A, Infallible>> + 'a {
        // Lazy: the fold runs when its one value is asked for, on the
        // worker's thread, not when the stage is applied.
        std::iter::once_with(move || Ok(input.fold((self.init)(), &self.step)))
    }

    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<A, Infallible>> + 'a {
        self.apply(input)
    }
}

/// The first `n` items, then stops, and with it every stage before it
/// (runs on one worker: with more, each would take `n`).
pub struct take<T> {
    n: usize,
    config: StageConfig,
    _items: PhantomData<fn(T)>,
}

impl<T> take<T> {
    /// The stage, named `take`.
    pub fn new(n: usize) -> Self {
        take {
            n,
            config: StageConfig::new("take"),
            _items: PhantomData,
        }
    }
}

builtin!(take<T>);

impl<T> std::fmt::Debug for take<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("take")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Stage for take<T> {
    type In = T;
    type Out = T;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<T, Infallible>> + 'a {
        input.take(self.n).map(Ok)
    }

    fn apply_fused<'a>(
        &'a self,
        input: impl Iterator<Item = T> + 'a,
    ) -> impl Iterator<Item = Result<T, Infallible>> + 'a {
        self.apply(input)
    }

    fn runs_on_one_worker(&self) -> bool {
        true
    }

    fn attach(self, pipeline: Pipeline<T>) -> Pipeline<T> {
        match self.config.workers() {
            1 => pipeline.spawn_stage(self),
            n => pipeline.misconfigured(
                self.config.name(),
                format!("take runs on one worker, not {n}: each worker would take its own n items"),
            ),
        }
    }
}
