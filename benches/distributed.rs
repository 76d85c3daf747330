//! Distributed runs on NATS JetStream (feature `nats`), beside the same
//! pipeline in one process. Needs `nats-server` (Debian's package); without
//! it the bench says so and measures nothing.
//!
//! - `crossing`: 20,000 and 100,000 `u64` through one trivial stage,
//!   locally and through the broker (one process): the per-item cost of
//!   crossing it (the slope between the two sizes), and the fixed cost of a
//!   run (creating the job, noticing its end).
//! - `processes`: 8,000 items of `fib(25)` through one stage with one worker
//!   per process, on 1, 2 and 4 processes (this binary, run again as
//!   workers), beside the sequential loop and the local pipeline.
//!
//! Run with `cargo bench --features nats --bench distributed`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;
#[path = "../tests/nats/server.rs"]
mod server;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fib_work;
use criterion::{BenchmarkId, Criterion, Throughput};
use parapipe::nats::Job;
use parapipe::prelude::*;
use server::Server;

const CPU_N: u64 = 8_000;
const K: u64 = 25;

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[map_stage(workers = 1)]
fn burn(x: u64) -> u64 {
    fib_work(x, K)
}

/// A fresh job name per run, so a worker never joins the wrong one.
fn job_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bench{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn crossing(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("crossing");
    common::configure(&mut group, Duration::from_secs(3));
    for n in [20_000u64, 100_000] {
        group.throughput(Throughput::Elements(n));
        let want: u64 = common::sum_plus(n, 1);
        group.bench_function(BenchmarkId::new("local", n), |b| {
            b.iter(|| {
                let out: Vec<u64> = pipe!(0..n | inc).collect().unwrap();
                assert_eq!(out.iter().sum::<u64>(), want);
            })
        });
        group.bench_function(BenchmarkId::new("broker_1_process", n), |b| {
            b.iter(|| {
                let job = Job::new(job_name()).url(server.url());
                let out: Vec<u64> = pipe!(distributed(&job): 0..n | inc).collect().unwrap();
                assert_eq!(out.iter().sum::<u64>(), want);
            })
        });
    }
    group.finish();
}

/// Starts `n` worker processes of job `name`.
fn workers(server: &Server, name: &str, n: usize) -> Vec<Child> {
    (0..n)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .env("PARAPIPE_BENCH_WORKER", "1")
                .env("PARAPIPE_ROLE", "worker")
                .env("PARAPIPE_NATS_URL", server.url())
                .env("PARAPIPE_BENCH_JOB", name)
                .env("PARAPIPE_BENCH_PROCESS", format!("w{i}"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// A worker process of the `processes` group.
fn worker() {
    let job = Job::from_env(std::env::var("PARAPIPE_BENCH_JOB").unwrap())
        .process_name(std::env::var("PARAPIPE_BENCH_PROCESS").unwrap());
    pipe!(distributed(&job): 0..CPU_N | burn).run().unwrap();
}

fn processes(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("processes");
    group.throughput(Throughput::Elements(CPU_N));
    common::configure(&mut group, Duration::from_secs(10));
    let want: u64 = (0..CPU_N).map(|x| fib_work(x, K)).sum();
    group.bench_function("sequential", |b| {
        b.iter(|| assert_eq!((0..CPU_N).map(|x| fib_work(x, K)).sum::<u64>(), want))
    });
    for workers_n in [1, 2] {
        group.bench_function(BenchmarkId::new("local_workers", workers_n), |b| {
            b.iter(|| {
                let out: Vec<u64> = pipe!(0..CPU_N | burn.workers(workers_n)).collect().unwrap();
                assert_eq!(out.iter().sum::<u64>(), want);
            })
        });
    }
    for procs in [1, 2, 4] {
        group.bench_function(BenchmarkId::new("broker_processes", procs), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let name = job_name();
                    // Started first, and given time to start: they wait for
                    // the driver's job, and join within a poll (0.1 s).
                    let mut children = workers(server, &name, procs - 1);
                    std::thread::sleep(Duration::from_millis(300));
                    let job = Job::new(&name).url(server.url()).process_name("driver");
                    let started = Instant::now();
                    let out: Vec<u64> =
                        pipe!(distributed(&job): 0..CPU_N | burn).collect().unwrap();
                    total += started.elapsed();
                    assert_eq!(out.iter().sum::<u64>(), want);
                    for child in &mut children {
                        assert!(child.wait().unwrap().success());
                    }
                    // Every process took part, or the measure is not of `procs`.
                    let status = job.status().unwrap();
                    assert_eq!(status.processes.len(), procs, "{status:?}");
                }
                total
            })
        });
    }
    group.finish();
}

fn main() {
    if std::env::var_os("PARAPIPE_BENCH_WORKER").is_some() {
        worker();
        return;
    }
    let Some(server) = Server::start() else {
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    crossing(&mut c, &server);
    processes(&mut c, &server);
    c.final_summary();
}
