//! Async stages against what a user would pick instead (issue 16's
//! benchmarks 1 and 2), side by side in one process:
//!
//! 1. `timer`: 10,000 items whose future awaits a 10 ms timer, 500 in
//!    flight. The physical limit is 10,000 / 500 x 10 ms = 200 ms. Beside
//!    parapipe (on its own runtime, started by every run, and on a runtime
//!    given with `on_runtime`): `futures`' `buffer_unordered(500)` on tokio,
//!    and a thread stage with 500 workers sleeping 10 ms each.
//! 2. `overhead`: 100,000 items through a future that returns at once, 256
//!    in flight: the per-item cost of the machinery. Beside it:
//!    `buffer_unordered(256)` and a thread map stage with 2 workers.
//!
//! 3. `fetch`: the workload of `examples/fetch.rs`: 400 pages from a real
//!    HTTP server on loopback (hyper, the tests' `tests/http/server.rs`),
//!    50 ms per request, 100 requests in flight, with a real client
//!    (reqwest), the titles pulled out of the pages. parapipe (an async
//!    fetch stage, then a thread stage of 2 workers for the titles) beside
//!    a tokio + reqwest + `buffer_unordered(100)` program doing the same.
//!    The limit is 400 / 100 x 50 ms = 200 ms.
//!
//! Run with `cargo bench --features async --bench async_io`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;
#[allow(dead_code, reason = "the bench uses part of the example")]
#[path = "../examples/fetch.rs"]
mod fetch_example;
#[allow(dead_code, reason = "the bench uses part of the tests' server")]
#[path = "../tests/http/server.rs"]
mod server;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt as _;
use parapipe::prelude::*;

const TIMER_ITEMS: u64 = 10_000;
const TIMER: Duration = Duration::from_millis(10);
const IN_FLIGHT: usize = 500;
const CHEAP_ITEMS: u64 = 100_000;

#[map_stage(concurrency = 500)]
async fn wait_timer(x: u64) -> u64 {
    tokio::time::sleep(TIMER).await;
    x
}

#[map_stage(workers = 500)]
fn wait_thread(x: u64) -> u64 {
    std::thread::sleep(TIMER);
    x
}

#[map_stage(concurrency = 256)]
async fn add_one_async(x: u64) -> u64 {
    x + 1
}

#[map_stage(workers = 2)]
fn add_one(x: u64) -> u64 {
    x + 1
}

const PAGES: usize = 400;

fn fetching(c: &mut Criterion) {
    let rt = runtime();
    let server = server::start(server::Options {
        pages: PAGES,
        latency: Duration::from_millis(50),
        ..server::Options::default()
    });
    let urls: Vec<String> = (0..PAGES)
        .map(|i| server.url(&format!("/page/{i}")))
        .collect();
    let client = fetch_example::client();
    let mut group = c.benchmark_group("async_fetch");
    group.throughput(Throughput::Elements(PAGES as u64));
    common::configure(&mut group, Duration::from_secs(5));
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let titles: Vec<Option<String>> = pipe!(
                urls.clone() | fetch_example::fetch(client.clone()) | fetch_example::get_title
            )
            .on_runtime(rt.handle().clone())
            .collect()
            .unwrap();
            assert_eq!(titles.iter().flatten().count(), PAGES);
        })
    });
    group.bench_function("buffer_unordered", |b| {
        b.iter(|| {
            let titles: Vec<Option<String>> = rt.block_on(
                futures_util::stream::iter(urls.clone())
                    .map(|url| {
                        let client = client.clone();
                        // The stage's function, as the plain async fn it is.
                        async move {
                            let html = fetch_example::fetch(url, client).await?;
                            Ok::<_, reqwest::Error>(fetch_example::get_title(html))
                        }
                    })
                    .buffer_unordered(fetch_example::CONCURRENCY)
                    .map(Result::unwrap)
                    .collect(),
            );
            assert_eq!(titles.iter().flatten().count(), PAGES);
        })
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn timer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("async_timer");
    group.throughput(Throughput::Elements(TIMER_ITEMS));
    common::configure(&mut group, Duration::from_secs(3));
    group.bench_function("parapipe", |b| {
        b.iter(|| {
            let n = pipe!(0..TIMER_ITEMS | wait_timer).results().count();
            assert_eq!(n as u64, TIMER_ITEMS);
        })
    });
    group.bench_function("parapipe_on_runtime", |b| {
        b.iter(|| {
            let n = pipe!(0..TIMER_ITEMS | wait_timer)
                .on_runtime(rt.handle().clone())
                .results()
                .count();
            assert_eq!(n as u64, TIMER_ITEMS);
        })
    });
    group.bench_function("buffer_unordered", |b| {
        b.iter(|| {
            let n = rt.block_on(
                futures_util::stream::iter(0..TIMER_ITEMS)
                    .map(|x| async move {
                        tokio::time::sleep(TIMER).await;
                        x
                    })
                    .buffer_unordered(IN_FLIGHT)
                    .count(),
            );
            assert_eq!(n as u64, TIMER_ITEMS);
        })
    });
    group.bench_function("parapipe_threads_500_workers", |b| {
        b.iter(|| {
            let n = pipe!(0..TIMER_ITEMS | wait_thread).results().count();
            assert_eq!(n as u64, TIMER_ITEMS);
        })
    });
    group.finish();
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("async_overhead");
    group.throughput(Throughput::Elements(CHEAP_ITEMS));
    common::configure(&mut group, Duration::from_secs(3));
    group.bench_function("parapipe_on_runtime", |b| {
        b.iter(|| {
            let n = pipe!(0..CHEAP_ITEMS | add_one_async)
                .on_runtime(rt.handle().clone())
                .results()
                .count();
            assert_eq!(n as u64, CHEAP_ITEMS);
        })
    });
    group.bench_function("buffer_unordered", |b| {
        b.iter(|| {
            let n = rt.block_on(
                futures_util::stream::iter(0..CHEAP_ITEMS)
                    .map(|x| async move { x + 1 })
                    .buffer_unordered(256)
                    .count(),
            );
            assert_eq!(n as u64, CHEAP_ITEMS);
        })
    });
    group.bench_function("parapipe_thread_map_stage", |b| {
        b.iter(|| {
            let n = pipe!(0..CHEAP_ITEMS | add_one).results().count();
            assert_eq!(n as u64, CHEAP_ITEMS);
        })
    });
    group.finish();
}

criterion_group!(benches, timer, overhead, fetching);
criterion_main!(benches);
