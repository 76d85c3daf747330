//! Word counts over a generated text, in three stages:
//! split lines into words (2 workers), normalise each word (4 workers),
//! count them all (1 worker, an aggregation).
//!
//! Run with `cargo run --release --example quickstart`.

use std::collections::HashMap;
use std::time::Instant;

use parapipe::prelude::*;

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

/// Counts every word: one worker, so it sees them all, and one result.
#[stage]
fn count_words(
    words: impl Iterator<Item = Option<String>>,
) -> impl Iterator<Item = HashMap<String, u64>> {
    let mut counts = HashMap::new();
    for w in words.flatten() {
        *counts.entry(w).or_insert(0) += 1;
    }
    std::iter::once(counts)
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
    let start = Instant::now();
    let counts = pipe!(generate_text(200_000) | split_words | normalise(2) | count_words)
        .execute()?
        .unwrap_or_default();
    let elapsed = start.elapsed();

    let mut top: Vec<(&String, &u64)> = counts.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: u64 = counts.values().sum();
    println!(
        "{total} words of at least 2 letters, {} distinct, in {elapsed:.2?}",
        counts.len()
    );
    println!("most common:");
    for (word, n) in top.iter().take(10) {
        println!("  {word:<10} {n:>8}");
    }
    Ok(())
}
