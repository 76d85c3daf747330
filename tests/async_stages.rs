//! Async map stages (`#[map_stage] async fn`, feature `async`): results,
//! the cap on futures in flight, order, timeouts, failures, panics, and
//! every way a pipeline with one ends, from plain threads and from inside
//! tokio runtimes of both flavours.
#![cfg(feature = "async")]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use parapipe::prelude::*;
use parapipe::{Failure, TimedOut};

/// Fails the test instead of hanging it.
fn watchdog<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("no result within {secs} s: hung"))
}

/// Counts futures started, finished and dropped unfinished, and the most in
/// flight at once.
#[derive(Default)]
struct Census {
    started: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Held by a future while it runs.
struct Flying(Arc<Census>, bool);

impl Flying {
    fn new(census: &Arc<Census>) -> Self {
        census.started.fetch_add(1, SeqCst);
        let now = census.now.fetch_add(1, SeqCst) + 1;
        census.most.fetch_max(now, SeqCst);
        Flying(census.clone(), false)
    }
    fn done(mut self) {
        self.1 = true;
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, SeqCst);
        if self.1 {
            self.0.finished.fetch_add(1, SeqCst);
        } else {
            self.0.dropped.fetch_add(1, SeqCst);
        }
    }
}

#[map_stage(concurrency = 16)]
async fn sleepy(x: u64, census: Arc<Census>, ms: u64) -> u64 {
    let flying = Flying::new(&census);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    flying.done();
    x * 2
}

#[map_stage(concurrency = 8)]
async fn jittered(x: u64) -> u64 {
    // Later items finish first: order must come from the stage, not timing.
    tokio::time::sleep(Duration::from_millis(20 - x % 20)).await;
    x
}

#[map_stage(concurrency = 4)]
async fn checked(x: u64) -> Result<u64, std::io::Error> {
    tokio::task::yield_now().await;
    if x == 13 {
        return Err(std::io::Error::other("thirteen"));
    }
    Ok(x)
}

#[map_stage(concurrency = 4)]
async fn explodes(x: u64) -> u64 {
    tokio::task::yield_now().await;
    if x == 7 {
        panic!("seven");
    }
    x
}

#[map_stage(concurrency = 4, timeout_ms = 50)]
async fn maybe_slow(x: u64) -> u64 {
    if x % 10 == 3 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    x
}

#[map_stage(workers = 2)]
fn plus_one(x: u64) -> u64 {
    x + 1
}

#[test]
fn every_item_once_and_the_cap_holds() {
    let census = Arc::new(Census::default());
    let c = census.clone();
    let out: Vec<u64> = watchdog(60, move || {
        pipe!(0..500u64 | plus_one | sleepy(c, 5) | plus_one).collect()
    })
    .unwrap();
    let got: HashSet<u64> = out.iter().copied().collect();
    let want: HashSet<u64> = (0..500u64).map(|x| (x + 1) * 2 + 1).collect();
    assert_eq!(out.len(), 500);
    assert_eq!(got, want);
    assert_eq!(census.finished.load(SeqCst), 500);
    assert_eq!(census.dropped.load(SeqCst), 0);
    let most = census.most.load(SeqCst);
    assert!(most <= 16, "{most} futures in flight, cap 16");
    assert!(most > 1, "futures ran one at a time");
}

#[test]
fn concurrency_overrides_in_place() {
    let census = Arc::new(Census::default());
    let c = census.clone();
    let out: Vec<u64> = watchdog(60, move || {
        pipe!(0..100u64 | { sleepy::new(c, 2).concurrency(3) }).collect()
    })
    .unwrap();
    assert_eq!(out.len(), 100);
    let most = census.most.load(SeqCst);
    assert!((1..=3).contains(&most), "{most} in flight, cap 3");
}

#[test]
fn ordered_keeps_input_order() {
    let out: Vec<u64> = watchdog(60, || {
        pipe!(0..300u64 | { jittered::new().ordered(true) }).collect()
    })
    .unwrap();
    assert_eq!(out, (0..300).collect::<Vec<_>>());
}

