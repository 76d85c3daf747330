//! Workload 4 of the suite: uneven stages. Five stages in a row costing
//! `fib(12)`, `fib(14)`, `fib(13)`, `fib(12)` and `fib(12)` per item, and a
//! heavy variant with each `k` raised by 5 (about 11 times the work per
//! item, on a tenth of the items). A channel-per-stage design runs five
//! stages of threads on two cores; rayon fuses the five functions into one
//! per-item closure.
//!
//! parapipe runs in three shapes: one stage per function with 2 workers
//! each (10 stage threads), with 1 worker each (5), and the five functions
//! fused into one serial segment run by 2 workers. Beside it, in the same
//! process on the same input: the sequential chain, rayon's `par_iter`
//! with the five `map`s fused, pariter and pipeliner chains (2 threads per
//! stage, `CAP`-item buffers), and hand-written threads over flume and
//! crossbeam channels (2 per stage; one item per message, and 64-item
//! batches). "2" is `PARAPIPE_BENCH_THREADS` when it is set
//! (`benches/common/mod.rs`).
//!
//! Run with `cargo bench --bench uneven`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::time::Duration;

use common::{
    BATCH, CAP, Crossbeam, Flume, batched, fib, fib_work, pariter_stage, per_item, sum_plus,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use pariter::IteratorExt as _;
use pipeliner::Pipeline as _;
use rayon::prelude::*;

/// The light variant: `k` of each stage, and the item count.
const LIGHT: ([u64; 5], u64) = ([12, 14, 13, 12, 12], 250_000);
/// The heavy variant: each `k` raised by 5, a tenth of the items.
const HEAVY: ([u64; 5], u64) = ([17, 19, 18, 17, 17], 25_000);

/// One stage: `fib(k)` plus the item.
#[map_stage(workers = 2)]
fn work(x: u64, k: u64) -> u64 {
    fib_work(x, k)
}

fn uneven(c: &mut Criterion, name: &str, (ks, n): ([u64; 5], u64)) {
    let pool = common::rayon_pool();
    let threads = common::threads();
    let want = sum_plus(n, ks.iter().map(|&k| fib(k)).sum());
    let [k0, k1, k2, k3, k4] = ks;
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(n));
    common::configure(&mut group, Duration::from_secs(3));

    group.bench_function("sequential", |b| {
        b.iter(|| {
            let out = (0..n)
                .map(|x| fib_work(x, k0))
                .map(|x| fib_work(x, k1))
                .map(|x| fib_work(x, k2))
                .map(|x| fib_work(x, k3))
                .map(|x| fib_work(x, k4));
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| {
            let sum: u64 = pool.install(|| {
                (0..n)
                    .into_par_iter()
                    .map(|x| fib_work(x, k0))
                    .map(|x| fib_work(x, k1))
                    .map(|x| fib_work(x, k2))
                    .map(|x| fib_work(x, k3))
                    .map(|x| fib_work(x, k4))
                    .sum()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("pariter", |b| {
        b.iter(|| {
            let out = (0..n)
                .parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k0))
                .parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k1))
                .parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k2))
                .parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k3))
                .parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k4));
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    group.bench_function("pipeliner", |b| {
        b.iter(|| {
            let out = (0..n)
                .with_threads(threads)
                .out_buffer(CAP)
                .map(move |x| fib_work(x, k0))
                .with_threads(threads)
                .out_buffer(CAP)
                .map(move |x| fib_work(x, k1))
                .with_threads(threads)
                .out_buffer(CAP)
                .map(move |x| fib_work(x, k2))
                .with_threads(threads)
                .out_buffer(CAP)
                .map(move |x| fib_work(x, k3))
                .with_threads(threads)
                .out_buffer(CAP)
                .map(move |x| fib_work(x, k4));
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    let step = |stage: usize, x: u64| fib_work(x, ks[stage]);
    group.bench_function("flume_per_item", |b| {
        b.iter(|| assert_eq!(per_item::<Flume>(n, &[threads; 5], step), want))
    });
    group.bench_function(format!("flume_batched_{BATCH}"), |b| {
        b.iter(|| assert_eq!(batched::<Flume>(n, &[threads; 5], step), want))
    });
    group.bench_function("crossbeam_per_item", |b| {
        b.iter(|| assert_eq!(per_item::<Crossbeam>(n, &[threads; 5], step), want))
    });
    group.bench_function(format!("crossbeam_batched_{BATCH}"), |b| {
        b.iter(|| assert_eq!(batched::<Crossbeam>(n, &[threads; 5], step), want))
    });
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let sum = pipe!(
                0..n | work(k0).workers(threads)
                    | work(k1).workers(threads)
                    | work(k2).workers(threads)
                    | work(k3).workers(threads)
                    | work(k4).workers(threads)
            )
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.bench_function("parapipe_1_worker_each", |b| {
        b.iter(|| {
            let sum = pipe!(
                0..n | work(k0).workers(1)
                    | work(k1).workers(1)
                    | work(k2).workers(1)
                    | work(k3).workers(1)
                    | work(k4).workers(1)
            )
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.bench_function("parapipe_serial_segment", |b| {
        b.iter(|| {
            let fused = segment!(work(k0) | work(k1) | work(k2) | work(k3) | work(k4))
                .serial()
                .workers(threads);
            let sum = pipe!(0..n | { fused })
                .results()
                .map(|r| r.unwrap())
                .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.finish();
}

fn uneven_stages(c: &mut Criterion) {
    uneven(c, "uneven_stages", LIGHT);
    uneven(c, "uneven_stages_heavy", HEAVY);
}

criterion_group!(benches, uneven_stages);
criterion_main!(benches);
