//! Sub-pipelines: a sequence of stages without a source, usable as a stage.
//!
//! A segment runs either *parallel* (the default: each of its stages gets
//! workers of its own, exactly as if written in the enclosing pipeline) or
//! *serial*: its stages are fused into one iterator chain, with no queue
//! between them, and that chain runs on the segment's own workers (N copies
//! of the chain for `workers = N`). A segment nested in a serial segment is
//! fused into it.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use crate::chain::{Chain, FailSlot, Fused};
use crate::config::StageConfig;
use crate::error::{Counters, Failure, PipelineError, StageError, Tagged};
use crate::pipeline::Pipeline;
use crate::profile::Clocks;
use crate::stage::{Configurable, Stage};
use crate::worker::Worker;

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
        // A stage that cannot run fails the run at once, as it would with
        // threads of its own.
        let invalid = self
            .chain
            .first_invalid()
            .map(|(stage, why)| Err(PipelineError::new(&stage, None, Failure::Config(why))));
        let fused = invalid.is_none().then(|| {
            self.fused(input.into_iter(), &self.counters).map(|item| {
                item.map_err(|Tagged { stage, error }| {
                    PipelineError::new(&stage, None, Failure::Error(error))
                })
            })
        });
        invalid.into_iter().chain(fused.into_iter().flatten())
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

impl<C: Chain> Segment<C> {
    /// Why this serial segment cannot run as configured, if it cannot:
    /// the name to report (the segment's, or a fused stage's), and why.
    fn serial_problem(&self) -> Option<(String, String)> {
        let config = &self.config;
        let name = || config.name().to_owned();
        let copies = config.workers();
        if let (true, Some(stage)) = (copies > 1, self.chain.find_stage(&|_, one| one)) {
            let why = format!(
                "`{stage}` runs on one worker, and this serial segment runs {copies} copies of its chain (one per worker): each would apply it on its own; give the segment one worker, or move `{stage}` out of it",
            );
            return Some((name(), why));
        }
        // Each copy of the chain takes a share of every key: a keyed
        // stage in it could not keep a key's items together.
        let keyed = |c: &StageConfig, _| c.partitioned();
        if let (true, Some(stage)) = (copies > 1, self.chain.find_stage(&keyed)) {
            let why = format!(
                "`{stage}` is keyed (`partition_by`), and this serial segment runs {copies} copies of its chain (one per worker), each taking a share of every key: give the segment one worker, move `{stage}` out of it, or partition the segment itself (`.serial().partition_by(key)`)",
            );
            return Some((name(), why));
        }
        // An ordered segment places each output after the input item
        // its copy took last; an async stage takes items ahead of its
        // outputs (its futures in flight), so they would land late.
        let reads_ahead = |c: &StageConfig, _| c.concurrency().is_some();
        if let (true, true, Some(stage)) = (
            copies > 1,
            config.ordered(),
            self.chain.find_stage(&reads_ahead),
        ) {
            let why = format!(
                "the async stage `{stage}` takes items ahead of its outputs, so this ordered serial segment cannot keep its {copies} copies' outputs in order: give the segment one worker (the stage's `concurrency` runs its futures at once), make it unordered, or move `{stage}` out of it",
            );
            return Some((name(), why));
        }
        self.chain.first_invalid()
    }

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

    fn splices(&self) -> bool {
        !self.serial
    }

    fn unfit(&self) -> Option<(String, String)> {
        match self.serial {
            true => self.serial_problem(),
            false => None,
        }
    }

    fn attach(self, pipeline: Pipeline<C::In>) -> Pipeline<C::Out> {
        let config = &self.config;
        // The segment's own name, and, fused or not, every stage's
        // configuration, are checked as a stage's are.
        if let Err(why) = config.validate() {
            return pipeline.misconfigured(config.name(), why);
        }
        if self.serial {
            if let Some((stage, why)) = self.serial_problem() {
                return pipeline.misconfigured(&stage, why);
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

    fn find_stage(&self, pred: &dyn Fn(&StageConfig, bool) -> bool) -> Option<String> {
        self.chain.find_stage(pred)
    }

    fn first_invalid(&self) -> Option<(String, String)> {
        let name = self.config.name();
        match self.config.validate() {
            Err(why) => Some((name.to_owned(), why)),
            Ok(()) => self.chain.first_invalid(),
        }
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