#[test]
fn ordered_and_keyed_keeps_input_order() {
    // An async stage has one worker: keyed, its router feeds that one
    // worker's queue, numbered for the stage's order.
    let out: Vec<u64> = watchdog(60, || {
        let stage = jittered::new().ordered(true).partition_by(|x: &u64| x % 7);
        pipe!(0..300u64 | { stage }).collect()
    })
    .unwrap();
    assert_eq!(out, (0..300).collect::<Vec<_>>());
}

#[test]
fn an_error_fails_the_pipeline_naming_the_stage() {
    let err = watchdog(60, || pipe!(0..100u64 | checked).collect::<Vec<u64>>()).unwrap_err();
    assert_eq!(err.stage(), "checked");
    assert!(err.to_string().contains("thirteen"), "{err}");
}

#[test]
fn filter_errors_drops_and_counts() {
    let (out, filtered) = watchdog(60, || {
        let mut results = pipe!(0..100u64 | { checked::new().filter_errors(true) }).results();
        let out: Vec<u64> = results.by_ref().map(Result::unwrap).collect();
        (out, results.filtered())
    });
    assert_eq!(out.len(), 99);
    assert_eq!(filtered, 1);
}

#[test]
fn a_panic_in_a_future_fails_the_pipeline() {
    let err = watchdog(60, || pipe!(0..100u64 | explodes).collect::<Vec<u64>>()).unwrap_err();
    assert_eq!(err.stage(), "explodes");
    assert!(
        matches!(err.failure(), Failure::Panic(m) if m.contains("seven")),
        "{err}"
    );
}

#[test]
fn a_timeout_fails_the_item_naming_the_time() {
    let started = Instant::now();
    let err = watchdog(60, || pipe!(0..10u64 | maybe_slow).collect::<Vec<u64>>()).unwrap_err();
    assert_eq!(err.stage(), "maybe_slow");
    let source = std::error::Error::source(&err).expect("the item's error");
    let timed_out = source.downcast_ref::<TimedOut>().expect("a TimedOut");
    assert_eq!(timed_out.after, Duration::from_millis(50));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited for the slow future"
    );
}

#[test]
fn timeouts_with_filter_errors_keep_the_rest() {
    let out: Vec<u64> = watchdog(60, || {
        pipe!(
            0..100u64 | {
                maybe_slow::new()
                    .filter_errors(true)
                    .timeout(Duration::from_millis(20))
            }
        )
        .collect()
    })
    .unwrap();
    assert_eq!(out.len(), 90);
}

#[test]
fn empty_input() {
    let out: Vec<u64> = watchdog(30, || pipe!(Vec::<u64>::new() | jittered).collect()).unwrap();
    assert!(out.is_empty());
}

