//! The building blocks of a [`Segment`](crate::Segment)'s chain of stages,
//! which `segment!` puts together: to build a segment in code,
//! `Segment::new(Then(Leaf(a), Leaf(b)))`.
//!
//! (Inside: fusing a chain into one iterator, each stage's errors taken out
//! as they come, the first failure kept for the end.)

use std::cell::Cell;
use std::rc::Rc;

use crate::config::StageConfig;
pub use crate::error::Tagged;

use crate::error::{BoxError, Counters};
use crate::pipeline::Pipeline;
#[doc(hidden)]
pub use crate::profile::Clocks;
use crate::stage::{Configurable, Stage};

/// A chain of stages, as a segment holds them. Implemented by [`Leaf`] (one
/// stage), [`Then`] (two chains in sequence) and [`Segment`](crate::Segment) (a nested
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

    /// The name of the first of the chain's stages (nested segments' too)
    /// for which `pred` holds, given its configuration and whether it must
    /// run on one worker (`take`): what a serial segment checks of the
    /// stages it fuses.
    #[doc(hidden)]
    fn find_stage(&self, pred: &dyn Fn(&StageConfig, bool) -> bool) -> Option<String>;

    /// The first of the chain's stages (or nested segments) whose
    /// configuration is invalid, and why: `(name, why)`. Fused stages are
    /// checked as stages with threads of their own are.
    #[doc(hidden)]
    fn first_invalid(&self) -> Option<(String, String)>;
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
    pub(crate) filter_all: bool,
}

impl std::fmt::Debug for FailSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailSlot")
            .field("failed", &self.failed.get())
            .finish_non_exhaustive()
    }
}

impl FailSlot {
    pub(crate) fn new(filter_all: bool) -> Rc<Self> {
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

    fn find_stage(&self, pred: &dyn Fn(&StageConfig, bool) -> bool) -> Option<String> {
        let config = self.0.config();
        pred(config, self.0.runs_on_one_worker()).then(|| config.name().to_owned())
    }

    fn first_invalid(&self) -> Option<(String, String)> {
        let config = self.0.config();
        config
            .validate()
            .err()
            .map(|why| (config.name().to_owned(), why))
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

    fn find_stage(&self, pred: &dyn Fn(&StageConfig, bool) -> bool) -> Option<String> {
        self.0.find_stage(pred).or_else(|| self.1.find_stage(pred))
    }

    fn first_invalid(&self) -> Option<(String, String)> {
        self.0.first_invalid().or_else(|| self.1.first_invalid())
    }
}

/// The items of a fused chain, with its first failure as the last item.
pub(crate) struct Fused<I> {
    pub(crate) inner: I,
    pub(crate) fail: Rc<FailSlot>,
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
