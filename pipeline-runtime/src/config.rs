//! Per-stage configuration: name, worker count, output queue, error policy.

use std::borrow::Cow;
use std::time::Duration;

/// The key of the whole pipeline in a profile's maps, and the first level
/// of every stage's key (`MainPipeline__stage`): a name no stage may take.
pub const MAIN_PIPELINE_NAME: &str = "MainPipeline";

/// Output queue size of a stage when none is given: items buffered between a
/// stage and the next before the stage waits (backpressure).
///
/// 4096 items make 8 batches of 512 for cheap items: enough that threads
/// rarely wait on each other (on two cores, a quarter of the per-item cost of
/// 1024), while memory stays bounded whatever the input length. Costlier
/// items travel in smaller batches, so fewer of them are queued.
pub const DEFAULT_QSIZE: usize = 4096;

/// Futures in flight of an async stage when its attribute sets no
/// `concurrency`: enough to hide the latency of a network round trip for
/// most services, few enough not to flood one.
pub const DEFAULT_CONCURRENCY: usize = 100;

/// How many items a stage's output queue holds before the stage waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueSize {
    /// At most this many items wait in the queue. Must be at least 1.
    Bounded(usize),
    /// No limit: the stage never waits for the next one. Memory then grows
    /// with the input whenever a later stage is slower; ask for it only when
    /// that is what you want.
    Unbounded,
}

/// The configuration of one stage: what `#[stage(...)]` keys set and what
/// the builder methods of [`StageExt`](crate::StageExt) override.
#[derive(Clone, Debug)]
pub struct StageConfig {
    name: Cow<'static, str>,
    workers: usize,
    queue: QueueSize,
    filter_errors: bool,
    ordered: bool,
    /// Whether the stage's input is partitioned by a key
    /// ([`StageExt::partition_by`](crate::StageExt::partition_by)).
    partitioned: bool,
    /// Why the stage cannot run, when its constructor already knows.
    invalid: Option<Cow<'static, str>>,
    /// Names of the parallel segments the stage is in, outermost first.
    scope: Vec<String>,
    stack_size: Option<usize>,
    /// For an async stage: how many of its futures may be in flight.
    concurrency: Option<usize>,
    /// For an async stage: how long one item's future may take.
    timeout: Option<Duration>,
}

