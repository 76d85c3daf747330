//! After every way a pipeline can end, no pipeline thread is left running.
//! One test in this binary, so no other test's threads are counted.

mod common;

use std::time::Duration;

#[cfg(feature = "async")]
use common::Boom;
use common::{LIMIT, assert_threads_back_to, fail_at, panic_at, thread_count, watchdog};
use parapipe::prelude::*;

#[map_stage(workers = 4)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[stage]
fn first_five(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.take(5)
}

/// Slow per item: a worker is always in the middle of one when dropped.
#[map_stage]
fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

/// An async stage (feature `async`): waits, fails at `fail_at`, panics at
/// `panic_at`.
#[cfg(feature = "async")]
#[map_stage(concurrency = 16)]
async fn wait_then(x: u64, fail_at: u64, panic_at: u64) -> Result<u64, Boom> {
    tokio::time::sleep(Duration::from_micros(x % 5 * 100)).await;
    assert_ne!(x, panic_at, "boom");
    if x == fail_at { Err(Boom(x)) } else { Ok(x) }
}

/// The same ways to end, with an async stage: its pipeline's own tokio
/// runtime, and the thread handing results to a stream, must go too.
#[cfg(feature = "async")]
fn async_scenarios() -> Vec<(&'static str, Scenario)> {
    const NEVER: u64 = u64::MAX;
    vec![
        (
            "async: success",
            Box::new(|| {
                pipe!(0..2_000u64 | inc | wait_then(NEVER, NEVER))
                    .run()
                    .unwrap();
            }),
        ),
        (
            "async: error",
            Box::new(|| {
                pipe!(0..2_000u64 | wait_then(500, NEVER) | inc)
                    .run()
                    .unwrap_err();
            }),
        ),
        (
            "async: panic",
            Box::new(|| {
                pipe!(0..2_000u64 | wait_then(NEVER, 70) | inc)
                    .run()
                    .unwrap_err();
            }),
        ),
        (
            "async: early drop",
            Box::new(|| {
                let mut r = pipe!(0..u64::MAX | wait_then(NEVER, NEVER)).results();
                r.next().unwrap().unwrap();
            }),
        ),
        (
            "async: timeout",
            Box::new(|| {
                let stage = wait_then::new(NEVER, NEVER).timeout(Duration::from_micros(1));
                pipe!(0..2_000u64 | { stage }).run().unwrap_err();
            }),
        ),
        (
            "async: consumed from a runtime, stream dropped",
            Box::new(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let all: Vec<u64> = pipe!(0..500u64 | wait_then(NEVER, NEVER))
                        .collect_async()
                        .await
                        .unwrap();
                    assert_eq!(all.len(), 500);
                    drop(pipe!(0..u64::MAX | wait_then(NEVER, NEVER)).stream());
                });
            }),
        ),
        (
            "async: a stream source, dropped",
            Box::new(|| {
                let items = futures_util::stream::iter(0..u64::MAX);
                let mut r = pipe!(items | inc).results();
                r.next().unwrap().unwrap();
            }),
        ),
    ]
}

type Scenario = Box<dyn Fn()>;

