//! The profile database: one writer thread per profiled run owns its
//! connection; [`load`], [`runs`] and [`samples`] read it back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    Histogram, JobSample, JobStageSample, Latency, Outcome, ProcessCounts, Profile, Profiler,
    Sample, StageProfile, StoreError,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    started_at TEXT NOT NULL,
    started_unix REAL NOT NULL,
    duration_s REAL,
    items INTEGER,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS stages (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    workers INTEGER NOT NULL,
    items_in INTEGER NOT NULL,
    items_out INTEGER NOT NULL,
    busy_s REAL NOT NULL,
    active_s REAL NOT NULL,
    latency_mean_s REAL NOT NULL,
    latency_median_s REAL NOT NULL,
    latency_p99_s REAL NOT NULL,
    latency_sum_ns INTEGER NOT NULL,
    throughput REAL NOT NULL,
    cpu_user_s REAL NOT NULL,
    cpu_system_s REAL NOT NULL,
    queue_max INTEGER NOT NULL,
    filtered INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS latency_buckets (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    value_s REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (run_id, stage, bucket)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    t_s REAL NOT NULL,
    stage TEXT NOT NULL,
    items_in INTEGER NOT NULL,
    items_out INTEGER NOT NULL,
    busy_s REAL NOT NULL,
    queue_depth INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run_id, t_s);
CREATE TABLE IF NOT EXISTS job_samples (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    t_s REAL NOT NULL,
    job TEXT NOT NULL,
    state TEXT NOT NULL,
    position INTEGER NOT NULL,
    stage TEXT NOT NULL,
    process TEXT NOT NULL,
    taken INTEGER NOT NULL,
    emitted INTEGER NOT NULL,
    pending_messages INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS job_samples_by_run ON job_samples (run_id, t_s);
CREATE TABLE IF NOT EXISTS stage_workers (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    stage TEXT NOT NULL,
    worker INTEGER NOT NULL,
    items_in INTEGER NOT NULL,
    PRIMARY KEY (run_id, stage, worker)
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
";

/// How long a reader waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the writer waits for another connection's write to finish.
/// Other runs' writes take milliseconds; a database held locked for longer
/// (another process's open transaction) fails the store instead, since the
/// pipeline's results wait for the store's last write when they end.
const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// One row of the `runs` table.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run's id.
    pub id: i64,
    /// Its name ([`Profiler::name`]).
    pub pipeline: String,
    /// When it started, UTC, ISO 8601.
    pub started_at: String,
    /// How long it took; `None` while running (or if its process died).
    pub duration: Option<Duration>,
    /// Items the consumer received.
    pub items: u64,
    /// How it ended.
    pub outcome: Outcome,
}

enum Cmd {
    Samples(Vec<Sample>),
    Job(Vec<JobSample>),
    Finish(Box<Profile>),
}

/// The writer thread of one run.
pub(crate) struct Writer {
    tx: Option<flume::Sender<Cmd>>,
    handle: Option<JoinHandle<Result<i64, StoreError>>>,
    spawn_error: Option<StoreError>,
}

impl Writer {
    pub(crate) fn start(profiler: &Profiler, started: SystemTime) -> Writer {
        let path = profiler.database();
        let (tx, rx) = flume::bounded(profiler.writer_queue);
        let name = profiler.name.clone();
        let max_pages = profiler.max_pages;
        let started = started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let thread_path = path.clone();
        let spawned = thread::Builder::new()
            .name("parapipe-profile-writer".into())
            .spawn(move || write_run(&thread_path, &name, started, max_pages, rx));
        match spawned {
            Ok(handle) => Writer {
                tx: Some(tx),
                handle: Some(handle),
                spawn_error: None,
            },
            Err(e) => Writer {
                tx: None,
                handle: None,
                spawn_error: Some(StoreError::new(
                    &path,
                    "cannot start the writer thread",
                    Some(Box::new(e)),
                )),
            },
        }
    }

    /// Queues samples, waiting while the writer's queue is full. Called by
    /// the monitor thread only, never by a worker.
    pub(crate) fn sample(&self, samples: Vec<Sample>) {
        if let Some(tx) = &self.tx {
            // A writer that failed has stopped reading; its error is
            // reported by `finish`.
            let _ = tx.send(Cmd::Samples(samples));
        }
    }

    /// Queues a distributed job's status samples, as [`sample`](Writer::sample).
    pub(crate) fn job(&self, samples: Vec<JobSample>) {
        if let (Some(tx), false) = (&self.tx, samples.is_empty()) {
            let _ = tx.send(Cmd::Job(samples));
        }
    }

    /// Writes the run's profile and waits for the writer to end.
    pub(crate) fn finish(mut self, profile: &Profile) -> Result<i64, StoreError> {
        if let Some(error) = self.spawn_error.take() {
            return Err(error);
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Cmd::Finish(Box::new(profile.clone())));
        }
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(StoreError::new(
                profile.database(),
                "the writer thread panicked",
                None,
            )),
        }
    }
}

