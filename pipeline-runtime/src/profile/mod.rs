//! The profiler: per-stage latency and throughput of a run, kept in SQLite.
//!
//! Switch it on per pipeline with [`Pipeline::profile`](crate::Pipeline::profile)
//! (or [`profile_with`](crate::Pipeline::profile_with) for options); when it
//! is off, nothing is measured and the stage loops are the unprofiled ones.
//! After the run, [`Results::profile`](crate::Results::profile) gives the
//! [`Profile`]; every run is also stored, and [`load`] reads one back.
//!
//! ```
//! use parapipe::prelude::*;
//! use parapipe::profile::{Profiler, MAIN_PIPELINE_NAME};
//!
//! #[map_stage(workers = 2)]
//! fn double(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! let dir = std::env::temp_dir().join(format!("parapipe-doc-{}", std::process::id()));
//! let mut results = pipe!(0..1000u64 | double)
//!     .profile_with(Profiler::new().folder(&dir))
//!     .results();
//! let total: u64 = results.by_ref().sum::<Result<u64, _>>()?;
//! assert_eq!(total, 999_000);
//! let profile = results.profile().expect("profiled");
//! let latency = profile.latency(); // seconds, keyed by stage
//! assert!(latency.contains_key(MAIN_PIPELINE_NAME));
//! assert!(latency.contains_key("MainPipeline__double"));
//! let again = parapipe::profile::load(profile.database(), profile.run_id().unwrap()).unwrap();
//! assert_eq!(again.stage("MainPipeline__double").unwrap().items_out, 1000);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), PipelineError>(())
//! ```
//!
//! # Names
//!
//! Results are keyed by name: [`MAIN_PIPELINE_NAME`] for the
//! whole pipeline, `MainPipeline__stage` for a stage, and, for a stage
//! inside a named segment, `MainPipeline__segment__stage`: a double
//! underscore between levels. A stage is named after its function unless
//! renamed with [`StageExt::name`](crate::StageExt::name); a name that is
//! empty, contains `__` or is `MainPipeline` is a configuration error.
//!
//! # What is measured
//!
//! - **Latency of a map stage** (`#[map_stage]`, [`Worker::map`](crate::handwritten::Worker::map)):
//!   the time from taking an item to emitting its result: one call of the
//!   function.
//! - **Latency of an iterator stage** (`#[stage]`, segments, hand-written
//!   stages): its busy time per item emitted: the time between two items it
//!   emits, less the time it waited for input or for room in its output
//!   queue. A serial segment is measured as one such stage, and each stage
//!   fused in it as well (`MainPipeline__segment__stage`): its own share of
//!   each step of the fused chain, the stages before it excluded. Fused
//!   stages share their segment's threads, whose CPU time is reported on
//!   the segment's row (theirs show zero), and have no queue of their own.
//! - **Latency of a producer**: the same, busy time per item emitted.
//! - **Latency of an async stage** (`#[map_stage] async fn`, kind
//!   `async`): from an item's future starting to its output (or failure);
//!   futures cancelled unfinished are not counted. Its busy time is the
//!   time during which any of its futures was in flight, and
//!   [`StageProfile::in_flight_max`] the most in flight at once (the
//!   debugger's reports show both now and at most). Its CPU time is its
//!   worker thread's, which polls the futures; the runtime's thread, which
//!   drives their timers and sockets, is not counted.
//! - **The source** (a plain iterator, a channel, a `Stream`) has a row of
//!   its own, `MainPipeline__source`, measured as a producer: the time its
//!   iterator took per item (a channel source: less the time it waited for
//!   the channel), so a slow source shows beside the stages.
//! - **Latency of `MainPipeline`**: from the pipeline taking an item from
//!   its source (the first stage taking it from the source's queue; for a
//!   producer, the producer emitting it) to the consumer receiving it. The
//!   time an item waits in the source's queue before that is not counted:
//!   a plain iterator source runs ahead of a slower pipeline, up to its
//!   queue's size, as a lazily pulled generator would not. Items cross
//!   threads in batches, and each batch carries when its oldest item
//!   entered; every item of a batch is counted with that age, so this is an
//!   upper bound, above the true value by at most the time to fill a batch
//!   (tens of microseconds for cheap items; slow items travel one per batch
//!   and are exact).
//! - **Throughput**: items emitted per second of the stage's active run
//!   time, from when it first took an item (a producer: started) to when it
//!   last emitted one. For `MainPipeline`: items received per second from the
//!   start of the run to the last item received.
//!
//! Each latency is given as mean, median and 99th percentile
//! ([`Latency`]); the percentiles come from a histogram with 16 buckets per
//! power of two, so they are within about 3% of the exact value. The maps
//! [`Profile::latency`] and [`Profile::throughput`] hold the mean latency
//! and the throughput.
//!
//! Measuring costs two clock reads per item of a map stage and one per item
//! of an iterator stage, plus a few atomic operations per batch.
//!
//! # Where runs are stored
//!
//! In the SQLite database `profiles.sqlite` of a folder: the one given with
//! [`Profiler::folder`], else the one in the environment variable
//! [`PROFILE_DIR_ENV`] (`PARAPIPE_PROFILE_DIR`), else [`default_folder`]:
//! `$XDG_DATA_HOME/parapipe`, or `~/.local/share/parapipe`, or
//! `./parapipe-profiles` when neither variable is set. One database keeps
//! every run. One thread per profiled run, `parapipe-profile-writer`, owns the
//! connection: workers never touch the disk, and a monitor thread hands it
//! samples over a bounded channel, written in batched transactions.
//!
//! If the store fails (a read-only folder, a file that is not a database, a
//! full disk), the pipeline's own results are unaffected: the profile is
//! still returned, with [`Profile::store_error`] saying what failed, and a
//! warning is logged through the `log` crate. Nothing panics.
//!
//! # Schema
//!
//! ```sql
//! runs(id INTEGER PRIMARY KEY, pipeline TEXT, started_at TEXT,  -- UTC, ISO 8601
//!      started_unix REAL, duration_s REAL, items INTEGER,
//!      outcome TEXT,                -- 'running', 'completed', 'failed', 'cancelled'
//!      error TEXT)
//! stages(run_id, position, name, kind,  -- kind: 'map', 'iter' or 'producer'
//!        workers, items_in, items_out, busy_s, active_s,
//!        latency_mean_s, latency_median_s, latency_p99_s, latency_sum_ns,
//!        throughput,                -- items per second
//!        cpu_user_s, cpu_system_s, queue_max, filtered, skipped)
//! latency_buckets(run_id, stage, bucket, value_s, count)  -- the histogram
//! samples(run_id, t_s, stage, items_in, items_out, busy_s, queue_depth)
//!                                   -- every `sample_every` while it runs
//! job_samples(run_id, t_s, job, state,  -- a distributed job's status,
//!             position, stage, process, -- every 0.5 s and at the end; process
//!             taken, emitted,           -- '' is the stage's whole (with its
//!             pending_messages)         -- pending messages), else one process's part
//! stage_workers(run_id, stage, worker,  -- items_in_by_worker: one row per
//!               items_in)               -- worker of each stage that counts them
//! meta(key, value)                  -- schema_version = 1
//! ```
//! `MainPipeline` is a row of `stages` too (position 0). Tables added since
//! the first schema (`job_samples`, `stage_workers`) are created when a run
//! is written, so an older database takes new runs as it is; reading one
//! written before a table existed gives what it held (no per-worker
//! counts), not an error.
//!
//! # Distributed runs
//!
//! A process of a distributed job (`pipe!(distributed(&job): ...)`, feature
//! `nats`) that is profiled stores its own part as a run: the stages it runs
//! (measured as iterator stages: busy time per item emitted, the waits for
//! the broker excluded) and, in the driver, `MainPipeline` from the source
//! publishing an item to the driver receiving its result. It also stores
//! the job's status, every half second and once at the end, as the broker
//! tells it: what each stage has taken, emitted and has pending, over all
//! processes and per process ([`job_samples`], [`Profile::job`]). The
//! viewer's `show` prints the last one.

