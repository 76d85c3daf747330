//! Workload 3 of the suite: Mandelbrot, 1000 x 1000 points, at most 2,000
//! iterations each, one row per item, output in row order (rows differ a
//! lot in cost). Beside an ordered parapipe stage with 2 workers, in the
//! same process: a sequential loop, rayon's indexed `par_iter` (which keeps
//! order), pariter (ordered by design), pipeliner's `ordered_map`, and
//! hand-written threads over flume and crossbeam channels that tag each row
//! with its index and put the rows back in order in the consumer as they
//! arrive. Every variant's rows are compared with the sequential ones on
//! every iteration.
//!
//! Run with `cargo bench --bench mandelbrot`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::time::Duration;

use common::{CAP, Crossbeam, Flume, pariter_stage, per_item_ordered};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
use pariter::IteratorExt as _;
use pipeliner::Pipeline as _;
use rayon::prelude::*;

const SIZE: usize = 1000;
const MAX_ITER: u32 = 2000;

/// Iteration counts of one row.
fn mandel_row(y: usize) -> Vec<u32> {
    let ci = (y as f64 / SIZE as f64) * 2.0 - 1.0;
    (0..SIZE)
        .map(|x| {
            let cr = (x as f64 / SIZE as f64) * 3.0 - 2.0;
            let (mut zr, mut zi, mut n) = (0.0f64, 0.0f64, 0);
            while n < MAX_ITER && zr * zr + zi * zi <= 4.0 {
                (zr, zi) = (zr * zr - zi * zi + cr, 2.0 * zr * zi + ci);
                n += 1;
            }
            n
        })
        .collect()
}

#[map_stage(workers = 2, ordered)]
fn row(y: usize) -> Vec<u32> {
    mandel_row(y)
}

fn mandelbrot(c: &mut Criterion) {
    let pool = common::rayon_pool();
    let threads = common::threads();
    let want: Vec<Vec<u32>> = (0..SIZE).map(mandel_row).collect();
    let check = |rows: Vec<Vec<u32>>| assert!(rows == want, "rows missing or out of order");

    let mut group = c.benchmark_group("mandelbrot");
    group.throughput(Throughput::Elements(SIZE as u64));
    common::configure(&mut group, Duration::from_secs(5));
    group.bench_function("sequential", |b| {
        b.iter(|| check((0..SIZE).map(mandel_row).collect()))
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| check(pool.install(|| (0..SIZE).into_par_iter().map(mandel_row).collect())))
    });
    group.bench_function("pariter_ordered", |b| {
        b.iter(|| {
            check(
                (0..SIZE)
                    .parallel_map_custom(pariter_stage(threads), mandel_row)
                    .collect(),
            )
        })
    });
    group.bench_function("pipeliner_ordered", |b| {
        b.iter(|| {
            check(
                (0..SIZE)
                    .with_threads(threads)
                    .out_buffer(CAP)
                    .ordered_map(mandel_row)
                    .collect(),
            )
        })
    });
    group.bench_function("flume_ordered", |b| {
        b.iter(|| check(per_item_ordered::<Flume, _>(SIZE, 2, mandel_row)))
    });
    group.bench_function("crossbeam_ordered", |b| {
        b.iter(|| check(per_item_ordered::<Crossbeam, _>(SIZE, 2, mandel_row)))
    });
    group.bench_function("parapipe_ordered", |b| {
        b.iter(|| {
            check(
                pipe!(0..SIZE | row.workers(threads))
                    .collect()
                    .expect("no failure"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, mandelbrot);
criterion_main!(benches);