fn sql_error(path: &Path, what: &str, e: rusqlite::Error) -> StoreError {
    StoreError::new(path, what, Some(Box::new(e)))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn open_for_writing(path: &Path, max_pages: Option<u32>) -> Result<Connection, StoreError> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .map_err(|e| StoreError::new(path, "cannot create its folder", Some(Box::new(e))))?;
    }
    let conn = Connection::open(path).map_err(|e| sql_error(path, "cannot open", e))?;
    conn.busy_timeout(WRITE_BUSY_TIMEOUT)
        .map_err(|e| sql_error(path, "cannot configure", e))?;
    if let Some(pages) = max_pages {
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| sql_error(path, "cannot configure", e))?;
    }
    // Readers (the viewer, another run) do not block the writer in WAL mode.
    // The mode is kept in the file: if another run's connection is busy
    // switching it right now, it ends up set all the same, so a failure
    // here is not one (a file that is not a database fails just below).
    let _ = conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()));
    // IMMEDIATE: take the write lock up front, waiting (busy timeout) for
    // another run's writer, rather than fail on upgrading a read lock.
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        .map_err(|e| sql_error(path, "cannot create the tables", e))?;
    Ok(conn)
}

fn write_run(
    path: &Path,
    name: &str,
    started_unix: f64,
    max_pages: Option<u32>,
    rx: flume::Receiver<Cmd>,
) -> Result<i64, StoreError> {
    let opened = open_for_writing(path, max_pages).and_then(|conn| {
        conn.execute(
            "INSERT INTO runs (pipeline, started_at, started_unix, outcome)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', ?2, 'unixepoch'), ?2, 'running')",
            params![name, started_unix],
        )
        .map_err(|e| sql_error(path, "cannot record the run", e))?;
        let id = conn.last_insert_rowid();
        Ok((conn, id))
    });
    let (mut conn, id) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            // Keep taking commands, so that nobody waits on a full queue.
            for _ in rx.iter() {}
            return Err(error);
        }
    };
    let mut failed = None;
    while let Ok(cmd) = rx.recv() {
        // Whatever has piled up goes in the same transaction.
        let cmds: Vec<Cmd> = std::iter::once(cmd).chain(rx.try_iter()).collect();
        if failed.is_none() {
            failed = write_batch(&mut conn, id, &cmds)
                .map_err(|e| sql_error(path, "cannot write", e))
                .err();
        }
    }
    match failed {
        Some(error) => Err(error),
        None => Ok(id),
    }
}