mod fused;
mod hist;
mod sample;
mod stats;
#[cfg(feature = "store")]
mod store;
#[cfg(not(feature = "store"))]
mod store_off;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[doc(hidden)]
pub use fused::Clocks;
pub(crate) use hist::Histogram;
pub use sample::Sample;
#[cfg(feature = "async")]
pub(crate) use stats::Flights;
pub(crate) use stats::{Probe, RunStats, StageKind, StageStats, rss_bytes};
#[cfg(feature = "store")]
pub(crate) use store::Writer;
#[cfg(feature = "store")]
pub use store::{RunSummary, job_samples, load, runs, samples};
#[cfg(not(feature = "store"))]
pub(crate) use store_off::Writer;

pub use crate::config::MAIN_PIPELINE_NAME;

/// The environment variable naming the folder of the profile database.
pub const PROFILE_DIR_ENV: &str = "PARAPIPE_PROFILE_DIR";

/// The file name of the profile database in its folder.
pub const DATABASE_FILE: &str = "profiles.sqlite";

/// The folder used when neither [`Profiler::folder`] nor [`PROFILE_DIR_ENV`]
/// says otherwise: `$XDG_DATA_HOME/parapipe`, or `~/.local/share/parapipe`,
/// or `./parapipe-profiles`.
pub fn default_folder() -> PathBuf {
    let nonempty = |var| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(data) = nonempty("XDG_DATA_HOME") {
        return PathBuf::from(data).join("parapipe");
    }
    if let Some(home) = nonempty("HOME") {
        return PathBuf::from(home).join(".local/share/parapipe");
    }
    PathBuf::from("parapipe-profiles")
}

