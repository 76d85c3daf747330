//! Word count across processes, with NATS JetStream carrying the items
//! between stages (feature `nats`). Every process runs this same program:
//! the driver reads the text and prints the counts, workers add workers.
//!
//! On one machine, with three processes:
//!
//! ```text
//! nats-server -js -a 127.0.0.1 &           # a broker with JetStream, on loopback only
//! cargo build --release --features nats --example wordcount
//! PARAPIPE_ROLE=worker target/release/examples/wordcount &
//! PARAPIPE_ROLE=worker target/release/examples/wordcount &
//! target/release/examples/wordcount [FILE]  # the driver
//! ```
//!
//! Across machines, start the server with credentials
//! (`nats-server -js --user NAME --pass SECRET`), point every process at it
//! with `PARAPIPE_NATS_URL=nats://NAME:SECRET@HOST:4222` and give them the
//! same job name
//! (`PARAPIPE_JOB`, default `wordcount`). `PARAPIPE_STAGES=words` limits a
//! process to some stages.
//!
//! With `PARAPIPE_PROFILE_DIR=DIR` set, every process profiles its part
//! into `DIR/profiles.sqlite`, with the job's status; then
//! `cargo run --release -p parapipe-profile -- --db DIR show` prints the
//! newest run's stages and the job's counts per stage and process (`list`
//! names the runs after their processes).

use std::collections::HashMap;

use parapipe::nats::Job;
use parapipe::prelude::*;
use parapipe::profile::{PROFILE_DIR_ENV, Profiler};

/// Splits lines into words.
#[stage(workers = 2)]
fn words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    lines.flat_map(|line| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

/// Lower-cases a word and strips its punctuation (empty if nothing is left).
#[map_stage(workers = 2)]
pub fn normalise(word: String) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Keeps words of at least `min_len` characters.
#[map_stage(workers = 2)]
pub fn long_enough(word: String, min_len: usize) -> Option<String> {
    (word.chars().count() >= min_len).then_some(word)
}

/// A text to count when no file is given.
pub fn generated_text() -> Vec<String> {
    let sentences = [
        "The quick brown fox jumps over the lazy dog.",
        "Pack my box with five dozen liquor jugs!",
        "How vexingly quick daft zebras jump; the fox watches.",
    ];
    (0..30_000)
        .map(|i| sentences[i % sentences.len()].to_owned())
        .collect()
}

/// Runs this process's part of the job; the driver gets the counts, most
/// frequent first, a worker an empty list.
pub fn count_words(
    job: &Job,
    file: Option<&str>,
) -> Result<Vec<(String, u64)>, Box<dyn std::error::Error>> {
    // Only the driver reads the text: a worker's source is never read.
    let lines = match (job.is_driver(), file) {
        (false, _) => Vec::new(),
        (true, Some(path)) => std::fs::read_to_string(path)?
            .lines()
            .map(str::to_owned)
            .collect(),
        (true, None) => generated_text(),
    };
    let mut pipeline = pipe!(distributed(job): lines | words | normalise | long_enough(3));
    if std::env::var_os(PROFILE_DIR_ENV).is_some() {
        // Each process stores its own part, named after it, and the job's status.
        pipeline = pipeline.profile_with(Profiler::new().name(job.process()));
    }
    let mut counts: HashMap<String, u64> = HashMap::new();
    for word in pipeline.results() {
        if let Some(word) = word? {
            *counts.entry(word).or_default() += 1;
        }
    }
    let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counts)
}

#[allow(dead_code, reason = "the tests include this file and call count_words")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::var("PARAPIPE_JOB").unwrap_or_else(|_| "wordcount".to_owned());
    let job = Job::from_env(name);
    let file = std::env::args().nth(1);
    let started = std::time::Instant::now();
    let counts = count_words(&job, file.as_deref())?;
    if job.is_driver() {
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        println!(
            "{total} words, {} distinct, in {:.2?}:",
            counts.len(),
            started.elapsed()
        );
        for (word, n) in counts.iter().take(10) {
            println!("{n:>8}  {word}");
        }
    } else {
        println!("worker {}: the job is done", job.process());
    }
    Ok(())
}
