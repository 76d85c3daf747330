//! A distributed pipeline in one process: what `pipe!(distributed(..): ..)`
//! builds, and the threads it starts when consumed.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_nats::jetstream;

use super::broker::off_runtime;
use super::records::{SourceRecord, StageInfo, type_info};
use super::{Job, Role, Wire};
use crate::config::StageConfig;
use crate::debug::Debugger;
use crate::error::{Counters, Failure, PipelineError, StageError};
use crate::launch::Launch;
use crate::pipeline::Pipeline;
use crate::profile::{Probe, Profiler};
use crate::stage::Stage;

use super::collector::{Collector, decode};
use super::control::watch;
use super::session::stage_worker;
use super::shared::{Shared, halt_to_stage_error, unix_ms};
use super::start::start;

/// A pipeline run by several processes through NATS JetStream: what
/// `pipe!(distributed(job): source | stages)` builds. Consume it like a
/// [`Pipeline`]; see the [module docs](super).
#[must_use = "a pipeline does nothing until it is consumed"]
pub struct DistPipeline<T> {
    job: Job,
    /// Reads the items of a message: made where `T` was known to be
    /// [`Wire`], so that later stages need not require it again (one error
    /// per stage whose items cannot cross, not two).
    decode: Decode<T>,
    feed: Feed,
    /// The source's item type, for the run record.
    source_type: String,
    stages: Vec<StageSpec>,
    invalid: Option<PipelineError>,
    profiler: Option<Profiler>,
    debugger: Option<Debugger>,
    items: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for DistPipeline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistPipeline")
            .field("job", &self.job)
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

pub(super) type Decode<T> = fn(&jetstream::Message) -> Result<Vec<T>, StageError>;

/// The driver's source: publishes every item, returns the message count.
pub(super) type Feed = Box<dyn FnOnce(&Shared) -> Result<u64, StageError> + Send>;

/// A stage, its item types erased.
pub(super) struct StageSpec {
    pub(super) config: StageConfig,
    /// Its name and item types, for the run record.
    pub(super) info: StageInfo,
    pub(super) work: Work,
}

/// Runs one worker of the stage, which is stage `k` (from 1), measured by
/// `probe` in a profiled or debugged run: `work(shared, k, counters, probe)`.
pub(super) type Work = Arc<
    dyn Fn(&Shared, usize, &Counters, Option<&mut Probe>) -> Result<(), StageError> + Send + Sync,
>;

impl<T: Wire> DistPipeline<T> {
    /// A distributed pipeline whose driver reads `items`.
    pub fn source<I>(job: &Job, items: I) -> Self
    where
        I: IntoIterator<Item = T> + Send + 'static,
    {
        let invalid = job
            .validate()
            .err()
            .map(|why| PipelineError::new("job", None, Failure::Config(why)));
        DistPipeline {
            job: job.clone(),
            decode: decode::<T>,
            feed: Box::new(move |shared: &Shared| feed(items.into_iter(), shared)),
            source_type: type_info::<T>(),
            stages: Vec::new(),
            invalid,
            profiler: None,
            debugger: None,
            items: PhantomData,
        }
    }
}

impl<T: Send + 'static> DistPipeline<T> {
    /// Appends a stage. Its input type must be this pipeline's item type,
    /// and its output must cross the broker too.
    pub fn then<S>(mut self, stage: S) -> DistPipeline<S::Out>
    where
        S: Stage<In = T>,
        S::Out: Wire,
    {
        let config = stage.config().clone();
        if self.invalid.is_none() {
            self.invalid = config
                .validate()
                .and_then(|()| match config.partitioned() {
                    // A stage's workers in every process pull from one
                    // stream of the broker: nothing routes by key there.
                    true => Err("a keyed stage (`partition_by`) cannot run distributed: its workers in every process pull from one shared stream, so equal keys would not reach one worker; run it in a pipeline of one process".to_owned()),
                    false => Ok(()),
                })
                .err()
                .map(|why| PipelineError::new(config.name(), None, Failure::Config(why)));
        }
        let stage = Arc::new(stage);
        let decode_input = self.decode;
        let info = StageInfo {
            name: config.name().to_owned(),
            input: type_info::<S::In>(),
            output: type_info::<S::Out>(),
        };
        self.stages.push(StageSpec {
            config,
            info,
            work: Arc::new(move |shared, k, counters, probe| {
                stage_worker(&*stage, decode_input, shared, k, counters, probe)
            }),
        });
        DistPipeline {
            job: self.job,
            decode: decode::<S::Out>,
            feed: self.feed,
            source_type: self.source_type,
            stages: self.stages,
            invalid: self.invalid,
            profiler: self.profiler,
            debugger: self.debugger,
            items: PhantomData,
        }
    }

    /// Profiles this process's part of the job and records the job's
    /// status as it goes: see [`Pipeline::profile`] and the profiler's
    /// [distributed runs](crate::profile#distributed-runs).
    pub fn profile(self) -> Self {
        self.profile_with(Profiler::new())
    }

    /// [`profile`](DistPipeline::profile) with options.
    pub fn profile_with(mut self, profiler: Profiler) -> Self {
        self.profiler = Some(profiler);
        self
    }

    /// Reports this process's part live: see [`Pipeline::debug`]. The rows
    /// are this process's stage workers and, in the driver, `results`.
    pub fn debug(mut self, debugger: Debugger) -> Self {
        self.debugger = Some(debugger);
        self
    }