#[test]
fn dropping_the_results_cancels_futures_in_flight() {
    let census = Arc::new(Census::default());
    let c = census.clone();
    watchdog(60, move || {
        let results = pipe!(0..1_000_000u64 | sleepy(c, 10_000)).results();
        // Nothing finishes for 10 s; let the stage fill its 16 slots.
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        drop(results);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the drop waited for the futures"
        );
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while census.now.load(SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        census.now.load(SeqCst),
        0,
        "futures still running after the drop"
    );
    assert_eq!(census.finished.load(SeqCst), 0);
    assert_eq!(census.dropped.load(SeqCst), census.started.load(SeqCst));
    assert!(census.started.load(SeqCst) <= 16);
}

#[test]
fn called_directly_as_an_iterator() {
    let stage = jittered::new();
    let out: Vec<u64> = stage.apply(0..50u64).map(Result::unwrap).collect();
    let mut sorted = out.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
}

#[test]
fn in_a_serial_segment() {
    let out: Vec<u64> = watchdog(60, || {
        pipe!(0..100u64 | segment!(plus_one | jittered) | plus_one).collect()
    })
    .unwrap();
    assert_eq!(out.len(), 100);
}

#[test]
fn workers_on_an_async_stage_is_a_configuration_error() {
    let err = pipe!(0..10u64 | { jittered::new().workers(2) })
        .collect::<Vec<u64>>()
        .unwrap_err();
    assert!(
        matches!(err.failure(), Failure::Config(m) if m.contains("concurrency")),
        "{err}"
    );
}

#[test]
fn concurrency_zero_is_a_configuration_error() {
    let err = pipe!(0..10u64 | { jittered::new().concurrency(0) })
        .collect::<Vec<u64>>()
        .unwrap_err();
    assert!(
        matches!(err.failure(), Failure::Config(m) if m.contains("at least 1")),
        "{err}"
    );
}

// Inside tokio: blocking consumption (the futures then run on the
// pipeline's own runtime) and async consumption (on the caller's), in both
// runtime flavours.

#[tokio::test(flavor = "current_thread")]
async fn blocking_collect_inside_a_current_thread_runtime() {
    let out: Vec<u64> = pipe!(0..200u64 | jittered | plus_one).collect().unwrap();
    assert_eq!(out.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn blocking_collect_inside_a_one_worker_runtime() {
    let out: Vec<u64> = pipe!(0..200u64 | jittered | plus_one).collect().unwrap();
    assert_eq!(out.len(), 200);
}

#[tokio::test(flavor = "current_thread")]
async fn collect_async_on_a_current_thread_runtime() {
    let out: Vec<u64> = pipe!(0..200u64 | plus_one | jittered)
        .collect_async()
        .await
        .unwrap();
    assert_eq!(out.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_async_on_a_multi_thread_runtime() {
    let out: Vec<u64> = pipe!(0..200u64 | jittered | plus_one)
        .collect_async()
        .await
        .unwrap();
    assert_eq!(out.len(), 200);
    let last = pipe!(0..10u64 | { jittered::new().ordered(true) })
        .execute_async()
        .await
        .unwrap();
    assert_eq!(last, Some(9));
    pipe!(0..10u64 | jittered).run_async().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn errors_reach_async_consumers() {
    let err = pipe!(0..100u64 | checked).run_async().await.unwrap_err();
    assert_eq!(err.stage(), "checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_cancels_futures_in_flight() {
    let census = Arc::new(Census::default());
    let mut stream = pipe!(0..1_000_000u64 | sleepy(census.clone(), 10_000)).stream();
    let first = tokio::time::timeout(
        Duration::from_millis(300),
        std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        }),
    )
    .await;
    assert!(first.is_err(), "nothing can finish in 300 ms");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while census.now.load(SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        census.now.load(SeqCst),
        0,
        "futures still running after the drop"
    );
    assert_eq!(census.finished.load(SeqCst), 0);
}

// Random pipelines mixing async and thread stages, with random delays,
// errors and panics inside futures and random early drops: every run ends
// (no hang), a clean run delivers every item once, a faulty one fails
// naming the stage, and no future outlives its pipeline.

/// A small deterministic generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    Error(u64),
    Panic(u64),
}

#[map_stage]
async fn faulty(
    x: u64,
    fault: Fault,
    max_delay_us: u64,
    census: Arc<Census>,
) -> Result<u64, std::io::Error> {
    let flying = Flying::new(&census);
    let delay = (x * 7919) % (max_delay_us + 1);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    } else {
        tokio::task::yield_now().await;
    }
    match fault {
        Fault::Error(at) if x == at => return Err(std::io::Error::other("injected")),
        Fault::Panic(at) if x == at => panic!("injected panic"),
        _ => {}
    }
    flying.done();
    Ok(x)
}

#[map_stage]
fn pass(x: u64) -> u64 {
    x
}

fn random_case(seed: u64) {
    let mut rng = Rng(seed);
    let n = rng.below(2_000);
    let fault = match rng.below(4) {
        0 | 1 => Fault::None,
        2 => Fault::Error(rng.below(n.max(1))),
        _ => Fault::Panic(rng.below(n.max(1))),
    };
    let concurrency = 1 + rng.below(64) as usize;
    let ordered = rng.below(2) == 0;
    let max_delay_us = [0, 50, 2_000][rng.below(3) as usize];
    let workers = 1 + rng.below(3) as usize;
    let drop_after = (rng.below(4) == 0).then(|| rng.below(n + 1));
    let census = Arc::new(Census::default());
    let c = census.clone();
    let what = format!(
        "seed {seed}: n {n}, {fault:?}, concurrency {concurrency}, ordered {ordered}, delay {max_delay_us} us, workers {workers}, drop after {drop_after:?}"
    );
    let w = what.clone();
    watchdog(60, move || {
        let stage = faulty::new(fault, max_delay_us, c)
            .concurrency(concurrency)
            .ordered(ordered);
        let mut results = pipe!(
            0..n | { pass::new().workers(workers) } | { stage } | { pass::new().workers(workers) }
        )
        .results();
        let mut got = Vec::new();
        let mut failure = None;
        for item in results.by_ref() {
            match item {
                Ok(x) => got.push(x),
                Err(e) => failure = Some(e),
            }
            if drop_after.is_some_and(|d| got.len() as u64 >= d) {
                break;
            }
        }
        drop(results);
        let fault_hit = match fault {
            Fault::Error(at) | Fault::Panic(at) => at < n,
            Fault::None => false,
        };
        match (&failure, fault_hit, drop_after) {
            (Some(e), true, _) => assert_eq!(e.stage(), "faulty", "{w}: {e}"),
            (Some(e), false, _) => panic!("{w}: unexpected failure {e}"),
            (None, true, Some(_)) => {}
            (None, true, None) => panic!("{w}: the fault did not fail the pipeline"),
            (None, false, Some(d)) => assert!(got.len() as u64 >= d.min(n), "{w}"),
            (None, false, None) => {
                let mut sorted = got.clone();
                sorted.sort_unstable();
                assert_eq!(
                    sorted,
                    (0..n).collect::<Vec<_>>(),
                    "{w}: lost or repeated items"
                );
                if ordered && workers == 1 {
                    assert_eq!(got, sorted, "{w}: out of order");
                }
            }
        }
    });
    // Futures are cancelled at their next `.await`: none outlives the
    // pipeline for long.
    let deadline = Instant::now() + Duration::from_secs(5);
    while census.now.load(SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(census.now.load(SeqCst), 0, "{what}: futures still running");
}

#[test]
fn random_pipelines_with_async_stages() {
    let cases: u64 = std::env::var("PARAPIPE_ASYNC_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let first: u64 = std::env::var("PARAPIPE_ASYNC_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + cases {
        random_case(seed);
    }
}

/// Fails unless no thread of a pipeline's own tokio runtime is left within
/// a few seconds (a generous bound for a loaded machine): tokio lets its
/// threads go once they have finished their work, and the kernel takes a
/// moment to reap them.
fn assert_no_runtime_threads(what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while runtime_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(runtime_threads(), 0, "{what}: runtime threads left");
}

/// Threads named like the pipeline's own tokio runtime's, in this process.
fn runtime_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim() == "parapipe-async")
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_pipelines_own_runtime_stops_with_it() {
    // Run in a child process, alone: other tests' pipelines start runtimes.
    if std::env::var_os("PARAPIPE_ASYNC_RUNTIME_CHILD").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_pipelines_own_runtime_stops_with_it",
                "--nocapture",
            ])
            .env("PARAPIPE_ASYNC_RUNTIME_CHILD", "1")
            .status()
            .unwrap();
        assert!(status.success());
        return;
    }
    for round in 0..3 {
        let out: Vec<u64> = pipe!(0..100u64 | jittered).collect().unwrap();
        assert_eq!(out.len(), 100);
        assert_no_runtime_threads(&format!("round {round}, after a completed run"));
        let results = pipe!(0..1_000_000u64 | jittered).results();
        drop(results);
        assert_no_runtime_threads(&format!("round {round}, after a dropped run"));
        let err = pipe!(0..100u64 | explodes)
            .collect::<Vec<u64>>()
            .unwrap_err();
        assert_eq!(err.stage(), "explodes");
        assert_no_runtime_threads(&format!("round {round}, after a panic"));
    }
}

// A `futures_core::Stream` as the source.

#[test]
fn a_stream_is_a_source() {
    let out: Vec<u64> = watchdog(60, || {
        pipe!(futures_util::stream::iter(0..1_000u64) | plus_one | jittered).collect()
    })
    .unwrap();
    let mut sorted = out;
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=1_000).collect::<Vec<_>>());
}

