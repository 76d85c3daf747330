//! The live debugger: periodic reports on a running pipeline, per stage,
//! handed to pluggable [`Reporter`]s.
//!
//! Switch it on with [`Pipeline::debug`](crate::Pipeline::debug). A monitor
//! thread reads the stages' counters every [`Debugger::every`] (5 s by
//! default) and once more when the pipeline has ended, and hands each
//! [`Report`] to every reporter. The workers only count, locally, and
//! publish once per batch: they never wait on a reporter.
//!
//! ```
//! use parapipe::prelude::*;
//! use parapipe::debug::{Debugger, Report, Reporter};
//! use std::sync::{Arc, Mutex};
//!
//! /// A reporter for a metrics system: here, it keeps the last totals.
//! struct Totals(Arc<Mutex<Vec<(String, u64)>>>);
//!
//! impl Reporter for Totals {
//!     fn report(&mut self, report: &Report) {
//!         let rows = report.stages.iter().map(|s| (s.name.clone(), s.items_out));
//!         *self.0.lock().unwrap() = rows.collect();
//!     }
//! }
//!
//! #[map_stage(workers = 2)]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let totals = Arc::new(Mutex::new(Vec::new()));
//! pipe!(0..100u64 | square)
//!     .debug(Debugger::new().reporter(Totals(totals.clone())))
//!     .run()?;
//! // A row for the source too: a slow source shows.
//! let totals = totals.lock().unwrap().clone();
//! assert_eq!(totals, [("MainPipeline__source".to_owned(), 100), ("MainPipeline__square".to_owned(), 100)]);
//! # Ok::<(), PipelineError>(())
//! ```

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::profile::{Profiler, RunStats, Sample, StageKind, Writer, rss_bytes};

/// What the debugger reports, and how often.
pub struct Debugger {
    every: Duration,
    reporters: Vec<Box<dyn Reporter>>,
}

impl Default for Debugger {
    fn default() -> Self {
        Debugger::new()
    }
}

impl std::fmt::Debug for Debugger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debugger")
            .field("every", &self.every)
            .field("reporters", &self.reporters.len())
            .finish()
    }
}

impl Debugger {
    /// A report every 5 seconds and at the end, printed as a table to
    /// stderr unless you add reporters of your own.
    pub fn new() -> Self {
        Debugger {
            every: Duration::from_secs(5),
            reporters: Vec::new(),
        }
    }

    /// Reports this often (at least every millisecond), and at the end.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// Adds a reporter; the first one added replaces the default table on
    /// stderr.
    pub fn reporter(mut self, reporter: impl Reporter + 'static) -> Self {
        self.reporters.push(Box::new(reporter));
        self
    }

    fn report(&mut self, report: &Report) {
        if self.reporters.is_empty() {
            self.reporters.push(Box::new(TableReporter::stderr()));
        }
        for reporter in &mut self.reporters {
            reporter.report(report);
        }
    }
}

/// Receives the debugger's reports: implement it to send them anywhere.
pub trait Reporter: Send {
    /// Called with each periodic report and once with the final one.
    fn report(&mut self, report: &Report);
}

/// One report on a running (or just finished) pipeline.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// Time since the pipeline started.
    pub elapsed: Duration,
    /// Whether this is the report made once the pipeline has ended.
    pub last: bool,
    /// One row per stage, in pipeline order.
    pub stages: Vec<StageReport>,
    /// Growth of the process's resident memory since the pipeline started,
    /// in bytes (negative if it shrank); `None` where the platform does not
    /// tell.
    pub rss_growth: Option<i64>,
}

