//! `Job::status` and `Job::cleanup`: reading and clearing what a job keeps
//! on the broker, from any process.

use std::time::Duration;

use super::broker::{Broker, EdgeSpec, Halt, off_runtime};
use super::records::{EndRecord, Outcome, RunRecord, StatsRecord};
use super::{BrokerError, Job, JobState, JobStatus, StageStatus};
use crate::profile::ProcessCounts;

use super::naming::{control_spec, edge_spec, is_edge_of};
use super::shared::{heard_within, read_record, stats_records, unix_ms};
use super::start::live_driver;

/// A process whose counts are older than this is not waited for.
pub(super) const LATELY: Duration = Duration::from_secs(10);

/// Reads a job's status from the broker: see [`Job::status`].
pub(crate) fn status(job: &Job) -> Result<JobStatus, BrokerError> {
    job.validate().map_err(BrokerError::msg)?;
    off_runtime(|| {
        let broker = Broker::connect(job)?;
        // One attempt per read: a status is a snapshot, and a job that does
        // not exist (yet) is an answer, not something to wait for.
        match read_status(&broker, &control_spec(&job.name), &job.name, &|| true) {
            Ok((status, _)) => Ok(status),
            Err(Halt::Failed(e)) => Err(e),
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
            Halt::Failed(e) => e,
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
pub(super) fn read_status(
    broker: &Broker,
    control: &EdgeSpec,
    name: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<(JobStatus, bool), Halt> {
    let no_run = || Halt::Failed(BrokerError::msg(format!("job {name:?} has no run")));
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
