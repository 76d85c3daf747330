//! What the threads of one process share during a run, and reading the
//! job's control records.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::broker::{Broker, EdgeSpec, Halt, off_runtime};
use super::records::{Record, StatsRecord};
use super::{BrokerError, Job, JobError, Role, Wire};
use crate::control::Control;
use crate::error::{Failure, PipelineError, StageError, Stop};
use crate::profile::RunStats;

use super::naming::SEQ;

/// What the threads of one process share during a run.
pub(crate) struct Shared {
    pub(super) broker: Broker,
    pub(super) job: Job,
    pub(super) run: u64,
    pub(super) control: EdgeSpec,
    pub(super) edges: Vec<EdgeSpec>,
    pub(super) stage_names: Vec<String>,
    /// Which stages this process runs.
    pub(super) runs_stage: Vec<bool>,
    pub(super) ordered: bool,
    /// The driver's process name.
    pub(super) driver: String,
    pub(super) ctl: Arc<Control>,
    /// The number of source messages, once the source has ended.
    pub(super) source_total: OnceLock<u64>,
    /// The job ended without failing (done, or cancelled by the driver).
    pub(super) over: AtomicBool,
    /// (Worker) this process came after its run had ended: it does nothing.
    pub(super) late: bool,
    /// Per edge: whether this process has checked that its items read back
    /// as they were written (see [`Shared::publish`]).
    pub(super) checked: Vec<AtomicBool>,
    /// (Driver) every result is in.
    pub(super) completed: AtomicBool,
    pub(super) taken: Vec<AtomicU64>,
    pub(super) emitted: Vec<AtomicU64>,
    /// In a profiled or debugged run, what this process measures.
    pub(super) stats: Option<Arc<RunStats>>,
    /// (Driver, profiled) when each source message in flight was published,
    /// by sequence number: the start of its items' end-to-end latency.
    pub(super) published: Option<Mutex<HashMap<u64, Instant>>>,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        self.ctl.is_cancelled() || self.over.load(Relaxed)
    }

    pub(super) fn subject(&self, what: &str) -> String {
        format!("{}.{what}", self.control.subject)
    }

    /// Publishes the message of `seq` (a source message's number) on edge `edge`.
    pub(super) fn publish<O: Wire>(&self, edge: usize, seq: u64, items: &[O]) -> Result<(), Halt> {
        let payload = postcard::to_stdvec(items)
            .map_err(|e| Halt::Failed(BrokerError::new("could not serialise items", e)))?;
        // The first message of each edge is read back here: a type that
        // serde can write but the wire format cannot read fails at once,
        // named, rather than in whichever process reads it.
        if !self.checked[edge].swap(true, Relaxed)
            && let Err(e) = postcard::from_bytes::<Vec<O>>(&payload)
        {
            return Err(Halt::Failed(BrokerError::new(
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
            return Err(Halt::Failed(BrokerError::msg(format!(
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
    pub(super) fn record(&self, what: &str, record: &impl Record) -> Result<(), Halt> {
        let id = format!("{}.{what}.{}", self.run, rand_u64());
        let payload = serde_json::to_vec(record)
            .map_err(|e| Halt::Failed(BrokerError::new("could not write a control record", e)))?;
        self.broker
            .publish(&self.subject(what), &id, &[], payload.into(), &|| false)
    }

    /// A control record of this run, if there is one yet.
    pub(super) fn read<R: Record>(&self, what: &str) -> Result<Option<R>, Halt> {
        let record = read_record::<R>(&self.broker, &self.control, what, &|| false)?;
        Ok(record.filter(|r| r.run() == self.run))
    }

    /// Whether edge `edge` has received every message it will get and
    /// delivered them all: its consumer's input has ended.
    pub(super) fn input_complete(&self, edge: usize) -> Result<bool, Halt> {
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
        // A broker out of reach: the streams stay, for the next run or
        // `Job::cleanup` (trying would only delay the results' end).
        if self.job.role == Role::Driver && self.run != 0 && self.broker.connected() {
            let names = self.edges.iter().map(|e| e.stream.as_str());
            // On the caller's async runtime, if the pipeline ended there.
            off_runtime(|| self.broker.delete_streams(names));
        }
    }
}

/// The newest control record `what` (`run`, `end`, `stats.<process>`...) of
/// any run.
pub(super) fn read_record<R: Record>(
    broker: &Broker,
    control: &EdgeSpec,
    what: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<R>, Halt> {
    Ok(read_record_seq(broker, control, what, cancelled)?.map(|(record, _)| record))
}

/// [`read_record`], with the record's sequence number in the stream.
pub(super) fn read_record_seq<R: Record>(
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
        Err(e) => Err(Halt::Failed(BrokerError::new(
            format!(
                "the job's control record {what:?} is malformed (written by another version of parapipe, or by another program?)"
            ),
            e,
        ))),
    }
}

/// The names (`stats.<process>`) of the processes' count records, for
/// [`read_record`].
pub(super) fn stats_records(
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

pub(super) fn halt_to_stage_error(halt: Halt) -> StageError {
    match halt {
        Halt::Cancelled => StageError(Stop::Cancelled),
        Halt::Failed(e) => StageError::failed(e),
    }
}

/// The wall-clock time, in milliseconds since 1970.
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh number for a run or a record id.
pub(super) fn rand_u64() -> u64 {
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

pub(super) fn broker_error(e: BrokerError) -> PipelineError {
    PipelineError::new("broker", None, Failure::Error(e.into()))
}

pub(super) fn halt_error(h: Halt) -> PipelineError {
    match h {
        Halt::Failed(e) => broker_error(e),
        Halt::Cancelled => PipelineError::new("broker", None, Failure::Config("cancelled".into())),
    }
}

pub(super) fn job_error(message: String) -> PipelineError {
    PipelineError::new("job", None, Failure::Error(Box::new(JobError { message })))
}

/// Whether a process's counts record was published at most `window`
/// before `now` (Unix ms).
pub(super) fn heard_within(stats: &StatsRecord, now: u64, window: Duration) -> bool {
    now.saturating_sub(stats.at) <= window.as_millis() as u64
}

/// How long a process may go unheard (its counts are published every
/// half second) before the job counts it as gone.
pub(super) fn silence(job: &Job) -> Duration {
    job.broker_timeout.max(Duration::from_secs(10))
}
