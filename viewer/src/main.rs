//! `parapipe-profile`: look at the runs in a parapipe profile database
//! (`cargo install parapipe-profile`).
//!
//! ```text
//! parapipe-profile [--db PATH] list
//! parapipe-profile [--db PATH] show [RUN]
//! parapipe-profile [--db PATH] compare RUN_A RUN_B
//! parapipe-profile [--db PATH] svg [RUN] [-o FILE]
//! ```
//!
//! - `list`: every run in the database, oldest first.
//! - `show`: one run (the latest by default): its header and one row per
//!   stage with counts, times, latency (mean, median, p99), throughput, CPU
//!   time, queue maximum, filtered and skipped items; then, for each stage
//!   of several workers, the items each worker took and the busiest one's
//!   share, flagged `imbalanced` when far from an even share (a keyed
//!   stage's hot key). For a process of a distributed job, also the job's
//!   status as last recorded (while the job runs, too): per stage, what it
//!   has taken, emitted and has pending, in all and per process.
//! - `compare`: two runs side by side, stage by stage (matched by name):
//!   mean latency and throughput of each, and the ratio B/A.
//! - `svg`: one run as a self-contained SVG chart: throughput per stage,
//!   latency per stage on a log scale, the items each worker of a stage
//!   took (for stages of several workers), queue depth over time. To
//!   stdout, or to the file given with `-o`.
//!
//! The database is the one given with `--db` (a database file, or a folder
//! holding `profiles.sqlite`), else the one a default [`Profiler`] writes
//! to: `$PARAPIPE_PROFILE_DIR`, else
//! [`default_folder`](parapipe::profile::default_folder).
//!
//! Exit codes: 0 on success, 2 for a usage error (unknown command or
//! option, missing or malformed argument), 1 for a data error (no database,
//! not a database, no such run, output not writable). Every error is one
//! line on stderr. `--help` and `--version` print what they say.
#![deny(missing_docs)]

mod cli;
mod load;
mod report;
mod svg;
mod units;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use parapipe::profile::{self, DATABASE_FILE, Profile, Profiler, RunSummary};

use cli::Command;

/// Why the command stopped, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad command line: exit code 2.
    Usage(String),
    /// Bad or missing data: exit code 1.
    Data(String),
    /// Not a failure: `--help` or `--version`, the text to print.
    Print(String),
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn data(msg: impl std::fmt::Display) -> Failure {
    // One line, whatever the underlying error's message holds.
    Failure::Data(msg.to_string().replace(['\n', '\r'], " "))
}

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Print(text)) => match emit(&text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        },
        Err(Failure::Usage(msg)) => {
            eprintln!("parapipe-profile: {msg} (see parapipe-profile --help)");
            ExitCode::from(2)
        }
        Err(Failure::Data(msg)) => {
            eprintln!("parapipe-profile: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(args: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = cli::parse(args)?;
    let db = database(args.db)?;
    match args.command {
        Command::List => emit(&report::list(&db)?),
        Command::Show(run) => {
            let (summary, profile) = open_run(&db, run)?;
            emit(&report::show(&summary, &profile))
        }
        Command::Compare(a, b) => {
            let a = open_run(&db, Some(a))?;
            let b = open_run(&db, Some(b))?;
            emit(&report::compare(&a, &b))
        }
        Command::Svg(run, output) => {
            let (summary, profile) = open_run(&db, run)?;
            let samples = profile::samples(&db, summary.id).map_err(data)?;
            let svg = svg::svg(&summary, &profile, &samples);
            match output {
                None => emit(&svg),
                Some(path) => std::fs::write(&path, svg)
                    .map_err(|e| data(format!("cannot write {}: {e}", path.display()))),
            }
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(data(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// The database to read: `--db` (a file, or a folder holding
/// [`DATABASE_FILE`]), else the default profiler's.
fn database(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    let db = match given {
        Some(path) if path.is_dir() => path.join(DATABASE_FILE),
        Some(path) => path,
        None => Profiler::new().database(),
    };
    if !db.is_file() {
        return Err(data(format!("no profile database at {}", db.display())));
    }
    Ok(db)
}

/// The run `id` (else the latest) and its profile.
fn open_run(db: &Path, id: Option<i64>) -> Result<(RunSummary, Profile), Failure> {
    let runs = profile::runs(db).map_err(data)?;
    let summary = match id {
        None => runs
            .last()
            .ok_or_else(|| data(format!("no runs in {}", db.display())))?,
        Some(id) => runs.iter().find(|r| r.id == id).ok_or_else(|| {
            let known = match (runs.first(), runs.last()) {
                (Some(first), Some(last)) if first.id == last.id => {
                    format!("its only run is {}", first.id)
                }
                (Some(first), Some(last)) => format!("its runs are {} to {}", first.id, last.id),
                _ => "it has no runs".to_owned(),
            };
            data(format!("no run {id} in {} ({known})", db.display()))
        })?,
    };
    let profile = profile::load(db, summary.id).map_err(data)?;
    Ok((summary.clone(), profile))
}
