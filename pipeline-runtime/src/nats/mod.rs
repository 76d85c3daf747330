//! Distributed pipelines: the same stages and the same `pipe!` expression,
//! run by several processes (on one machine or many) that exchange items
//! through [NATS JetStream](https://docs.nats.io/nats-concepts/jetstream).
//! Needs the `nats` feature.
//!
//! ```no_run
//! use parapipe::prelude::*;
//! use parapipe::nats::Job;
//!
//! #[stage(workers = 2)]
//! fn words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
//!     lines.flat_map(|l| l.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>())
//! }
//!
//! #[map_stage(workers = 2)]
//! fn length(word: String) -> (String, usize) {
//!     let n = word.chars().count();
//!     (word, n)
//! }
//!
//! // Every process runs this program. The driver (the default role) feeds
//! // the source and gets the results; `PARAPIPE_ROLE=worker` processes
//! // only add workers, and get no items.
//! let job = Job::from_env("wordlengths");
//! let lines = vec!["a bb ccc".to_string(), "dddd".to_string()];
//! let lengths: Vec<(String, usize)> = pipe!(distributed(&job): lines | words | length).collect()?;
//! # Ok::<(), PipelineError>(())
//! ```
//!
//! # How a pipeline maps onto the broker
//!
//! - Every edge (source to first stage, stage to stage, last stage to the
//!   results) is a JetStream stream with work-queue retention, named for
//!   the job and the run (`PARAPIPE_<job>_R<run>_E<k>`), so no process of
//!   one run ever takes another run's messages. Its limit is the queue size
//!   of the stage that feeds it (for the source,
//!   [`DEFAULT_QSIZE`](crate::DEFAULT_QSIZE)), divided by the job's
//!   [batch](Job::batch) size: a message carries up to a batch of items. A
//!   publish to a full stream waits and retries, so a fast stage is held
//!   back by a slow one on another machine (backpressure). A worker holds
//!   only the messages it is working on or has pulled to work on next: it
//!   passes a message's outputs on and acknowledges it before it waits for
//!   more, so however many workers and processes there are, what they hold
//!   never fills an edge that their own progress would empty.
//! - Each stage is a durable pull consumer on its input stream, and
//!   `workers = N` is N pull loops (threads) in *each* process that runs the
//!   stage: adding a process adds workers.
//! - One input message gives exactly one output message (with the outputs
//!   its items produced, possibly none), whose message id is derived from
//!   the input's. A worker acknowledges its input only once the broker has
//!   stored the output (at-least-once), and the broker drops an output
//!   published twice under the same id (its duplicate window is 10 minutes
//!   by default), so a message redelivered after a worker died is
//!   processed again without doubling its outputs. The driver also drops
//!   any result message it has seen already. Messages a worker has pulled
//!   are kept alive too while they wait their turn.
//! - If any stage is [`ordered`](crate::StageExt::ordered), the driver puts
//!   the results in source order (by message) before handing them out:
//!   every stage keeps its order within a message.
//! - The job's state lives in a control stream `PARAPIPE_<job>_CTL`: the
//!   run (its stages and their item types), the number of source messages
//!   once the source ends, the outcome (done, failed with the failing task,
//!   or cancelled) and each process's counts, as typed records. Every
//!   process polls it. The driver deletes its run's edge streams when its
//!   part ends; a run whose driver was killed leaves them, and the next
//!   run of the job deletes them, as does [`Job::cleanup`], which also
//!   deletes the control stream (nothing else is kept on the broker).
//!
//! # Processes
//!
//! A [`Job`] names the job, the server and the process's role. The
//! [driver](Role::Driver) starts a run: it creates the run's streams,
//! feeds the source and receives the results through the usual
//! `results()`, `collect()`, `execute()` and `run()`. A job has one driver
//! at a time: a second driver of a job whose run is live is refused at
//! once, with an error naming the running driver (a live driver answers
//! on the broker; one that was killed no longer does, and a new driver
//! replaces its run at once: the old run's workers see that and stop,
//! with an error). A [worker](Role::Worker) process joins the newest
//! running job of that name (waiting for one up to the join timeout),
//! after checking that its pipeline has the run's stages with the same
//! item types (type names, sizes and alignments; another build is refused
//! with a configuration error); it runs workers of its
//! [stages](Job::stages) (all by default), and its `results()` yield no
//! items: they end when the job ends, with the job's failure if it failed.
//! The driver runs stage workers too unless told otherwise. A worker that
//! arrives less than 10 seconds after the newest run ended (by the wall
//! clocks of the two machines) was late for that run: it does nothing, and
//! its results end at once, without error, however that run ended. One
//! that arrives later waits for the next run.
//!
//! # What can cross the broker
//!
//! Items are written with `postcard`, a compact format that does not
//! describe itself: serde shapes that need the format to (an
//! `#[serde(untagged)]` enum, `#[serde(flatten)]`, `skip_serializing_if`,
//! anything deserialized with `deserialize_any`) cannot cross. The first
//! message a process sends on each edge is read back before it is sent,
//! so such a type fails the job at once, with an error naming it. A
//! message must also fit the server's `max_payload` (1 MiB by default):
//! one that does not fails the job at once, naming the limit; lower
//! [`Job::batch`] for large items.
//!
//! # Security
//!
//! Start `nats-server` listening on loopback for a one-machine job
//! (`nats-server -js -a 127.0.0.1`), and with authentication for one that
//! spans machines: give the credentials in the URL
//! (`nats://user:password@host:4222`, `nats://token@host:4222`) or with
//! [`Job::user_password`] and [`Job::token`]. Wrong credentials fail at
//! once.
//!
//! # Failures
//!
//! A stage's error or panic in any process fails the whole job: the
//! failing process records it, every process learns of it at its next
//! poll of the control stream (every 50 ms) and stops its workers, and the
//! driver's results end with a
//! [`PipelineError`](crate::PipelineError) naming the stage, the worker and
//! the [process](crate::PipelineError::process). An error raised in another
//! process arrives as a [`RemoteError`] holding its message. A process that
//! dies (even by `SIGKILL`) loses nothing: the broker redelivers the
//! messages it had not acknowledged to the other processes after the
//! [ack wait](Job::ack_wait). If the broker is unreachable for longer than
//! the [broker timeout](Job::broker_timeout), the job fails with a
//! [`BrokerError`], that long after the broker last answered; the client
//! reconnects by itself within that time, and a broker that restarts with
//! its store resumes the job. What waiting cannot cure fails at once: a
//! malformed URL, a scheme that is not NATS, wrong credentials, a server
//! without JetStream, a job name too long for the broker's names
//! ([`MAX_JOB_NAME`]), a message over the server's size limit. A server
//! that does not greet the client as NATS (a port of another service)
//! counts as unreachable. A job never waits
//! forever for a process: every process publishes its counts twice a
//! second, and workers whose driver has been silent for the broker timeout
//! (at least 10 s) fail with a [`JobError`], as does a driver when no live
//! process has run some stage for the join timeout.
//!
//! # Status and profile
//!
//! [`Job::status`] reads the job's progress from the broker, from any
//! process: per stage, what it has taken, emitted and has pending, in all
//! and [per process](StageStatus::by_process). A process whose pipeline is
//! profiled ([`DistPipeline::profile`], [`profile_with`](DistPipeline::profile_with))
//! stores a run of its own part in the profile database, named as its
//! [`Profiler`](crate::profile::Profiler) says: a row per stage it runs
//! (latency = busy time per item emitted, the waits for the broker
//! excluded), `results` and, in the driver, `MainPipeline` with the
//! end-to-end latency from the source publishing an item's message to the
//! driver receiving its result. It also records the job's status, as
//! `Job::status` reads it, every half second and once at the end (after
//! waiting up to 5 s for the other processes' final counts), readable with
//! [`Profile::job`](crate::profile::Profile::job) and
//! [`job_samples`](crate::profile::job_samples) and printed by the viewer's
//! `show`. [`DistPipeline::debug`] reports the process's own rows live.
//!
//! Stages whose state spans several items (a stage that groups items)
//! keep their state per worker, as locally; at-least-once delivery covers
//! an item until the output message of the message it came in is stored.