#[test]
fn no_thread_outlives_its_pipeline() {
    // The watchdog's own thread runs each scenario; count from inside it.
    watchdog(Duration::from_secs(300), "no leaks", || {
        let baseline = thread_count();
        #[cfg_attr(
            not(feature = "async"),
            allow(unused_mut, reason = "only async adds scenarios")
        )]
        let mut scenarios: Vec<(&str, Scenario)> = vec![
            (
                "success",
                Box::new(|| {
                    pipe!(0..100_000u64 | inc | inc).run().unwrap();
                }),
            ),
            (
                "empty",
                Box::new(|| {
                    pipe!(0..0u64 | inc | inc).run().unwrap();
                }),
            ),
            (
                "error",
                Box::new(|| {
                    pipe!(0..100_000u64 | inc | fail_at(5000) | inc)
                        .run()
                        .unwrap_err();
                }),
            ),
            (
                "panic",
                Box::new(|| {
                    pipe!(0..100_000u64 | panic_at(70) | inc).run().unwrap_err();
                }),
            ),
            (
                "early drop",
                Box::new(|| {
                    let mut r = pipe!(0..u64::MAX | inc | inc).results();
                    r.next().unwrap().unwrap();
                }),
            ),
            (
                "drop before first item",
                Box::new(|| {
                    drop(pipe!(0..u64::MAX | inc | inc).results());
                }),
            ),
            (
                "stage stops early",
                Box::new(|| {
                    pipe!(0..u64::MAX | inc | first_five).run().unwrap();
                }),
            ),
            (
                "keyed: early drop",
                Box::new(|| {
                    let stage = inc::new().workers(3).partition_by(|x: &u64| x % 7);
                    let mut r = pipe!(0..u64::MAX | { stage } | inc).results();
                    r.next().unwrap().unwrap();
                }),
            ),
            (
                "keyed: every worker stops early",
                Box::new(|| {
                    // Enough keys that each of the three workers has some.
                    let stage = first_five::new()
                        .workers(3)
                        .partition_by(|x: &u64| x % 1000);
                    pipe!(0..u64::MAX | inc | { stage }).run().unwrap();
                }),
            ),
            (
                "keyed, ordered: early drop",
                Box::new(|| {
                    let stage = inc::new()
                        .workers(3)
                        .ordered(true)
                        .partition_by(|x: &u64| x % 7);
                    let mut r = pipe!(0..u64::MAX | { stage } | inc).results();
                    r.next().unwrap().unwrap();
                }),
            ),
            (
                "keyed, ordered: every worker stops early",
                Box::new(|| {
                    let stage = first_five::new()
                        .workers(3)
                        .ordered(true)
                        .partition_by(|x: &u64| x % 1000);
                    pipe!(0..u64::MAX | inc | { stage }).run().unwrap();
                }),
            ),
            (
                "keyed: the key function panics",
                Box::new(|| {
                    let key = |x: &u64| {
                        assert_ne!(*x, 5000, "boom");
                        *x
                    };
                    let stage = inc::new().workers(3).partition_by(key);
                    pipe!(0..100_000u64 | { stage } | inc).run().unwrap_err();
                }),
            ),
            (
                "64 workers, 3 items",
                Box::new(|| {
                    pipe!(0..3u64 | inc.workers(64)).run().unwrap();
                }),
            ),
            (
                "config error",
                Box::new(|| {
                    pipe!(0..3u64 | inc.workers(std::hint::black_box(0)))
                        .run()
                        .unwrap_err();
                }),
            ),
            (
                "idle channel source, dropped",
                Box::new(|| {
                    let (tx, rx) = flume::unbounded::<u64>();
                    tx.send(1).unwrap();
                    let mut r = pipe!(rx | inc).results();
                    r.next().unwrap().unwrap();
                    drop(r);
                    drop(tx);
                }),
            ),
            (
                "100 stages",
                Box::new(|| {
                    let mut p = Pipeline::source(0..1000u64);
                    for _ in 0..100 {
                        p = p.then(inc::new().workers(1));
                    }
                    let got: Vec<u64> = p.collect().unwrap();
                    assert_eq!(got.len(), 1000);
                }),
            ),
            (
                "a stage whose threads cannot start",
                Box::new(|| {
                    pipe!(0..u64::MAX | inc | inc.stack_size(1 << 62))
                        .run()
                        .unwrap_err();
                }),
            ),
            (
                "profiled and debugged: success, error, early drop",
                Box::new(|| {
                    use parapipe::debug::{Debugger, Report, Reporter};
                    use parapipe::profile::Profiler;
                    struct Quiet;
                    impl Reporter for Quiet {
                        fn report(&mut self, _: &Report) {}
                    }
                    let dir = std::env::temp_dir()
                        .join(format!("parapipe-no-leaks-{}", std::process::id()));
                    let observe = |p: Pipeline<u64>| {
                        p.profile_with(
                            Profiler::new()
                                .folder(&dir)
                                .sample_every(Duration::from_millis(1)),
                        )
                        .debug(
                            Debugger::new()
                                .every(Duration::from_millis(1))
                                .reporter(Quiet),
                        )
                    };
                    observe(pipe!(0..10_000u64 | inc | inc)).run().unwrap();
                    observe(pipe!(0..100_000u64 | inc | fail_at(5000)))
                        .run()
                        .unwrap_err();
                    let mut r = observe(pipe!(0..u64::MAX | inc)).results();
                    r.next().unwrap().unwrap();
                    drop(r);
                    // A store that fails (not a folder) must not leave its writer behind.
                    let file = dir.join("profiles.sqlite");
                    observe(pipe!(0..100u64 | inc))
                        .profile_with(Profiler::new().folder(file.join("below-a-file")))
                        .run()
                        .unwrap();
                }),
            ),
            (
                "graphs: tee, split, merge; success, error, early drop",
                Box::new(|| {
                    let [a, b] = pipe!(0..10_000u64 | inc).tee();
                    Pipeline::merge([pipe!(a | inc), b]).run().unwrap();
                    let (a, b) = pipe!(0..u64::MAX).split(|x| x % 2 == 0);
                    let b = std::thread::spawn(move || pipe!(b | fail_at(5001)).run());
                    a.run().unwrap_err();
                    b.join().unwrap().unwrap_err();
                    let [a, b] = pipe!(0..u64::MAX | inc).tee();
                    let mut a = a.results();
                    a.next().unwrap().unwrap();
                    drop(b);
                    drop(a);
                    let merged = Pipeline::merge([pipe!(0..u64::MAX), pipe!(0..u64::MAX | inc)]);
                    let mut r = merged.results();
                    r.next().unwrap().unwrap();
                    drop(r);
                }),
            ),
            (
                "graphs: zip; success, uneven, early drop",
                Box::new(|| {
                    let [a, b] = pipe!(0..10_000u64).tee();
                    pipe!(a | inc).zip(b).run().unwrap();
                    pipe!(0..10u64).zip(pipe!(0..9u64)).run().unwrap_err();
                    let [a, b] = pipe!(0..u64::MAX).tee();
                    let mut r = a.zip(pipe!(b | inc)).results();
                    r.next().unwrap().unwrap();
                    drop(r);
                }),
            ),
        ];
        #[cfg(feature = "async")]
        scenarios.extend(async_scenarios());
        // Dropping the results joins the workers rather than leaving them to
        // finish on their own: right after the drop, even a worker busy with a
        // slow item is gone (the short poll only covers the kernel reaping it).
        let mut r = pipe!(0..u64::MAX | inc | slow).results();
        r.next().unwrap().unwrap();
        drop(r);
        let deadline = std::time::Instant::now() + Duration::from_millis(100);
        while thread_count() > baseline && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(
            thread_count(),
            baseline,
            "drop returned before joining the workers"
        );

        for round in 0..20 {
            for (name, scenario) in &scenarios {
                scenario();
                assert_threads_back_to(baseline, &format!("{name} (round {round})"));
            }
        }
    });
    let _ = LIMIT;
}
