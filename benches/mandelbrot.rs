//! Mandelbrot, 1000 x 1000 points, at most 2,000 iterations each, one row
//! per item, output in row order (rows differ a lot in cost): a sequential
//! loop, rayon's indexed `par_iter` (which keeps order), and an ordered
//! parapipe stage with 2 workers.
//!
//! Run with `cargo bench --bench mandelbrot`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parapipe::prelude::*;
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("rayon pool");
    let want: Vec<Vec<u32>> = (0..SIZE).map(mandel_row).collect();
    let got: Vec<Vec<u32>> = pipe!(0..SIZE | row).collect().expect("no failure");
    assert!(got == want, "parapipe rows out of order");

    let mut group = c.benchmark_group("mandelbrot");
    group.throughput(Throughput::Elements(SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("sequential", |b| {
        b.iter(|| (0..SIZE).map(mandel_row).collect::<Vec<_>>())
    });
    group.bench_function("rayon_par_iter", |b| {
        b.iter(|| {
            pool.install(|| {
                (0..SIZE)
                    .into_par_iter()
                    .map(mandel_row)
                    .collect::<Vec<_>>()
            })
        })
    });
    group.bench_function("parapipe_ordered", |b| {
        b.iter(|| {
            pipe!(0..SIZE | row)
                .collect::<Vec<_>>()
                .expect("no failure")
        })
    });
    group.finish();
}

criterion_group!(benches, mandelbrot);
criterion_main!(benches);