/// How a pipeline is profiled: where its run is stored, under what name,
/// how often queue depths are sampled.
#[derive(Clone, Debug)]
pub struct Profiler {
    folder: Option<PathBuf>,
    name: String,
    sample_every: Duration,
    store: bool,
    writer_queue: usize,
    max_pages: Option<u32>,
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::new()
    }
}

impl Profiler {
    /// Profiling with the defaults: stored in the default database, the run
    /// named [`MAIN_PIPELINE_NAME`], sampled every 100 ms.
    pub fn new() -> Self {
        Profiler {
            folder: None,
            name: MAIN_PIPELINE_NAME.to_owned(),
            sample_every: Duration::from_millis(100),
            store: true,
            writer_queue: 64,
            max_pages: None,
        }
    }

    /// Stores the run in this folder's database (created if missing),
    /// whatever [`PROFILE_DIR_ENV`] says.
    pub fn folder(mut self, folder: impl Into<PathBuf>) -> Self {
        self.folder = Some(folder.into());
        self
    }

    /// Names the run in the database (its `pipeline` column), to tell the
    /// runs of different programs apart. The profile's keys still start
    /// with [`MAIN_PIPELINE_NAME`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How often the counts and queue depths of the running pipeline are
    /// sampled into the database (for charts over time). At least 1 ms.
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(1));
        self
    }

    /// Measures without storing: the profile is only returned.
    pub fn in_memory(mut self) -> Self {
        self.store = false;
        self
    }

    /// The database this profiler writes to.
    pub fn database(&self) -> PathBuf {
        let folder = match &self.folder {
            Some(folder) => folder.clone(),
            None => match std::env::var_os(PROFILE_DIR_ENV).filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir),
                None => default_folder(),
            },
        };
        folder.join(DATABASE_FILE)
    }

    /// For tests of store failures: the writer's command queue capacity.
    #[doc(hidden)]
    pub fn __writer_queue(mut self, capacity: usize) -> Self {
        self.writer_queue = capacity.max(1);
        self
    }

    /// For tests of store failures: limits the database's size in pages,
    /// so that writes fail as on a full disk.
    #[doc(hidden)]
    pub fn __max_pages(mut self, pages: u32) -> Self {
        self.max_pages = Some(pages);
        self
    }

    pub(crate) fn sample_interval(&self) -> Duration {
        self.sample_every
    }

    pub(crate) fn stores(&self) -> bool {
        self.store
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Every item reached the consumer.
    Completed,
    /// A stage failed; the message of the pipeline's error.
    Failed(String),
    /// The consumer stopped before the end.
    Cancelled,
    /// Still running (seen only in the database, for a run that never
    /// finished: its process died).
    Running,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Running => "running",
        }
    }

    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    fn from_parts(outcome: &str, error: Option<String>) -> Outcome {
        match outcome {
            "completed" => Outcome::Completed,
            "failed" => Outcome::Failed(error.unwrap_or_default()),
            "cancelled" => Outcome::Cancelled,
            _ => Outcome::Running,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Mean, median and 99th percentile of a latency, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// The mean (exact).
    pub mean: f64,
    /// The median (within about 3%).
    pub median: f64,
    /// The 99th percentile (within about 3%).
    pub p99: f64,
    /// How many items were measured.
    pub samples: u64,
}

impl Latency {
    fn of(hist: &Histogram) -> Latency {
        let s = |ns: Option<f64>| ns.unwrap_or(0.0) / 1e9;
        Latency {
            mean: s(hist.mean_ns()),
            median: s(hist.quantile(0.5)),
            p99: s(hist.quantile(0.99)),
            samples: hist.count(),
        }
    }
}

/// The profile of one stage (or, as [`MAIN_PIPELINE_NAME`], of the whole
/// pipeline) in one run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StageProfile {
    /// Hierarchical name: `MainPipeline__stage`.
    pub name: String,
    /// `"map"`, `"iter"` or `"producer"`; `"pipeline"` for the whole.
    pub kind: String,
    /// Workers of the stage.
    pub workers: usize,
    /// Items taken.
    pub items_in: u64,
    /// Items taken by each worker, by worker index (a keyed stage's hot
    /// key shows as one worker taking most); empty for the whole pipeline,
    /// the source, the stages fused in a serial segment, a distributed
    /// run's stages, and a profile loaded from a database written before
    /// per-worker counts were stored (table `stage_workers`).
    pub items_in_by_worker: Vec<u64>,
    /// Items emitted (for the whole pipeline: received by the consumer).
    pub items_out: u64,
    /// Time the workers spent working, in all (not waiting on queues).
    pub busy: Duration,
    /// From the first item taken to the last emitted.
    pub active: Duration,
    /// Per-item latency, as defined in the [module docs](self).
    pub latency: Latency,
    /// Items emitted per second of active time.
    pub throughput: f64,
    /// User CPU time of the stage's threads.
    pub cpu_user: Duration,
    /// System CPU time of the stage's threads.
    pub cpu_system: Duration,
    /// The most items its output queue held.
    pub queue_max: u64,
    /// For an async stage, the most of its futures in flight at once; 0 for
    /// other stages. Not stored in the database yet.
    pub in_flight_max: u64,
    /// Failing items dropped by `filter_errors`.
    pub filtered: u64,
    /// Items skipped with [`Skip`](crate::Skip).
    pub skipped: u64,
    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    hist: Arc<Histogram>,
}