/// Items that come over time, on the runtime's timer.
fn ticking(n: u64, every: Duration) -> impl futures_core::Stream<Item = u64> + Send + 'static {
    futures_util::stream::unfold(0u64, move |i| async move {
        if i == n {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((i, i + 1))
    })
}

#[test]
fn a_stream_on_the_runtimes_timer() {
    let out: Vec<u64> = watchdog(60, || {
        pipe!(ticking(50, Duration::from_millis(2)) | { jittered::new().ordered(true) }).collect()
    })
    .unwrap();
    assert_eq!(out, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "current_thread")]
async fn a_stream_source_consumed_from_async_code() {
    let out: Vec<u64> = pipe!(ticking(30, Duration::from_millis(1)) | plus_one)
        .collect_async()
        .await
        .unwrap();
    assert_eq!(out.len(), 30);
}

#[test]
fn a_pending_stream_does_not_hold_a_dropped_pipeline() {
    watchdog(30, || {
        let results = pipe!(futures_util::stream::pending::<u64>() | plus_one).results();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        drop(results);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the drop waited"
        );
    });
}

#[test]
fn a_panicking_stream_fails_the_pipeline() {
    let err = watchdog(30, || {
        let items = futures_util::stream::iter(0..10u64)
            .map(|x| if x == 5 { panic!("bad stream") } else { x });
        pipe!(items | plus_one).collect::<Vec<u64>>()
    })
    .unwrap_err();
    assert_eq!(err.stage(), "source");
    assert!(
        matches!(err.failure(), Failure::Panic(m) if m.contains("bad stream")),
        "{err}"
    );
}

