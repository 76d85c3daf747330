//! Continuous input: a sensor read every 10 ms feeds a pipeline whose
//! newest result is polled, while a log stream fed by a closure ends by an
//! idle timeout once it dries up.
//!
//! Run with `cargo run --release --example streaming`.

use std::thread;
use std::time::Duration;

use parapipe::Stream;
use parapipe::prelude::*;

/// A smoothed reading: stands in for real work per sample.
#[map_stage(workers = 2)]
fn smooth(sample: u64) -> f64 {
    (sample as f64).sqrt() * 10.0
}

#[map_stage]
fn shout(line: String) -> String {
    line.to_uppercase()
}

fn main() -> Result<(), PipelineError> {
    // A real-time source and a latest-value output: the display only wants
    // the newest value, and must never slow the sensor down.
    let mut sample = 0u64;
    let sensor = Stream::every(Duration::from_millis(10), move || {
        sample += 7;
        Some(sample)
    });
    let latest = pipe!(sensor | smooth).latest();
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(50));
        println!("newest reading: {:?}", latest.get());
    }
    drop(latest); // stops the sensor and joins every thread

    // A fed stream that dries up: the idle timeout ends it, and everything
    // fed before is delivered.
    let logs = Stream::feed(|bucket| {
        for i in 0..3 {
            if bucket.push(format!("event {i}")).is_err() {
                return;
            }
        }
        // The feeder stays alive but silent, like a quiet socket.
        thread::sleep(Duration::from_secs(1));
    })
    .idle_timeout(Duration::from_millis(200));
    let lines: Vec<String> = pipe!(logs | shout).collect()?;
    println!("{lines:?}");
    Ok(())
}