/// One stage in a [`Report`]: totals since the pipeline started.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StageReport {
    /// Hierarchical name, as in the profiler: `MainPipeline__stage`.
    pub name: String,
    /// Workers of the stage.
    pub workers: usize,
    /// Items taken.
    pub items_in: u64,
    /// For a keyed stage ([`StageExt::partition_by`](crate::StageExt::partition_by)),
    /// the items each worker has taken, by worker index (a hot key shows
    /// as one worker taking most); empty for other stages.
    pub items_in_by_worker: Vec<u64>,
    /// Items emitted.
    pub items_out: u64,
    /// Time its workers spent working (not waiting on queues), in all.
    pub busy: Duration,
    /// Items emitted per second since the pipeline started.
    pub rate: f64,
    /// User CPU time of the stage's own threads (10 ms resolution); `None`
    /// where the platform does not tell (outside Linux).
    pub cpu_user: Option<Duration>,
    /// System CPU time of the stage's own threads.
    pub cpu_system: Option<Duration>,
    /// Items in its output queue now.
    pub queue_depth: u64,
    /// The most items its output queue has held.
    pub queue_max: u64,
    /// Failing items dropped by `filter_errors`.
    pub filtered: u64,
    /// Items skipped with [`Skip`](crate::Skip).
    pub skipped: u64,
    /// For an async stage: its futures in flight now, and the most at once
    /// (`None` for other stages).
    pub in_flight: Option<(u64, u64)>,
}

/// Prints each report as an aligned table, to stderr or any writer.
pub struct TableReporter<W = std::io::Stderr> {
    out: W,
}

impl<W> std::fmt::Debug for TableReporter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableReporter").finish_non_exhaustive()
    }
}

impl TableReporter {
    /// A table printed to stderr.
    pub fn stderr() -> Self {
        TableReporter {
            out: std::io::stderr(),
        }
    }
}

impl<W: Write + Send> TableReporter<W> {
    /// A table written to `out`.
    pub fn to(out: W) -> Self {
        TableReporter { out }
    }
}

impl<W: Write + Send> Reporter for TableReporter<W> {
    fn report(&mut self, report: &Report) {
        // A reporter that cannot write has nowhere to say so either.
        let _ = self.out.write_all(format_table(report).as_bytes());
        let _ = self.out.flush();
    }
}

/// Formats a report as the aligned table [`TableReporter`] prints.
pub fn format_table(report: &Report) -> String {
    let mut s = String::new();
    let rss = match report.rss_growth {
        Some(b) => format!("{:+.1} MB", b as f64 / 1e6),
        None => "n/a".to_owned(),
    };
    let when = if report.last { "final" } else { "running" };
    let _ = writeln!(
        s,
        "parapipe: {:.2} s ({when}), rss growth {rss}",
        report.elapsed.as_secs_f64()
    );
    let width = report
        .stages
        .iter()
        .map(|st| st.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        s,
        "  {:<width$} {:>4} {:>10} {:>10} {:>8} {:>11} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8}",
        "stage",
        "wkrs",
        "in",
        "out",
        "busy s",
        "items/s",
        "user s",
        "sys s",
        "queue",
        "max",
        "filtered",
        "skipped"
    );
    let secs =
        |d: Option<Duration>| d.map_or("n/a".to_owned(), |d| format!("{:.2}", d.as_secs_f64()));
    for st in &report.stages {
        let _ = write!(
            s,
            "  {:<width$} {:>4} {:>10} {:>10} {:>8.2} {:>11.1} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8}",
            st.name,
            st.workers,
            st.items_in,
            st.items_out,
            st.busy.as_secs_f64(),
            st.rate,
            secs(st.cpu_user),
            secs(st.cpu_system),
            st.queue_depth,
            st.queue_max,
            st.filtered,
            st.skipped,
        );
        if let Some((now, most)) = st.in_flight {
            let _ = write!(s, "  in flight {now} (max {most})");
        }
        if !st.items_in_by_worker.is_empty() {
            let _ = write!(s, "  by worker {}", by_worker(&st.items_in_by_worker));
        }
        let _ = writeln!(s);
    }
    s
}

/// A keyed stage's items per worker, space-separated, in worker order.
fn by_worker(counts: &[u64]) -> String {
    let counts: Vec<String> = counts.iter().map(u64::to_string).collect();
    counts.join(" ")
}

/// Logs each report through the [`log`](https://docs.rs/log) crate, one line per
/// stage, at `info` level with target `parapipe::debugger`.
#[derive(Debug, Default)]
pub struct LogReporter;

