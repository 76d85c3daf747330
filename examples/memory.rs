//! Memory stays flat whatever the input length: N items (default 1,000,000;
//! pass another count as the first argument) from a fast source through a
//! stage with `qsize = 30` to a consumer slower than both. Peak memory
//! depends on the queue sizes, not on N; compare with
//! `/usr/bin/time -v cargo run --release --example memory -- 10000000`.
//! With a second argument `unbounded`, the stage's queue has no limit, and
//! peak memory grows with N instead: the contrast shows the bound at work.
//! With `sequential`, the same items reach the same consumer with no
//! pipeline at all: the process's own footprint, for reference. With
//! `async` (built with `--features async`), the items go through an async
//! stage with 64 futures in flight instead: bounded the same way.
//! `scripts/bench-report.py` runs all three and reports the peaks.

use std::hint::black_box;

use parapipe::prelude::*;

/// Items of some size, so a runaway queue would show.
#[map_stage(workers = 2, qsize = 30)]
fn payload(x: u64) -> [u64; 8] {
    [x; 8]
}

/// The same, as an async stage: its futures are bounded by `concurrency`,
/// its output by the queue.
#[cfg(feature = "async")]
#[map_stage(concurrency = 64, qsize = 30)]
async fn payload_async(x: u64) -> [u64; 8] {
    [x; 8]
}

/// The slow consumer: a little work per item, added up in a checksum that
/// does not depend on the order the items arrive in, so every mode prints
/// the same one.
fn consume(checksum: u64, item: [u64; 8]) -> u64 {
    let hash = (0..100).fold(item[0], |h, _| {
        black_box(h.wrapping_mul(31).wrapping_add(item[7]))
    });
    checksum.wrapping_add(hash)
}

fn main() -> Result<(), PipelineError> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the first argument is an item count"))
        .unwrap_or(1_000_000);
    let mode = std::env::args().nth(2);
    let checksum = match mode.as_deref() {
        Some("sequential") => (0..n).map(payload).fold(0, consume),
        Some("unbounded") => run(n, payload::new().unbounded())?,
        None | Some("bounded") => run(n, payload::new())?,
        #[cfg(feature = "async")]
        Some("async") => {
            let mut checksum = 0u64;
            for item in pipe!(0..n | payload_async).results() {
                checksum = consume(checksum, item?);
            }
            checksum
        }
        Some(other) => panic!(
            "unknown mode {other:?}: bounded, unbounded, sequential, or async (with --features async)"
        ),
    };
    println!("{n} items, checksum {checksum}");
    Ok(())
}

fn run(n: u64, stage: payload) -> Result<u64, PipelineError> {
    let mut checksum = 0u64;
    for item in pipe!(0..n | { stage }).results() {
        checksum = consume(checksum, item?);
    }
    Ok(checksum)
}
