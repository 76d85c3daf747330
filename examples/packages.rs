//! Analytics over a real text: the Debian package index (every package's
//! stanza of `Field: value` lines, about 50 MB on Debian 12), summarised
//! three ways and timed side by side:
//!
//! - **a plain loop**: parse each stanza, add it to one summary;
//! - **one record per item**, the way the README teaches: each stanza an
//!   item, a `#[map_stage]` parsing it on 2 workers, `stages::fold` adding
//!   each worker's share into a summary of its own, `reduce` merging the two;
//! - **coarse items**: blocks of about 1 MiB of whole stanzas, each parsed
//!   and summarised by one call on 2 workers, the summaries merged.
//!
//! All three give the same summary (checked). The index comes from apt's
//! lists (`/var/lib/apt/lists/*_Packages*`, fetched by `apt-get update`),
//! decompressed with `apt-helper cat-file` and read into memory before
//! anything is timed; a path to an uncompressed index may be given instead.
//!
//! Run with `cargo run --release --example packages [-- PATH]`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use parapipe::prelude::*;
use parapipe::stages;

/// What the summary needs of one package.
#[derive(Debug)]
pub struct Package {
    pub name: String,
    pub section: String,
    pub maintainer: String,
    pub installed_kib: u64,
    pub depends: usize,
}

/// One stanza's package, or `None` for a stanza without a `Package` field.
pub fn parse(stanza: &str) -> Option<Package> {
    let mut package = Package {
        name: String::new(),
        section: String::new(),
        maintainer: String::new(),
        installed_kib: 0,
        depends: 0,
    };
    for line in stanza.lines() {
        // Continuation lines start with a blank; only fields matter here.
        let Some((field, value)) = line.split_once(": ") else {
            continue;
        };
        match field {
            "Package" => package.name = value.to_owned(),
            "Section" => package.section = value.to_owned(),
            "Maintainer" => package.maintainer = value.to_owned(),
            "Installed-Size" => package.installed_kib = value.trim().parse().unwrap_or(0),
            "Depends" => package.depends = value.split(',').count(),
            _ => {}
        }
    }
    (!package.name.is_empty()).then_some(package)
}

/// Counts and sums over many packages.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub packages: u64,
    pub depends: u64,
    /// Section: (packages, installed KiB).
    pub sections: HashMap<String, (u64, u64)>,
    /// Maintainer: packages.
    pub maintainers: HashMap<String, u64>,
    /// The largest installed size, and its package (the first name in
    /// alphabetical order on a tie, so the result never depends on order).
    pub largest: (u64, String),
}

impl Summary {
    /// This summary with one more package (`None` is no package).
    pub fn with(mut self, package: Option<Package>) -> Summary {
        let Some(p) = package else {
            return self;
        };
        self.packages += 1;
        self.depends += p.depends as u64;
        let section = self.sections.entry(p.section).or_default();
        section.0 += 1;
        section.1 += p.installed_kib;
        *self.maintainers.entry(p.maintainer).or_default() += 1;
        self.keep_largest(p.installed_kib, p.name);
        self
    }

    /// Two summaries as one.
    pub fn merge(mut self, other: Summary) -> Summary {
        self.packages += other.packages;
        self.depends += other.depends;
        for (name, (n, kib)) in other.sections {
            let section = self.sections.entry(name).or_default();
            section.0 += n;
            section.1 += kib;
        }
        for (name, n) in other.maintainers {
            *self.maintainers.entry(name).or_default() += n;
        }
        let (kib, name) = other.largest;
        self.keep_largest(kib, name);
        self
    }

    fn keep_largest(&mut self, kib: u64, name: String) {
        let (best, best_name) = &self.largest;
        if kib > *best || (kib == *best && (best_name.is_empty() || name < *best_name)) {
            self.largest = (kib, name);
        }
    }
}

/// Each stanza of `text` as an item of its own.
pub fn stanzas(text: String) -> impl Iterator<Item = String> {
    cut(text, 1)
}

/// Blocks of whole stanzas of at least `size` bytes (the last may be less).
pub fn blocks(text: String, size: usize) -> impl Iterator<Item = String> {
    cut(text, size)
}

/// `text` cut after blank lines, in pieces of at least `size` bytes.
fn cut(text: String, size: usize) -> impl Iterator<Item = String> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let rest = &text[start..];
        if rest.trim().is_empty() {
            return None;
        }
        let mut end = rest.len();
        let mut from = size.min(rest.len());
        while let Some(blank) = rest.get(from..).and_then(|r| r.find("\n\n")) {
            let at = from + blank;
            if !rest[..at].trim().is_empty() {
                end = at + 2;
                break;
            }
            from = at + 2;
        }
        let piece = rest[..end].to_owned();
        start += end;
        Some(piece)
    })
}