mod broker;
mod collector;
mod control;
mod naming;
mod records;
mod run;
mod session;
mod shared;
mod start;
mod status;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

pub use crate::profile::ProcessCounts;
pub use run::DistPipeline;

/// What can cross the broker: items of a distributed pipeline, serialised
/// with [serde](https://serde.rs) in the compact `postcard` format.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross the broker in a distributed pipeline",
    label = "the items of this stage are not serialisable",
    note = "items of `pipe!(distributed(..): ...)` are serialised: derive `serde::Serialize` and `serde::Deserialize` for `{Self}`"
)]
pub trait Wire: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Wire for T {}

/// What a process does in a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates the job, feeds the source and receives the results (one per job).
    Driver,
    /// Joins the job and contributes workers.
    Worker,
}

/// A distributed job: its name, the NATS server, and this process's part in
/// it. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Job {
    name: String,
    url: String,
    role: Role,
    stages: Option<Vec<String>>,
    process: String,
    batch: usize,
    ack_wait: Duration,
    broker_timeout: Duration,
    join_timeout: Duration,
    duplicate_window: Duration,
    /// Credentials given apart from the URL.
    auth: Option<Auth>,
    /// A bad setting from the environment, reported when the pipeline starts.
    invalid: Option<String>,
}

/// Credentials for a server that requires them.
#[derive(Clone)]
enum Auth {
    UserPassword(String, String),
    Token(String),
}