/// What each worker of `stage` took, if its workers are counted apart.
fn by_worker(stage: &StageStats) -> Vec<u64> {
    use std::sync::atomic::Ordering::Relaxed;
    let counts: Vec<u64> = (stage.taken_by_worker.iter())
        .map(|n| n.load(Relaxed))
        .collect();
    let counted: u64 = counts.iter().sum();
    match counted == 0 && stage.taken.load(Relaxed) > 0 {
        true => Vec::new(),
        false => counts,
    }
}

/// The profile of a run: see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Profile {
    run_id: Option<i64>,
    database: PathBuf,
    pipeline: String,
    started: SystemTime,
    duration: Duration,
    outcome: Outcome,
    stages: Vec<StageProfile>,
    job: Option<JobSample>,
    store_error: Option<Arc<StoreError>>,
}

/// A distributed job's status as one of its processes read it from the
/// broker at a moment of its run: see [Distributed runs](self#distributed-runs).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct JobSample {
    /// Seconds since this process's run started.
    pub t: f64,
    /// The job's name.
    pub job: String,
    /// `running`, `done`, `cancelled`, or `failed: ` and the failure.
    pub state: String,
    /// The job's stages, in pipeline order.
    pub stages: Vec<JobStageSample>,
}

/// One stage of a [`JobSample`] (and of a distributed job's status,
/// `nats::StageStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStageSample {
    /// The stage's name.
    pub name: String,
    /// Items its workers took, over all processes (an item taken again
    /// after a redelivery counts again).
    pub taken: u64,
    /// Items its workers emitted, over all processes.
    pub emitted: u64,
    /// Messages waiting in its input stream or being worked on (each
    /// carries up to a batch of items).
    pub pending_messages: u64,
    /// Each process's part (the processes that run the stage), by process
    /// name.
    pub by_process: Vec<ProcessCounts>,
}

/// What one process's workers of a stage have taken and emitted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessCounts {
    /// The process's name.
    pub process: String,
    /// Items taken.
    pub taken: u64,
    /// Items emitted.
    pub emitted: u64,
}

impl ProcessCounts {
    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    pub(crate) fn new(process: String, taken: u64, emitted: u64) -> Self {
        ProcessCounts {
            process,
            taken,
            emitted,
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Histogram({} samples)", self.count())
    }
}

impl Profile {
    /// Mean latency in seconds, by hierarchical name.
    pub fn latency(&self) -> BTreeMap<String, f64> {
        self.stages
            .iter()
            .map(|s| (s.name.clone(), s.latency.mean))
            .collect()
    }

    /// Throughput in items per second, by hierarchical name.
    pub fn throughput(&self) -> BTreeMap<String, f64> {
        self.stages
            .iter()
            .map(|s| (s.name.clone(), s.throughput))
            .collect()
    }

    /// Every row: the whole pipeline first, then the stages in pipeline order.
    pub fn stages(&self) -> &[StageProfile] {
        &self.stages
    }

