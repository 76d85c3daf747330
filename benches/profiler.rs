//! What the profiler costs: a pipeline whose stage does about 1.5 µs of work
//! per item (`fib(15)`), 100,000 items, run unprofiled, profiled in memory,
//! and profiled into a database (samples every 100 ms, the default), for a
//! map stage and an iterator stage. The `sequential` row gives the work's
//! own cost per item. The target: profiled at most 10% slower.
//!
//! Run with `cargo bench --bench profiler`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use parapipe::profile::Profiler;

const N: u64 = 100_000;
const K: u64 = 15;

fn fib(k: u64) -> u64 {
    if k < 2 { k } else { fib(k - 1) + fib(k - 2) }
}

#[map_stage(workers = 2)]
fn work(x: u64) -> u64 {
    fib(black_box(K)) + x
}

#[stage(workers = 2)]
fn work_iter(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.map(|x| fib(black_box(K)) + x)
}

/// Switches profiling on (or not) for a pipeline, given the database folder.
type Mode = fn(Pipeline<u64>, &std::path::Path) -> Pipeline<u64>;

fn profiler(c: &mut Criterion) {
    let folder =
        std::env::temp_dir().join(format!("parapipe-bench-profiler-{}", std::process::id()));
    let want: u64 = (0..N).map(|x| fib(K) + x).sum();
    let sum = |p: Pipeline<u64>| p.results().map(|r| r.unwrap()).sum::<u64>();
    let mut group = c.benchmark_group("profiler");
    group.throughput(Throughput::Elements(N));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("sequential", |b| {
        b.iter(|| (0..N).map(|x| fib(black_box(K)) + x).sum::<u64>())
    });
    let modes: [(&str, Mode); 3] = [
        ("off", |p, _| p),
        ("in_memory", |p, _| {
            p.profile_with(Profiler::new().in_memory())
        }),
        ("stored", |p, dir| {
            p.profile_with(Profiler::new().folder(dir))
        }),
    ];
    for (mode, profile) in modes {
        assert_eq!(sum(profile(pipe!(0..N | work), &folder)), want);
        group.bench_function(format!("map_{mode}"), |b| {
            b.iter(|| sum(profile(pipe!(0..N | work), &folder)))
        });
        assert_eq!(sum(profile(pipe!(0..N | work_iter), &folder)), want);
        group.bench_function(format!("iter_{mode}"), |b| {
            b.iter(|| sum(profile(pipe!(0..N | work_iter), &folder)))
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&folder);
}

criterion_group!(benches, profiler);
criterion_main!(benches);
