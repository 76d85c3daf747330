//! `parapipe-profile`: look at the runs in a parapipe profile database.
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
//!   time, queue maximum, filtered and skipped items. For a process of a
//!   distributed job, also the job's status as last recorded (while the job
//!   runs, too): per stage, what it has taken, emitted and has pending, in
//!   all and per process.
//! - `compare`: two runs side by side, stage by stage (matched by name):
//!   mean latency and throughput of each, and the ratio B/A.
//! - `svg`: one run as a self-contained SVG chart: throughput per stage,
//!   latency per stage on a log scale, queue depth over time. To stdout, or
//!   to the file given with `-o`.
//!
//! The database is the one given with `--db` (a database file, or a folder
//! holding `profiles.sqlite`), else the one a default [`Profiler`] writes
//! to: `$PARAPIPE_PROFILE_DIR`, else
//! [`default_folder`](parapipe::profile::default_folder).
//!
//! Exit codes: 0 on success, 2 for a usage error (unknown command or
//! option, missing or malformed argument), 1 for a data error (no database,
//! not a database, no such run, output not writable). Every error is one
//! line on stderr.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use parapipe::profile::{
    self, DATABASE_FILE, JobSample, MAIN_PIPELINE_NAME, Profile, Profiler, RunSummary, Sample,
    StageProfile,
};

const USAGE: &str = "\
parapipe-profile: look at the runs in a parapipe profile database

Usage:
  parapipe-profile [--db PATH] list
  parapipe-profile [--db PATH] show [RUN]
  parapipe-profile [--db PATH] compare RUN_A RUN_B
  parapipe-profile [--db PATH] svg [RUN] [-o FILE]

Commands:
  list      every run: id, name, start (UTC), duration, items, outcome
  show      one run, one row per stage (default: the latest run); for a
            distributed job, also the job's status per stage and process
  compare   two runs side by side per stage: mean latency, throughput, B/A
  svg       one run as an SVG chart: throughput, latency (log scale) and
            queue depth over time (default: the latest run, to stdout)

Options:
  --db PATH        the database file, or a folder holding profiles.sqlite
                   (default: $PARAPIPE_PROFILE_DIR/profiles.sqlite, else the
                   profiler's default folder)
  -o, --output F   svg: write the chart to F instead of stdout
  -h, --help       this help

Exit codes: 0 success, 1 data error (no database, no such run), 2 usage error.
";

/// Why the command failed, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad command line: exit code 2.
    Usage(String),
    /// Bad or missing data: exit code 1.
    Data(String),
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn data(msg: impl std::fmt::Display) -> Failure {
    // One line, whatever the underlying error's message holds.
    Failure::Data(msg.to_string().replace(['\n', '\r'], " "))
}

// ---------------------------------------------------------------------------
// Arguments

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Help,
    List,
    Show(Option<i64>),
    Compare(i64, i64),
    Svg(Option<i64>, Option<PathBuf>),
}

