//! A distributed run in one process: the driver's source and results, the
//! stage workers, and the control thread that keeps the process in step
//! with the job.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::broker::{Broker, EdgeSpec, Halt, off_runtime, redact};
use super::records::{
    EndRecord, Failed, Outcome, Record, RunRecord, SourceRecord, StageCounts, StageInfo,
    StatsRecord, type_info,
};
use super::{
    BrokerError, Job, JobError, JobState, JobStatus, RemoteError, Role, StageStatus, Wire,
};
use crate::config::{DEFAULT_QSIZE, QueueSize, StageConfig};
use crate::control::Control;
use crate::debug::Debugger;
use crate::error::{Counters, Failure, PipelineError, StageError, Stop};
use crate::launch::Launch;
use crate::pipeline::Pipeline;
use crate::profile::{JobSample, Probe, ProcessCounts, Profiler, RunStats};
use crate::stage::{Configurable, Producer, Stage};
use crate::worker::Emitter;

/// How long an idle pull waits for a message before checking the job.
const POLL: Duration = Duration::from_millis(100);
/// How often the control thread reads the job's state.
const WATCH: Duration = Duration::from_millis(50);
/// How often a process publishes its counts.
const STATS: Duration = Duration::from_millis(500);
/// Messages pulled at once: few, so that slow items spread over every
/// process instead of piling up in the first worker's hands.
const FETCH: usize = 4;
/// The header with a message's source sequence number.
const SEQ: &str = "Parapipe-Seq";

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

type Decode<T> = fn(&jetstream::Message) -> Result<Vec<T>, StageError>;

/// The driver's source: publishes every item, returns the message count.
type Feed = Box<dyn FnOnce(&Shared) -> Result<u64, StageError> + Send>;

/// A stage, its item types erased.
struct StageSpec {
    config: StageConfig,
    /// Its name and item types, for the run record.
    info: StageInfo,
    work: Work,
}

/// Runs one worker of the stage, which is stage `k` (from 1), measured by
/// `probe` in a profiled or debugged run: `work(shared, k, counters, probe)`.
type Work = Arc<
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
    fn into_pipeline(self) -> Pipeline<T> {
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

/// What the threads of one process share during a run.
pub(crate) struct Shared {
    broker: Broker,
    job: Job,
    run: u64,
    control: EdgeSpec,
    edges: Vec<EdgeSpec>,
    stage_names: Vec<String>,
    /// Which stages this process runs.
    runs_stage: Vec<bool>,
    ordered: bool,
    /// The driver's process name.
    driver: String,
    ctl: Arc<Control>,
    /// The number of source messages, once the source has ended.
    source_total: OnceLock<u64>,
    /// The job ended without failing (done, or cancelled by the driver).
    over: AtomicBool,
    /// (Worker) this process came after its run had ended: it does nothing.
    late: bool,
    /// Per edge: whether this process has checked that its items read back
    /// as they were written (see [`Shared::publish`]).
    checked: Vec<AtomicBool>,
    /// (Driver) every result is in.
    completed: AtomicBool,
    taken: Vec<AtomicU64>,
    emitted: Vec<AtomicU64>,
    /// In a profiled or debugged run, what this process measures.
    stats: Option<Arc<RunStats>>,
    /// (Driver, profiled) when each source message in flight was published,
    /// by sequence number: the start of its items' end-to-end latency.
    published: Option<Mutex<HashMap<u64, Instant>>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.ctl.is_cancelled() || self.over.load(Relaxed)
    }

    fn subject(&self, what: &str) -> String {
        format!("{}.{what}", self.control.subject)
    }

    /// Publishes the message of `seq` (a source message's number) on edge `edge`.
    fn publish<O: Wire>(&self, edge: usize, seq: u64, items: &[O]) -> Result<(), Halt> {
        let payload = postcard::to_stdvec(items)
            .map_err(|e| Halt::Broker(BrokerError::new("could not serialise items", e)))?;
        // The first message of each edge is read back here: a type that
        // serde can write but the wire format cannot read fails at once,
        // named, rather than in whichever process reads it.
        if !self.checked[edge].swap(true, Relaxed)
            && let Err(e) = postcard::from_bytes::<Vec<O>>(&payload)
        {
            return Err(Halt::Broker(BrokerError::new(
                format!(
                    "items of type {} cannot cross the broker: they do not read back from the wire format (postcard), which does not support #[serde(untagged)], #[serde(flatten)], skip_serializing_if, or any type that needs deserialize_any; give the type a plain serde shape",
                    std::any::type_name::<O>()
                ),
                e,
            )));
        }
        // Headers (message id, sequence) take a little of the server's limit.
        let room = self.broker.max_payload().saturating_sub(512);
        if payload.len() > room {
            return Err(Halt::Broker(BrokerError::msg(format!(
                "a message of {} bytes ({} items of type {}) is over the server's limit of {} bytes (max_payload): lower Job::batch (now {}), or raise max_payload in nats-server's configuration",
                payload.len(),
                items.len(),
                std::any::type_name::<O>(),
                self.broker.max_payload(),
                self.job.batch
            ))));
        }
        let id = format!("{}.{edge}.{seq}", self.run);
        let stopping = || self.ctl.is_cancelled();
        self.broker.publish(
            &self.edges[edge].subject,
            &id,
            &[(SEQ, seq.to_string())],
            payload.into(),
            &stopping,
        )
    }

    /// Publishes a control record of this run.
    fn record(&self, what: &str, record: &impl Record) -> Result<(), Halt> {
        let id = format!("{}.{what}.{}", self.run, rand_u64());
        let payload = serde_json::to_vec(record)
            .map_err(|e| Halt::Broker(BrokerError::new("could not write a control record", e)))?;
        self.broker
            .publish(&self.subject(what), &id, &[], payload.into(), &|| false)
    }

    /// A control record of this run, if there is one yet.
    fn read<R: Record>(&self, what: &str) -> Result<Option<R>, Halt> {
        let record = read_record::<R>(&self.broker, &self.control, what, &|| false)?;
        Ok(record.filter(|r| r.run() == self.run))
    }

    /// Whether edge `edge` has received every message it will get and
    /// delivered them all: its consumer's input has ended.
    fn input_complete(&self, edge: usize) -> Result<bool, Halt> {
        let Some(&total) = self.source_total.get() else {
            return Ok(false);
        };
        let stopping = || self.stopping();
        let (state, consumer) = self.broker.edge_state(&self.edges[edge], &stopping)?;
        Ok(state.last_sequence >= total && consumer.num_pending == 0)
    }
}

