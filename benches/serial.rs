//! A serial pipeline of 20 `x + 1` map stages over 1,000,000 `u64`, run in
//! the calling thread (`pipe!(serial: ...)`, and a segment's `iter`), beside
//! the same hand-written iterator chain. Both see each input and output item through
//! `black_box`, so neither is folded away.
//!
//! Run with `cargo bench --bench serial`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;

const N: u64 = 1_000_000;

#[map_stage]
fn inc(x: u64) -> u64 {
    x + 1
}

fn hand_written() -> u64 {
    (0..N)
        .map(black_box)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(|x| x + 1)
        .map(black_box)
        .sum()
}

/// A serial segment run with `Segment::iter`, items through the same
/// `black_box`es as the hand-written chain. The segment is built where it
/// is iterated, as a user would write it: passed in by reference from
/// elsewhere, LLVM did not always fuse the chain (6.6x slower in one build).
fn serial_segment() -> u64 {
    let seg = segment!(
        inc | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
            | inc
    );
    seg.iter((0..N).map(black_box))
        .map(|r| black_box(r.expect("infallible stages")))
        .sum()
}

/// The whole pipeline written with `pipe!(serial: ...)`.
fn serial_pipe() -> u64 {
    let pipeline = pipe!(serial: (0..N).map(black_box)
        | inc | inc | inc | inc | inc | inc | inc | inc | inc | inc
        | inc | inc | inc | inc | inc | inc | inc | inc | inc | inc);
    pipeline
        .results()
        .map(|r| black_box(r.expect("infallible stages")))
        .sum()
}

fn serial_20_stages(c: &mut Criterion) {
    let want = N * (N - 1) / 2 + 20 * N;
    assert_eq!(hand_written(), want);
    assert_eq!(serial_segment(), want);
    assert_eq!(serial_pipe(), want);

    let mut group = c.benchmark_group("serial_20_stages");
    group.throughput(Throughput::Elements(N));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("hand_written_chain", |b| b.iter(hand_written));
    group.bench_function("parapipe_serial_segment", |b| b.iter(serial_segment));
    group.bench_function("parapipe_serial_pipe", |b| b.iter(serial_pipe));
    group.finish();
}

criterion_group!(benches, serial_20_stages);
criterion_main!(benches);
