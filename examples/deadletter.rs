//! Dead letters: a real file parsed line by line on parallel workers;
//! the lines that fail to parse go, with their file, line number and
//! error, to a dead-letter file, and the rest are summarised.
//!
//! The input is `/etc/services` (Debian's `netbase` package: one service
//! per line, `name port/protocol [aliases...] [# comment]`), or the files
//! given as arguments. A file of another format shows the dead-letter path
//! at work, for example `/etc/protocols` (`name number [aliases...]`):
//!
//! ```text
//! cargo run --release --example deadletter -- /etc/services /etc/protocols
//! ```
//!
//! The parse stage's `Err` items are kept as items (`keep_errors`) and
//! split from the good ones (`split_result`); the two branches are read at
//! once, the dead letters on a thread of their own.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parapipe::prelude::*;
use parapipe::{BoxError, stages};

/// One line of an input file (blank and comment-only lines are left out,
/// numbering kept).
#[derive(Debug, Clone)]
pub struct Line {
    pub file: Arc<str>,
    pub number: usize,
    pub text: String,
}

/// A service: `name port/protocol [aliases...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub aliases: usize,
}

/// A line that is not a service, and why.
#[derive(Debug)]
pub struct BadLine {
    pub line: Line,
    pub why: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Line { file, number, text } = &self.line;
        write!(f, "{file}:{number}: {}: {text}", self.why)
    }
}

impl std::error::Error for BadLine {}

/// The protocols `services(5)` knows.
const PROTOCOLS: [&str; 4] = ["tcp", "udp", "sctp", "ddp"];

/// Parses one line as a service, strictly.
pub fn parse_service(line: &Line) -> Result<Service, String> {
    let record = line.text.split('#').next().unwrap_or_default();
    let mut fields = record.split_whitespace();
    let name = fields.next().ok_or("no service name")?;
    let entry = fields.next().ok_or("no port/protocol")?;
    let (port, protocol) = entry
        .split_once('/')
        .ok_or_else(|| format!("{entry:?} is not port/protocol"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("port {port:?} is not a port number: {e}"))?;
    if !PROTOCOLS.contains(&protocol) {
        return Err(format!("unknown protocol {protocol:?}"));
    }
    Ok(Service {
        name: name.to_owned(),
        port,
        protocol: protocol.to_owned(),
        aliases: fields.count(),
    })
}

#[map_stage(workers = 2)]
fn parse(line: Line) -> Result<Service, BadLine> {
    parse_service(&line).map_err(|why| BadLine { line, why })
}

/// What the good lines add up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub services: usize,
    pub per_protocol: BTreeMap<String, usize>,
    pub aliases: usize,
    pub highest_port: u16,
}

impl Summary {
    pub fn with(mut self, service: Service) -> Summary {
        self.services += 1;
        *self.per_protocol.entry(service.protocol).or_default() += 1;
        self.aliases += service.aliases;
        self.highest_port = self.highest_port.max(service.port);
        self
    }

    pub fn merge(mut self, other: Summary) -> Summary {
        self.services += other.services;
        for (protocol, n) in other.per_protocol {
            *self.per_protocol.entry(protocol).or_default() += n;
        }
        self.aliases += other.aliases;
        self.highest_port = self.highest_port.max(other.highest_port);
        self
    }
}

/// The records of `paths`: every line but blank and comment-only ones.
pub fn read_lines(paths: &[PathBuf]) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)?;
        let file: Arc<str> = path.display().to_string().into();
        for (index, text) in text.lines().enumerate() {
            let trimmed = text.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (file, number, text) = (file.clone(), index + 1, text.to_owned());
            lines.push(Line { file, number, text });
        }
    }
    Ok(lines)
}

/// Parses `lines` on parallel workers: the summary of the good ones, and
/// how many dead letters were written to `dead_letters`.
pub fn run(lines: Vec<Line>, dead_letters: &Path) -> Result<(Summary, usize), BoxError> {
    let (services, bad) = pipe!(lines | parse.keep_errors()).split_result();
    let file = std::fs::File::create(dead_letters)?;
    // Both branches are read at once: the dead letters on this thread.
    let writer = std::thread::spawn(move || -> Result<usize, BoxError> {
        let mut out = BufWriter::new(file);
        let mut written = 0;
        for bad in bad.results() {
            writeln!(out, "{}", bad?)?;
            written += 1;
        }
        out.flush()?;
        Ok(written)
    });
    let summary = pipe!(services | stages::fold(Summary::default, Summary::with).workers(2))
        .reduce(Summary::merge)?
        .unwrap_or_default();
    let written = writer
        .join()
        .expect("the dead-letter writer does not panic")?;
    Ok((summary, written))
}

fn main() -> Result<(), BoxError> {
    let mut paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push("/etc/services".into());
    }
    let lines = read_lines(&paths)?;
    let dead_letters = std::env::temp_dir().join("parapipe-dead-letters.txt");
    let records = lines.len();
    let (summary, dead) = run(lines, &dead_letters)?;
    println!("{records} records in {paths:?}");
    println!(
        "{} services ({:?}), {} aliases, highest port {}",
        summary.services, summary.per_protocol, summary.aliases, summary.highest_port
    );
    println!("{dead} dead letters, in {}", dead_letters.display());
    Ok(())
}
