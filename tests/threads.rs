//! `Threads`: a set of threads that runs reuse. Every way a run ends leaves
//! the set working; dropping the set ends its threads; a run never waits
//! for a thread of the set that is stuck in the user's code. One test in
//! this binary (see [`threads`]).

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Boom, LIMIT, assert_threads_back_to, thread_count, watchdog};
use parapipe::prelude::*;
use parapipe::{Failure, Threads, stages};

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[map_stage]
fn fail_at(x: u64, at: u64) -> Result<u64, Boom> {
    if x == at { Err(Boom(x)) } else { Ok(x) }
}

#[map_stage]
fn panic_at(x: u64, at: u64) -> u64 {
    assert!(x != at, "panicked on {x}");
    x
}

/// The cases count the process's threads, so they run one after the
/// other in one test: with several tests, the harness starts a waiting
/// test's thread at any moment, and a count would see it.
#[test]
fn threads() {
    runs_reuse_the_same_threads();
    every_ending_leaves_the_set_working();
    dropping_the_set_ends_its_threads();
    a_pipeline_outliving_its_set_starts_threads_of_its_own();
    a_stage_with_its_own_stack_gets_its_own_thread();
    runs_at_the_same_time_share_the_set();
    a_thread_stuck_in_a_source_is_not_waited_for();
}

fn sum_to(n: u64) -> u64 {
    (1..=n).sum()
}

fn runs_reuse_the_same_threads() {
    watchdog(LIMIT, "reuse", || {
        let threads = Threads::new();
        assert!(threads.is_empty());
        for round in 0..200u64 {
            let n = round % 50;
            let sum = pipe!(0..n | inc | inc.workers(1) | stages::map(|x: u64| x - 1))
                .on_threads(&threads)
                .reduce(|a, b| a + b)
                .unwrap();
            assert_eq!(sum.unwrap_or(0), sum_to(n), "round {round}");
            // The source, 2 + 1 workers and the map's one: at most 5 (fewer
            // when a thread ends its job before the last starts).
            assert!(threads.len() <= 5, "round {round}: {}", threads.len());
        }
        assert_eq!(threads.idle(), threads.len());
    });
}

fn every_ending_leaves_the_set_working() {
    watchdog(LIMIT, "endings", || {
        let threads = Threads::new();
        for round in 0..100u64 {
            let n = 10 + round * 7 % 500;
            match round % 6 {
                0 => {
                    let err = pipe!(0..n | inc | fail_at(n / 2))
                        .on_threads(&threads)
                        .run()
                        .unwrap_err();
                    assert!(matches!(err.failure(), Failure::Error(_)), "{err}");
                }
                1 => {
                    let err = pipe!(0..n | panic_at(n / 3) | inc)
                        .on_threads(&threads)
                        .run()
                        .unwrap_err();
                    assert!(err.to_string().contains("panicked on"), "{err}");
                }
                2 => {
                    let mut results = pipe!(0..u64::MAX | inc).on_threads(&threads).results();
                    let _ = results.nth((round % 13) as usize);
                    drop(results);
                }
                3 => {
                    let got: Vec<u64> = pipe!(std::iter::empty::<u64>() | inc)
                        .on_threads(&threads)
                        .collect()
                        .unwrap();
                    assert!(got.is_empty());
                }
                4 => {
                    let got: Vec<u64> = pipe!(0..u64::MAX | inc | stages::take(7))
                        .on_threads(&threads)
                        .collect()
                        .unwrap();
                    assert_eq!(got.len(), 7);
                }
                _ => {
                    let sum = pipe!(0..n | inc)
                        .on_threads(&threads)
                        .reduce(|a, b| a + b)
                        .unwrap();
                    assert_eq!(sum, Some(sum_to(n)));
                }
            }
            // No run needs more than 4 threads (source, 2 workers, 1 more).
            assert!(
                threads.len() <= 4,
                "round {round}: {} threads",
                threads.len()
            );
        }
    });
}

fn dropping_the_set_ends_its_threads() {
    watchdog(LIMIT, "drop", || {
        let baseline = thread_count();
        let threads = Threads::new();
        for _ in 0..10 {
            pipe!(0..1000u64 | inc | inc)
                .on_threads(&threads)
                .run()
                .unwrap();
        }
        assert_eq!(thread_count(), baseline + threads.len());
        drop(threads);
        assert_threads_back_to(baseline, "after the set is dropped");
    });
}

fn a_pipeline_outliving_its_set_starts_threads_of_its_own() {
    watchdog(LIMIT, "outlived", || {
        let baseline = thread_count();
        let threads = Threads::new();
        let pipeline = pipe!(0..100u64 | inc).on_threads(&threads);
        drop(threads);
        let sum = pipeline.reduce(|a, b| a + b).unwrap();
        assert_eq!(sum, Some(sum_to(100)));
        assert_threads_back_to(baseline, "after the run");
    });
}

fn a_stage_with_its_own_stack_gets_its_own_thread() {
    watchdog(LIMIT, "stack", || {
        let threads = Threads::new();
        let sum = pipe!(0..100u64 | inc.stack_size(4 << 20) | inc.workers(1))
            .on_threads(&threads)
            .reduce(|a, b| a + b)
            .unwrap();
        assert_eq!(sum, Some(sum_to(100) + 100));
        // The source and the second stage's worker at most, not the two
        // with a stack of their own.
        assert!((1..=2).contains(&threads.len()), "{}", threads.len());
    });
}

fn runs_at_the_same_time_share_the_set() {
    watchdog(LIMIT, "concurrent", || {
        let threads = Threads::new();
        thread::scope(|s| {
            for t in 0..4u64 {
                let threads = &threads;
                s.spawn(move || {
                    for round in 0..50u64 {
                        let n = 100 + t * 10 + round;
                        let sum = pipe!(0..n | inc)
                            .on_threads(threads)
                            .reduce(|a, b| a + b)
                            .unwrap();
                        assert_eq!(sum, Some(sum_to(n)));
                    }
                });
            }
        });
        // At most 4 runs at once, 3 threads each.
        assert!(threads.len() <= 12, "{} threads", threads.len());
        assert_eq!(threads.idle(), threads.len());
    });
}

fn a_thread_stuck_in_a_source_is_not_waited_for() {
    watchdog(LIMIT, "stuck source", || {
        let threads = Threads::new();
        let (release, wait) = mpsc::channel::<()>();
        // A source that blocks in its `next` until released.
        let mut first = true;
        let source = std::iter::from_fn(move || {
            if first {
                first = false;
                return Some(1u64);
            }
            let _ = wait.recv();
            None
        });
        let mut results = pipe!(source | inc).on_threads(&threads).results();
        assert_eq!(results.next().unwrap().unwrap(), 2);
        // Dropped while the source is blocked: the drop does not wait.
        drop(results);
        // The set still serves runs: the stuck thread is not idle, so a new
        // one is started.
        let sum = pipe!(0..10u64 | inc)
            .on_threads(&threads)
            .reduce(|a, b| a + b)
            .unwrap();
        assert_eq!(sum, Some(sum_to(10)));
        let before = threads.idle();
        release.send(()).unwrap();
        // Released, the stuck thread ends its job and is idle again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while threads.idle() == before && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(threads.idle(), before + 1);
    });
}