#[derive(Debug)]
struct Args {
    db: Option<PathBuf>,
    command: Command,
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args, Failure> {
    let mut args = args.into_iter();
    let mut db: Option<PathBuf> = None;
    let mut output: Option<PathBuf> = None;
    let mut help = false;
    let mut positional: Vec<String> = Vec::new();
    let mut only_positional = false;

    fn set(slot: &mut Option<PathBuf>, flag: &str, value: PathBuf) -> Result<(), Failure> {
        if slot.is_some() {
            return Err(usage(format!("{flag} given twice")));
        }
        if value.as_os_str().is_empty() {
            return Err(usage(format!("{flag} needs a non-empty path")));
        }
        *slot = Some(value);
        Ok(())
    }
    let value = |args: &mut dyn Iterator<Item = OsString>, flag: &str| {
        args.next()
            .map(PathBuf::from)
            .ok_or_else(|| usage(format!("{flag} needs a path")))
    };

    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(usage(format!(
                "argument {} is not valid UTF-8",
                arg.to_string_lossy()
            )));
        };
        if only_positional {
            positional.push(text.to_owned());
            continue;
        }
        match text {
            "-h" | "--help" => help = true,
            "--" => only_positional = true,
            "--db" => set(&mut db, "--db", value(&mut args, "--db")?)?,
            "-o" | "--output" => set(&mut output, text, value(&mut args, text)?)?,
            _ if text.starts_with("--db=") => set(&mut db, "--db", text[5..].into())?,
            _ if text.starts_with("--output=") => {
                set(&mut output, "--output", text[9..].into())?;
            }
            _ if text.starts_with('-') && text.len() > 1 => {
                return Err(usage(format!("unknown option '{text}'")));
            }
            _ => positional.push(text.to_owned()),
        }
    }
    if help {
        return Ok(Args {
            db,
            command: Command::Help,
        });
    }
    let Some((name, rest)) = positional.split_first() else {
        return Err(usage("missing command: list, show, compare or svg"));
    };
    let run = |s: &String| -> Result<i64, Failure> {
        s.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| usage(format!("run id must be a positive whole number, not '{s}'")))
    };
    let too_many = |max: usize| -> Result<(), Failure> {
        match rest.get(max) {
            Some(extra) => Err(usage(format!("{name}: unexpected argument '{extra}'"))),
            None => Ok(()),
        }
    };
    let command = match name.as_str() {
        "list" => {
            too_many(0)?;
            Command::List
        }
        "show" => {
            too_many(1)?;
            Command::Show(rest.first().map(run).transpose()?)
        }
        "compare" => {
            too_many(2)?;
            match rest {
                [a, b] => Command::Compare(run(a)?, run(b)?),
                _ => return Err(usage("compare needs two run ids: compare RUN_A RUN_B")),
            }
        }
        "svg" => {
            too_many(1)?;
            Command::Svg(rest.first().map(run).transpose()?, output.take())
        }
        "help" => Command::Help,
        other => {
            return Err(usage(format!(
                "unknown command '{other}' (expected list, show, compare or svg)"
            )));
        }
    };
    if output.is_some() {
        return Err(usage("-o/--output is only for the svg command"));
    }
    Ok(Args { db, command })
}

// ---------------------------------------------------------------------------
// Commands

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
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
    let args = parse_args(args)?;
    if args.command == Command::Help {
        return emit(USAGE);
    }
    let db = database(args.db)?;
    match args.command {
        Command::Help => unreachable!("handled above"),
        Command::List => emit(&list(&db)?),
        Command::Show(run) => {
            let (summary, profile) = open_run(&db, run)?;
            emit(&show(&summary, &profile))
        }
        Command::Compare(a, b) => {
            let a = open_run(&db, Some(a))?;
            let b = open_run(&db, Some(b))?;
            emit(&compare(&a, &b))
        }
        Command::Svg(run, output) => {
            let (summary, profile) = open_run(&db, run)?;
            let samples = profile::samples(&db, summary.id).map_err(data)?;
            let svg = svg(&summary, &profile, &samples);
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

fn list(db: &Path) -> Result<String, Failure> {
    let runs = profile::runs(db).map_err(data)?;
    if runs.is_empty() {
        return Ok(format!("no runs in {}\n", db.display()));
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.pipeline.clone(),
                started(&r.started_at),
                r.duration.map_or("-".into(), |d| secs(d.as_secs_f64())),
                r.items.to_string(),
                r.outcome.to_string(),
            ]
        })
        .collect();
    Ok(table(
        &[
            "id",
            "name",
            "started (UTC)",
            "duration",
            "items",
            "outcome",
        ],
        &[
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Left,
        ],
        rows,
    ))
}

fn header(summary: &RunSummary) -> String {
    format!(
        "run {}: {}\nstarted   {} UTC\nduration  {}\nitems     {}\noutcome   {}\n",
        summary.id,
        summary.pipeline,
        started(&summary.started_at),
        summary
            .duration
            .map_or("- (never finished)".into(), |d| secs(d.as_secs_f64())),
        summary.items,
        summary.outcome,
    )
}

