//! A process's start: connecting, then claiming a run (the driver) or
//! joining the live one (a worker).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::broker::{Broker, EdgeSpec, Halt, redact};
use super::records::{EndRecord, RunRecord, StageInfo};
use super::{BrokerError, Job, Role};
use crate::config::{DEFAULT_QSIZE, QueueSize};
use crate::control::Control;
use crate::error::{Failure, PipelineError};
use crate::profile::RunStats;

use super::naming::{control_spec, driver_subject, edge_spec, edges_prefix, is_edge_of};
use super::run::StageSpec;
use super::session::POLL;
use super::shared::{
    Shared, broker_error, halt_error, job_error, rand_u64, read_record, read_record_seq, unix_ms,
};

/// A worker that arrives this long after the newest run ended was started
/// for that run and came too late: it ends at once. After longer, it waits
/// for the next run.
pub(super) const LATE: Duration = Duration::from_secs(10);

/// Connects, then starts a run of the job (driver) or joins one (worker).
pub(super) fn start(
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

/// The edges of run `run`: their stream limits from the stages' queues.
pub(super) fn edges_of(job: &Job, run: u64, stages: &[StageSpec]) -> Vec<EdgeSpec> {
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

/// A driver claimed the job this recently, and has not ended: it counts as
/// live even before it answers (it answers right after claiming).
pub(super) const CLAIMING: Duration = Duration::from_secs(2);

/// The process name of the job's live driver, if it has one: one that
/// answers, or one that has just claimed the job.
pub(super) fn live_driver(
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
pub(super) fn claim(
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

/// Refuses a process whose pipeline is not the run's: other stages, or
/// other item types under the same names.
pub(super) fn check_pipeline(
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
pub(super) fn join(
    shared: &mut Shared,
    source_type: &str,
    ours: &[StageInfo],
) -> Result<(), PipelineError> {
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
