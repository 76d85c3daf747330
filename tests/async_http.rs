//! Async stages against a real HTTP server (tests/http/server.rs, on
//! loopback) with a real client (reqwest): many requests capped at the
//! stage's concurrency, every way of consuming the pipeline (plain threads,
//! current-thread and multi-thread runtimes), failing answers, timeouts,
//! cancellation seen from the server's side, and order.
//!
//! Every test runs under a watchdog that aborts the process if it hangs;
//! timing is only bounded generously (seconds where milliseconds would do).
#![cfg(feature = "async")]

#[path = "http/server.rs"]
mod server;

use std::collections::HashSet;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use parapipe::prelude::*;
use parapipe::{ResultStream, TimedOut};
use server::{Options, Server, Stats};

/// Aborts the process (with a message) unless dropped within its time: a
/// hung test fails instead of hanging, whatever it blocks (a plain thread,
/// or a runtime's only thread).
struct Watchdog {
    _alive: mpsc::Sender<()>,
}

fn watchdog(test: &'static str, secs: u64) -> Watchdog {
    let (alive, dropped) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) =
            dropped.recv_timeout(Duration::from_secs(secs))
        {
            eprintln!("{test}: still running after {secs} s: hung");
            std::process::abort();
        }
    });
    Watchdog { _alive: alive }
}

/// A client for loopback: no proxy from the environment. A fresh one per
/// pipeline, so that no pooled connection outlives the runtime that opened
/// it (a pipeline's own runtime stops when the pipeline ends).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