fn show(summary: &RunSummary, profile: &Profile) -> String {
    let rows = profile
        .stages()
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.clone(),
                if s.kind == "pipeline" {
                    "-".into()
                } else {
                    s.workers.to_string()
                },
                s.items_in.to_string(),
                s.items_out.to_string(),
                format!("{:.3}", s.busy.as_secs_f64()),
                format!("{:.3}", s.active.as_secs_f64()),
                latency(s.latency.mean, s),
                latency(s.latency.median, s),
                latency(s.latency.p99, s),
                rate(s.throughput),
                format!("{:.3}", s.cpu_user.as_secs_f64()),
                format!("{:.3}", s.cpu_system.as_secs_f64()),
                s.queue_max.to_string(),
                s.filtered.to_string(),
                s.skipped.to_string(),
            ]
        })
        .collect();
    let stages = table(
        &[
            "stage",
            "kind",
            "workers",
            "in",
            "out",
            "busy s",
            "active s",
            "mean",
            "median",
            "p99",
            "items/s",
            "cpu user s",
            "cpu sys s",
            "queue max",
            "filtered",
            "skipped",
        ],
        &[Align::Left, Align::Left],
        rows,
    );
    let job = profile.job().map(job).unwrap_or_default();
    if profile.stages().is_empty() {
        return format!(
            "{}\nno per-stage profile was stored for this run (it never finished, or storing it failed)\n{job}",
            header(summary)
        );
    }
    format!("{}\n{stages}{job}", header(summary))
}

/// A distributed job's status: a row per stage, then one per process.
fn job(sample: &JobSample) -> String {
    let mut rows = Vec::new();
    for stage in &sample.stages {
        rows.push(vec![
            stage.name.clone(),
            "(all)".into(),
            stage.taken.to_string(),
            stage.emitted.to_string(),
            stage.pending_messages.to_string(),
        ]);
        for p in &stage.by_process {
            rows.push(vec![
                String::new(),
                p.process.clone(),
                p.taken.to_string(),
                p.emitted.to_string(),
                String::new(),
            ]);
        }
    }
    format!(
        "\njob {}: {} (as recorded {} into this run)\n{}",
        sample.job,
        sample.state,
        secs(sample.t),
        table(
            &["stage", "process", "taken", "emitted", "pending messages"],
            &[Align::Left, Align::Left],
            rows,
        )
    )
}

/// A latency, or `-` for a stage that measured none.
fn latency(value: f64, stage: &StageProfile) -> String {
    if stage.items_out == 0 && value == 0.0 {
        "-".into()
    } else {
        secs(value)
    }
}

fn compare(a: &(RunSummary, Profile), b: &(RunSummary, Profile)) -> String {
    let stage_names =
        |p: &Profile| -> Vec<String> { p.stages().iter().map(|s| s.name.clone()).collect() };
    let names = union_of_stages(&stage_names(&a.1), &stage_names(&b.1));
    let cell = |p: &Profile, name: &str, f: fn(&StageProfile) -> String| {
        p.stage(name).map_or("-".to_owned(), f)
    };
    let ratio = |p: &Profile, q: &Profile, name: &str, f: fn(&StageProfile) -> f64| match (
        p.stage(name).map(f),
        q.stage(name).map(f),
    ) {
        (Some(x), Some(y)) if x > 0.0 && y.is_finite() => format!("{:.2}x", y / x),
        _ => "-".to_owned(),
    };
    let rows = names
        .iter()
        .map(|name| {
            vec![
                name.clone(),
                cell(&a.1, name, |s| latency(s.latency.mean, s)),
                cell(&b.1, name, |s| latency(s.latency.mean, s)),
                ratio(&a.1, &b.1, name, |s| s.latency.mean),
                cell(&a.1, name, |s| rate(s.throughput)),
                cell(&b.1, name, |s| rate(s.throughput)),
                ratio(&a.1, &b.1, name, |s| s.throughput),
            ]
        })
        .collect();
    let line = |tag: &str, (r, _): &(RunSummary, Profile)| {
        format!(
            "{tag}: run {} ({}), started {} UTC, {}, {} items, {}\n",
            r.id,
            r.pipeline,
            started(&r.started_at),
            r.duration.map_or("-".into(), |d| secs(d.as_secs_f64())),
            r.items,
            r.outcome
        )
    };
    format!(
        "{}{}\n{}",
        line("A", a),
        line("B", b),
        table(
            &[
                "stage",
                "mean A",
                "mean B",
                "B/A",
                "items/s A",
                "items/s B",
                "B/A"
            ],
            &[Align::Left],
            rows,
        )
    )
}