impl Drop for Shared {
    /// Once every thread of the run is done with them, the driver deletes
    /// the edge streams (empty, if it completed); the control stream stays,
    /// for `Job::status` and for workers that come late. Earlier, the
    /// process's own workers could still be waiting on them. A driver that
    /// dies leaves them to the next run or to [`Job::cleanup`].
    fn drop(&mut self) {
        if self.job.role == Role::Driver && self.run != 0 {
            let names = self.edges.iter().map(|e| e.stream.as_str());
            // On the caller's async runtime, if the pipeline ended there.
            off_runtime(|| self.broker.delete_streams(names));
        }
    }
}

/// The job's control stream: what every process, and `status`, reads.
fn control_spec(job: &str) -> EdgeSpec {
    EdgeSpec {
        stream: format!("PARAPIPE_{job}_CTL"),
        subject: format!("parapipe.{job}.ctl"),
        consumer: String::new(),
        max_messages: -1,
    }
}

/// The prefix of the names of every run's edge streams of a job.
fn edges_prefix(job: &str) -> String {
    format!("PARAPIPE_{job}_R")
}

/// Edge `k` of run `run` of a job with `stages` stages: from the source (0)
/// or stage `k`, to stage `k + 1` or the driver's results. Named for the
/// run, so that processes of an earlier run can never take a later run's
/// messages.
fn edge_spec(job: &str, run: u64, k: usize, stages: usize, max_messages: i64) -> EdgeSpec {
    EdgeSpec {
        stream: format!("{}{run:016x}_E{k}", edges_prefix(job)),
        subject: format!("parapipe.{job}.r{run:016x}.e{k}"),
        consumer: if k == stages {
            "results".to_owned()
        } else {
            format!("stage{}", k + 1)
        },
        max_messages,
    }
}