impl fmt::Debug for Auth {
    /// Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
            Auth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// The longest job name: the broker's names for the job's streams (255
/// characters at most) are the name with a prefix and a run number.
pub const MAX_JOB_NAME: usize = 200;

/// The server when neither [`Job::url`] nor `PARAPIPE_NATS_URL` says.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

impl Job {
    /// The job `name` (letters, digits, `-` and `_`), on [`DEFAULT_URL`], as
    /// the driver, running every stage.
    pub fn new(name: impl Into<String>) -> Self {
        Job {
            name: name.into(),
            url: DEFAULT_URL.to_owned(),
            role: Role::Driver,
            stages: None,
            process: default_process_name(),
            batch: 64,
            ack_wait: Duration::from_secs(30),
            broker_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(60),
            duplicate_window: Duration::from_secs(600),
            auth: None,
            invalid: None,
        }
    }

    /// [`Job::new`], configured by the environment: `PARAPIPE_NATS_URL`
    /// (the server; it may carry credentials, `nats://user:password@host:port`
    /// or `nats://token@host:port`), `PARAPIPE_ROLE` (`driver` or `worker`)
    /// and `PARAPIPE_STAGES` (a comma-separated list of the stages this
    /// process runs; empty for none). An invalid value fails the pipeline
    /// when it starts, with a configuration error.
    pub fn from_env(name: impl Into<String>) -> Self {
        let mut job = Job::new(name);
        if let Ok(url) = std::env::var("PARAPIPE_NATS_URL") {
            job.url = url;
        }
        if let Ok(role) = std::env::var("PARAPIPE_ROLE") {
            job.role = match role.as_str() {
                "driver" => Role::Driver,
                "worker" => Role::Worker,
                other => {
                    job.invalid = Some(format!(
                        "PARAPIPE_ROLE={other:?} is not a role: use `driver` or `worker`"
                    ));
                    Role::Driver
                }
            };
        }
        if let Ok(stages) = std::env::var("PARAPIPE_STAGES") {
            job.stages = Some(
                stages
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        job
    }

    /// The NATS server, as `nats://host:port` (or `tls://`, `ws://`,
    /// `wss://`; several separated by commas). A server that requires
    /// credentials takes them in the URL (`nats://user:password@host:port`,
    /// `nats://token@host:port`) or from [`user_password`](Job::user_password)
    /// or [`token`](Job::token).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Connects with a user name and password.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some(Auth::UserPassword(user.into(), password.into()));
        self
    }

    /// Connects with an authentication token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(Auth::Token(token.into()));
        self
    }

    /// This process's role.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The stages (by name) this process runs workers of; all by default,
    /// none if empty.
    pub fn stages<S: Into<String>>(mut self, stages: impl IntoIterator<Item = S>) -> Self {
        self.stages = Some(stages.into_iter().map(Into::into).collect());
        self
    }

    /// This process's name in errors and job status; by default
    /// `<hostname>-<pid>`.
    pub fn process_name(mut self, name: impl Into<String>) -> Self {
        self.process = name.into();
        self
    }

    /// Items per message from the source (default 64; at least 1). Larger
    /// batches cost less per item; smaller ones spread fewer items more
    /// evenly over workers, and pass items on sooner from a slow source.
    pub fn batch(mut self, items: usize) -> Self {
        self.batch = items.max(1);
        self
    }

    /// How long the broker waits for a worker to acknowledge a message
    /// before giving it to another worker (default 30 s). A worker busy with
    /// a message for longer tells the broker it is still on it, so this
    /// bounds how soon a dead process's messages move on, not how long an
    /// item may take.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How long a process keeps trying to reach an unreachable broker
    /// before failing the job (default 30 s): the job fails this long after
    /// the broker was last reached. What cannot get better by waiting (a
    /// malformed URL, wrong credentials, a server without JetStream, a
    /// message over the server's size limit) fails at once.
    pub fn broker_timeout(mut self, timeout: Duration) -> Self {
        self.broker_timeout = timeout;
        self
    }

    /// How long a worker process waits for a running job to join
    /// (default 60 s).
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's name.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// This process's role.
    pub fn current_role(&self) -> Role {
        self.role
    }

    /// Whether this process is the driver.
    pub fn is_driver(&self) -> bool {
        self.role == Role::Driver
    }