/// Stage names of both runs, in order: `a`'s, with each stage only `b` has
/// placed after the stage that precedes it in `b`.
fn union_of_stages(a: &[String], b: &[String]) -> Vec<String> {
    let mut names = a.to_vec();
    let mut after: Option<usize> = None;
    for name in b {
        match names.iter().position(|n| n == name) {
            Some(i) => after = Some(i),
            None => {
                let at = after.map_or(0, |i| i + 1);
                names.insert(at, name.clone());
                after = Some(at);
            }
        }
    }
    names
}

// ---------------------------------------------------------------------------
// Text

/// `2024-05-01T12:00:00.123Z` as `2024-05-01 12:00:00`.
fn started(iso: &str) -> String {
    let s = iso.trim_end_matches('Z').replacen('T', " ", 1);
    match s.split_once('.') {
        Some((whole, _)) => whole.to_owned(),
        None => s,
    }
}

/// Three significant digits.
fn sig3(v: f64) -> String {
    if v < 9.995 {
        format!("{v:.2}")
    } else if v < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Seconds in the unit that reads best: `1.25 s`, `12.5 ms`, `125 µs`, `80.0 ns`.
fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "-".into();
    }
    if s == 0.0 {
        return "0 s".into();
    }
    for (scale, unit) in [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs")] {
        if s >= scale * 0.9995 {
            return format!("{} {unit}", sig3(s / scale));
        }
    }
    format!("{} ns", sig3(s / 1e-9))
}

/// `10^exponent` seconds as a tick label: `10 ns`, `1 µs`, `100 ms`, `10 s`.
fn decade_label(exponent: f64) -> String {
    let e = exponent.round() as i32;
    let (unit, base) = match e {
        e if e >= 0 => ("s", 0),
        -3..=-1 => ("ms", -3),
        -6..=-4 => ("µs", -6),
        _ => ("ns", -9),
    };
    let v = 10f64.powi(e - base);
    if v >= 1.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{} {unit}", compact(v))
    }
}

/// Items per second: one decimal below 10 000, whole above.
fn rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r < 10_000.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// An aligned table: columns two spaces apart, aligned as `align` says
/// (columns past its end align right).
fn table(headers: &[&str], align: &[Align], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            match align.get(i).copied().unwrap_or(Align::Right) {
                Align::Left => {
                    let _ = write!(line, "{cell:<w$}");
                }
                Align::Right => {
                    let _ = write!(line, "{cell:>w$}");
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------
// SVG

const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Stage colours (Tableau 10), used for the queue depth lines.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Mean, median and p99 bars.
const LATENCY_COLOURS: [(&str, &str); 3] = [
    ("mean", "#4e79a7"),
    ("median", "#59a14f"),
    ("p99", "#e15759"),
];

/// Escapes the XML special characters of `s`.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// `s`, cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Roughly how wide `s` is in pixels at `size` (sans-serif averages about
/// 0.6 em a character; over-estimating only leaves more room).
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.62
}

/// A "nice" axis for `0..=max`: its top and the step between ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A tick label: `2.5k`, `1.2M`, `0.25`, `40`.
fn compact(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.2}", v / 1e3)))
    } else {
        trim(format!("{v:.3}"))
    }
}

/// A tick label at `v` on an axis stepping by `step`: as many decimals as
/// the step needs (`0.0005`, `0.001`, `0.0015`), thousands as `k`.
fn tick(v: f64, step: f64) -> String {
    if v.abs() >= 1e3 {
        return compact(v);
    }
    let decimals = (0..10)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(10) as usize;
    format!("{v:.decimals$}")
}

struct Canvas {
    body: String,
}

impl Canvas {
    fn text(&mut self, x: f64, y: f64, size: f64, attrs: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" {attrs}>{}</text>"#,
            xml(s)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="1"/>"#
        );
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tip: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{}</title></rect>"#,
            xml(tip)
        );
    }
}

/// Layout of the chart, in pixels.
struct Frame {
    /// Left edge of the plots (stage names are right-aligned before it).
    left: f64,
    /// Width of the plots.
    plot: f64,
    /// Total width.
    width: f64,
}

const TITLE: f64 = 16.0;
const LABEL: f64 = 12.0;
const SMALL: f64 = 10.5;
const BAR_ROW: f64 = 24.0;
const LATENCY_BAR: f64 = 10.0;
const LATENCY_ROW: f64 = 3.0 * LATENCY_BAR + 14.0;
const QUEUE_PLOT: f64 = 220.0;
/// Room right of a bar's end for its value.
const VALUE_ROOM: f64 = 80.0;