/// Parses one stanza.
#[map_stage(workers = 2)]
fn parse_stanza(stanza: String) -> Option<Package> {
    parse(&stanza)
}

/// Parses and summarises a block of stanzas in one call.
#[map_stage(workers = 2)]
fn summarise_block(block: String) -> Summary {
    block
        .split("\n\n")
        .map(parse)
        .fold(Summary::default(), Summary::with)
}

/// The plain loop.
pub fn sequential(text: String) -> Summary {
    stanzas(text)
        .map(|s| parse(&s))
        .fold(Summary::default(), Summary::with)
}

/// One stanza per item: parsed on 2 workers, folded per worker, merged.
pub fn per_record(text: String) -> Result<Summary, PipelineError> {
    let summary = pipe!(
        stanzas(text) | parse_stanza | stages::fold(Summary::default, Summary::with).workers(2)
    )
    .reduce(Summary::merge)?;
    Ok(summary.unwrap_or_default())
}

/// Blocks of about 1 MiB: parsed and summarised per block on 2 workers.
pub fn coarse(text: String) -> Result<Summary, PipelineError> {
    let summary = pipe!(blocks(text, 1 << 20) | summarise_block).reduce(Summary::merge)?;
    Ok(summary.unwrap_or_default())
}

/// The package index of this machine: every `*_Packages*` list of apt,
/// decompressed by apt's own helper, one after another.
pub fn package_index() -> Result<String, String> {
    let lists = Path::new("/var/lib/apt/lists");
    let mut files: Vec<_> = std::fs::read_dir(lists)
        .map_err(|e| format!("{}: {e} (is this Debian or Ubuntu?)", lists.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("_Packages") && !n.ends_with(".diff_Index"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "no package lists in {}: run `apt-get update` first",
            lists.display()
        ));
    }
    let mut text = String::new();
    for file in files {
        let out = Command::new("/usr/lib/apt/apt-helper")
            .arg("cat-file")
            .arg(&file)
            .output()
            .map_err(|e| format!("apt-helper cat-file {}: {e}", file.display()))?;
        if !out.status.success() {
            return Err(format!(
                "apt-helper cat-file {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let part = String::from_utf8(out.stdout)
            .map_err(|e| format!("{}: not UTF-8: {e}", file.display()))?;
        text.push_str(&part);
        if !text.ends_with("\n\n") {
            text.push('\n');
        }
    }
    Ok(text)
}

/// The fastest of `rounds` runs of `f`, and its result.
fn best_of<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        best = match best {
            Some((t, out)) if t <= took => Some((t, out)),
            _ => Some((took, out)),
        };
    }
    best.expect("at least one round")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?,
        None => package_index()?,
    };
    println!(
        "package index: {:.1} MB, {} stanzas",
        text.len() as f64 / 1e6,
        stanzas(text.clone()).count()
    );

    // Each run gets its own copy, made before the clock starts.
    let rounds = 5;
    let copies = || {
        std::iter::repeat_with(|| text.clone())
            .take(rounds)
            .collect::<Vec<_>>()
    };
    let mut inputs = copies();
    let (seq_time, want) = best_of(rounds, || sequential(inputs.pop().expect("a copy")));
    let mut inputs = copies();
    let (record_time, by_record) = best_of(rounds, || per_record(inputs.pop().expect("a copy")));
    let mut inputs = copies();
    let (coarse_time, by_block) = best_of(rounds, || coarse(inputs.pop().expect("a copy")));
    assert_eq!(by_record?, want, "one record per item: the same summary");
    assert_eq!(by_block?, want, "coarse items: the same summary");

    println!(
        "{} packages in {} sections, {:.1} dependencies each on average; the largest: {} ({} MiB)",
        want.packages,
        want.sections.len(),
        want.depends as f64 / want.packages.max(1) as f64,
        want.largest.1,
        want.largest.0 / 1024
    );
    let mut maintainers: Vec<_> = want.maintainers.iter().collect();
    maintainers.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("most packages:");
    for (who, n) in maintainers.iter().take(3) {
        println!("  {n:>5}  {who}");
    }
    println!("best of {rounds} runs:");
    println!("  plain loop                {seq_time:>10.2?}");
    for (what, time) in [
        ("one record per item", record_time),
        ("blocks of 1 MiB", coarse_time),
    ] {
        let speedup = seq_time.as_secs_f64() / time.as_secs_f64();
        println!("  {what:<25} {time:>10.2?}  {speedup:.2}x the loop");
    }
    Ok(())
}
