//! Per-item overhead of parapipe against a sequential loop, rayon's
//! `par_bridge` and hand-written flume pipelines (one item per message, and
//! 64-item `Vec<u64>` batches per message), on 1,000,000 `u64` items through
//! `x + 1`.
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
/// Items per message in the batched hand-written flume pipeline.
const BATCH: usize = 64;

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

/// A hand-written pipeline whose messages are of type `M`: a source thread
/// runs `source` to fill the first channel; each stage has `workers[i]`
/// threads that apply `step` to each message and send the result on; the
/// calling thread folds every output message with `sum` and adds them up.
/// Every channel is bounded to `cap` messages.
fn flume_pipeline<M: Send>(
    workers: &[usize],
    cap: usize,
    source: impl FnOnce(flume::Sender<M>) + Send,
    step: impl Fn(M) -> M + Copy + Send,
    sum: impl Fn(M) -> u64,
) -> u64 {
    thread::scope(|s| {
        let (src_tx, mut rx) = flume::bounded::<M>(cap);
        s.spawn(move || source(src_tx));
        for &w in workers {
            let (tx, next_rx) = flume::bounded::<M>(cap);
            for _ in 0..w {
                let rx = rx.clone();
                let tx = tx.clone();
                s.spawn(move || {
                    for m in rx.iter() {
                        if tx.send(step(m)).is_err() {
                            return;
                        }
                    }
                });
            }
            rx = next_rx;
        }
        rx.iter().map(sum).sum()
    })
}

/// `0..N` through `x + 1` per stage, one item per message.
fn flume_per_item(workers: &[usize]) -> u64 {
    flume_pipeline(
        workers,
        CAP,
        |tx| {
            for x in 0..N {
                if tx.send(x).is_err() {
                    return;
                }
            }
        },
        |x| x + 1,
        |x| x,
    )
}

/// `0..N` through `x + 1` per stage, `BATCH` items per `Vec<u64>` message;
/// channels hold `CAP / BATCH` batches, i.e. `CAP` items.
fn flume_batched(workers: &[usize]) -> u64 {
    flume_pipeline(
        workers,
        CAP / BATCH,
        |tx| {
            for start in (0..N).step_by(BATCH) {
                let batch: Vec<u64> = (start..N.min(start + BATCH as u64)).collect();
                if tx.send(batch).is_err() {
                    return;
                }
            }
        },
        |mut batch| {
            for x in &mut batch {
                *x += 1;
            }
            batch
        },
        |batch| batch.iter().sum(),
    )
}

fn one_stage_2_workers(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let want = expected(1);
    assert_eq!(flume_per_item(&[2]), want);
    assert_eq!(flume_batched(&[2]), want);
    assert_eq!(
        pipe!(0..N | add_one)
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>(),
        want
    );
    let ordered: Vec<u64> = pipe!(0..N | add_one.ordered(true)).collect().unwrap();
    assert!(ordered.iter().copied().eq(1..=N));

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
    group.bench_function("flume_batched_64", |b| {
        b.iter(|| black_box(flume_batched(&[2])))
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
    group.bench_function("parapipe_ordered", |b| {
        b.iter(|| {
            black_box(
                pipe!(0..N | add_one.ordered(true))
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
    assert_eq!(flume_batched(&[1, 1, 1]), want);
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
    group.bench_function("flume_batched_64", |b| {
        b.iter(|| black_box(flume_batched(&[1, 1, 1])))
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
