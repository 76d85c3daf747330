//! Issue 17, target 4: small runs. A 3-stage pipeline (default settings)
//! over 100 items, run again and again as a program would in a loop: with
//! threads started for each run, and on a `Threads` set kept between runs;
//! beside rayon's `par_iter` over the same 100 items with the same three
//! steps (its pool started once, as rayon's global pool is), and the
//! sequential loop. The work per item is tiny: what is measured is what a
//! run costs to start and end.
//!
//! Run with `cargo bench --bench small_runs`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parapipe::Threads;
use parapipe::prelude::*;
use rayon::prelude::*;

const ITEMS: u64 = 100;

fn step_a(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn step_b(x: u64) -> u64 {
    x ^ (x >> 31)
}

fn step_c(x: u64) -> u64 {
    x.wrapping_add(7)
}

#[map_stage]
fn a(x: u64) -> u64 {
    step_a(x)
}

#[map_stage]
fn b(x: u64) -> u64 {
    step_b(x)
}

#[map_stage]
fn c(x: u64) -> u64 {
    step_c(x)
}

fn small_runs(c_: &mut Criterion) {
    let want: u64 = (0..ITEMS)
        .map(|x| step_c(step_b(step_a(x))))
        .fold(0, u64::wrapping_add);
    let pool = common::rayon_pool();
    let threads = Threads::new();
    let mut group = c_.benchmark_group("small_runs");
    common::configure(&mut group, Duration::from_secs(2));
    let id = |name: &str| BenchmarkId::new(name, ITEMS);
    group.bench_function(id("sequential"), |bench| {
        bench.iter(|| {
            let sum = (0..black_box(ITEMS))
                .map(|x| step_c(step_b(step_a(x))))
                .fold(0, u64::wrapping_add);
            assert_eq!(sum, want)
        })
    });
    group.bench_function(id("rayon_par_iter"), |bench| {
        bench.iter(|| {
            let sum = pool.install(|| {
                (0..black_box(ITEMS))
                    .into_par_iter()
                    .map(step_a)
                    .map(step_b)
                    .map(step_c)
                    .reduce(|| 0, u64::wrapping_add)
            });
            assert_eq!(sum, want)
        })
    });
    group.bench_function(id("parapipe"), |bench| {
        bench.iter(|| {
            let sum = pipe!(0..black_box(ITEMS) | a | b | c)
                .reduce(u64::wrapping_add)
                .expect("no failure");
            assert_eq!(sum, Some(want))
        })
    });
    group.bench_function(id("parapipe_threads"), |bench| {
        bench.iter(|| {
            let sum = pipe!(0..black_box(ITEMS) | a | b | c)
                .on_threads(&threads)
                .reduce(u64::wrapping_add)
                .expect("no failure");
            assert_eq!(sum, Some(want))
        })
    });
    group.finish();
}

criterion_group!(benches, small_runs);
criterion_main!(benches);
