//! Word counts over a generated text, in three stages:
//! split lines into words (2 workers), normalise each word (4 workers),
//! count them all (1 worker, an aggregation).
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

    let start = Instant::now();
    let counts = pipe!(
        generate_text(LINES)
            | split_words
            | normalise(2)
            | stages::fold(HashMap::new, count).workers(2)
    )
    .reduce(merge)?
    .unwrap_or_default();
    let elapsed = start.elapsed();

    // The same job as a plain loop, for comparison.
    let start = Instant::now();
    let mut sequential = HashMap::new();
    for line in generate_text(LINES) {
        for word in line.split_whitespace() {
            sequential = count(sequential, normalise(word.to_owned(), 2));
        }
    }
    let sequential_elapsed = start.elapsed();
    assert_eq!(counts, sequential);

    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: u64 = counts.values().sum();
    println!(
        "{total} words of at least 2 letters, {} distinct, in {elapsed:.2?} \
         (a plain loop: {sequential_elapsed:.2?})",
        counts.len()
    );
    println!("most common:");
    for (word, n) in top.iter().take(10) {
        println!("  {word:<10} {n:>8}");
    }
    Ok(())
}
