//! Streaming sources (`Stream`: feed, every, idle timeout) and the
//! latest-value output.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use common::{LIMIT, watchdog};
use parapipe::Stream;
use parapipe::prelude::*;

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[test]
fn feed_runs_a_closure_as_the_source() {
    let got = watchdog(LIMIT, "feed", || {
        let source = Stream::feed(|bucket| {
            for x in 0..1000u64 {
                bucket.push(x).unwrap();
            }
        });
        pipe!(source | inc).collect::<Vec<u64>>()
    });
    assert_eq!(sorted(got.unwrap()), (1..=1000).collect::<Vec<_>>());
}

#[test]
fn feed_sees_the_pipeline_stop() {
    let pushed = Arc::new(AtomicU64::new(0));
    let p = pushed.clone();
    watchdog(LIMIT, "feed stop", move || {
        let source = Stream::feed(move |bucket| {
            // Endless, until the pipeline stops.
            while bucket.push(1u64).is_ok() {
                p.fetch_add(1, SeqCst);
            }
        });
        let mut results = pipe!(source | inc).results();
        for _ in 0..100 {
            results.next().unwrap().unwrap();
        }
    });
    let after = pushed.load(SeqCst);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        pushed.load(SeqCst),
        after,
        "the feed kept going after the pipeline stopped"
    );
}

#[test]
fn a_panic_in_feed_fails_the_pipeline() {
    let err = watchdog(LIMIT, "feed panic", || {
        let source = Stream::feed(|bucket| {
            bucket.push(1u64).unwrap();
            panic!("feed broke");
        });
        pipe!(source | inc).run().unwrap_err()
    });
    assert_eq!(err.task(), "source");
    assert_eq!(err.panic_message(), Some("feed broke"));
}

#[test]
fn idle_timeout_ends_a_stream_that_dried_up() {
    // The sender stays alive: only the idle timeout can end the stream, and
    // everything sent before must still come out.
    let (tx, rx) = flume::unbounded::<u64>();
    for x in 0..10 {
        tx.send(x).unwrap();
    }
    let got = watchdog(LIMIT, "idle timeout", move || {
        let source = Stream::channel(rx).idle_timeout(Duration::from_millis(100));
        pipe!(source | inc).collect::<Vec<u64>>()
    });
    assert_eq!(sorted(got.unwrap()), (1..=10).collect::<Vec<_>>());
    drop(tx);
}

#[test]
fn idle_timeout_does_not_cut_a_slow_but_live_stream() {
    // Items every 20 ms with a 500 ms idle timeout: all arrive.
    let source = Stream::feed(|bucket| {
        for x in 0..10u64 {
            thread::sleep(Duration::from_millis(20));
            bucket.push(x).unwrap();
        }
    })
    .idle_timeout(Duration::from_millis(500));
    let got = watchdog(LIMIT, "live stream", move || {
        pipe!(source | inc).collect::<Vec<u64>>()
    });
    assert_eq!(sorted(got.unwrap()), (1..=10).collect::<Vec<_>>());
}

#[test]
fn every_ticks_at_its_period() {
    let start = Instant::now();
    let mut n = 0u64;
    let source = Stream::every(Duration::from_millis(5), move || {
        n += 1;
        (n <= 20).then_some(n)
    });
    let got = watchdog(LIMIT, "every", move || {
        pipe!(source | inc).collect::<Vec<u64>>()
    });
    assert_eq!(sorted(got.unwrap()), (2..=21).collect::<Vec<_>>());
    // 20 ticks 5 ms apart: at least 19 periods passed (a lower bound only).
    assert!(start.elapsed() >= Duration::from_millis(95));
}

#[test]
fn latest_keeps_the_newest_result_and_stops_on_drop() {
    watchdog(LIMIT, "latest", || {
        let mut n = 0u64;
        let ticks = Stream::every(Duration::from_millis(1), move || {
            n += 1;
            Some(n)
        });
        let latest = pipe!(ticks | inc).latest();
        let mut seen = None;
        while seen.is_none_or(|v| v < 10) {
            thread::sleep(Duration::from_millis(5));
            seen = latest.get();
        }
        // Newer results keep replacing older ones.
        let later = loop {
            thread::sleep(Duration::from_millis(5));
            let v = latest.get().unwrap();
            if v > seen.unwrap() {
                break v;
            }
        };
        assert!(later > 10);
        assert!(!latest.is_done());
        // The source never ends: dropping must stop it.
        drop(latest);
    });
}

#[test]
fn latest_wait_returns_the_last_item_or_the_failure() {
    let last = pipe!(0..1000u64 | inc.ordered(true))
        .latest()
        .wait()
        .unwrap();
    assert_eq!(last, Some(1000));

    #[map_stage]
    fn fail(x: u64) -> Result<u64, std::io::Error> {
        if x == 500 {
            Err(std::io::Error::other("boom"))
        } else {
            Ok(x)
        }
    }
    let err = pipe!(0..1000u64 | fail).latest().wait().unwrap_err();
    assert_eq!(err.stage(), "fail");
}
