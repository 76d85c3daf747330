//! Workload 1 of the suite: per-item overhead, 1,000,000 `u64` through
//! `x + 1`, in four shapes: one stage with 2 workers (unordered and
//! ordered), a chain of 3 stages and a chain of 20 stages (one worker each),
//! and 1 against 5 naive stages (`chain_growth`).
//! Beside parapipe, in the same process on the same input: a sequential
//! loop, rayon (`par_iter`, and `par_bridge` as the issue measured it),
//! pariter (which always keeps order), pipeliner (unordered and, for the
//! single stage, ordered) and hand-written threads over flume and over
//! crossbeam channels, one item per message and 64-item batches.
//!
//! The sequential loop and rayon see each item through `black_box`, which
//! keeps LLVM from summing `0..N` in closed form (measuring nothing per
//! item); the others move items between threads, which it cannot see
//! through.
//!
//! pariter and pipeliner run with the same thread counts as parapipe, and
//! with the hand-written pipelines' buffer of `CAP` items: their defaults
//! (2 items per thread for pariter, a rendezvous for pipeliner) are slower,
//! pipeliner's ordered map by more than an order of magnitude. rayon runs
//! on a 2-thread pool. The serial 20-stage chain is in `benches/serial.rs`.
//!
//! Run with `cargo bench --bench overhead`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{
    BATCH, CAP, Crossbeam, Flume, batched, pariter_stage, per_item, sum_if_consecutive, sum_plus,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use pariter::IteratorExt as _;
use pipeliner::Pipeline as _;
use rayon::prelude::*;

const N: u64 = 1_000_000;