/// The run as one SVG document: throughput per stage, latency per stage
/// (log scale), queue depth over time.
fn svg(summary: &RunSummary, profile: &Profile, samples: &[Sample]) -> String {
    let stages = profile.stages();
    let longest = stages
        .iter()
        .map(|s| text_width(&s.name, LABEL))
        .fold(0.0, f64::max);
    let left = (longest + 24.0).max(140.0);
    let plot = 620.0;
    let frame = Frame {
        left,
        plot,
        width: left + plot + VALUE_ROOM + 20.0,
    };
    let mut c = Canvas {
        body: String::new(),
    };

    let title = format!(
        "parapipe profile: run {} ({})",
        summary.id, summary.pipeline
    );
    c.text(20.0, 30.0, 18.0, r#"font-weight="bold""#, &title);
    let subtitle = format!(
        "started {} UTC · duration {} · {} items · {}",
        started(&summary.started_at),
        summary
            .duration
            .map_or("unknown (never finished)".into(), |d| secs(d.as_secs_f64())),
        summary.items,
        shorten(&summary.outcome.to_string(), 80)
    );
    c.text(20.0, 50.0, LABEL, r##"fill="#555""##, &subtitle);

    let mut y = 80.0;
    if stages.is_empty() {
        c.text(
            20.0,
            y,
            LABEL,
            r##"fill="#555""##,
            "No per-stage profile was stored for this run (it never finished, or storing it failed).",
        );
    } else {
        y = throughput_panel(&mut c, &frame, stages, y);
        y = latency_panel(&mut c, &frame, stages, y + 30.0);
    }
    y = queue_panel(&mut c, &frame, stages, samples, y + 30.0);
    let height = y + 20.0;
    let width = frame.width;
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" "#,
            r#"viewBox="0 0 {w:.0} {h:.0}" font-family="{font}">"#,
            "\n<title>{title}</title>\n",
            r#"<rect width="100%" height="100%" fill="white"/>"#,
            "\n{body}</svg>\n"
        ),
        w = width,
        h = height,
        font = FONT,
        title = xml(&title),
        body = c.body
    )
}

/// The left and bottom axis lines of a panel and the label under it;
/// returns where the next panel may start.
fn axes(c: &mut Canvas, frame: &Frame, top: f64, bottom: f64, label: &str) -> f64 {
    c.line(frame.left, top, frame.left, bottom, "#333");
    c.line(frame.left, bottom, frame.left + frame.plot, bottom, "#333");
    c.text(
        frame.left + frame.plot / 2.0,
        bottom + 34.0,
        LABEL,
        r#"text-anchor="middle""#,
        label,
    );
    bottom + 40.0
}

/// Stage names right-aligned left of the plot, one per row.
fn stage_label(c: &mut Canvas, frame: &Frame, y: f64, name: &str) {
    c.text(
        frame.left - 10.0,
        y,
        LABEL,
        r#"text-anchor="end" dominant-baseline="middle""#,
        name,
    );
}

/// Per-stage throughput bars on a linear axis; returns the y below it.
fn throughput_panel(c: &mut Canvas, frame: &Frame, stages: &[StageProfile], top: f64) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Throughput per stage (items emitted per second of active time)",
    );
    let plot_top = top + 16.0;
    let max = stages
        .iter()
        .map(|s| s.throughput)
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    let (axis_max, step) = nice_axis(max);
    let x_of = |v: f64| frame.left + (v / axis_max).clamp(0.0, 1.0) * frame.plot;
    let bottom = plot_top + stages.len() as f64 * BAR_ROW;
    grid_linear(c, frame, plot_top, bottom, axis_max, step);
    for (i, s) in stages.iter().enumerate() {
        let row = plot_top + i as f64 * BAR_ROW;
        let mid = row + BAR_ROW / 2.0;
        stage_label(c, frame, mid, &s.name);
        let v = if s.throughput.is_finite() {
            s.throughput
        } else {
            0.0
        };
        let end = x_of(v);
        c.rect(
            frame.left,
            row + 4.0,
            end - frame.left,
            BAR_ROW - 8.0,
            PALETTE[0],
            &format!("{}: {} items/s", s.name, rate(v)),
        );
        c.text(
            end + 5.0,
            mid,
            SMALL,
            r#"dominant-baseline="middle""#,
            &format!("{}/s", rate(v)),
        );
    }
    axes(c, frame, plot_top, bottom, "items per second")
}

