//! Word counts over a generated text, in three steps: split lines into
//! words, normalise each word, count them (each counting worker folds its
//! share into counts of its own, and `reduce` merges them). Run twice, and
//! timed beside a plain loop doing the same:
//!
//! - a stage per step: `split_words` (2 workers), `normalise` (4 workers),
//!   the count (2 workers), queues between them;
//! - the same three steps fused into one serial segment run by 2 workers:
//!   each step costs tens of nanoseconds a word, about what handing a word
//!   to another thread costs, so fusing them is what makes them pay (see
//!   "Item granularity" in the README).
//!
//! Run with `cargo run --release --example quickstart`.

use std::collections::HashMap;
use std::time::Instant;

use parapipe::prelude::*;
use parapipe::stages;

/// Splits each line into words; every worker handles its share of lines.
#[stage(workers = 2)]
fn split_words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    lines.flat_map(|line| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

/// Lower-cases a word and strips punctuation; drops words shorter than `min_len`.
#[map_stage(workers = 4, qsize = 4096)]
fn normalise(word: String, min_len: usize) -> Option<String> {
    let w: String = word
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    (w.len() >= min_len).then_some(w)
}

/// Adds one word to a worker's counts.
fn count(mut counts: HashMap<String, u64>, word: Option<String>) -> HashMap<String, u64> {
    if let Some(w) = word {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

/// Merges two workers' counts.
fn merge(mut a: HashMap<String, u64>, b: HashMap<String, u64>) -> HashMap<String, u64> {
    for (w, n) in b {
        *a.entry(w).or_insert(0) += n;
    }
    a
}

/// A deterministic text: 200,000 lines drawn from a small vocabulary.
fn generate_text(lines: usize) -> impl Iterator<Item = String> {
    const WORDS: &[&str] = &[
        "The",
        "pipeline,",
        "runs",
        "every",
        "stage",
        "on",
        "its",
        "own",
        "workers;",
        "items",
        "flow",
        "in",
        "batches",
        "through",
        "bounded",
        "queues.",
        "A",
        "stage",
        "is",
        "a",
        "function!",
        "Rust",
        "checks",
        "the",
        "types",
        "at",
        "compile",
        "time.",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..lines).map(move |_| {
        (0..12)
            .map(|_| {
                // xorshift: cheap, deterministic, good enough for a demo.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                WORDS[(state % WORDS.len() as u64) as usize]
            })
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn main() -> Result<(), PipelineError> {
    const LINES: usize = 200_000;

    // A stage per step.
    let start = Instant::now();
    let counts = pipe!(
        generate_text(LINES)
            | split_words
            | normalise(2)
            | stages::fold(HashMap::new, count).workers(2)
    )
    .reduce(merge)?
    .unwrap_or_default();
    let staged = start.elapsed();

    // The same steps fused: one chain per worker, no queue inside it.
    let start = Instant::now();
    let steps = segment!(split_words | normalise(2) | stages::fold(HashMap::new, count))
        .serial()
        .workers(2);
    let fused = pipe!(generate_text(LINES) | { steps })
        .reduce(merge)?
        .unwrap_or_default();
    let fused_time = start.elapsed();

    // The same job as a plain loop.
    let start = Instant::now();
    let mut sequential = HashMap::new();
    for line in generate_text(LINES) {
        for word in line.split_whitespace() {
            sequential = count(sequential, normalise(word.to_owned(), 2));
        }
    }
    let loop_time = start.elapsed();
    assert_eq!(counts, sequential);
    assert_eq!(fused, sequential);

    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: u64 = counts.values().sum();
    println!(
        "{total} words of at least 2 letters, {} distinct",
        counts.len()
    );
    println!("most common:");
    for (word, n) in top.iter().take(10) {
        println!("  {word:<10} {n:>8}");
    }
    let vs = |t: std::time::Duration| loop_time.as_secs_f64() / t.as_secs_f64();
    println!(
        "a stage per step:       {staged:>9.2?}  ({:.2}x the loop)",
        vs(staged)
    );
    println!(
        "steps fused, 2 workers: {fused_time:>9.2?}  ({:.2}x the loop)",
        vs(fused_time)
    );
    println!("a plain loop:           {loop_time:>9.2?}");
    Ok(())
}