    /// What is wrong with the configuration, if anything.
    fn validate(&self) -> Result<(), String> {
        if let Some(why) = &self.invalid {
            return Err(why.clone());
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.len() > MAX_JOB_NAME {
            return Err(format!(
                "a job name of {} characters is too long: at most {MAX_JOB_NAME} (the broker's stream names, made of it, are limited)",
                self.name.len()
            ));
        }
        if self.name.is_empty() || !self.name.chars().all(valid) {
            return Err(format!(
                "{:?} is not a job name: use letters, digits, `-` and `_`",
                self.name
            ));
        }
        validate_url(&self.url)?;
        if self.process.is_empty() || self.process.contains(['.', '*', '>', ' ']) {
            return Err(format!(
                "{:?} is not a process name: it must be non-empty, without spaces, `.`, `*` or `>`",
                self.process
            ));
        }
        Ok(())
    }

    /// The job's progress, read from the broker: what each stage has taken,
    /// emitted and has pending, summed over the processes of the job's
    /// newest run. Works from any process, including one that is not part
    /// of the job.
    pub fn status(&self) -> Result<JobStatus, BrokerError> {
        status::status(self)
    }

    /// Deletes everything the job keeps on the broker (its control stream,
    /// and the streams of runs that did not complete: a failed run's, or a
    /// killed driver's), and returns how many streams it deleted. Refused,
    /// with an error, while a run of the job is live. A run that completes
    /// deletes its own streams but the control stream; a new run deletes
    /// what earlier runs left.
    pub fn cleanup(&self) -> Result<usize, BrokerError> {
        status::cleanup(self)
    }
}

/// Checks a server URL (or a comma-separated list of them) as the client
/// would read it, so that a malformed one fails at once.
fn validate_url(urls: &str) -> Result<(), String> {
    if urls.trim().is_empty() {
        return Err("the NATS server URL is empty: give one, as nats://host:port".into());
    }
    for url in urls.split(',').map(str::trim) {
        if let Some((scheme, _)) = url.split_once("://")
            && !["nats", "tls", "ws", "wss"].contains(&scheme)
        {
            return Err(format!(
                "{url:?} is not a NATS server URL: its scheme must be nats://, tls://, ws:// or wss://, not {scheme}://"
            ));
        }
        url.parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("{url:?} is not a NATS server URL: {e}"))?;
    }
    Ok(())
}

fn default_process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace(['.', ' ', '*', '>'], "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// How far a job has got: see [`Job::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Whether the run is still going, or how it ended.
    pub state: JobState,
    /// The processes that have reported so far.
    pub processes: Vec<String>,
    /// The stages, in pipeline order.
    pub stages: Vec<StageStatus>,
}

/// Whether a job runs, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobState {
    /// Running.
    Running,
    /// Every result reached the driver.
    Done,
    /// A task failed: the failure, as the driver reports it.
    Failed(String),
    /// The driver stopped reading the results before the end.
    Cancelled,
}

/// One stage's progress, summed over the job's processes: the same type a
/// profiled process stores in its [job samples](crate::profile::JobSample).
pub use crate::profile::JobStageSample as StageStatus;

/// The broker could not be reached, or refused a request, for longer than
/// the job's [broker timeout](Job::broker_timeout).
#[derive(Debug)]
pub struct BrokerError {
    what: Cow<'static, str>,
    source: Option<async_nats::Error>,
}

impl BrokerError {
    fn new(what: impl Into<Cow<'static, str>>, source: impl Into<async_nats::Error>) -> Self {
        BrokerError {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    fn msg(what: impl Into<Cow<'static, str>>) -> Self {
        BrokerError {
            what: what.into(),
            source: None,
        }
    }

    /// The same error, saying it lasted `timeout`.
    fn after(mut self, timeout: Duration) -> Self {
        self.what = format!("{} (failing for {timeout:?})", self.what).into();
        self
    }

    /// The same error, with a hint at what to check.
    fn hint(mut self, hint: &str) -> Self {
        self.what = format!("{}: {hint}", self.what).into();
        self
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NATS broker: {}", self.what)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| &**e as _)
    }
}

/// A stage's error raised in another process of the job: its message (the
/// error itself stayed there). The [`PipelineError`](crate::PipelineError)
/// holding it names the stage, worker and process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    message: String,
}

impl RemoteError {
    /// The error's message, as its `Display` wrote it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

/// The job cannot go on: its driver has not been heard from for the
/// [broker timeout](Job::broker_timeout) (at least 10 s), or, seen from the
/// driver, no live process has run some stage for the
/// [join timeout](Job::join_timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for JobError {}
