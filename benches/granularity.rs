//! Granularity: `fib(k)` per item for k = 10 to 15 over 100,000 items, one
//! stage with 2 workers, beside a sequential loop and rayon's `par_iter`.
//! Where does a pipeline break even with the sequential loop?
//!
//! Run with `cargo bench --bench granularity`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use rayon::prelude::*;

const N: u64 = 100_000;

fn fib(k: u64) -> u64 {
    if k < 2 { k } else { fib(k - 1) + fib(k - 2) }
}

/// `fib(k)` plus the item, so every item does the same work but a
/// different result.
#[map_stage(workers = 2)]
fn work(x: u64, k: u64) -> u64 {
    fib(black_box(k)) + x
}

fn granularity(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let mut group = c.benchmark_group("granularity");
    group.throughput(Throughput::Elements(N));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for k in 10..=15u64 {
        let want: u64 = (0..N).map(|x| fib(k) + x).sum();
        assert_eq!(
            pipe!(0..N | work(k))
                .collect::<Vec<_>>()
                .unwrap()
                .iter()
                .sum::<u64>(),
            want
        );
        group.bench_with_input(BenchmarkId::new("sequential", k), &k, |b, &k| {
            b.iter(|| (0..N).map(|x| fib(black_box(k)) + x).sum::<u64>())
        });
        group.bench_with_input(BenchmarkId::new("rayon_par_iter", k), &k, |b, &k| {
            b.iter(|| {
                pool.install(|| {
                    (0..N)
                        .into_par_iter()
                        .map(|x| fib(black_box(k)) + x)
                        .sum::<u64>()
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("parapipe", k), &k, |b, &k| {
            b.iter(|| {
                pipe!(0..N | work(k))
                    .results()
                    .map(|r| r.unwrap())
                    .sum::<u64>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, granularity);
criterion_main!(benches);
