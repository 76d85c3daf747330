//! Word counts over a generated text, in three steps: split lines into
//! words, normalise each word, count them. Run three ways, and timed beside
//! a plain loop doing the same:
//!
//! - a stage per step: `split_words` (2 workers), `normalise` (4 workers),
//!   and the count on 2 workers keyed by word (`partition_by`): every
//!   occurrence of a word reaches the same worker, so each worker's counts
//!   are whole for its words, and the results need no merging;
//! - the same with the count on a single worker, to see whether the keyed
//!   count paid on this machine;
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

/// Counts the words a worker is given. Keyed by word, each worker counts
/// its own words, all of their occurrences.
#[stage]
fn count_words(
    words: impl Iterator<Item = Option<String>>,
) -> impl Iterator<Item = HashMap<String, u64>> {
    std::iter::once(words.fold(HashMap::new(), count))
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

    // A stage per step, the count keyed by word on 2 workers.
    let start = Instant::now();
    let partials: Vec<HashMap<String, u64>> = pipe!(
        generate_text(LINES)
            | split_words
            | normalise(2)
            | count_words
                .workers(2)
                .partition_by(|w: &Option<String>| w.clone())
    )
    .collect()?;
    let keyed = start.elapsed();
    // Whole counts per worker: the keys are disjoint, so joining them is
    // all that is left.
    let words_seen: usize = partials.iter().map(HashMap::len).sum();
    let counts: HashMap<String, u64> = partials.into_iter().flatten().collect();
    assert_eq!(words_seen, counts.len(), "each word counted by one worker");

    // The same with a single counting worker.
    let start = Instant::now();
    let single = pipe!(generate_text(LINES) | split_words | normalise(2) | count_words)
        .execute()?
        .unwrap_or_default();
    let single_time = start.elapsed();

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
    assert_eq!(single, sequential);
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
        "a stage per step, keyed count on 2 workers: {keyed:>9.2?}  ({:.2}x the loop, {:.2}x a single counting worker: {})",
        vs(keyed),
        single_time.as_secs_f64() / keyed.as_secs_f64(),
        if keyed < single_time {
            "the keyed count paid"
        } else {
            "the keyed count did not pay here"
        }
    );
    println!(
        "a stage per step, one counting worker:      {single_time:>9.2?}  ({:.2}x the loop)",
        vs(single_time)
    );
    println!(
        "steps fused, 2 workers:                     {fused_time:>9.2?}  ({:.2}x the loop)",
        vs(fused_time)
    );
    println!("a plain loop:                               {loop_time:>9.2?}");
    Ok(())
}