fn write_batch(conn: &mut Connection, id: i64, cmds: &[Cmd]) -> rusqlite::Result<()> {
    // IMMEDIATE, as above: a deferred transaction that must upgrade its
    // read lock fails at once when another writer got in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut sample = tx.prepare(
            "INSERT INTO samples (run_id, t_s, stage, items_in, items_out, busy_s, queue_depth)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for cmd in cmds {
            match cmd {
                Cmd::Samples(rows) => {
                    for s in rows {
                        sample.execute(params![
                            id,
                            s.t,
                            s.stage,
                            i64_of(s.items_in),
                            i64_of(s.items_out),
                            s.busy,
                            i64_of(s.queue_depth)
                        ])?;
                    }
                }
                Cmd::Job(samples) => {
                    for sample in samples {
                        write_job_sample(&tx, id, sample)?;
                    }
                }
                Cmd::Finish(profile) => write_profile(&tx, id, profile)?,
            }
        }
    }
    tx.commit()
}

/// One `job_samples` row per stage for the whole (process `''`), and one
/// per stage and process.
fn write_job_sample(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    j: &JobSample,
) -> rusqlite::Result<()> {
    let mut row = tx.prepare_cached(
        "INSERT INTO job_samples (run_id, t_s, job, state, position, stage, process, taken,
             emitted, pending_messages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (position, s) in j.stages.iter().enumerate() {
        let counts = std::iter::once(("", s.taken, s.emitted, s.pending_messages)).chain(
            s.by_process
                .iter()
                .map(|p| (p.process.as_str(), p.taken, p.emitted, 0)),
        );
        for (process, taken, emitted, pending) in counts {
            row.execute(params![
                id,
                j.t,
                j.job,
                j.state,
                position as i64,
                s.name,
                process,
                i64_of(taken),
                i64_of(emitted),
                i64_of(pending)
            ])?;
        }
    }
    Ok(())
}

fn write_profile(tx: &rusqlite::Transaction<'_>, id: i64, p: &Profile) -> rusqlite::Result<()> {
    let error = match p.outcome() {
        Outcome::Failed(why) => Some(why.as_str()),
        _ => None,
    };
    tx.execute(
        "UPDATE runs SET duration_s = ?2, items = ?3, outcome = ?4, error = ?5 WHERE id = ?1",
        params![
            id,
            p.duration().as_secs_f64(),
            i64_of(p.items()),
            p.outcome().as_str(),
            error
        ],
    )?;
    let mut stage = tx.prepare(
        "INSERT INTO stages (run_id, position, name, kind, workers, items_in, items_out, busy_s,
             active_s, latency_mean_s, latency_median_s, latency_p99_s, latency_sum_ns,
             throughput, cpu_user_s, cpu_system_s, queue_max, filtered, skipped)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;
    let mut bucket = tx.prepare(
        "INSERT INTO latency_buckets (run_id, stage, bucket, value_s, count) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut worker = tx.prepare(
        "INSERT INTO stage_workers (run_id, stage, worker, items_in) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, s) in p.stages().iter().enumerate() {
        stage.execute(params![
            id,
            position as i64,
            s.name,
            s.kind,
            s.workers as i64,
            i64_of(s.items_in),
            i64_of(s.items_out),
            s.busy.as_secs_f64(),
            s.active.as_secs_f64(),
            s.latency.mean,
            s.latency.median,
            s.latency.p99,
            i64::try_from(s.hist.sum_ns()).unwrap_or(i64::MAX),
            s.throughput,
            s.cpu_user.as_secs_f64(),
            s.cpu_system.as_secs_f64(),
            i64_of(s.queue_max),
            i64_of(s.filtered),
            i64_of(s.skipped),
        ])?;
        for (b, count) in s.hist.nonzero() {
            bucket.execute(params![
                id,
                s.name,
                b as i64,
                super::hist::bucket_value(b) / 1e9,
                i64_of(count)
            ])?;
        }
        for (w, taken) in s.items_in_by_worker.iter().enumerate() {
            worker.execute(params![id, s.name, w as i64, i64_of(*taken)])?;
        }
    }
    Ok(())
}

fn open_for_reading(db: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(db, "cannot open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(db, "cannot configure", e))?;
    Ok(conn)
}

/// The columns of a `runs` row that [`run_row`] reads.
const RUN_COLUMNS: &str =
    "id, pipeline, started_at, duration_s, items, outcome, error, started_unix";

/// A `runs` row selected with [`RUN_COLUMNS`], and its start in Unix seconds.
fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunSummary, f64)> {
    let summary = RunSummary {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        started_at: r.get(2)?,
        duration: r.get::<_, Option<f64>>(3)?.map(Duration::from_secs_f64),
        items: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
        outcome: Outcome::from_parts(&r.get::<_, String>(5)?, r.get(6)?),
    };
    Ok((summary, r.get(7)?))
}

/// Every run in the database `db`, oldest first.
pub fn runs(db: impl AsRef<Path>) -> Result<Vec<RunSummary>, StoreError> {
    let db = db.as_ref();
    let conn = open_for_reading(db)?;
    let read = || -> rusqlite::Result<Vec<RunSummary>> {
        let mut stmt = conn.prepare(&format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY id"))?;
        let rows = stmt.query_map([], |r| run_row(r).map(|(summary, _)| summary))?;
        rows.collect()
    };
    read().map_err(|e| sql_error(db, "cannot read the runs", e))
}

/// The profile of run `run` in the database `db`, as the run returned it.
pub fn load(db: impl AsRef<Path>, run: i64) -> Result<Profile, StoreError> {
    let db = db.as_ref();
    let conn = open_for_reading(db)?;
    let (summary, started_unix) = conn
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
            [run],
            run_row,
        )
        .optional()
        .map_err(|e| sql_error(db, "cannot read the run", e))?
        .ok_or_else(|| StoreError::new(db, format!("no run {run}"), None))?;
    let read = || -> rusqlite::Result<Vec<StageProfile>> {
        let mut buckets = conn.prepare(
            "SELECT bucket, count FROM latency_buckets WHERE run_id = ?1 AND stage = ?2",
        )?;
        // A database written before per-worker counts were stored has no
        // such table: its stages load with none, as the field's docs say.
        let mut by_worker = match has_table(&conn, "stage_workers")? {
            true => Some(conn.prepare(
                "SELECT worker, items_in FROM stage_workers
                 WHERE run_id = ?1 AND stage = ?2 ORDER BY worker",
            )?),
            false => None,
        };
        let mut stmt = conn.prepare(
            "SELECT name, kind, workers, items_in, items_out, busy_s, active_s, latency_mean_s,
                    latency_median_s, latency_p99_s, latency_sum_ns, throughput, cpu_user_s,
                    cpu_system_s, queue_max, filtered, skipped
             FROM stages WHERE run_id = ?1 ORDER BY position",
        )?;
        let mut rows = stmt.query([run])?;
        let mut stages = Vec::new();
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let hist = buckets
                .query_map(params![run, name], |b| {
                    Ok((b.get::<_, i64>(0)? as usize, b.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let sum_ns = r.get::<_, i64>(10)? as u128;
            let secs = |i| r.get::<_, f64>(i).map(Duration::from_secs_f64);
            let workers = r.get::<_, i64>(2)? as usize;
            let items_in_by_worker = match &mut by_worker {
                Some(stmt) => read_by_worker(stmt, run, &name, workers)?,
                None => Vec::new(),
            };
            stages.push(StageProfile {
                kind: r.get(1)?,
                workers,
                items_in: r.get::<_, i64>(3)? as u64,
                items_in_by_worker,
                items_out: r.get::<_, i64>(4)? as u64,
                busy: secs(5)?,
                active: secs(6)?,
                latency: Latency {
                    mean: r.get(7)?,
                    median: r.get(8)?,
                    p99: r.get(9)?,
                    samples: hist.iter().map(|(_, c)| c).sum(),
                },
                throughput: r.get(11)?,
                cpu_user: secs(12)?,
                cpu_system: secs(13)?,
                queue_max: r.get::<_, i64>(14)? as u64,
                // Not stored yet: see the field's docs.
                in_flight_max: 0,
                filtered: r.get::<_, i64>(15)? as u64,
                skipped: r.get::<_, i64>(16)? as u64,
                hist: Arc::new(Histogram::from_parts(hist, sum_ns)),
                name,
            });
        }
        Ok(stages)
    };
    let stages = read().map_err(|e| sql_error(db, "cannot read the run's stages", e))?;
    let job = read_job_samples(&conn, run)
        .map_err(|e| sql_error(db, "cannot read the job's status", e))?
        .pop();
    Ok(Profile {
        run_id: Some(run),
        database: PathBuf::from(db),
        pipeline: summary.pipeline,
        started: UNIX_EPOCH + Duration::from_secs_f64(started_unix.max(0.0)),
        duration: summary.duration.unwrap_or_default(),
        outcome: summary.outcome,
        stages,
        job,
        store_error: None,
    })
}

/// The samples of run `run`, in time order: each stage's counts and queue
/// depth every [`Profiler::sample_every`].
pub fn samples(db: impl AsRef<Path>, run: i64) -> Result<Vec<Sample>, StoreError> {
    let db = db.as_ref();
    let conn = open_for_reading(db)?;
    let read = || -> rusqlite::Result<Vec<Sample>> {
        let mut stmt = conn.prepare(
            "SELECT t_s, stage, items_in, items_out, busy_s, queue_depth
             FROM samples WHERE run_id = ?1 ORDER BY t_s, rowid",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok(Sample {
                t: r.get(0)?,
                stage: r.get(1)?,
                items_in: r.get::<_, i64>(2)? as u64,
                items_out: r.get::<_, i64>(3)? as u64,
                busy: r.get(4)?,
                queue_depth: r.get::<_, i64>(5)? as u64,
            })
        })?;
        rows.collect()
    };
    read().map_err(|e| sql_error(db, "cannot read the samples", e))
}

/// The status samples of the distributed job that run `run` was part of,
/// in time order (none for a local run): see
/// [Distributed runs](super#distributed-runs).
pub fn job_samples(db: impl AsRef<Path>, run: i64) -> Result<Vec<JobSample>, StoreError> {
    let db = db.as_ref();
    let conn = open_for_reading(db)?;
    read_job_samples(&conn, run).map_err(|e| sql_error(db, "cannot read the job's status", e))
}

/// Whether the database has the table `name`: tables added after the
/// first schema are missing from databases written before them.
fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}