    /// One row by hierarchical name.
    pub fn stage(&self, name: &str) -> Option<&StageProfile> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The run's id in the database, if it was stored.
    pub fn run_id(&self) -> Option<i64> {
        self.run_id
    }

    /// The database the run was (or was to be) stored in.
    pub fn database(&self) -> &Path {
        &self.database
    }

    /// What went wrong storing the run, if anything did.
    pub fn store_error(&self) -> Option<&StoreError> {
        self.store_error.as_deref()
    }

    /// The run's name ([`Profiler::name`]).
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// When the run started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// How long the run took, from start to the last thread joined.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How the run ended.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// For a process of a distributed job, the job's status at the end of
    /// its run (the last of its [`job_samples`]); `None` for a local run.
    pub fn job(&self) -> Option<&JobSample> {
        self.job.as_ref()
    }

    /// Records where the run was stored, or why it was not.
    pub(crate) fn stored(&mut self, result: Result<i64, StoreError>) {
        match result {
            Ok(id) => self.run_id = Some(id),
            Err(e) => {
                log::warn!(target: "parapipe::profile", "the run's profile was not stored: {e}");
                self.store_error = Some(Arc::new(e));
            }
        }
    }

    /// Items the consumer received.
    pub fn items(&self) -> u64 {
        self.stages.first().map_or(0, |s| s.items_out)
    }
}

/// Why the profile database could not be read or written.
#[derive(Debug)]
pub struct StoreError {
    path: PathBuf,
    what: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub(crate) fn new(
        path: &Path,
        what: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError {
            path: path.to_owned(),
            what: what.into(),
            source,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "profile database {}: {}", self.path.display(), self.what)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Builds the profile of a finished run from what it measured.
pub(crate) fn summarize(
    run: &RunStats,
    profiler: &Profiler,
    duration: Duration,
    outcome: Outcome,
) -> Profile {
    use std::sync::atomic::Ordering::Relaxed;
    let secs = |ns: u64| Duration::from_nanos(ns);
    let per_sec = |n: u64, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let mut rows = Vec::new();

    let received = run.received.load(Relaxed);
    let last = run.last_received_ns.load(Relaxed);
    let active = secs(last);
    let e2e = crate::control::lock(&run.end_to_end).clone();
    rows.push(StageProfile {
        name: MAIN_PIPELINE_NAME.to_owned(),
        kind: "pipeline".to_owned(),
        workers: 0,
        items_in: received,
        items_in_by_worker: Vec::new(),
        items_out: received,
        busy: duration,
        active,
        latency: Latency::of(&e2e),
        throughput: per_sec(received, active),
        cpu_user: Duration::ZERO,
        cpu_system: Duration::ZERO,
        queue_max: 0,
        in_flight_max: 0,
        filtered: 0,
        skipped: 0,
        hist: Arc::new(e2e),
    });
    for stage in run.stages() {
        let first = stage.first_ns.load(Relaxed);
        let last = stage.last_ns.load(Relaxed);
        let active = if first == u64::MAX {
            Duration::ZERO
        } else {
            secs(last.saturating_sub(first))
        };
        let emitted = stage.emitted.load(Relaxed);
        let hist = crate::control::lock(&stage.hist).clone();
        let (cpu_user, cpu_system) = stage.cpu_ticks().durations();
        rows.push(StageProfile {
            name: stage.key.clone(),
            kind: stage.kind().as_str().to_owned(),
            workers: stage.workers,
            items_in: stage.taken.load(Relaxed),
            items_in_by_worker: by_worker(&stage),
            items_out: emitted,
            busy: secs(stage.busy_ns.load(Relaxed)),
            active,
            latency: Latency::of(&hist),
            throughput: per_sec(emitted, active),
            cpu_user,
            cpu_system,
            queue_max: stage.queue.max_depth(),
            in_flight_max: stage.in_flight_max.load(Relaxed),
            filtered: stage.counters.filtered.load(Relaxed),
            skipped: stage.counters.skipped.load(Relaxed),
            hist: Arc::new(hist),
        });
    }
    // The whole pipeline's CPU time is its stages'.
    let (user, system) = rows[1..]
        .iter()
        .fold((Duration::ZERO, Duration::ZERO), |(u, s), r| {
            (u + r.cpu_user, s + r.cpu_system)
        });
    rows[0].cpu_user = user;
    rows[0].cpu_system = system;
    Profile {
        run_id: None,
        database: profiler.database(),
        pipeline: profiler.name.clone(),
        started: run.started,
        duration,
        outcome,
        stages: rows,
        job: run.last_job(),
        store_error: None,
    }
}
