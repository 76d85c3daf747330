//! Profiling and live debugging: a three-stage pipeline whose middle stage
//! is slow, profiled into a database in a temporary folder, with the live
//! debugger printing a table every half second, and a custom reporter.
//!
//! Run with `cargo run --release --example profile`, then look at the run
//! with `cargo run --release -p parapipe-profile -- --db <printed path> show`.

use std::thread;
use std::time::Duration;

use parapipe::debug::{Debugger, Report, Reporter, TableReporter};
use parapipe::prelude::*;
use parapipe::profile::Profiler;

#[map_stage(workers = 2)]
fn parse(line: String) -> u64 {
    line.len() as u64
}

/// The slow one: about 2 ms an item, on 4 workers.
#[map_stage(workers = 4, qsize = 64)]
fn enrich(n: u64) -> u64 {
    thread::sleep(Duration::from_millis(2));
    n * 3
}

#[stage]
fn running_total(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.scan(0, |total, x| {
        *total += x;
        Some(*total)
    })
}

/// A custom reporter: what a metrics exporter would send, in ten lines.
struct Gauges;

impl Reporter for Gauges {
    fn report(&mut self, report: &Report) {
        for s in &report.stages {
            println!(
                "gauge {}.items_per_sec={:.0} queue={}",
                s.name, s.rate, s.queue_depth
            );
        }
    }
}

fn main() -> Result<(), PipelineError> {
    let folder = std::env::temp_dir().join("parapipe-example-profile");
    let lines = (0..2000).map(|i| "x".repeat(i % 50));
    let debugger = Debugger::new()
        .every(Duration::from_millis(500))
        .reporter(TableReporter::stderr())
        .reporter(Gauges);
    // With `--features progress`, live bars as well.
    #[cfg(feature = "progress")]
    let debugger = debugger.reporter(parapipe::debug::Progress::new());
    let mut results = pipe!(lines | parse | enrich | running_total)
        .profile_with(Profiler::new().folder(&folder).name("example"))
        .debug(debugger)
        .results();
    let last = results.by_ref().last().transpose()?;
    println!("last running total: {last:?}");

    let profile = results.profile().expect("the pipeline was profiled");
    println!(
        "\n{:<30} {:>12} {:>12} {:>12} {:>14}",
        "stage", "mean s", "median s", "p99 s", "items/s"
    );
    for s in profile.stages() {
        println!(
            "{:<30} {:>12.6} {:>12.6} {:>12.6} {:>14.1}",
            s.name, s.latency.mean, s.latency.median, s.latency.p99, s.throughput
        );
    }
    match (profile.run_id(), profile.store_error()) {
        (Some(id), _) => println!("\nstored as run {id} in {}", profile.database().display()),
        (None, Some(e)) => println!("\nnot stored: {e}"),
        (None, None) => {}
    }
    Ok(())
}