#[test]
fn an_async_stage_is_profiled_per_future() {
    let dir = std::env::temp_dir().join(format!("parapipe-async-profile-{}", std::process::id()));
    let census = Arc::new(Census::default());
    let c = census.clone();
    let profile = watchdog(60, move || {
        let mut results = pipe!(0..200u64 | sleepy(c, 20))
            .profile_with(parapipe::profile::Profiler::new().folder(&dir))
            .results();
        assert_eq!(results.by_ref().count(), 200);
        let profile = results.profile().expect("a profile").clone();
        let _ = std::fs::remove_dir_all(&dir);
        profile
    });
    let row = profile
        .stages()
        .iter()
        .find(|s| s.name == "MainPipeline__sleepy")
        .expect("the async stage's row");
    assert_eq!(row.kind, "async");
    assert_eq!(row.items_out, 200);
    // Each future sleeps 20 ms: its latency is at least that.
    assert!(
        row.latency.median >= 0.020,
        "median {} s",
        row.latency.median
    );
    assert!(
        (2..=16).contains(&row.in_flight_max),
        "in flight at most {}",
        row.in_flight_max
    );
    // 200 futures of 20 ms, 16 at a time: busy (any in flight) for at
    // least 200 / 16 x 20 ms, and, as they overlapped, less than the sum of
    // their latencies.
    assert!(
        row.busy >= Duration::from_millis(240),
        "busy {:?}",
        row.busy
    );
    let sum = Duration::from_secs_f64(row.latency.mean * 200.0);
    assert!(
        row.busy < sum,
        "busy {:?}, latencies {sum:?} in all",
        row.busy
    );
}