/// Vertical grid lines and tick labels for `0..=axis_max` every `step`.
fn grid_linear(c: &mut Canvas, frame: &Frame, top: f64, bottom: f64, axis_max: f64, step: f64) {
    let ticks = (axis_max / step).round() as usize;
    for k in 0..=ticks {
        let v = k as f64 * step;
        let x = frame.left + v / axis_max * frame.plot;
        c.line(x, top, x, bottom, "#e3e3e3");
        c.line(x, bottom, x, bottom + 4.0, "#333");
        c.text(
            x,
            bottom + 16.0,
            SMALL,
            r#"text-anchor="middle""#,
            &tick(v, step),
        );
    }
}

/// Per-stage mean, median and p99 latency on a log axis; returns the y
/// below it.
fn latency_panel(c: &mut Canvas, frame: &Frame, stages: &[StageProfile], top: f64) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Latency per item (log scale)",
    );
    // The legend, on the title's line, right-aligned to the plot.
    let mut x = frame.left + frame.plot + VALUE_ROOM;
    for (name, colour) in LATENCY_COLOURS.iter().rev() {
        x -= text_width(name, LABEL) + 6.0;
        c.text(x, top, LABEL, "", name);
        x -= 16.0;
        c.rect(x, top - 10.0, 12.0, 12.0, colour, name);
        x -= 12.0;
    }
    let plot_top = top + 16.0;
    let values = |s: &StageProfile| [s.latency.mean, s.latency.median, s.latency.p99];
    let positive = stages
        .iter()
        .flat_map(values)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (mut lo, mut hi) = if hi > 0.0 {
        (lo.log10().floor(), hi.log10().ceil())
    } else {
        (-6.0, 0.0)
    };
    if hi <= lo {
        hi = lo + 1.0;
    }
    // At least three decades, so that a single decade is not stretched.
    while hi - lo < 3.0 {
        lo -= 1.0;
        if hi - lo < 3.0 {
            hi += 1.0;
        }
    }
    let x_of = |v: f64| frame.left + ((v.log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * frame.plot;
    let bottom = plot_top + stages.len() as f64 * LATENCY_ROW;
    let mut decade = lo;
    while decade <= hi + 0.5 {
        let x = x_of(10f64.powf(decade));
        c.line(x, plot_top, x, bottom, "#e3e3e3");
        c.line(x, bottom, x, bottom + 4.0, "#333");
        c.text(
            x,
            bottom + 16.0,
            SMALL,
            r#"text-anchor="middle""#,
            &decade_label(decade),
        );
        decade += 1.0;
    }
    for (i, s) in stages.iter().enumerate() {
        let row = plot_top + i as f64 * LATENCY_ROW;
        stage_label(c, frame, row + LATENCY_ROW / 2.0, &s.name);
        if !values(s).iter().any(|v| v.is_finite() && *v > 0.0) {
            c.text(
                frame.left + 8.0,
                row + LATENCY_ROW / 2.0,
                SMALL,
                r##"dominant-baseline="middle" fill="#555""##,
                "no item measured",
            );
            continue;
        }
        for (k, (v, (what, colour))) in values(s).iter().zip(LATENCY_COLOURS).enumerate() {
            let bar_top = row + 7.0 + k as f64 * LATENCY_BAR;
            let measured = v.is_finite() && *v > 0.0;
            let end = if measured { x_of(*v) } else { frame.left };
            if measured {
                c.rect(
                    frame.left,
                    bar_top + 1.0,
                    end - frame.left,
                    LATENCY_BAR - 2.0,
                    colour,
                    &format!("{}: {what} {}", s.name, secs(*v)),
                );
            }
            c.text(
                end + 5.0,
                bar_top + LATENCY_BAR / 2.0,
                9.5,
                r#"dominant-baseline="middle""#,
                &if measured { secs(*v) } else { "-".into() },
            );
        }
    }
    axes(
        c,
        frame,
        plot_top,
        bottom,
        "seconds per item (log scale: each grid line is 10x the one before)",
    )
}

/// A queue depth line's colour and dash: solid for the first ten stages,
/// dashed for the next ten, and so on alternating.
fn line_style(i: usize) -> (&'static str, &'static str) {
    let dash = if (i / PALETTE.len()) % 2 == 1 {
        r#" stroke-dasharray="6 3""#
    } else {
        ""
    };
    (PALETTE[i % PALETTE.len()], dash)
}

/// The samples as one series of (time, queue depth) per stage, in pipeline
/// order, then any stage only the samples name. Two stages may share a
/// name (nothing in the store forbids it): the k-th sample of a name at
/// one moment belongs to the k-th stage of that name, labelled `name (k)`.
fn queue_series(stages: &[StageProfile], samples: &[Sample]) -> Vec<(String, Vec<(f64, u64)>)> {
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for s in stages.iter().filter(|s| s.name != MAIN_PIPELINE_NAME) {
        let k = keys.iter().filter(|(n, _)| *n == s.name).count();
        keys.push((&s.name, k));
    }
    let mut points: HashMap<(&str, usize), Vec<(f64, u64)>> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut now = f64::NAN;
    for s in samples {
        if s.t != now {
            seen.clear();
            now = s.t;
        }
        let k = seen.entry(&s.stage).or_insert(0);
        let key = (s.stage.as_str(), *k);
        *k += 1;
        if !keys.contains(&key) {
            keys.push(key);
        }
        points.entry(key).or_default().push((s.t, s.queue_depth));
    }
    keys.into_iter()
        .filter_map(|key| {
            let line = points.remove(&key)?;
            let label = match key {
                (name, 0) => name.to_owned(),
                (name, k) => format!("{name} ({})", k + 1),
            };
            Some((label, line))
        })
        .collect()
}

/// Queue depth over time, one line per stage; returns the y below it.
fn queue_panel(
    c: &mut Canvas,
    frame: &Frame,
    stages: &[StageProfile],
    samples: &[Sample],
    top: f64,
) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Queue depth over time (items waiting in each stage's output queue)",
    );
    let plot_top = top + 16.0;
    let series = queue_series(stages, samples);
    if series.is_empty() {
        c.text(
            frame.left,
            plot_top + 20.0,
            LABEL,
            r##"fill="#555""##,
            "no samples recorded for this run",
        );
        return plot_top + 30.0;
    }
    let t_max = samples.iter().map(|s| s.t).fold(0.0, f64::max);
    let depth_max = samples.iter().map(|s| s.queue_depth).max().unwrap_or(0);
    let (t_axis, t_step) = nice_axis(t_max);
    let (d_axis, d_step) = if depth_max == 0 {
        (1.0, 1.0)
    } else {
        let (top, step) = nice_axis(depth_max as f64);
        // Depths are whole items: no tick at 2.5.
        let step = step.ceil();
        ((top / step).ceil() * step, step)
    };
    let bottom = plot_top + QUEUE_PLOT;
    let x_of = |t: f64| frame.left + (t / t_axis).clamp(0.0, 1.0) * frame.plot;
    let y_of = |d: u64| bottom - (d as f64 / d_axis).clamp(0.0, 1.0) * QUEUE_PLOT;

    grid_linear(c, frame, plot_top, bottom, t_axis, t_step);
    let d_ticks = (d_axis / d_step).round() as u64;
    for k in 0..=d_ticks {
        let d = k as f64 * d_step;
        let y = bottom - d / d_axis * QUEUE_PLOT;
        c.line(frame.left, y, frame.left + frame.plot, y, "#e3e3e3");
        c.line(frame.left - 4.0, y, frame.left, y, "#333");
        c.text(
            frame.left - 8.0,
            y,
            SMALL,
            r#"text-anchor="end" dominant-baseline="middle""#,
            &tick(d, d_step),
        );
    }
    // The legend goes under the axis label: the panel ends below it.
    axes(c, frame, plot_top, bottom, "seconds since the run started");
    let axis_x = frame.left - 8.0 - text_width(&tick(d_axis, d_step), SMALL) - 12.0;
    let axis_y = plot_top + QUEUE_PLOT / 2.0;
    c.text(
        axis_x,
        axis_y,
        LABEL,
        &format!(r#"text-anchor="middle" transform="rotate(-90 {axis_x:.1} {axis_y:.1})""#),
        "items queued",
    );

    for (i, (name, points)) in series.iter().enumerate() {
        let (colour, dash) = line_style(i);
        let mut coords = String::new();
        for (t, d) in points {
            let _ = write!(coords, "{:.1},{:.1} ", x_of(*t), y_of(*d));
        }
        let _ = writeln!(
            c.body,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"{dash}><title>{}</title></polyline>"#,
            coords.trim_end(),
            xml(name)
        );
        if let [(t, d)] = points.as_slice() {
            let _ = writeln!(
                c.body,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x_of(*t),
                y_of(*d)
            );
        }
    }

    // The legend, below the axis label, wrapping across rows.
    let mut x = frame.left;
    let mut y = bottom + 58.0;
    for (i, (name, _)) in series.iter().enumerate() {
        let w = 24.0 + text_width(name, LABEL) + 20.0;
        if x > frame.left && x + w > frame.width - 10.0 {
            x = frame.left;
            y += 20.0;
        }
        let (colour, dash) = line_style(i);
        let _ = writeln!(
            c.body,
            r#"<line x1="{x:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/>"#,
            x + 20.0,
            ly = y - 4.0
        );
        c.text(x + 24.0, y, LABEL, "", name);
        x += w;
    }
    y + 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, Failure> {
        parse_args(list.iter().map(OsString::from))
    }

    #[test]
    fn parses_commands_and_options_anywhere() {
        let a = args(&["--db", "x.sqlite", "show", "3"]).unwrap();
        assert_eq!(a.db, Some(PathBuf::from("x.sqlite")));
        assert_eq!(a.command, Command::Show(Some(3)));
        let a = args(&["svg", "-o", "out.svg", "--db=y"]).unwrap();
        assert_eq!(
            a.command,
            Command::Svg(None, Some(PathBuf::from("out.svg")))
        );
        assert_eq!(a.db, Some(PathBuf::from("y")));
        assert_eq!(
            args(&["compare", "1", "2"]).unwrap().command,
            Command::Compare(1, 2)
        );
        assert_eq!(args(&["list", "-h"]).unwrap().command, Command::Help);
    }

    #[test]
    fn rejects_bad_command_lines() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["list", "--verbose"],
            &["show", "abc"],
            &["show", "0"],
            &["show", "1", "2"],
            &["compare", "1"],
            &["list", "-o", "x"],
            &["--db"],
            &["--db", "a", "--db", "b", "list"],
        ] {
            assert!(matches!(args(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn units_read_well() {
        assert_eq!(secs(1.5), "1.50 s");
        assert_eq!(secs(0.0123), "12.3 ms");
        assert_eq!(secs(0.000_125), "125 µs");
        assert_eq!(secs(80e-9), "80.0 ns");
        assert_eq!(secs(0.9999), "1.00 s");
        assert_eq!(secs(0.0), "0 s");
        assert_eq!(compact(2500.0), "2.5k");
        assert_eq!(decade_label(-8.0), "10 ns");
        assert_eq!(decade_label(-6.0), "1 µs");
        assert_eq!(decade_label(-1.0), "100 ms");
        assert_eq!(decade_label(1.0), "10 s");
        assert_eq!(decade_label(-10.0), "0.1 ns");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(tick(0.0015, 0.0005), "0.0015");
        assert_eq!(tick(0.001, 0.0005), "0.0010");
        assert_eq!(tick(0.5, 0.25), "0.50");
        assert_eq!(tick(40.0, 20.0), "40");
        assert_eq!(tick(2500.0, 500.0), "2.5k");
        assert_eq!(nice_axis(97.0), (100.0, 20.0));
    }

    #[test]
    fn escapes_xml() {
        assert_eq!(xml(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn union_keeps_both_orders() {
        let names = |p: &[&str]| -> Vec<String> { p.iter().map(|s| s.to_string()).collect() };
        let merged = union_of_stages(&names(&["M", "a", "c"]), &names(&["M", "a", "b", "c", "d"]));
        assert_eq!(merged, names(&["M", "a", "b", "c", "d"]));
        let merged = union_of_stages(&names(&["M", "x"]), &names(&["y", "M"]));
        assert_eq!(merged, names(&["y", "M", "x"]));
    }
}