impl StageConfig {
    /// A configuration with the defaults: one worker, a bounded queue of
    /// [`DEFAULT_QSIZE`] items, and failing on the first error.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        StageConfig {
            name: name.into(),
            workers: 1,
            queue: QueueSize::Bounded(DEFAULT_QSIZE),
            filter_errors: false,
            ordered: false,
            partitioned: false,
            invalid: None,
            scope: Vec::new(),
            stack_size: None,
            concurrency: None,
            timeout: None,
        }
    }

    /// The stage's name, used in errors (`add_n-0` is worker 0 of `add_n`)
    /// and thread names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many workers run the stage in parallel.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The stage's output queue size.
    pub fn queue(&self) -> QueueSize {
        self.queue
    }

    /// Whether failing items are dropped and counted instead of failing the
    /// pipeline.
    pub fn filter_errors(&self) -> bool {
        self.filter_errors
    }

    /// Whether the stage keeps its output in its input order.
    pub fn ordered(&self) -> bool {
        self.ordered
    }

    /// Sets whether the stage keeps its output in its input order.
    pub fn set_ordered(&mut self, ordered: bool) -> &mut Self {
        self.ordered = ordered;
        self
    }

    /// Sets the name.
    pub fn set_name(&mut self, name: impl Into<Cow<'static, str>>) -> &mut Self {
        self.name = name.into();
        self
    }

    /// Sets the worker count. Zero is reported as a configuration error when
    /// the pipeline starts.
    pub fn set_workers(&mut self, workers: usize) -> &mut Self {
        self.workers = workers;
        self
    }

    /// Sets the output queue size.
    pub fn set_queue(&mut self, queue: QueueSize) -> &mut Self {
        self.queue = queue;
        self
    }

    /// Sets whether failing items are dropped and counted.
    pub fn set_filter_errors(&mut self, filter: bool) -> &mut Self {
        self.filter_errors = filter;
        self
    }

    /// The stack size of the stage's worker threads, if not the default.
    pub fn stack_size(&self) -> Option<usize> {
        self.stack_size
    }

    /// Sets the stack size of the stage's worker threads, in bytes.
    pub fn set_stack_size(&mut self, bytes: usize) -> &mut Self {
        self.stack_size = Some(bytes);
        self
    }

    /// For an async stage, how many of its futures may be in flight at once;
    /// `None` for a stage whose workers are threads.
    pub fn concurrency(&self) -> Option<usize> {
        self.concurrency
    }

    /// Makes the stage async with at most `n` futures in flight. Zero is
    /// reported as a configuration error when the pipeline starts.
    pub fn set_concurrency(&mut self, n: usize) -> &mut Self {
        self.concurrency = Some(n);
        self
    }

    /// For an async stage, how long one item's future may take before the
    /// item fails; `None` for no limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sets how long one item's future may take before the item fails.
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether the stage's input is partitioned by a key, so that equal
    /// keys reach the same worker: see
    /// [`StageExt::partition_by`](crate::StageExt::partition_by).
    pub fn partitioned(&self) -> bool {
        self.partitioned
    }

    /// Marks the stage's input as partitioned by a key: only
    /// `partition_by` does, since only it has the key.
    pub(crate) fn set_partitioned(&mut self) {
        self.partitioned = true;
    }

    /// Puts the stage inside a segment named `segment` (called outermost first).
    pub(crate) fn enter_scope(&mut self, segment: &str) {
        self.scope.push(segment.to_owned());
    }

    /// The stage's name in profiles, `MainPipeline__segment__name`; in a
    /// branch of a graph, `MainPipeline__branch__segment__name`.
    pub(crate) fn profile_key_in(&self, branch: Option<&str>) -> String {
        let mut key = MAIN_PIPELINE_NAME.to_owned();
        let levels = branch
            .into_iter()
            .chain(self.scope.iter().map(String::as_str));
        for level in levels.chain([self.name()]) {
            key.push_str("__");
            key.push_str(level);
        }
        key
    }

    /// Marks the stage as unable to run: reported when the pipeline starts.
    pub(crate) fn set_invalid(&mut self, why: impl Into<Cow<'static, str>>) {
        self.invalid = Some(why.into());
    }

    /// Checks the values that cannot be checked when they are set.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(why) = &self.invalid {
            return Err(why.to_string());
        }
        if self.name.is_empty() {
            return Err("the stage name is empty".into());
        }
        if self.name.contains('\0') {
            return Err(format!(
                "the stage name {:?} contains a NUL byte, which no thread name may hold",
                self.name
            ));
        }
        if self.name.contains("__") {
            return Err(format!(
                "the stage name {:?} contains `__`, which separates levels in profiler names",
                self.name
            ));
        }
        if self.name == MAIN_PIPELINE_NAME {
            return Err(format!(
                "the stage name {:?} is reserved for the whole pipeline in profiles",
                self.name
            ));
        }
        if self.workers == 0 {
            return Err("workers must be at least 1, got 0".into());
        }
        if self.concurrency == Some(0) {
            return Err("concurrency must be at least 1, got 0".into());
        }
        if self.concurrency.is_some() && self.workers > 1 {
            return Err(format!(
                "an async stage runs all its futures from one worker: set `concurrency` (futures in flight), not `workers` (got {})",
                self.workers
            ));
        }
        if self.queue == QueueSize::Bounded(0) {
            return Err("qsize must be at least 1, got 0 (use `unbounded` for no limit)".into());
        }
        Ok(())
    }
}
