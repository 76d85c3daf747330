//! Workload 2 of the suite: granularity, `fib(k)` per item for k = 10 to 15
//! over 100,000 items, one stage with 2 workers. Where does a pipeline break
//! even with the sequential loop, and what does it gain when items are
//! heavier? Beside parapipe, in the same process on the same input: the
//! sequential loop, rayon's `par_iter`, pariter (ordered, the only way it
//! runs), pipeliner, and hand-written threads over flume and crossbeam
//! channels (one item per message, and 64-item batches), all on 2 threads
//! (`PARAPIPE_BENCH_THREADS` sets another count: `benches/common/mod.rs`).
//!
//! Run with `cargo bench --bench granularity`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::time::Duration;

use common::{BATCH, CAP, Crossbeam, Flume, batched, fib, fib_work, pariter_stage, per_item};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use pariter::IteratorExt as _;
use pipeliner::Pipeline as _;
use rayon::prelude::*;

const N: u64 = 100_000;

/// `fib(k)` plus the item, so every item does the same work but gives a
/// different result.
#[map_stage(workers = 2)]
fn work(x: u64, k: u64) -> u64 {
    fib_work(x, k)
}

fn granularity(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let threads = common::threads();
    let mut group = c.benchmark_group("granularity");
    group.throughput(Throughput::Elements(N));
    common::configure(&mut group, Duration::from_secs(1));
    for k in 10..=15u64 {
        let want: u64 = (0..N).map(|x| fib(k) + x).sum();
        let id = |name: &str| BenchmarkId::new(name, k);
        group.bench_function(id("sequential"), |b| {
            b.iter(|| assert_eq!((0..N).map(|x| fib_work(x, k)).sum::<u64>(), want))
        });
        group.bench_function(id("rayon_par_iter"), |b| {
            b.iter(|| {
                let sum: u64 =
                    pool.install(|| (0..N).into_par_iter().map(|x| fib_work(x, k)).sum());
                assert_eq!(sum, want)
            })
        });
        group.bench_function(id("pariter"), |b| {
            b.iter(|| {
                let out =
                    (0..N).parallel_map_custom(pariter_stage(threads), move |x| fib_work(x, k));
                assert_eq!(out.sum::<u64>(), want)
            })
        });
        group.bench_function(id("pipeliner"), |b| {
            b.iter(|| {
                let out = (0..N)
                    .with_threads(threads)
                    .out_buffer(CAP)
                    .map(move |x| fib_work(x, k));
                assert_eq!(out.sum::<u64>(), want)
            })
        });
        group.bench_function(id("flume_per_item"), |b| {
            b.iter(|| {
                assert_eq!(
                    per_item::<Flume>(N, &[threads], |_, x| fib_work(x, k)),
                    want
                )
            })
        });
        group.bench_function(id(&format!("flume_batched_{BATCH}")), |b| {
            b.iter(|| assert_eq!(batched::<Flume>(N, &[threads], |_, x| fib_work(x, k)), want))
        });
        group.bench_function(id("crossbeam_per_item"), |b| {
            b.iter(|| {
                assert_eq!(
                    per_item::<Crossbeam>(N, &[threads], |_, x| fib_work(x, k)),
                    want
                )
            })
        });
        group.bench_function(id(&format!("crossbeam_batched_{BATCH}")), |b| {
            b.iter(|| {
                assert_eq!(
                    batched::<Crossbeam>(N, &[threads], |_, x| fib_work(x, k)),
                    want
                )
            })
        });
        group.bench_function(id("parapipe"), |b| {
            b.iter(|| {
                let sum = pipe!(0..N | work(k).workers(threads))
                    .results()
                    .map(|r| r.unwrap())
                    .sum::<u64>();
                assert_eq!(sum, want)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, granularity);
criterion_main!(benches);
