//! Issue 17, target 4b: a thread stage with thousands of workers doing
//! blocking IO. Every item waits 50 ms (`thread::sleep`, standing in for a
//! blocking request) and 5,000 items go through a map stage of `W` workers,
//! beside the same work on `W` hand-written threads (each takes the next
//! item from a shared counter until none is left), for `W` from 256 to
//! 4,096. Two groups: `io_workers` times whole runs (wall clock, thread
//! start-up included), `io_workers_cpu` measures the CPU time the process
//! used per run (user + system, from `/proc/self/stat`, in 10 ms ticks),
//! which is where a collapse of waiting workers shows first.
//!
//! Run with `cargo bench --bench io_workers`; `PARAPIPE_BENCH_WORKERS=1024,4096`
//! picks the worker counts.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parapipe::prelude::*;

const ITEMS: u64 = 5_000;
const WAIT: Duration = Duration::from_millis(50);

/// One blocking request: 50 ms of waiting.
#[map_stage]
fn request(x: u64) -> u64 {
    thread::sleep(WAIT);
    x
}

fn parapipe_run(workers: usize) -> u64 {
    let sum: u64 = pipe!(0..ITEMS | request.workers(workers))
        .reduce(|a, b| a + b)
        .expect("no failure")
        .unwrap_or(0);
    sum
}

/// `workers` threads, each taking the next item from a shared counter.
fn threads_run(workers: usize) -> u64 {
    let next = AtomicU64::new(0);
    thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut sum = 0;
                    loop {
                        let x = next.fetch_add(1, Relaxed);
                        if x >= ITEMS {
                            return sum;
                        }
                        thread::sleep(WAIT);
                        sum += x;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .sum()
    })
}

/// CPU time (user + system) the process has used, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn worker_counts() -> Vec<usize> {
    match std::env::var("PARAPIPE_BENCH_WORKERS") {
        Ok(list) => list
            .split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .expect("PARAPIPE_BENCH_WORKERS: a list of numbers")
            })
            .collect(),
        Err(_) => vec![256, 512, 1024, 2048, 4096],
    }
}

fn io_workers(c: &mut Criterion) {
    let want = ITEMS * (ITEMS - 1) / 2;
    let mut group = c.benchmark_group("io_workers");
    common::configure(&mut group, Duration::from_secs(3));
    for workers in worker_counts() {
        group.bench_function(BenchmarkId::new("threads", workers), |b| {
            b.iter(|| assert_eq!(threads_run(workers), want))
        });
        group.bench_function(BenchmarkId::new("parapipe", workers), |b| {
            b.iter(|| assert_eq!(parapipe_run(workers), want))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("io_workers_cpu");
    common::configure(&mut group, Duration::from_secs(3));
    for workers in worker_counts() {
        for (name, run) in [
            ("threads", threads_run as fn(usize) -> u64),
            ("parapipe", parapipe_run),
        ] {
            group.bench_function(BenchmarkId::new(name, workers), |b| {
                b.iter_custom(|iters| {
                    let start = cpu_time();
                    for _ in 0..iters {
                        assert_eq!(run(workers), want);
                    }
                    cpu_time() - start
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, io_workers);
criterion_main!(benches);