impl Reporter for LogReporter {
    fn report(&mut self, report: &Report) {
        log::info!(
            target: "parapipe::debugger",
            "{} s{}, rss growth {} bytes",
            report.elapsed.as_secs_f64(),
            if report.last { " (final)" } else { "" },
            report.rss_growth.map_or("n/a".to_owned(), |b| b.to_string()),
        );
        for st in &report.stages {
            log::info!(
                target: "parapipe::debugger",
                "> {}: in {}{} out {} busy {:.2}s {:.1}/s user {:.2}s sys {:.2}s q {} (max {}) filtered {} skipped {}{}",
                st.name,
                st.items_in,
                match st.items_in_by_worker.is_empty() {
                    true => String::new(),
                    false => format!(" (by worker {})", by_worker(&st.items_in_by_worker)),
                },
                st.items_out,
                st.busy.as_secs_f64(),
                st.rate,
                st.cpu_user.unwrap_or_default().as_secs_f64(),
                st.cpu_system.unwrap_or_default().as_secs_f64(),
                st.queue_depth,
                st.queue_max,
                st.filtered,
                st.skipped,
                st.in_flight.map_or(String::new(), |(now, most)| format!(
                    " in flight {now} (max {most})"
                )),
            );
        }
    }
}

/// Live progress bars on stderr, one per stage, with its counts, rate and
/// queue depth (needs the `progress` feature). Pair it with a short period:
/// `Debugger::new().every(Duration::from_millis(200)).reporter(Progress::new())`.
#[cfg(feature = "progress")]
pub struct Progress {
    multi: indicatif::MultiProgress,
    bars: Vec<indicatif::ProgressBar>,
}
#[cfg(feature = "progress")]
impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("bars", &self.bars.len())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "progress")]
impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

#[cfg(feature = "progress")]
impl Progress {
    /// Progress bars drawn on stderr.
    pub fn new() -> Self {
        Progress {
            multi: indicatif::MultiProgress::new(),
            bars: Vec::new(),
        }
    }
}

#[cfg(feature = "progress")]
impl Reporter for Progress {
    fn report(&mut self, report: &Report) {
        let width = report
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        while self.bars.len() < report.stages.len() {
            let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg}") {
                bar.set_style(style);
            }
            self.bars.push(bar);
        }
        for (bar, s) in self.bars.iter().zip(&report.stages) {
            bar.set_prefix(format!("{:<width$}", s.name));
            bar.set_message(format!(
                "{:>10} in {:>10} out {:>10.1}/s  queue {:>5}",
                s.items_in, s.items_out, s.rate, s.queue_depth
            ));
            if report.last {
                bar.finish();
            } else {
                bar.tick();
            }
        }
    }
}

/// Reads the counters of a run into a report.
pub(crate) fn snapshot(run: &RunStats, last: bool) -> Report {
    let elapsed = run.epoch.elapsed();
    let on_linux = cfg!(target_os = "linux");
    let stages = run
        .stages()
        .iter()
        .map(|st| {
            let out = st.emitted.load(Relaxed);
            let (user, system) = st.cpu_ticks().durations();
            StageReport {
                name: st.key.clone(),
                workers: st.workers,
                items_in: st.taken.load(Relaxed),
                items_in_by_worker: match st.keyed {
                    true => st.taken_by_worker.iter().map(|n| n.load(Relaxed)).collect(),
                    false => Vec::new(),
                },
                items_out: out,
                busy: Duration::from_nanos(st.busy_ns.load(Relaxed)),
                rate: out as f64 / elapsed.as_secs_f64().max(1e-9),
                cpu_user: on_linux.then_some(user),
                cpu_system: on_linux.then_some(system),
                queue_depth: st.queue.depth(),
                queue_max: st.queue.max_depth(),
                filtered: st.counters.filtered.load(Relaxed),
                skipped: st.counters.skipped.load(Relaxed),
                in_flight: (st.kind() == StageKind::Async)
                    .then(|| (st.in_flight.load(Relaxed), st.in_flight_max.load(Relaxed))),
            }
        })
        .collect();
    let rss_growth = match (rss_bytes(), run.rss_at_start) {
        (Some(now), Some(start)) => Some(now as i64 - start as i64),
        _ => None,
    };
    Report {
        elapsed,
        last,
        stages,
        rss_growth,
    }
}