/// GETs `url`; a non-2xx answer is an error.
#[map_stage(concurrency = 100)]
async fn fetch(url: String, client: reqwest::Client) -> Result<String, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// [`fetch`], giving up on an answer after 200 ms.
#[map_stage(concurrency = 8, timeout_ms = 200)]
async fn fetch_within(url: String, client: reqwest::Client) -> Result<String, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// Page `i` after a wait of its own (0 to 56 ms, in no order), so that
/// answers come back out of order.
#[map_stage(concurrency = 32, ordered)]
async fn fetch_jittered(
    i: usize,
    base: String,
    client: reqwest::Client,
) -> Result<String, reqwest::Error> {
    let jitter = (i * 37 + 11) % 29 * 2;
    tokio::time::sleep(Duration::from_millis(jitter as u64)).await;
    let url = format!("{base}/page/{i}");
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// The text between `<title>` and `</title>`, on threads.
#[map_stage(workers = 2)]
fn title(html: String) -> Option<String> {
    let start = html.find("<title>")? + "<title>".len();
    let end = html[start..].find("</title>")? + start;
    Some(html[start..end].to_owned())
}

fn page_urls(server: &Server, n: usize) -> Vec<String> {
    (0..n).map(|i| server.url(&format!("/page/{i}"))).collect()
}

/// The titles of pages `0..n` whose index passes `keep`, sorted.
fn expected_titles(n: usize, keep: impl Fn(usize) -> bool) -> Vec<String> {
    let mut titles: Vec<String> = (0..n)
        .filter(|&i| keep(i))
        .map(|i| format!("Page {i}"))
        .collect();
    titles.sort();
    titles
}

/// Every page had a title; sorted.
fn sorted(titles: Vec<Option<String>>) -> Vec<String> {
    let mut titles: Vec<String> = titles
        .into_iter()
        .map(|t| t.expect("every page has a title"))
        .collect();
    titles.sort();
    titles
}

/// Every request the server started has ended, abandoned by its client,
/// none answered.
fn all_abandoned(s: &Stats) -> bool {
    s.started > 0 && s.abandoned == s.started && s.in_flight == 0
}

/// Polls `server`'s stats until `done` holds of them, for up to `secs`.
fn stats_until(server: &Server, secs: u64, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`stats_until`] for async tests: the runtime goes on running (the
/// futures being cancelled may be its own).
async fn stats_until_async(server: &Server, secs: u64, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- many requests, capped ----

#[test]
fn three_hundred_pages_at_most_a_hundred_in_flight() {
    let _w = watchdog("three_hundred_pages_at_most_a_hundred_in_flight", 120);
    let server = server::start(Options {
        pages: 300,
        latency: Duration::from_millis(50),
        ..Options::default()
    });
    let urls = page_urls(&server, 300);
    let titles: Vec<Option<String>> = pipe!(urls | fetch(client()) | title).collect().unwrap();
    assert_eq!(titles.len(), 300);
    let titles = sorted(titles);
    let distinct: HashSet<&String> = titles.iter().collect();
    assert_eq!(distinct.len(), 300, "a title twice");
    assert_eq!(titles, expected_titles(300, |_| true));
    let stats = server.stats();
    assert!(stats.in_flight_max <= 100, "cap 100: {stats:?}");
    assert!(stats.in_flight_max > 1, "one request at a time: {stats:?}");
    assert_eq!((stats.completed, stats.abandoned), (300, 0), "{stats:?}");
}

// ---- every way of consuming: the same titles ----

const PAGES: usize = 120;

fn small_server() -> Server {
    server::start(Options {
        pages: PAGES,
        latency: Duration::from_millis(10),
        ..Options::default()
    })
}

#[test]
fn from_a_plain_thread() {
    let _w = watchdog("from_a_plain_thread", 60);
    let server = small_server();
    let titles: Vec<Option<String>> = pipe!(page_urls(&server, PAGES) | fetch(client()) | title)
        .collect()
        .unwrap();
    assert_eq!(sorted(titles), expected_titles(PAGES, |_| true));
}

/// A blocking consumer on a thread of its own, the futures on a
/// multi-thread runtime it was given.
#[test]
fn from_a_plain_thread_on_a_given_runtime() {
    let _w = watchdog("from_a_plain_thread_on_a_given_runtime", 60);
    let server = small_server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let titles: Vec<Option<String>> = pipe!(page_urls(&server, PAGES) | fetch(client()) | title)
        .on_runtime(runtime.handle().clone())
        .collect()
        .unwrap();
    assert_eq!(sorted(titles), expected_titles(PAGES, |_| true));
}

#[tokio::test(flavor = "current_thread")]
async fn collect_async_on_a_current_thread_runtime() {
    let _w = watchdog("collect_async_on_a_current_thread_runtime", 60);
    let server = small_server();
    let titles: Vec<Option<String>> = pipe!(page_urls(&server, PAGES) | fetch(client()) | title)
        .collect_async()
        .await
        .unwrap();
    assert_eq!(sorted(titles), expected_titles(PAGES, |_| true));
}

/// Blocking the runtime's only thread: the futures run on the pipeline's
/// own runtime.
#[tokio::test(flavor = "current_thread")]
async fn blocking_collect_on_a_current_thread_runtime() {
    let _w = watchdog("blocking_collect_on_a_current_thread_runtime", 60);
    let server = small_server();
    let titles: Vec<Option<String>> = pipe!(page_urls(&server, PAGES) | fetch(client()) | title)
        .collect()
        .unwrap();
    assert_eq!(sorted(titles), expected_titles(PAGES, |_| true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_thread_runtime() {
    let _w = watchdog("on_a_multi_thread_runtime", 60);
    let server = small_server();
    let want = expected_titles(PAGES, |_| true);

    let titles: Vec<Option<String>> = pipe!(page_urls(&server, PAGES) | fetch(client()) | title)
        .collect_async()
        .await
        .unwrap();
    assert_eq!(sorted(titles), want, "collect_async");

    // A blocking consumer on a blocking thread, the futures on this runtime.
    let urls = page_urls(&server, PAGES);
    let handle = tokio::runtime::Handle::current();
    let titles: Vec<Option<String>> = tokio::task::spawn_blocking(move || {
        pipe!(urls | fetch(client()) | title)
            .on_runtime(handle)
            .collect()
    })
    .await
    .expect("the blocking consumer")
    .unwrap();
    assert_eq!(sorted(titles), want, "on_runtime and a blocking collect");
}

// ---- failing answers ----

fn failing_server() -> Server {
    server::start(Options {
        pages: 100,
        fail_one_in: Some(10),
        ..Options::default()
    })
}

#[test]
fn a_failing_answer_fails_the_pipeline_naming_the_stage() {
    let _w = watchdog("a_failing_answer_fails_the_pipeline_naming_the_stage", 60);
    let server = failing_server();
    let err = pipe!(page_urls(&server, 100) | fetch(client()) | title)
        .collect::<Vec<Option<String>>>()
        .unwrap_err();
    assert_eq!(err.stage(), "fetch", "{err}");
    let source = std::error::Error::source(&err).expect("the item's error");
    let http = source
        .downcast_ref::<reqwest::Error>()
        .unwrap_or_else(|| panic!("a reqwest::Error, not {source:?}"));
    assert_eq!(http.status().map(|s| s.as_u16()), Some(500), "{http}");
    let page: usize = http
        .url()
        .and_then(|u| u.path().strip_prefix("/page/")?.parse().ok())
        .unwrap_or_else(|| panic!("a page's url in {http}"));
    assert!(server.fails(page), "page {page} does not fail");
}

#[test]
fn filter_errors_drops_exactly_the_failing_pages() {
    let _w = watchdog("filter_errors_drops_exactly_the_failing_pages", 60);
    let server = failing_server();
    let mut results =
        pipe!(page_urls(&server, 100) | fetch(client()).filter_errors(true) | title).results();
    let titles: Vec<Option<String>> = results.by_ref().map(Result::unwrap).collect();
    assert_eq!(sorted(titles), expected_titles(100, |i| !server.fails(i)));
    let failing = (0..100).filter(|&i| server.fails(i)).count();
    assert_eq!(failing, 10);
    assert_eq!(results.filtered(), failing as u64);
    assert_eq!(
        results.filtered_by_stage(),
        [
            ("fetch".to_owned(), failing as u64),
            ("title".to_owned(), 0)
        ]
    );
}

// ---- timeouts ----

#[test]
fn a_timeout_fails_promptly_and_the_requests_are_abandoned() {
    let _w = watchdog(
        "a_timeout_fails_promptly_and_the_requests_are_abandoned",
        60,
    );
    let slow = Duration::from_secs(20);
    let server = server::start(Options {
        slow,
        ..Options::default()
    });
    let urls: Vec<String> = (0..20).map(|i| server.url(&format!("/slow/{i}"))).collect();
    let begun = Instant::now();
    let err = pipe!(urls | fetch_within(client()))
        .collect::<Vec<String>>()
        .unwrap_err();
    let took = begun.elapsed();
    assert_eq!(err.stage(), "fetch_within", "{err}");
    let source = std::error::Error::source(&err).expect("the item's error");
    let timed_out = source
        .downcast_ref::<TimedOut>()
        .unwrap_or_else(|| panic!("a TimedOut, not {source:?}"));
    assert_eq!(timed_out.after, Duration::from_millis(200));
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} (slow {slow:?})"
    );
    // The server sees the clients go away.
    let stats = stats_until(&server, 5, all_abandoned);
    assert!(all_abandoned(&stats), "{stats:?}");
    assert!(stats.started <= 8, "concurrency 8: {stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
}

// ---- dropping the results early ----

fn slow_server() -> Server {
    server::start(Options {
        slow: Duration::from_secs(60),
        ..Options::default()
    })
}

fn slow_urls(server: &Server) -> Vec<String> {
    (0..1_000)
        .map(|i| server.url(&format!("/slow/{i}")))
        .collect()
}

#[test]
fn dropping_the_results_abandons_the_requests() {
    let _w = watchdog("dropping_the_results_abandons_the_requests", 60);
    let server = slow_server();
    let begun = Instant::now();
    let results = pipe!(slow_urls(&server) | fetch(client()).concurrency(50)).results();
    stats_until(&server, 10, |s| s.started > 0);
    std::thread::sleep(Duration::from_millis(300).saturating_sub(begun.elapsed()));
    let dropping = Instant::now();
    drop(results);
    let took = dropping.elapsed();
    assert!(took < Duration::from_secs(5), "the drop took {took:?}");
    let stats = stats_until(&server, 5, all_abandoned);
    assert!(all_abandoned(&stats), "{stats:?}");
    assert!(stats.started <= 50, "concurrency 50: {stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
    assert!(stats.in_flight_max <= 50, "{stats:?}");
}

/// Polls `stream` for `wait`: nothing may come.
async fn nothing_within<T: std::fmt::Debug>(stream: &mut ResultStream<T>, wait: Duration) {
    let first =
        tokio::time::timeout(wait, poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx))).await;
    assert!(first.is_err(), "an item from /slow: {first:?}");
}

async fn drop_the_stream(server: &Server) {
    let mut stream = pipe!(slow_urls(server) | fetch(client()).concurrency(50)).stream();
    nothing_within(&mut stream, Duration::from_millis(300)).await;
    let dropping = Instant::now();
    drop(stream);
    let took = dropping.elapsed();
    assert!(took < Duration::from_secs(5), "the drop took {took:?}");
    let stats = stats_until_async(server, 5, all_abandoned).await;
    assert!(all_abandoned(&stats), "{stats:?}");
    assert!(stats.started <= 50, "concurrency 50: {stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_abandons_the_requests() {
    let _w = watchdog("dropping_the_stream_abandons_the_requests", 60);
    let server = slow_server();
    drop_the_stream(&server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_stream_on_a_current_thread_runtime() {
    let _w = watchdog("dropping_the_stream_on_a_current_thread_runtime", 60);
    let server = slow_server();
    drop_the_stream(&server).await;
}

// ---- order ----

#[test]
fn an_ordered_stage_keeps_input_order() {
    let _w = watchdog("an_ordered_stage_keeps_input_order", 60);
    let server = server::start(Options {
        pages: 200,
        latency: Duration::from_millis(5),
        ..Options::default()
    });
    let base = server.url("");
    let base = base.trim_end_matches('/').to_owned();
    let pages: Vec<String> = pipe!(0..200usize | fetch_jittered(base, client()))
        .collect()
        .unwrap();
    assert_eq!(pages.len(), 200);
    for (i, html) in pages.iter().enumerate() {
        assert_eq!(*html, server::page(i), "item {i}");
    }
    // Through an ordered thread stage too.
    let base = server.url("").trim_end_matches('/').to_owned();
    let titles: Vec<Option<String>> =
        pipe!(0..200usize | fetch_jittered(base, client()) | title.ordered(true))
            .collect()
            .unwrap();
    let want: Vec<Option<String>> = (0..200).map(|i| Some(format!("Page {i}"))).collect();
    assert_eq!(titles, want);
}
