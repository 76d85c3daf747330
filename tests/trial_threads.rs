//! Regressions for the outside trial of issue 13, items 8 and 9: sources
//! blocked in the user's code, and `Stream::every` tickers, must not cost
//! each drop of the results a grace wait, nor leave threads behind once
//! nothing of the user's holds them.
//!
//! These count the process's threads: one test in this binary, so no other
//! test's threads are counted. Its scenarios run one after another, each
//! with its own baseline; each is checked on its own, and the test fails at
//! the end naming every scenario that failed.

mod common;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Boom, assert_threads_back_to, thread_count, watchdog};
use parapipe::Stream;
use parapipe::prelude::*;

/// The watchdog's bound: generous, it detects hangs, not slowness.
const BOUND: Duration = Duration::from_secs(30);

/// Pipelines started and dropped per blocked-source scenario.
const DROPS: u32 = 20;

#[map_stage]
fn inc(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn always_fail(x: u64) -> Result<u64, Boom> {
    Err(Boom(x))
}

/// The message of a caught panic.
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// How the blocked-source scenarios of item 8 build their pipeline.
#[derive(Clone, Copy, Debug)]
enum Blocked {
    /// A plain iterator source: a std channel's `into_iter()`, not the
    /// receiver itself (which `pipe!` would read as a channel).
    PlainIterator,
    /// The same iterator through `Pipeline::streaming`.
    Streaming,
    /// A `Stream::feed` closure that pushes one item, then waits for a gate
    /// outside `push`.
    Feed,
}

/// Item 8: starts `DROPS` pipelines whose source blocks in the user's code
/// after one item, reads that item and drops the results; the drops must
/// not wait (20 took about 4.4 s before: a 200 ms grace each). Once the
/// user's code unblocks, no thread may be left.
fn drops_with_a_blocked_source(kind: Blocked) {
    let baseline = thread_count();
    // What keeps each source blocked: dropped only at the end.
    let mut holds: Vec<mpsc::Sender<u64>> = Vec::new();
    let mut dropping = Duration::ZERO;
    for _ in 0..DROPS {
        let (tx, rx) = mpsc::channel::<u64>();
        let pipeline = match kind {
            Blocked::PlainIterator => {
                tx.send(1).unwrap();
                let items = rx.into_iter();
                pipe!(items | inc)
            }
            Blocked::Streaming => {
                tx.send(1).unwrap();
                pipe!(Pipeline::streaming(rx.into_iter()) | inc)
            }
            Blocked::Feed => {
                let feed = Stream::feed(move |bucket| {
                    if bucket.push(1).is_ok() {
                        // Blocked in the user's code, not in `push`.
                        let _ = rx.recv();
                    }
                });
                pipe!(feed | inc)
            }
        };
        holds.push(tx);
        let mut results = pipeline.results();
        assert_eq!(results.next().unwrap().unwrap(), 2);
        let start = Instant::now();
        drop(results);
        dropping += start.elapsed();
    }
    // Unblock the user's code: its threads end.
    drop(holds);
    assert_threads_back_to(baseline, &format!("{kind:?}: after the sources unblocked"));
    // Generous: 100 ms a drop on average, against 200 ms of grace before.
    assert!(
        dropping < Duration::from_secs(2),
        "{DROPS} drops took {dropping:?} in all"
    );
}

/// Item 9: a ticker with a one-hour period; its thread must be gone after
/// the results are dropped, and after the pipeline fails.
fn every_leaves_no_ticker(fail: bool) {
    let baseline = thread_count();
    let mut n = 0u64;
    let ticks = Stream::every(Duration::from_secs(3600), move || {
        n += 1;
        Some(n)
    });
    if fail {
        let err = pipe!(ticks | always_fail).run().unwrap_err();
        assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(1)), "{err}");
        assert_threads_back_to(baseline, "every: after a failure");
    } else {
        let mut results = pipe!(ticks | inc).results();
        assert_eq!(results.next().unwrap().unwrap(), 2);
        drop(results);
        assert_threads_back_to(baseline, "every: after a drop");
    }
}

#[test]
fn blocked_sources_and_tickers_cost_no_grace_wait_and_leave_no_thread() {
    type Scenario = (&'static str, fn());
    let scenarios: Vec<Scenario> = vec![
        // Issue 13, item 8.
        ("item 8, plain iterator source", || {
            drops_with_a_blocked_source(Blocked::PlainIterator)
        }),
        ("item 8, Pipeline::streaming", || {
            drops_with_a_blocked_source(Blocked::Streaming)
        }),
        ("item 8, Stream::feed blocked outside push", || {
            drops_with_a_blocked_source(Blocked::Feed)
        }),
        // Issue 13, item 9.
        ("item 9, every(1 h): drop after the first item", || {
            every_leaves_no_ticker(false)
        }),
        (
            "item 9, every(1 h): a stage fails on the first item",
            || every_leaves_no_ticker(true),
        ),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        // The watchdog's own thread runs each scenario: it counts from
        // inside it.
        let outcome = catch_unwind(AssertUnwindSafe(|| watchdog(BOUND, name, scenario)));
        if let Err(payload) = outcome {
            failed.push(format!("- {name}: {}", message(&*payload)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} scenario(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