fn samples_of(report: &Report) -> Vec<Sample> {
    let t = report.elapsed.as_secs_f64();
    report
        .stages
        .iter()
        .map(|s| {
            Sample::new(
                t,
                s.name.clone(),
                s.items_in,
                s.items_out,
                s.busy.as_secs_f64(),
                s.queue_depth,
            )
        })
        .collect()
}

/// The monitor thread of a profiled or debugged run: samples the counters
/// into the profile store and makes the debugger's reports.
pub(crate) struct Monitor {
    stop: Option<flume::Sender<()>>,
    handle: Option<JoinHandle<Option<Writer>>>,
}

impl Monitor {
    pub(crate) fn start(
        run: Arc<RunStats>,
        profiler: Option<&Profiler>,
        debugger: Option<Debugger>,
    ) -> Monitor {
        let writer = profiler
            .filter(|p| p.stores())
            .map(|p| Writer::start(p, run.started));
        if writer.is_some() {
            run.store_job_samples();
        }
        let sample_every = profiler
            .filter(|p| p.stores())
            .map(Profiler::sample_interval);
        let (stop, stopped) = flume::bounded::<()>(1);
        let body = move || watch(&run, writer, sample_every, debugger, &stopped);
        // Without its thread the run is still measured, just not sampled
        // over time; nothing is lost that the final profile needs.
        let handle = thread::Builder::new()
            .name("parapipe-monitor".into())
            .spawn(body)
            .ok();
        Monitor {
            stop: Some(stop),
            handle,
        }
    }

    /// Stops the monitor after its final report; returns the store's writer.
    pub(crate) fn stop(mut self) -> Option<Writer> {
        self.stop = None;
        self.handle.take()?.join().ok().flatten()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn watch(
    run: &RunStats,
    writer: Option<Writer>,
    sample_every: Option<Duration>,
    mut debugger: Option<Debugger>,
    stopped: &flume::Receiver<()>,
) -> Option<Writer> {
    let start = Instant::now();
    let report_every = debugger.as_ref().map(|d| d.every);
    // A period past what an `Instant` holds (`Duration::MAX`) means "only
    // at the end".
    let mut next_sample = sample_every.and_then(|d| start.checked_add(d));
    let mut next_report = report_every.and_then(|d| start.checked_add(d));
    loop {
        let wake = match (next_sample, next_report) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                let _ = stopped.recv();
                break;
            }
        };
        if let Err(flume::RecvTimeoutError::Disconnected) = stopped.recv_deadline(wake) {
            break;
        }
        let now = Instant::now();
        let due = |next: Option<Instant>| next.is_some_and(|n| now >= n);
        if due(next_sample) || due(next_report) {
            let report = snapshot(run, false);
            if let (Some(writer), true) = (&writer, due(next_sample)) {
                writer.sample(samples_of(&report));
                writer.job(run.take_job_samples());
            }
            if let (Some(debugger), true) = (&mut debugger, due(next_report)) {
                debugger.report(&report);
            }
        }
        // Skip ticks missed while busy rather than bunching them up.
        let advance = |next: &mut Option<Instant>, every: Option<Duration>| {
            while let (Some(n), Some(every)) = (*next, every) {
                if n > now {
                    break;
                }
                *next = n.checked_add(every);
            }
        };
        advance(&mut next_sample, sample_every);
        advance(&mut next_report, report_every);
    }
    let report = snapshot(run, true);
    if let Some(writer) = &writer {
        writer.sample(samples_of(&report));
        writer.job(run.take_job_samples());
    }
    if let Some(debugger) = &mut debugger {
        debugger.report(&report);
    }
    writer
}