/// The items each worker of `stage` took, by worker index; empty if none
/// were stored for it. The writer stores every worker, `0..workers`: a
/// row out of that sequence is a malformed database, an error, not a
/// guess.
fn read_by_worker(
    stmt: &mut rusqlite::Statement<'_>,
    run: i64,
    stage: &str,
    workers: usize,
) -> rusqlite::Result<Vec<u64>> {
    let mut rows = stmt.query(params![run, stage])?;
    let mut counts = Vec::new();
    while let Some(r) = rows.next()? {
        let worker: i64 = r.get(0)?;
        if usize::try_from(worker).ok() != Some(counts.len()) || counts.len() >= workers {
            return Err(rusqlite::Error::IntegralValueOutOfRange(0, worker));
        }
        counts.push(r.get::<_, i64>(1)? as u64);
    }
    Ok(counts)
}

fn read_job_samples(conn: &Connection, run: i64) -> rusqlite::Result<Vec<JobSample>> {
    // A database written before job samples existed has no such table.
    if !has_table(conn, "job_samples")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT t_s, job, state, position, stage, process, taken, emitted, pending_messages
         FROM job_samples WHERE run_id = ?1 ORDER BY t_s, position, process = '' DESC, rowid",
    )?;
    let mut rows = stmt.query([run])?;
    let mut samples: Vec<JobSample> = Vec::new();
    while let Some(r) = rows.next()? {
        let t: f64 = r.get(0)?;
        let position = r.get::<_, i64>(3)? as usize;
        let process: String = r.get(5)?;
        let (taken, emitted) = (r.get::<_, i64>(6)? as u64, r.get::<_, i64>(7)? as u64);
        if samples.last().is_none_or(|s| s.t != t) {
            samples.push(JobSample {
                t,
                job: r.get(1)?,
                state: r.get(2)?,
                stages: Vec::new(),
            });
        }
        let sample = samples.last_mut().expect("pushed above");
        if process.is_empty() {
            sample.stages.push(JobStageSample {
                name: r.get(4)?,
                taken,
                emitted,
                pending_messages: r.get::<_, i64>(8)? as u64,
                by_process: Vec::new(),
            });
        } else if let Some(stage) = sample.stages.get_mut(position) {
            stage
                .by_process
                .push(ProcessCounts::new(process, taken, emitted));
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished run with one keyed stage of three workers.
    fn profile(db: &Path) -> Profile {
        let stage = StageProfile {
            name: "MainPipeline__keyed".to_owned(),
            kind: "iter".to_owned(),
            workers: 3,
            items_in: 10,
            items_in_by_worker: vec![7, 0, 3],
            items_out: 10,
            busy: Duration::from_millis(5),
            active: Duration::from_millis(9),
            latency: Latency::default(),
            throughput: 1000.0,
            cpu_user: Duration::ZERO,
            cpu_system: Duration::ZERO,
            queue_max: 4,
            in_flight_max: 0,
            filtered: 0,
            skipped: 0,
            hist: Arc::default(),
        };
        Profile {
            run_id: None,
            database: db.to_owned(),
            pipeline: "keyed".to_owned(),
            started: UNIX_EPOCH,
            duration: Duration::from_millis(10),
            outcome: Outcome::Completed,
            stages: vec![stage],
            job: None,
            store_error: None,
        }
    }

    /// Writes `profile` with the writer's own code, as a run does.
    fn store(db: &Path, profile: Profile) -> i64 {
        let (tx, rx) = flume::unbounded();
        tx.send(Cmd::Finish(Box::new(profile))).unwrap();
        drop(tx);
        write_run(db, "keyed", 0.0, None, rx).unwrap()
    }

    fn scratch(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("parapipe-unit-{}-store-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("profiles.sqlite")
    }

    fn by_worker(db: &Path, run: i64) -> Result<Vec<u64>, StoreError> {
        let stage = load(db, run)?.stages.remove(0);
        Ok(stage.items_in_by_worker)
    }

    #[test]
    fn per_worker_counts_survive_a_reload() {
        let db = scratch("round-trip");
        let run = store(&db, profile(&db));
        assert_eq!(by_worker(&db, run).unwrap(), [7, 0, 3]);
        let _ = std::fs::remove_dir_all(db.parent().unwrap());
    }

    #[test]
    fn a_database_older_than_per_worker_counts_still_loads() {
        let db = scratch("older");
        let old = store(&db, profile(&db));
        // What a database written before the table existed looks like.
        Connection::open(&db)
            .unwrap()
            .execute_batch("DROP TABLE stage_workers")
            .unwrap();
        let loaded = load(&db, old).unwrap();
        assert!(loaded.stages[0].items_in_by_worker.is_empty());
        assert_eq!(loaded.stages[0].items_in, 10);
        // A new run in the old file adds the table; the old run has no rows.
        let new = store(&db, profile(&db));
        assert_eq!(by_worker(&db, new).unwrap(), [7, 0, 3]);
        assert!(by_worker(&db, old).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(db.parent().unwrap());
    }

    #[test]
    fn a_malformed_worker_row_is_an_error() {
        let db = scratch("malformed");
        let run = store(&db, profile(&db));
        let conn = Connection::open(&db).unwrap();
        // A worker past the stage's three, then a gap in the sequence.
        for sql in [
            "INSERT INTO stage_workers VALUES (1, 'MainPipeline__keyed', 3, 1)",
            "DELETE FROM stage_workers WHERE worker = 3 OR worker = 1",
        ] {
            conn.execute_batch(sql).unwrap();
            let error = by_worker(&db, run).unwrap_err().to_string();
            assert!(error.contains("cannot read the run's stages"), "{error}");
        }
        let _ = std::fs::remove_dir_all(db.parent().unwrap());
    }
}
