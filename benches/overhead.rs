//! Per-item overhead of parapipe against a sequential loop, rayon's
//! `par_bridge` and a hand-written per-item flume pipeline, on 1,000,000
//! `u64` items through `x + 1`.
//!
//! Run with `cargo bench --bench overhead`.

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use rayon::prelude::*;

const N: u64 = 1_000_000;
/// Capacity of each hand-written flume channel, in items.
const CAP: usize = 1024;

#[map_stage(workers = 2)]
fn add_one(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn s1(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn s2(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn s3(x: u64) -> u64 {
    x + 1
}

/// Expected sum of `(0..N).map(|x| x + k)`.
const fn expected(k: u64) -> u64 {
    N * (N - 1) / 2 + k * N
}

/// A hand-written pipeline: a source thread sends `0..N` one item per
/// message; each stage has `workers[i]` threads that add 1 and send each
/// result as its own message; the calling thread sums the output.
fn flume_per_item(workers: &[usize]) -> u64 {
    thread::scope(|s| {
        let (src_tx, mut rx) = flume::bounded::<u64>(CAP);
        s.spawn(move || {
            for x in 0..N {
                if src_tx.send(x).is_err() {
                    return;
                }
            }
        });
        for &w in workers {
            let (tx, next_rx) = flume::bounded::<u64>(CAP);
            for _ in 0..w {
                let rx = rx.clone();
                let tx = tx.clone();
                s.spawn(move || {
                    for x in rx.iter() {
                        if tx.send(x + 1).is_err() {
                            return;
                        }
                    }
                });
            }
            rx = next_rx;
        }
        rx.iter().sum()
    })
}

fn one_stage_2_workers(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let want = expected(1);
    assert_eq!(flume_per_item(&[2]), want);
    assert_eq!(
        pipe!(0..N | add_one)
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>(),
        want
    );

    let mut group = c.benchmark_group("one_stage_2_workers");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("sequential", |b| {
        // `black_box` on each item keeps LLVM from summing `0..N` in
        // closed form, which would measure nothing per item.
        b.iter(|| black_box((0..N).map(|x| black_box(x) + 1).sum::<u64>()))
    });
    group.bench_function("rayon_par_bridge", |b| {
        b.iter(|| pool.install(|| black_box((0..N).par_bridge().map(|x| x + 1).sum::<u64>())))
    });
    group.bench_function("flume_per_item", |b| {
        b.iter(|| black_box(flume_per_item(&[2])))
    });
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            black_box(
                pipe!(0..N | add_one)
                    .results()
                    .map(|r| r.unwrap())
                    .sum::<u64>(),
            )
        })
    });
    group.finish();
}

fn three_stage_chain(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let want = expected(3);
    assert_eq!(flume_per_item(&[1, 1, 1]), want);
    assert_eq!(
        pipe!(0..N | s1 | s2 | s3)
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>(),
        want
    );

    let mut group = c.benchmark_group("three_stage_chain");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("sequential", |b| {
        b.iter(|| {
            black_box(
                (0..N)
                    .map(|x| black_box(x) + 1)
                    .map(|x| x + 1)
                    .map(|x| x + 1)
                    .sum::<u64>(),
            )
        })
    });
    group.bench_function("rayon_par_bridge", |b| {
        b.iter(|| {
            pool.install(|| {
                black_box(
                    (0..N)
                        .par_bridge()
                        .map(|x| x + 1)
                        .map(|x| x + 1)
                        .map(|x| x + 1)
                        .sum::<u64>(),
                )
            })
        })
    });
    group.bench_function("flume_per_item", |b| {
        b.iter(|| black_box(flume_per_item(&[1, 1, 1])))
    });
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            black_box(
                pipe!(0..N | s1 | s2 | s3)
                    .results()
                    .map(|r| r.unwrap())
                    .sum::<u64>(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, one_stage_2_workers, three_stage_chain);
criterion_main!(benches);
