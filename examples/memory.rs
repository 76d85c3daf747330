//! Memory stays flat whatever the input length: N items (default 1,000,000;
//! pass another count as the first argument) from a fast source through a
//! stage with `qsize = 30` to a consumer slower than both. Peak memory
//! depends on the queue sizes, not on N; compare with
//! `/usr/bin/time -v cargo run --release --example memory -- 10000000`.
//! With a second argument `unbounded`, the stage's queue has no limit, and
//! peak memory grows with N instead: the contrast shows the bound at work.

use std::hint::black_box;

use parapipe::prelude::*;

/// Items of some size, so a runaway queue would show.
#[map_stage(workers = 2, qsize = 30)]
fn payload(x: u64) -> [u64; 8] {
    [x; 8]
}

fn main() -> Result<(), PipelineError> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the first argument is an item count"))
        .unwrap_or(1_000_000);
    let stage = match std::env::args().nth(2).as_deref() {
        Some("unbounded") => payload::new().unbounded(),
        _ => payload::new(),
    };
    let mut checksum = 0u64;
    for item in pipe!(0..n | { stage }).results() {
        let item = item?;
        // The slow consumer: a little work per item.
        for _ in 0..20 {
            checksum = black_box(checksum.wrapping_mul(31).wrapping_add(item[0]));
        }
    }
    println!("{n} items, checksum {checksum}");
    Ok(())
}
