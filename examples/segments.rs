//! Sub-pipelines: cheap per-line steps fused into one serial segment run by
//! two workers, next to a parallel stage; then the same steps in the calling
//! thread with no thread at all, as a segment and as `pipe!(serial: ...)`.
//!
//! Run with `cargo run --release --example segments`.

use parapipe::prelude::*;

/// Strips surrounding blanks.
#[map_stage]
fn trim(line: String) -> String {
    line.trim().to_owned()
}

/// `key=value` into a pair; a malformed line fails the pipeline.
#[map_stage]
fn parse(line: String) -> Result<(String, u64), std::num::ParseIntError> {
    let (key, value) = line.split_once('=').unwrap_or((&line, ""));
    Ok((key.to_owned(), value.parse()?))
}

/// Keeps the pairs whose value is at least `min`.
#[stage]
fn at_least(
    pairs: impl Iterator<Item = (String, u64)>,
    min: u64,
) -> impl Iterator<Item = (String, u64)> {
    pairs.filter(move |(_, v)| *v >= min)
}

/// Slow-ish work that deserves workers of its own.
#[map_stage(workers = 2)]
fn score(pair: (String, u64)) -> u64 {
    (0..pair.1 % 1000).fold(pair.1, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
}

fn main() -> Result<(), PipelineError> {
    let lines: Vec<String> = (0..100_000u64)
        .map(|i| format!("  key{}={}  ", i % 7, i))
        .collect();

    // The three cheap steps run fused, no queue between them, on 2 workers;
    // `score` keeps its own 2 workers.
    let cleanup = segment!(trim | parse | at_least(50_000))
        .serial()
        .workers(2)
        .name("cleanup");
    let scores: Vec<u64> = pipe!(lines.clone() | { cleanup } | score).collect()?;
    println!("{} lines kept and scored in a pipeline", scores.len());

    // The same steps in the calling thread, with no thread at all: a
    // segment run over a source, or a whole serial pipeline.
    let cleanup = segment!(trim | parse | at_least(50_000));
    let kept = cleanup.iter(lines.clone()).filter(Result::is_ok).count();
    println!("{kept} lines kept in the calling thread");
    let total: u64 = pipe!(serial: lines | trim | parse | at_least(50_000) | score)
        .collect::<Vec<u64>>()?
        .into_iter()
        .fold(0, u64::wrapping_add);
    println!("serial pipeline checksum {total}");
    Ok(())
}