#[map_stage(workers = 2)]
fn add_one(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn inc(x: u64) -> u64 {
    x + 1
}

/// `$it` wrapped by `$wrap!` once per token after the `;`: a chain of
/// stages of any length without a box or a dynamic call between them.
macro_rules! chain {
    ($it:expr, $wrap:ident;) => { $it };
    ($it:expr, $wrap:ident; $head:tt $($rest:tt)*) => { chain!($wrap!($it), $wrap; $($rest)*) };
}

macro_rules! pariter_inc {
    ($it:expr) => {
        $it.parallel_map_custom(pariter_stage(1), |x: u64| x + 1)
    };
}

macro_rules! pipeliner_inc {
    ($it:expr) => {
        $it.with_threads(1).out_buffer(CAP).map(|x: u64| x + 1)
    };
}

macro_rules! rayon_inc {
    ($it:expr) => {
        $it.map(|x: u64| x + 1)
    };
}

macro_rules! seq_inc {
    ($it:expr) => {
        $it.map(|x: u64| x + 1)
    };
}

/// The hand-written competitors of a chain of `workers.len()` stages, each
/// checked against `want` on every iteration.
fn hand_written(group: &mut BenchmarkGroup<'_, WallTime>, workers: &[usize], want: u64) {
    group.bench_function("flume_per_item", |b| {
        b.iter(|| assert_eq!(per_item::<Flume>(N, workers, |_, x| x + 1), want))
    });
    group.bench_function(format!("flume_batched_{BATCH}"), |b| {
        b.iter(|| assert_eq!(batched::<Flume>(N, workers, |_, x| x + 1), want))
    });
    group.bench_function("crossbeam_per_item", |b| {
        b.iter(|| assert_eq!(per_item::<Crossbeam>(N, workers, |_, x| x + 1), want))
    });
    group.bench_function(format!("crossbeam_batched_{BATCH}"), |b| {
        b.iter(|| assert_eq!(batched::<Crossbeam>(N, workers, |_, x| x + 1), want))
    });
}

fn one_stage_2_workers(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let threads = common::threads();
    let want = sum_plus(N, 1);
    let mut group = c.benchmark_group("one_stage_2_workers");
    group.throughput(Throughput::Elements(N));
    common::configure(&mut group, Duration::from_secs(3));

    group.bench_function("sequential", |b| {
        b.iter(|| assert_eq!((0..N).map(|x| black_box(x) + 1).sum::<u64>(), want))
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                (0..N)
                    .into_par_iter()
                    .map(|x| black_box(x) + 1)
                    .sum::<u64>()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("rayon_par_bridge", |b| {
        b.iter(|| {
            let sum = pool.install(|| (0..N).par_bridge().map(|x| black_box(x) + 1).sum::<u64>());
            assert_eq!(sum, want)
        })
    });
    group.bench_function("pariter_ordered", |b| {
        b.iter(|| {
            let out = (0..N).parallel_map_custom(pariter_stage(threads), |x| x + 1);
            assert_eq!(sum_if_consecutive(out, 1), Some(want))
        })
    });
    group.bench_function("pipeliner", |b| {
        b.iter(|| {
            assert_eq!(
                (0..N)
                    .with_threads(threads)
                    .out_buffer(CAP)
                    .map(|x| x + 1)
                    .sum::<u64>(),
                want
            )
        })
    });
    group.bench_function("pipeliner_ordered", |b| {
        b.iter(|| {
            let out = (0..N)
                .with_threads(threads)
                .out_buffer(CAP)
                .ordered_map(|x| x + 1);
            assert_eq!(sum_if_consecutive(out, 1), Some(want))
        })
    });
    hand_written(&mut group, &[threads], want);
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let sum = pipe!(0..N | add_one.workers(threads))
                .results()
                .map(|r| r.unwrap())
                .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.bench_function("parapipe_ordered", |b| {
        b.iter(|| {
            let out = pipe!(0..N | add_one.workers(threads).ordered(true))
                .results()
                .map(|r| r.unwrap());
            assert_eq!(sum_if_consecutive(out, 1), Some(want))
        })
    });
    group.finish();
}

fn three_stage_chain(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let want = sum_plus(N, 3);
    let mut group = c.benchmark_group("three_stage_chain");
    group.throughput(Throughput::Elements(N));
    common::configure(&mut group, Duration::from_secs(3));

    group.bench_function("sequential", |b| {
        b.iter(|| {
            let out = chain!((0..N).map(black_box), seq_inc; 1 2 3);
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                chain!((0..N).into_par_iter().map(black_box), rayon_inc; 1 2 3).sum::<u64>()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("rayon_par_bridge", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                chain!((0..N).par_bridge().map(black_box), rayon_inc; 1 2 3).sum::<u64>()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("pariter", |b| {
        b.iter(|| assert_eq!(chain!(0..N, pariter_inc; 1 2 3).sum::<u64>(), want))
    });
    group.bench_function("pipeliner", |b| {
        b.iter(|| assert_eq!(chain!(0..N, pipeliner_inc; 1 2 3).sum::<u64>(), want))
    });
    hand_written(&mut group, &[1; 3], want);
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let sum = pipe!(0..N | inc | inc | inc)
                .results()
                .map(|r| r.unwrap())
                .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.finish();
}

fn twenty_stage_chain(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let want = sum_plus(N, 20);
    let mut group = c.benchmark_group("twenty_stage_chain");
    group.throughput(Throughput::Elements(N));
    common::configure(&mut group, Duration::from_secs(3));

    group.bench_function("sequential", |b| {
        b.iter(|| {
            let out = chain!((0..N).map(black_box), seq_inc;
                1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20);
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                chain!((0..N).into_par_iter().map(black_box), rayon_inc;
                    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20)
                .sum::<u64>()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("rayon_par_bridge", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                chain!((0..N).par_bridge().map(black_box), rayon_inc;
                    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20)
                .sum::<u64>()
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function("pariter", |b| {
        b.iter(|| {
            let out = chain!(0..N, pariter_inc;
                1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20);
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    group.bench_function("pipeliner", |b| {
        b.iter(|| {
            let out = chain!(0..N, pipeliner_inc;
                1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20);
            assert_eq!(out.sum::<u64>(), want)
        })
    });
    hand_written(&mut group, &[1; 20], want);
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let sum = pipe!(
                0..N | inc
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
                    | inc
            )
            .results()
            .map(|r| r.unwrap())
            .sum::<u64>();
            assert_eq!(sum, want)
        })
    });
    group.finish();
}

/// Issue 17, target 3: what stages cost as a chain grows, written naively
/// (default settings, one worker each): 1 and 5 stages of `x + 1`, beside
/// rayon's `par_bridge` over the same 5 steps.
fn chain_growth(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let mut group = c.benchmark_group("chain_growth");
    group.throughput(Throughput::Elements(N));
    common::configure(&mut group, Duration::from_secs(3));
    group.bench_function("rayon_par_bridge_5", |b| {
        b.iter(|| {
            let sum = pool.install(|| {
                chain!((0..N).par_bridge().map(black_box), rayon_inc; 1 2 3 4 5).sum::<u64>()
            });
            assert_eq!(sum, sum_plus(N, 5))
        })
    });
    group.bench_function("parapipe_1", |b| {
        b.iter(|| {
            let sum = pipe!(0..N | inc).results().map(|r| r.unwrap()).sum::<u64>();
            assert_eq!(sum, sum_plus(N, 1))
        })
    });
    group.bench_function("parapipe_5", |b| {
        b.iter(|| {
            let sum = pipe!(0..N | inc | inc | inc | inc | inc)
                .results()
                .map(|r| r.unwrap())
                .sum::<u64>();
            assert_eq!(sum, sum_plus(N, 5))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    one_stage_2_workers,
    three_stage_chain,
    twenty_stage_chain,
    chain_growth
);
criterion_main!(benches);