    /// Starts the job's driver and returns its results as a
    /// [`futures_core::Stream`], for async code (feature `async`): see
    /// [`Pipeline::stream`](crate::Pipeline::stream). Async stages cannot
    /// run in a distributed job (a configuration error), so no runtime is
    /// chosen here.
    #[cfg(feature = "async")]
    pub fn stream(self) -> crate::ResultStream<T> {
        crate::ResultStream::of(self.results())
    }

    /// [`collect`](DistPipeline::collect) for async code (feature `async`).
    #[cfg(feature = "async")]
    pub async fn collect_async<C: Default + Extend<T>>(self) -> Result<C, PipelineError> {
        self.stream().collect_all().await
    }

    /// [`execute`](DistPipeline::execute) for async code (feature `async`).
    #[cfg(feature = "async")]
    pub async fn execute_async(self) -> Result<Option<T>, PipelineError> {
        self.stream().last().await
    }

    /// [`run`](DistPipeline::run) for async code (feature `async`).
    #[cfg(feature = "async")]
    pub async fn run_async(self) -> Result<(), PipelineError> {
        self.stream().drain().await
    }

    /// Starts this process's part of the job; see [`Pipeline::results`].
    /// The driver's results are the pipeline's items; a worker's end, with
    /// no items, when the job ends.
    pub fn results(self) -> crate::Results<T> {
        self.into_pipeline().results()
    }

    /// Runs this process's part to the end and collects the items it
    /// receives (none in a worker process).
    pub fn collect<C: FromIterator<T>>(self) -> Result<C, PipelineError> {
        self.results().collect()
    }

    /// Runs this process's part to the end and returns its last item.
    pub fn execute(self) -> Result<Option<T>, PipelineError> {
        crate::results::last_item(self.results())
    }

    /// Runs this process's part to the end, discarding the items.
    pub fn run(self) -> Result<(), PipelineError> {
        self.results().try_for_each(|item| item.map(drop))
    }

    /// The local pipeline that runs this process's part: the results are
    /// read by a producer named `results`, and every other thread starts
    /// beside it.
    pub(super) fn into_pipeline(self) -> Pipeline<T> {
        let shared: Arc<OnceLock<Arc<Shared>>> = Arc::default();
        let results = Collector::<T> {
            config: StageConfig::new("results"),
            shared: shared.clone(),
            decode: self.decode,
        };
        let mut pipeline = Pipeline::from_producer(results);
        if let Some(profiler) = self.profiler {
            pipeline = pipeline.profile_with(profiler);
        }
        if let Some(debugger) = self.debugger {
            pipeline = pipeline.debug(debugger);
        }
        if let Some(error) = self.invalid {
            return pipeline.failing(error);
        }
        let DistPipeline {
            job,
            feed,
            source_type,
            stages,
            ..
        } = self;
        pipeline.with_thread(move |launch| {
            let ctl = launch.control();
            ctl.set_process(&job.process);
            let stats = launch.run_stats();
            // Connecting blocks on the client's runtime, which must not
            // happen on a thread of the caller's own async runtime.
            let started = off_runtime(|| start(job, &source_type, &stages, ctl.clone(), stats));
            match started {
                Ok(started) => {
                    let _ = shared.set(started.clone());
                    spawn_all(launch, started, feed, stages);
                }
                Err(error) => ctl.fail(error),
            }
        })
    }
}

/// Starts the control thread, the source (driver) and this process's
/// stage workers.
pub(super) fn spawn_all(
    launch: &mut Launch,
    shared: Arc<Shared>,
    feed: Feed,
    stages: Vec<StageSpec>,
) {
    if shared.late {
        // Its run is over: nothing to do, nothing to watch.
        return;
    }
    let sh = shared.clone();
    launch.spawn("control", None, move || watch(&sh));
    if shared.job.role == Role::Driver {
        let sh = shared.clone();
        launch.spawn("source", None, move || {
            let total = feed(&sh)?;
            let _ = sh.source_total.set(total);
            let record = SourceRecord {
                run: sh.run,
                at: unix_ms(),
                messages: total,
            };
            sh.record("source", &record).map_err(halt_to_stage_error)
        });
    }
    for (k0, spec) in stages.into_iter().enumerate() {
        if !shared.runs_stage[k0] {
            continue;
        }
        let counters = Arc::new(Counters::default());
        let stats = launch.stage_stats(&spec.config, counters.clone(), None);
        for index in 0..spec.config.workers() {
            let (sh, work, counters) = (shared.clone(), spec.work.clone(), counters.clone());
            let stats = stats.clone();
            launch.spawn(spec.config.name(), Some(index), move || {
                // Made on the worker's thread, whose CPU time it reads.
                let mut probe = stats.map(Probe::new);
                work(&sh, k0 + 1, &counters, probe.as_mut())
            });
        }
    }
}

/// The driver's source: batches of items, one message each.
pub(super) fn feed<T: Wire>(
    mut items: impl Iterator<Item = T>,
    sh: &Shared,
) -> Result<u64, StageError> {
    let size = sh.job.batch;
    let mut batch = Vec::with_capacity(size);
    let mut seq = 0;
    loop {
        batch.clear();
        batch.extend(items.by_ref().take(size));
        if batch.is_empty() {
            return Ok(seq);
        }
        if let Some(published) = &sh.published {
            crate::control::lock(published).insert(seq, Instant::now());
        }
        sh.publish(0, seq, &batch).map_err(halt_to_stage_error)?;
        seq += 1;
        if batch.len() < size {
            return Ok(seq);
        }
    }
}