/// The newest control record `what` (`run`, `end`, `stats.<process>`...) of
/// any run.
fn read_record<R: Record>(
    broker: &Broker,
    control: &EdgeSpec,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<R>, Halt> {
    Ok(read_record_seq(broker, control, what, cancelled)?.map(|(record, _)| record))
}

/// [`read_record`], with the record's sequence number in the stream.
fn read_record_seq<R: Record>(
    broker: &Broker,
    control: &EdgeSpec,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<(R, u64)>, Halt> {
    let raw = broker.last(
        &control.stream,
        &format!("{}.{what}", control.subject),
        cancelled,
    )?;
    let Some((bytes, seq)) = raw else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(record) => Ok(Some((record, seq))),
        Err(e) => Err(Halt::Broker(BrokerError::new(
            format!(
                "the job's control record {what:?} is malformed (written by another version of parapipe, or by another program?)"
            ),
            e,
        ))),
    }
}

/// The names (`stats.<process>`) of the processes' count records, for
/// [`read_record`].
fn stats_records(
    broker: &Broker,
    control: &EdgeSpec,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<String>, Halt> {
    let prefix = format!("{}.", control.subject);
    let subjects = broker.subjects(&control.stream, &format!("{prefix}stats.>"), cancelled)?;
    Ok(subjects
        .iter()
        .filter_map(|subject| subject.strip_prefix(&prefix).map(str::to_owned))
        .collect())
}

fn halt_to_stage_error(halt: Halt) -> StageError {
    match halt {
        Halt::Cancelled => StageError(Stop::Cancelled),
        Halt::Broker(e) => StageError::failed(e),
    }
}

/// The wall-clock time, in milliseconds since 1970.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A worker that arrives this long after the newest run ended was started
/// for that run and came too late: it ends at once. After longer, it waits
/// for the next run.
const LATE: Duration = Duration::from_secs(10);

/// A fresh number for a run or a record id.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() >> 1
}

/// Connects, then starts a run of the job (driver) or joins one (worker).
fn start(
    job: Job,
    source_type: &str,
    stages: &[StageSpec],
    ctl: Arc<Control>,
    stats: Option<Arc<RunStats>>,
) -> Result<Arc<Shared>, PipelineError> {
    let stage_names: Vec<String> = stages.iter().map(|s| s.config.name().to_owned()).collect();
    let runs_stage = match &job.stages {
        None => vec![true; stages.len()],
        Some(chosen) => {
            if let Some(unknown) = chosen.iter().find(|c| !stage_names.contains(c)) {
                let why = format!(
                    "this process is told to run stage {unknown:?}, which the pipeline does not have (its stages: {})",
                    stage_names.join(", ")
                );
                return Err(PipelineError::new("job", None, Failure::Config(why)));
            }
            stage_names.iter().map(|n| chosen.contains(n)).collect()
        }
    };
    let broker = Broker::connect(&job).map_err(broker_error)?;
    let control = control_spec(&job.name);
    let ordered = stages.iter().any(|s| s.config.ordered());
    let mut shared = Shared {
        broker,
        run: 0,
        control,
        edges: Vec::new(),
        stage_names,
        runs_stage,
        ordered,
        driver: job.process.clone(),
        ctl,
        source_total: OnceLock::new(),
        over: AtomicBool::new(false),
        late: false,
        checked: (0..=stages.len()).map(|_| AtomicBool::new(false)).collect(),
        completed: AtomicBool::new(false),
        taken: stages.iter().map(|_| AtomicU64::new(0)).collect(),
        emitted: stages.iter().map(|_| AtomicU64::new(0)).collect(),
        published: stats
            .as_ref()
            .filter(|_| job.role == Role::Driver)
            .map(|_| Mutex::default()),
        stats,
        job,
    };
    let infos: Vec<StageInfo> = stages.iter().map(|s| s.info.clone()).collect();
    match shared.job.role {
        Role::Driver => claim(&mut shared, source_type, infos, stages)?,
        Role::Worker => {
            join(&mut shared, source_type, &infos)?;
            shared.edges = edges_of(&shared.job, shared.run, stages);
        }
    }
    Ok(Arc::new(shared))
}

fn broker_error(e: BrokerError) -> PipelineError {
    PipelineError::new("broker", None, Failure::Error(e.into()))
}

fn halt_error(h: Halt) -> PipelineError {
    match h {
        Halt::Broker(e) => broker_error(e),
        Halt::Cancelled => PipelineError::new("broker", None, Failure::Config("cancelled".into())),
    }
}

/// The edges of run `run`: their stream limits from the stages' queues.
fn edges_of(job: &Job, run: u64, stages: &[StageSpec]) -> Vec<EdgeSpec> {
    let limit = |queue: QueueSize| match queue {
        QueueSize::Bounded(items) => items.div_ceil(job.batch).max(2) as i64,
        QueueSize::Unbounded => -1,
    };
    (0..=stages.len())
        .map(|k| {
            let queue = match k {
                0 => QueueSize::Bounded(DEFAULT_QSIZE),
                k => stages[k - 1].config.queue(),
            };
            edge_spec(&job.name, run, k, stages.len(), limit(queue))
        })
        .collect()
}

/// Where a job's live driver answers (see [`Broker::answer`]).
fn driver_subject(job: &str) -> String {
    format!("parapipe.{job}.driver")
}

/// A driver claimed the job this recently, and has not ended: it counts as
/// live even before it answers (it answers right after claiming).
const CLAIMING: Duration = Duration::from_secs(2);

/// The process name of the job's live driver, if it has one: one that
/// answers, or one that has just claimed the job.
fn live_driver(
    broker: &Broker,
    control: &EdgeSpec,
    job: &str,
    newest: Option<&RunRecord>,
) -> Result<Option<String>, Halt> {
    if let Some(answer) = broker.ask(&driver_subject(job))? {
        return Ok(Some(String::from_utf8_lossy(&answer).into_owned()));
    }
    let Some(run) = newest else {
        return Ok(None);
    };
    let ended = read_record::<EndRecord>(broker, control, "end", &|| false)?
        .is_some_and(|end| end.run == run.run);
    let recent = unix_ms().saturating_sub(run.at) <= CLAIMING.as_millis() as u64;
    Ok((!ended && recent).then(|| run.driver.clone()))
}

/// The driver's start: refuses if the job has a live driver, else creates
/// a run of its own (its edges named for it), claims the job for it, and
/// deletes what earlier runs left.
fn claim(
    shared: &mut Shared,
    source_type: &str,
    stages: Vec<StageInfo>,
    specs: &[StageSpec],
) -> Result<(), PipelineError> {
    let broker = &shared.broker;
    let name = shared.job.name.clone();
    broker.ensure_control(&shared.control).map_err(halt_error)?;
    let newest = read_record_seq::<RunRecord>(broker, &shared.control, "run", &|| false)
        .map_err(halt_error)?;
    let refuse = |driver: String| {
        let message = format!(
            "job {name:?} already has a running driver, process {driver:?}: wait for its run to end, or give this job another name"
        );
        Err(job_error(message))
    };
    if let Some(driver) = live_driver(
        broker,
        &shared.control,
        &name,
        newest.as_ref().map(|n| &n.0),
    )
    .map_err(halt_error)?
    {
        return refuse(driver);
    }
    let run = rand_u64();
    let edges = edges_of(&shared.job, run, specs);
    broker
        .create_edges(&edges, shared.job.ack_wait, shared.job.duplicate_window)
        .map_err(halt_error)?;
    let record = RunRecord {
        run,
        at: unix_ms(),
        source: source_type.to_owned(),
        stages,
        ordered: shared.ordered,
        driver: shared.job.process.clone(),
    };
    let payload = serde_json::to_vec(&record)
        .map_err(|e| broker_error(BrokerError::new("could not write the run record", e)))?;
    // Only if the newest run is still the one read above: of two drivers
    // starting at once, one wins here.
    let expected = newest.map_or(0, |(_, seq)| seq);
    let subject = format!("{}.run", shared.control.subject);
    let won = broker
        .publish_if_last(&subject, payload.into(), expected)
        .map_err(halt_error)?;
    if !won {
        broker.delete_streams(edges.iter().map(|e| e.stream.as_str()));
        let other = read_record::<RunRecord>(broker, &shared.control, "run", &|| false)
            .ok()
            .flatten()
            .map_or_else(|| "another process".to_owned(), |r| r.driver);
        return refuse(other);
    }
    broker
        .answer(
            &driver_subject(&name),
            shared.job.process.clone().into_bytes().into(),
        )
        .map_err(halt_error)?;
    // Earlier runs' edges: a failed run's, a killed driver's. Their
    // processes see this run replace theirs, and stop.
    if let Ok(streams) = broker.streams_named(&edges_prefix(&name)) {
        let leftovers = streams
            .iter()
            .filter(|s| is_edge_of(s, &name) && !edges.iter().any(|e| &e.stream == *s));
        broker.delete_streams(leftovers.map(String::as_str));
    }
    shared.run = run;
    shared.edges = edges;
    Ok(())
}

/// Whether `stream` is an edge stream of some run of job `job`.
fn is_edge_of(stream: &str, job: &str) -> bool {
    let Some(rest) = stream.strip_prefix(&edges_prefix(job)) else {
        return false;
    };
    let Some((run, edge)) = rest.split_once("_E") else {
        return false;
    };
    run.len() == 16
        && run.bytes().all(|b| b.is_ascii_hexdigit())
        && !edge.is_empty()
        && edge.bytes().all(|b| b.is_ascii_digit())
}

/// Refuses a process whose pipeline is not the run's: other stages, or
/// other item types under the same names.
fn check_pipeline(
    run: &RunRecord,
    job: &Job,
    source_type: &str,
    ours: &[StageInfo],
) -> Result<(), PipelineError> {
    let config = |why: String| PipelineError::new("job", None, Failure::Config(why));
    let names = |stages: &[StageInfo]| {
        stages
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if run.stages.len() != ours.len() || run.stages.iter().zip(ours).any(|(a, b)| a.name != b.name)
    {
        return Err(config(format!(
            "job {:?} runs the stages [{}], but this process's pipeline has [{}]: every process must run the same pipeline",
            job.name,
            names(&run.stages),
            names(ours)
        )));
    }
    if run.source != source_type {
        return Err(config(format!(
            "job {:?}'s source has items of type {}, but this process's pipeline has {}: every process must run the same build",
            job.name, run.source, source_type
        )));
    }
    if let Some((theirs, mine)) = run.stages.iter().zip(ours).find(|(a, b)| a != b) {
        return Err(config(format!(
            "stage {:?} of job {:?} takes {} and makes {}, but in this process's build it takes {} and makes {}: every process must run the same build",
            mine.name, job.name, theirs.input, theirs.output, mine.input, mine.output
        )));
    }
    Ok(())
}

/// Waits for a live run of the job, and checks it runs this pipeline. A
/// process that arrives just after the run it was started for has ended
/// is late: it does nothing, and its results end at once without error.
fn join(shared: &mut Shared, source_type: &str, ours: &[StageInfo]) -> Result<(), PipelineError> {
    let deadline = Instant::now() + shared.job.join_timeout;
    let arrived = unix_ms();
    let config = |why: String| PipelineError::new("job", None, Failure::Config(why));
    let once = &|| true;
    loop {
        if shared.ctl.is_cancelled() {
            return Err(config("cancelled while joining".into()));
        }
        // The stream may not exist yet: each read is one attempt, and
        // failures just mean "not yet". Asking a stream that does not exist
        // yet for its messages, over and over, made nats-server 2.9 stop
        // answering the driver's request to create it (10 s and more); the
        // list of names is safe to poll.
        let broker = &shared.broker;
        let exists = broker.exists(&shared.control.stream);
        let newest = exists
            .then(|| read_record::<RunRecord>(broker, &shared.control, "run", once))
            .and_then(Result::ok)
            .flatten();
        if let Some(run) = newest {
            let end = read_record::<EndRecord>(broker, &shared.control, "end", once)
                .ok()
                .flatten()
                .filter(|end| end.run == run.run);
            match end {
                Some(end) if end.at + LATE.as_millis() as u64 >= arrived => {
                    // Too late for the run this process was started for: it
                    // is over, and this process's part ends with it.
                    shared.run = run.run;
                    shared.late = true;
                    shared.over.store(true, Relaxed);
                    return Ok(());
                }
                // Ended long before: wait for the next run.
                Some(_) => {}
                None => {
                    // A run whose driver died before it ended is not joined.
                    let live = live_driver(broker, &shared.control, &shared.job.name, Some(&run))
                        .ok()
                        .flatten()
                        .is_some();
                    if live {
                        check_pipeline(&run, &shared.job, source_type, ours)?;
                        shared.run = run.run;
                        shared.ordered = run.ordered;
                        shared.driver = run.driver;
                        return Ok(());
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(config(format!(
                "no running job {:?} to join at {} within {:?}: start its driver",
                shared.job.name,
                redact(&shared.job.url),
                shared.job.join_timeout
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Starts the control thread, the source (driver) and this process's
/// stage workers.
fn spawn_all(launch: &mut Launch, shared: Arc<Shared>, feed: Feed, stages: Vec<StageSpec>) {
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
fn feed<T: Wire>(mut items: impl Iterator<Item = T>, sh: &Shared) -> Result<u64, StageError> {
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

/// The control thread: ends this process's part when the job ends, passes
/// a failure of this process on to the others (and theirs to this one),
/// and publishes this process's counts.
fn watch(sh: &Shared) -> Result<(), StageError> {
    let mut last_stats = Instant::now();
    let mut peers = Peers::new();
    let result = loop {
        if sh.ctl.is_cancelled() {
            break report_local_end(sh);
        }
        match sh.read::<EndRecord>("end") {
            Ok(Some(end)) => {
                if let Outcome::Failed(failed) = &end.outcome
                    && failed.process != sh.job.process
                {
                    sh.ctl.fail(remote_failure(failed));
                }
                sh.over.store(true, Relaxed);
                break Ok(());
            }
            Ok(None) => {}
            Err(halt) => break Err(halt),
        }
        if sh.source_total.get().is_none() {
            match sh.read::<SourceRecord>("source") {
                Ok(Some(source)) => {
                    let _ = sh.source_total.set(source.messages);
                }
                Ok(None) => {}
                Err(halt) => break Err(halt),
            }
        }
        if last_stats.elapsed() >= STATS {
            last_stats = Instant::now();
            if let Err(halt) = superseded(sh)
                .and_then(|()| publish_stats(sh, false))
                .and_then(|()| peers.check(sh))
            {
                break Err(halt);
            }
            sample_job(sh, false);
        }
        std::thread::sleep(WATCH);
    };
    // The final counts, best effort: the job is over either way.
    let _ = publish_stats(sh, true);
    sample_job(sh, true);
    result.map_err(halt_to_stage_error)
}

/// How long a profiled process's last job sample waits for the other
/// processes' final counts.
const FINAL_COUNTS: Duration = Duration::from_secs(2);

/// In a profiled or debugged run, records the job's status as the broker
/// tells it now (best effort: a status that cannot be read is skipped).
/// The `last` one waits, up to [`FINAL_COUNTS`], for the final counts of
/// every process heard from lately, which publish them on seeing the end.
fn sample_job(sh: &Shared, last: bool) {
    let Some(stats) = &sh.stats else {
        return;
    };
    let once = &|| true;
    let deadline = Instant::now() + FINAL_COUNTS;
    let status = loop {
        let Ok((status, settled)) = read_status(&sh.broker, &sh.control, &sh.job.name, once) else {
            return;
        };
        if !last || settled || Instant::now() >= deadline {
            break status;
        }
        std::thread::sleep(WATCH);
    };
    stats.job_status(JobSample {
        t: 0.0,
        job: sh.job.name.clone(),
        state: match &status.state {
            JobState::Running => "running".to_owned(),
            JobState::Done => "done".to_owned(),
            JobState::Failed(why) => format!("failed: {why}"),
            JobState::Cancelled => "cancelled".to_owned(),
        },
        stages: status.stages,
    });
}

/// Fails this process's part if another run has replaced its run as the
/// job's newest: its driver died, and a new driver took the job over.
fn superseded(sh: &Shared) -> Result<(), Halt> {
    let newest = read_record::<RunRecord>(&sh.broker, &sh.control, "run", &|| false)?;
    if let Some(newest) = newest.filter(|r| r.run != sh.run) {
        let message = format!(
            "the job's run this process was part of is abandoned: process {:?} started a new run of the job",
            newest.driver
        );
        sh.ctl.fail(job_error(message));
    }
    Ok(())
}

/// How long a process may go unheard (its counts are published every
/// half second) before the job counts it as gone.
fn silence(job: &Job) -> Duration {
    job.broker_timeout.max(Duration::from_secs(10))
}

/// What the control thread knows of the other processes: a job must not
/// wait forever for a driver that died, or for a stage no process runs.
struct Peers {
    joined: Instant,
    /// (Driver) since when some stage has had no live process running it.
    uncovered_since: Option<Instant>,
}

impl Peers {
    fn new() -> Self {
        Peers {
            joined: Instant::now(),
            uncovered_since: None,
        }
    }

    /// Fails the job if its driver is gone (seen from a worker), or if a
    /// stage has had no live process for the join timeout (seen from the
    /// driver).
    fn check(&mut self, sh: &Shared) -> Result<(), Halt> {
        let now = unix_ms();
        let silence = silence(&sh.job);
        let fresh = |stats: &StatsRecord| heard_within(stats, now, silence);
        match sh.job.role {
            Role::Worker => {
                let driver = sh.read::<StatsRecord>(&format!("stats.{}", sh.driver))?;
                // Its first counts may not be out yet: until then, silence
                // is counted from when this process joined.
                let silent = match &driver {
                    Some(stats) => !fresh(stats),
                    None => self.joined.elapsed() > silence,
                };
                if silent {
                    let message = format!(
                        "the driver, process {:?}, has not been heard from for {silence:?}: the job is abandoned",
                        sh.driver
                    );
                    sh.ctl.fail(job_error(message));
                }
            }
            Role::Driver => {
                let live: Vec<StatsRecord> = stats_records(&sh.broker, &sh.control, &|| true)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|what| sh.read::<StatsRecord>(what).ok().flatten())
                    .filter(|stats| fresh(stats))
                    .collect();
                let uncovered = (0..sh.stage_names.len()).find(|&k| {
                    !live
                        .iter()
                        .any(|stats| stats.stages.get(k).is_some_and(|s| s.runs))
                });
                match uncovered {
                    None => self.uncovered_since = None,
                    Some(k) => {
                        let since = *self.uncovered_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= sh.job.join_timeout {
                            let message = format!(
                                "no live process runs stage {:?} (for {:?}): start a worker that runs it",
                                sh.stage_names[k], sh.job.join_timeout
                            );
                            sh.ctl.fail(job_error(message));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether a process's counts record was published at most `window`
/// before `now` (Unix ms).
fn heard_within(stats: &StatsRecord, now: u64, window: Duration) -> bool {
    now.saturating_sub(stats.at) <= window.as_millis() as u64
}

fn job_error(message: String) -> PipelineError {
    PipelineError::new("job", None, Failure::Error(Box::new(JobError { message })))
}

/// Tells the other processes why this one stopped: its own failure, or,
/// for the driver, that the results were dropped.
fn report_local_end(sh: &Shared) -> Result<(), Halt> {
    let end = sh.ctl.peek_failure(|failure| match failure {
        Some(error) if error.process().is_none_or(|p| p == sh.job.process) => {
            let message = match error.failure() {
                Failure::Panic(msg) => msg.clone(),
                Failure::Error(e) => e.to_string(),
                Failure::Spawn(e) => format!("could not start a thread: {e}"),
                Failure::Config(msg) => format!("misconfigured: {msg}"),
            };
            Some(Outcome::Failed(Failed {
                stage: error.stage().to_owned(),
                worker: error.worker(),
                process: sh.job.process.clone(),
                panic: error.is_panic(),
                message,
                display: error.to_string(),
            }))
        }
        // Another process's failure: it has reported it.
        Some(_) => None,
        None if sh.job.role == Role::Driver && !sh.over.load(Relaxed) => Some(Outcome::Cancelled),
        None => None,
    });
    match end {
        Some(outcome) => sh.record(
            "end",
            &EndRecord {
                run: sh.run,
                at: unix_ms(),
                outcome,
            },
        ),
        None => Ok(()),
    }
}

fn remote_failure(failed: &Failed) -> PipelineError {
    let message = failed.message.clone();
    let failure = if failed.panic {
        Failure::Panic(message)
    } else {
        Failure::Error(Box::new(RemoteError { message }))
    };
    let mut error = PipelineError::new(&failed.stage, failed.worker, failure);
    error.set_process(&failed.process);
    error
}

/// Publishes this process's counts; `last` once its part has ended.
fn publish_stats(sh: &Shared, last: bool) -> Result<(), Halt> {
    let stages = (0..sh.stage_names.len())
        .map(|k| StageCounts {
            name: sh.stage_names[k].clone(),
            runs: sh.runs_stage[k],
            taken: sh.taken[k].load(Relaxed),
            emitted: sh.emitted[k].load(Relaxed),
        })
        .collect();
    let what = format!("stats.{}", sh.job.process);
    let record = StatsRecord {
        run: sh.run,
        at: unix_ms(),
        process: sh.job.process.clone(),
        stages,
        last,
    };
    sh.record(&what, &record)
}

/// The `results` producer: the driver pulls the last edge; a worker
/// process waits for the job to end.
struct Collector<T> {
    config: StageConfig,
    shared: Arc<OnceLock<Arc<Shared>>>,
    decode: Decode<T>,
}

impl<T> Configurable for Collector<T> {
    fn config(&self) -> &StageConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.config
    }
}

impl<T: Send + 'static> Producer for Collector<T> {
    type Out = T;

    fn produce(&self, mut emitter: Emitter<'_, T>) -> Result<(), StageError> {
        // Set before any thread starts, unless starting failed.
        let Some(sh) = self.shared.get() else {
            return Err(StageError(Stop::Cancelled));
        };
        if sh.job.role == Role::Worker {
            while !sh.stopping() {
                std::thread::sleep(WATCH);
            }
            return if sh.over.load(Relaxed) {
                Ok(())
            } else {
                Err(StageError(Stop::Cancelled))
            };
        }
        let edge = sh.edges.len() - 1;
        let stopping = || sh.stopping();
        let consumer = sh
            .broker
            .consumer(&sh.edges[edge], &stopping)
            .map_err(halt_to_stage_error)?;
        let mut seen = HashSet::new();
        let mut waiting: BTreeMap<u64, Vec<T>> = BTreeMap::new();
        let mut next_seq = 0;
        // Passes a source message's results on; in a profiled run, stamped
        // with when the source published it, for the end-to-end latency
        // (before every item: a batch sent midway takes the stamp along).
        let mut pass_on = |seq: u64, items: Vec<T>| {
            let born = sh
                .published
                .as_ref()
                .and_then(|published| crate::control::lock(published).remove(&seq));
            items.into_iter().try_for_each(|item| {
                if let Some(born) = born {
                    emitter.born_at(born);
                }
                emitter.emit(item)
            })
        };
        loop {
            if let Some(&total) = sh.source_total.get()
                && seen.len() as u64 == total
            {
                break;
            }
            if sh.stopping() {
                // Failed or cancelled: the end is someone else's to report.
                return Err(StageError(Stop::Cancelled));
            }
            let messages = sh
                .broker
                .fetch(&consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            for message in messages {
                let seq = seq_of(&message)?;
                if seen.insert(seq) {
                    let items = (self.decode)(&message)?;
                    if sh.ordered {
                        waiting.insert(seq, items);
                        while let Some(items) = waiting.remove(&next_seq) {
                            pass_on(next_seq, items)?;
                            next_seq += 1;
                        }
                    } else {
                        pass_on(seq, items)?;
                    }
                }
                sh.broker.ack(&message)?;
            }
        }
        sh.over.store(true, Relaxed);
        sh.completed.store(true, Relaxed);
        let end = EndRecord {
            run: sh.run,
            at: unix_ms(),
            outcome: Outcome::Done,
        };
        sh.record("end", &end).map_err(halt_to_stage_error)
    }
}

fn seq_of(message: &jetstream::Message) -> Result<u64, StageError> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(SEQ))
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| {
            StageError::failed(BrokerError::msg(format!(
                "a message on {} has no {SEQ} header: is another program publishing there?",
                message.subject
            )))
        })
}

fn decode<T: Wire>(message: &jetstream::Message) -> Result<Vec<T>, StageError> {
    postcard::from_bytes(&message.payload).map_err(|e| {
        StageError::failed(BrokerError::new(
            format!(
                "could not read the items of a message on {}: do all processes run the same build?",
                message.subject
            ),
            e,
        ))
    })
}

/// One `apply` of a stage worker: the messages it has pulled and the
/// outputs of the message it is on.
struct Session<'s, O> {
    sh: &'s Shared,
    consumer: &'s jetstream::consumer::PullConsumer,
    /// The stage's number, from 1: it reads edge `k - 1` and feeds edge `k`.
    k: usize,
    buffered: VecDeque<jetstream::Message>,
    /// The message whose items the stage is taking, its source sequence
    /// number, and when the broker last heard from us about it.
    current: Option<(jetstream::Message, u64, Instant)>,
    /// The outputs since the current message was opened.
    outbox: Vec<O>,
    /// When the broker last heard from us about the messages in `buffered`.
    pulled_at: Instant,
    /// Why the input ended early, for the worker to report.
    halt: Option<StageError>,
    /// In a profiled or debugged run, what the worker measures.
    probe: Option<&'s mut Probe>,
}

impl<O: Wire> Session<'_, O> {
    /// Passes the current message's outputs on, then acknowledges it.
    fn finish_current(&mut self) -> Result<(), StageError> {
        let Some((message, seq, _)) = self.current.take() else {
            return Ok(());
        };
        self.sh
            .publish(self.k, seq, &self.outbox)
            .map_err(halt_to_stage_error)?;
        self.sh.emitted[self.k - 1].fetch_add(self.outbox.len() as u64, Relaxed);
        self.outbox.clear();
        self.sh.broker.ack(&message)?;
        Ok(())
    }

    /// Keeps the current message, and those pulled and waiting their turn,
    /// from being redelivered while this worker has them.
    fn keep_alive(&mut self) {
        let every = self.sh.job.ack_wait / 3;
        if let Some((message, _, touched)) = &mut self.current
            && touched.elapsed() >= every
        {
            self.sh.broker.in_progress(message);
            *touched = Instant::now();
        }
        if !self.buffered.is_empty() && self.pulled_at.elapsed() >= every {
            for waiting in &self.buffered {
                self.sh.broker.in_progress(waiting);
            }
            self.pulled_at = Instant::now();
        }
    }

    /// The next message to take items from: a pulled one, or one pulled
    /// now; `None` once the input has ended (or the job stops).
    fn next_message(&mut self) -> Result<Option<jetstream::Message>, StageError> {
        loop {
            if let Some(message) = self.buffered.pop_front() {
                return Ok(Some(message));
            }
            if self.sh.stopping() {
                return Ok(None);
            }
            // Nothing pulled is left: pass the current message's outputs on
            // and acknowledge it before waiting for more. A worker must not
            // hold a finished message while it waits: the edge's limit counts
            // the messages workers hold, and a stage upstream would wait for
            // room that only this worker's next item would make (deadlock).
            // What the stage emits from now on goes with the next message.
            self.finish_current()?;
            let stopping = || self.sh.stopping();
            let pulled = self
                .sh
                .broker
                .fetch(self.consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            if pulled.is_empty() {
                if self
                    .sh
                    .input_complete(self.k - 1)
                    .map_err(halt_to_stage_error)?
                {
                    return Ok(None);
                }
            } else {
                self.buffered.extend(pulled);
                self.pulled_at = Instant::now();
            }
        }
    }
}

/// The input of one `apply`: items of the pulled messages, message after
/// message. A message stays current until the stage takes an item of the
/// next one (or the input ends), so its outputs include what the stage
/// emits after taking its last item.
struct SessionInput<'r, 's, I, O> {
    session: &'r RefCell<Session<'s, O>>,
    decode: Decode<I>,
    items: std::vec::IntoIter<I>,
}

impl<I, O: Wire> Iterator for SessionInput<'_, '_, I, O> {
    type Item = I;

    fn next(&mut self) -> Option<I> {
        let mut s = self.session.borrow_mut();
        if s.halt.is_some() {
            return None;
        }
        loop {
            if let Some(item) = self.items.next() {
                s.sh.taken[s.k - 1].fetch_add(1, Relaxed);
                s.keep_alive();
                return Some(item);
            }
            // Waiting for the broker (pulling, and passing the finished
            // message's outputs on) is not the stage's work.
            let waiting = Instant::now();
            let step = s.next_message().and_then(|message| {
                let Some(message) = message else {
                    return Ok(None);
                };
                s.finish_current()?;
                let seq = seq_of(&message)?;
                let items = (self.decode)(&message)?;
                s.current = Some((message, seq, Instant::now()));
                Ok(Some(items))
            });
            match step {
                Ok(Some(items)) => {
                    if let Some(probe) = &mut s.probe {
                        let now = Instant::now();
                        probe.took(items.len(), now, now - waiting);
                    }
                    self.items = items.into_iter();
                }
                Ok(None) => return None,
                Err(e) => {
                    s.halt = Some(e);
                    return None;
                }
            }
        }
    }
}

/// One worker of stage `k` in this process: `apply` over the messages it
/// pulls until the stage's input ends, then again for any message the
/// broker redelivers (a process died), until the job ends.
fn stage_worker<S>(
    stage: &S,
    decode: Decode<S::In>,
    sh: &Shared,
    k: usize,
    counters: &Counters,
    mut probe: Option<&mut Probe>,
) -> Result<(), StageError>
where
    S: Stage,
    S::Out: Wire,
{
    let stopping = || sh.stopping();
    let consumer = sh
        .broker
        .consumer(&sh.edges[k - 1], &stopping)
        .map_err(halt_to_stage_error)?;
    let filter = stage.config().filter_errors();
    let mut leftover = VecDeque::new();
    loop {
        // A session starts with a message in hand, so a stage's setup does
        // not run for nothing while the job is idle.
        while leftover.is_empty() {
            if sh.stopping() {
                return if sh.over.load(Relaxed) {
                    Ok(())
                } else {
                    Err(StageError(Stop::Cancelled))
                };
            }
            let pulled = sh
                .broker
                .fetch(&consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            leftover.extend(pulled);
        }
        let session = RefCell::new(Session {
            sh,
            consumer: &consumer,
            k,
            buffered: std::mem::take(&mut leftover),
            current: None,
            outbox: Vec::new(),
            pulled_at: Instant::now(),
            halt: None,
            probe: probe.as_deref_mut(),
        });
        {
            let input = SessionInput::<S::In, S::Out> {
                session: &session,
                decode,
                items: Vec::new().into_iter(),
            };
            for output in stage.apply(input) {
                let mut s = session.borrow_mut();
                if let Some(probe) = &mut s.probe {
                    // Its outputs wait in the outbox, never on a queue.
                    probe.emitted(0);
                }
                match output {
                    Ok(item) => s.outbox.push(item),
                    Err(e) => counters
                        .drop_or_fail(filter, e.into())
                        .map_err(StageError::failed)?,
                }
                s.keep_alive();
            }
        }
        let mut s = session.into_inner();
        if let Some(error) = s.halt.take() {
            return Err(error);
        }
        s.finish_current()?;
        // Pulled but not taken (the stage stopped early): the next session's.
        leftover = s.buffered;
    }
}

/// A process whose counts are older than this is not waited for.
const LATELY: Duration = Duration::from_secs(10);

/// Reads a job's status from the broker: see [`Job::status`].
pub(crate) fn status(job: &Job) -> Result<JobStatus, BrokerError> {
    job.validate().map_err(BrokerError::msg)?;
    off_runtime(|| {
        let broker = Broker::connect(job)?;
        // One attempt per read: a status is a snapshot, and a job that does
        // not exist (yet) is an answer, not something to wait for.
        match read_status(&broker, &control_spec(&job.name), &job.name, &|| true) {
            Ok((status, _)) => Ok(status),
            Err(Halt::Broker(e)) => Err(e),
            Err(Halt::Cancelled) => Err(BrokerError::msg("cancelled")),
        }
    })
}

/// Deletes what the job keeps on the broker: see [`Job::cleanup`].
pub(crate) fn cleanup(job: &Job) -> Result<usize, BrokerError> {
    job.validate().map_err(BrokerError::msg)?;
    off_runtime(|| {
        let broker = Broker::connect(job)?;
        let halt = |h: Halt| match h {
            Halt::Broker(e) => e,
            Halt::Cancelled => BrokerError::msg("cancelled"),
        };
        let control = control_spec(&job.name);
        let streams = broker
            .streams_named(&format!("PARAPIPE_{}_", job.name))
            .map_err(halt)?;
        let ours: Vec<&String> = streams
            .iter()
            .filter(|s| **s == control.stream || is_edge_of(s, &job.name))
            .collect();
        if ours.is_empty() {
            return Ok(0);
        }
        let newest = match streams.contains(&control.stream) {
            true => read_record::<RunRecord>(&broker, &control, "run", &|| false).map_err(halt)?,
            false => None,
        };
        if let Some(driver) =
            live_driver(&broker, &control, &job.name, newest.as_ref()).map_err(halt)?
        {
            return Err(BrokerError::msg(format!(
                "job {:?} has a live run (driver process {driver:?}): clean up once it has ended",
                job.name
            )));
        }
        if broker.delete_streams(ours.iter().map(|s| s.as_str())) {
            Ok(ours.len())
        } else {
            Err(BrokerError::msg(format!(
                "could not delete every stream of job {:?}",
                job.name
            )))
        }
    })
}

/// The status of job `name`'s newest run, and whether every process heard
/// from lately has published its final counts.
fn read_status(
    broker: &Broker,
    control: &EdgeSpec,
    name: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<(JobStatus, bool), Halt> {
    let no_run = || Halt::Broker(BrokerError::msg(format!("job {name:?} has no run")));
    // A direct get from a stream that does not exist is never answered.
    if !broker.exists(&control.stream) {
        return Err(no_run());
    }
    let run = read_record::<RunRecord>(broker, control, "run", cancelled)?.ok_or_else(no_run)?;
    let end = read_record::<EndRecord>(broker, control, "end", cancelled)?;
    let state = match end.filter(|e| e.run == run.run) {
        None => JobState::Running,
        Some(end) => match end.outcome {
            Outcome::Done => JobState::Done,
            Outcome::Failed(failed) => JobState::Failed(failed.display),
            Outcome::Cancelled => JobState::Cancelled,
        },
    };
    let mut stages: Vec<StageStatus> = run
        .stages
        .iter()
        .map(|stage| StageStatus {
            name: stage.name.clone(),
            taken: 0,
            emitted: 0,
            pending_messages: 0,
            by_process: Vec::new(),
        })
        .collect();
    let mut processes = Vec::new();
    let mut settled = true;
    let now = unix_ms();
    for what in stats_records(broker, control, cancelled)? {
        let Some(stats) = read_record::<StatsRecord>(broker, control, &what, cancelled)?
            .filter(|s| s.run == run.run)
        else {
            continue;
        };
        processes.push(stats.process.clone());
        settled &= !heard_within(&stats, now, LATELY) || stats.last;
        for (stage, counts) in stages.iter_mut().zip(&stats.stages) {
            stage.taken += counts.taken;
            stage.emitted += counts.emitted;
            if counts.runs {
                stage.by_process.push(ProcessCounts::new(
                    stats.process.clone(),
                    counts.taken,
                    counts.emitted,
                ));
            }
        }
    }
    processes.sort();
    let count = stages.len();
    for (k, stage) in stages.iter_mut().enumerate() {
        stage.by_process.sort_by(|a, b| a.process.cmp(&b.process));
        // Stage k + 1's input; a finished run's streams may be gone already.
        let edge = edge_spec(name, run.run, k, count, 0);
        if let Ok((state, _)) = broker.edge_state(&edge, cancelled) {
            stage.pending_messages = state.messages;
        }
    }
    let status = JobStatus {
        state,
        processes,
        stages,
    };
    Ok((status, settled))
}