/// Keeps every report the debugger makes.
struct Keep(Arc<std::sync::Mutex<Vec<parapipe::debug::Report>>>);

impl parapipe::debug::Reporter for Keep {
    fn report(&mut self, report: &parapipe::debug::Report) {
        self.0.lock().unwrap().push(report.clone());
    }
}

#[test]
fn the_debugger_shows_futures_in_flight() {
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = reports.clone();
    let census = Arc::new(Census::default());
    watchdog(60, move || {
        let debugger = parapipe::debug::Debugger::new()
            .every(Duration::from_millis(20))
            .reporter(Keep(kept));
        let out: Vec<u64> = pipe!(0..300u64 | sleepy(census, 10) | plus_one)
            .debug(debugger)
            .collect()
            .unwrap();
        assert_eq!(out.len(), 300);
    });
    let reports = reports.lock().unwrap();
    let last = reports.last().expect("a final report");
    assert!(last.last);
    let row = |name: &str| {
        last.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
            .clone()
    };
    let (now, most) = row("MainPipeline__sleepy")
        .in_flight
        .expect("an async row has futures in flight");
    assert_eq!(now, 0, "futures in flight after the end");
    assert!((2..=16).contains(&most), "at most {most} in flight, cap 16");
    assert_eq!(row("MainPipeline__plus_one").in_flight, None);
    // While it ran, some report saw futures in flight.
    let seen = reports
        .iter()
        .filter_map(|r| r.stages.iter().find(|s| s.name == "MainPipeline__sleepy"))
        .filter_map(|s| s.in_flight)
        .map(|(now, _)| now)
        .max()
        .unwrap_or(0);
    assert!(seen > 0, "no report saw a future in flight");
}

#[test]
fn an_ordered_serial_segment_with_copies_refuses_an_async_stage() {
    let err = watchdog(30, || {
        let seg = segment!(plus_one | jittered)
            .serial()
            .workers(3)
            .ordered(true);
        pipe!(0..100u64 | { seg }).collect::<Vec<u64>>()
    })
    .unwrap_err();
    assert!(
        matches!(err.failure(), Failure::Config(m) if m.contains("jittered") && m.contains("one worker")),
        "{err}"
    );
    // One copy, or no order to keep: it runs.
    let one: Vec<u64> = watchdog(30, || {
        let seg = segment!(plus_one | { jittered::new().ordered(true) })
            .serial()
            .ordered(true);
        pipe!(0..100u64 | { seg }).collect()
    })
    .unwrap();
    assert_eq!(one, (1..=100).collect::<Vec<_>>());
    let unordered: Vec<u64> = watchdog(30, || {
        let seg = segment!(plus_one | jittered).serial().workers(3);
        pipe!(0..100u64 | { seg }).collect()
    })
    .unwrap();
    assert_eq!(unordered.len(), 100);
}

#[tokio::test(flavor = "current_thread")]
async fn results_started_blocking_are_a_stream_too() {
    let mut stream = pipe!(0..50u64 | jittered).results().into_stream();
    let mut got = Vec::new();
    while let Some(item) = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    })
    .await
    {
        got.push(item.unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[map_stage(concurrency = 4)]
async fn odd_only(x: u64) -> Result<u64, parapipe::Skip> {
    tokio::task::yield_now().await;
    if x.is_multiple_of(2) {
        Err(parapipe::Skip)
    } else {
        Ok(x)
    }
}

#[test]
fn skip_from_a_future_skips_the_item() {
    let (out, skipped) = watchdog(30, || {
        let mut results = pipe!(0..100u64 | odd_only).results();
        let out: Vec<u64> = results.by_ref().map(Result::unwrap).collect();
        (out, results.skipped())
    });
    assert_eq!(out.len(), 50);
    assert_eq!(skipped, 50);
}
