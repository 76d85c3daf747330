//! The control thread: keeps the process in step with the job (its end,
//! its failures, its processes' counts, a run that replaced this one).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::broker::Halt;
use super::records::{
    EndRecord, Failed, Outcome, RunRecord, SourceRecord, StageCounts, StatsRecord,
};
use super::{JobState, RemoteError, Role};
use crate::error::{Failure, PipelineError, StageError};
use crate::profile::JobSample;

use super::shared::{
    Shared, halt_to_stage_error, heard_within, job_error, read_record, silence, stats_records,
    unix_ms,
};
use super::status::read_status;

/// How often the control thread reads the job's state.
pub(super) const WATCH: Duration = Duration::from_millis(50);

/// How often a process publishes its counts.
pub(super) const STATS: Duration = Duration::from_millis(500);

/// The control thread: ends this process's part when the job ends, passes
/// a failure of this process on to the others (and theirs to this one),
/// and publishes this process's counts.
pub(super) fn watch(sh: &Shared) -> Result<(), StageError> {
    // Counts at once, then twice a second: a process that joins a short run
    // is known to the others (whose last status sample waits for its final
    // counts) before the run ends.
    let mut last_stats = Instant::now()
        .checked_sub(STATS)
        .unwrap_or_else(Instant::now);
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
    // The broker is out of reach: fail now, without trying it again for
    // final counts (another broker timeout).
    if let Err(Halt::Failed(_)) = &result {
        return result.map_err(halt_to_stage_error);
    }
    // The final counts, best effort: the job is over either way.
    let _ = publish_stats(sh, true);
    sample_job(sh, true);
    result.map_err(halt_to_stage_error)
}

/// How long a profiled process's last job sample waits for the other
/// processes' final counts.
/// (2 s was too short for a worker process on a loaded machine, CI
/// included: the driver stored counts without the worker's last ones.)
pub(super) const FINAL_COUNTS: Duration = Duration::from_secs(5);

/// In a profiled or debugged run, records the job's status as the broker
/// tells it now (best effort: a status that cannot be read is skipped).
/// The `last` one waits, up to [`FINAL_COUNTS`], for the final counts of
/// every process heard from lately, which publish them on seeing the end.
pub(super) fn sample_job(sh: &Shared, last: bool) {
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
pub(super) fn superseded(sh: &Shared) -> Result<(), Halt> {
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

/// What the control thread knows of the other processes: a job must not
/// wait forever for a driver that died, or for a stage no process runs.
pub(super) struct Peers {
    pub(super) joined: Instant,
    /// (Driver) since when some stage has had no live process running it.
    pub(super) uncovered_since: Option<Instant>,
}

impl Peers {
    pub(super) fn new() -> Self {
        Peers {
            joined: Instant::now(),
            uncovered_since: None,
        }
    }

    /// Fails the job if its driver is gone (seen from a worker), or if a
    /// stage has had no live process for the join timeout (seen from the
    /// driver).
    pub(super) fn check(&mut self, sh: &Shared) -> Result<(), Halt> {
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

/// Tells the other processes why this one stopped: its own failure, or,
/// for the driver, that the results were dropped.
pub(super) fn report_local_end(sh: &Shared) -> Result<(), Halt> {
    let end = sh.ctl.peek_failure(|failure| match failure {
        Some(error) if error.process().is_none_or(|p| p == sh.job.process) => {
            let message = match error.failure() {
                Failure::Panic(msg) => msg.clone(),
                Failure::Error(e) => e.to_string(),
                Failure::Spawn(e) => format!("could not start a thread: {e}"),
                Failure::Config(msg) => format!("misconfigured: {msg}"),
                // A distributed pipeline is not part of a graph; if one
                // were, its message is text already.
                Failure::Elsewhere(what) => what.clone(),
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

pub(super) fn remote_failure(failed: &Failed) -> PipelineError {
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
pub(super) fn publish_stats(sh: &Shared, last: bool) -> Result<(), Halt> {
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
