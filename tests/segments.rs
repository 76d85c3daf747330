//! Sub-pipelines: `segment!`, serial (fused) and parallel, nested.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};

use common::{Boom, LIMIT, watchdog};
use parapipe::prelude::*;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[map_stage(workers = 2)]
fn add_n(x: u64, n: u64) -> u64 {
    x + n
}

#[stage(workers = 2)]
fn twice(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.flat_map(|x| [x, x])
}

#[stage]
fn evens(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.filter(|x| x % 2 == 0)
}

#[stage]
fn total(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    std::iter::once(xs.sum())
}

#[map_stage]
fn fail_at(x: u64, at: u64) -> Result<u64, Boom> {
    if x == at { Err(Boom(x)) } else { Ok(x) }
}

#[map_stage]
fn panic_at(x: u64, at: u64) -> u64 {
    assert_ne!(x, at, "segment panic");
    x
}

type Seen = Arc<Mutex<HashSet<ThreadId>>>;

/// Records the threads it runs on.
#[map_stage]
fn on_thread(x: u64, seen: Seen) -> u64 {
    seen.lock().unwrap().insert(thread::current().id());
    x
}

fn expected(n: u64, f: impl Fn(u64) -> Vec<u64>) -> Vec<u64> {
    sorted((0..n).flat_map(f).collect())
}

#[test]
fn parallel_and_serial_segments_give_the_same_items() {
    let want = expected(1000, |x| {
        if (x + 1) % 2 == 0 {
            vec![x + 11; 2]
        } else {
            vec![]
        }
    });
    for serial in [false, true] {
        let seg = segment!(add_n(1) | evens | twice);
        let seg = if serial { seg.serial() } else { seg };
        let got: Vec<u64> = pipe!(0..1000u64 | { seg } | add_n(10)).collect().unwrap();
        assert_eq!(sorted(got), want, "serial: {serial}");
    }
}

#[test]
fn segments_nest_three_levels_deep() {
    // Every combination of serial and parallel at three levels.
    let want = expected(500, |x| {
        if (x + 1) % 2 == 0 {
            vec![x + 111; 2]
        } else {
            vec![]
        }
    });
    for mask in 0..8u8 {
        let level3 = segment!(add_n(100) | twice);
        let level3 = if mask & 4 != 0 {
            level3.serial()
        } else {
            level3
        };
        let level2 = segment!(evens | segment!(add_n(10)) | { level3 });
        let level2 = if mask & 2 != 0 {
            level2.serial()
        } else {
            level2
        };
        let level1 = segment!(add_n(1) | { level2 }).name("Outer");
        let level1 = if mask & 1 != 0 {
            level1.serial().workers(2)
        } else {
            level1
        };
        let got = watchdog(LIMIT, "nested", move || {
            pipe!(0..500u64 | { level1 }).collect::<Vec<u64>>()
        });
        assert_eq!(sorted(got.unwrap()), want, "mask {mask:03b}");
    }
}

#[test]
fn serial_stages_share_one_thread_parallel_ones_do_not() {
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let (a, b, c) = (seen[0].clone(), seen[1].clone(), seen[2].clone());
    let seg = segment!(on_thread(a) | on_thread(b) | on_thread(c)).serial();
    pipe!(0..10_000u64 | { seg }).run().unwrap();
    let sets: Vec<HashSet<ThreadId>> = seen.iter().map(|s| s.lock().unwrap().clone()).collect();
    assert_eq!(sets[0].len(), 1);
    assert!(
        sets.iter().all(|s| *s == sets[0]),
        "serial stages ran on different threads"
    );

    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let (a, b, c) = (seen[0].clone(), seen[1].clone(), seen[2].clone());
    let seg = segment!(on_thread(a) | on_thread(b) | on_thread(c));
    pipe!(0..10_000u64 | { seg }).run().unwrap();
    let all: HashSet<ThreadId> = seen
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    assert_eq!(all.len(), 3, "parallel stages should have a thread each");
}

#[test]
fn serial_workers_run_copies_of_the_chain() {
    // An aggregation in a serial segment with 3 workers: each copy of the
    // chain sums its share, so there are 3 partial sums adding up to the total.
    let seg = segment!(add_n(0) | total).serial().workers(3);
    let got: Vec<u64> = pipe!(0..3000u64 | { seg }).collect().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got.iter().sum::<u64>(), (0..3000).sum::<u64>());
}

#[test]
fn a_serial_segment_inside_a_parallel_pipeline_and_the_reverse() {
    let inner_serial = segment!(add_n(1) | add_n(2)).serial();
    let got: Vec<u64> = pipe!(0..100u64 | twice | { inner_serial } | add_n(3))
        .collect()
        .unwrap();
    assert_eq!(sorted(got), expected(100, |x| vec![x + 6; 2]));

    // A parallel segment inside a serial one is fused into it.
    let seen = Seen::default();
    let s = seen.clone();
    let outer = segment!(add_n(1) | segment!(on_thread(s) | add_n(2)).parallel()).serial();
    let got: Vec<u64> = pipe!(0..100u64 | { outer }).collect().unwrap();
    assert_eq!(sorted(got), expected(100, |x| vec![x + 3]));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn an_error_in_a_serial_segment_names_the_inner_stage() {
    let seg = segment!(add_n(1) | fail_at(50) | add_n(1))
        .serial()
        .name("Child");
    let err = watchdog(LIMIT, "serial error", || {
        pipe!(0..1000u64 | { seg }).run().unwrap_err()
    });
    assert_eq!(err.stage(), "fail_at");
    assert_eq!(err.worker(), Some(0));
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(50)));
}

#[test]
fn a_partial_aggregation_after_an_error_is_not_delivered() {
    // `total` would emit a sum of the items before the failure: it must not.
    let seg = segment!(fail_at(500) | total).serial();
    let results: Vec<_> = watchdog(LIMIT, "partial", || {
        pipe!(0..1000u64 | { seg }).results().collect()
    });
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0].is_err());
}

#[test]
fn a_panic_in_a_serial_segment_names_the_segment() {
    let seg = segment!(add_n(1) | panic_at(10)).serial().name("Child");
    let err = watchdog(LIMIT, "serial panic", || {
        pipe!(0..1000u64 | { seg }).run().unwrap_err()
    });
    assert_eq!(err.stage(), "Child");
    assert!(err.panic_message().unwrap().contains("segment panic"));
}

#[test]
fn filtered_errors_inside_a_serial_segment_are_counted() {
    let seg = segment!(fail_at(5).filter_errors(true) | fail_at(7).filter_errors(true))
        .serial()
        .name("Child");
    let mut results = pipe!(0..10u64 | { seg }).results();
    let got: Vec<u64> = results.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(sorted(got), [0, 1, 2, 3, 4, 6, 8, 9]);
    assert_eq!(results.filtered(), 2);
    assert_eq!(results.filtered_by_stage(), [("Child".to_owned(), 2)]);
}

#[test]
fn early_drop_of_a_pipeline_with_segments() {
    watchdog(LIMIT, "segment early drop", || {
        let seg = segment!(add_n(1) | twice).serial().workers(2);
        let par = segment!(evens | add_n(1));
        let mut r = pipe!(0..u64::MAX | { seg } | { par }).results();
        for _ in 0..100 {
            r.next().unwrap().unwrap();
        }
    });
}

#[test]
fn builder_api_with_segments() {
    use parapipe::chain::{Leaf, Then};
    let seg = Segment::new(Then(Leaf(add_n::new(1)), Leaf(evens::new()))).serial();
    let got: Vec<u64> = Pipeline::source(0..10u64).then(seg).collect().unwrap();
    assert_eq!(sorted(got), [2, 4, 6, 8, 10]);
}

#[test]
fn workers_on_a_parallel_segment_is_an_error_not_ignored() {
    let seg = segment!(add_n(1) | evens).workers(3).name("Child");
    let err = pipe!(0..10u64 | { seg }).run().unwrap_err();
    assert_eq!(err.stage(), "Child");
    assert!(
        err.to_string().contains("applies to a serial segment"),
        "{err}"
    );
}

#[test]
fn a_segment_macro_inside_pipe() {
    let got: Vec<u64> = pipe!(0..10u64 | segment!(add_n(1) | evens).serial() | add_n(100))
        .collect()
        .unwrap();
    assert_eq!(sorted(got), [102, 104, 106, 108, 110]);
}

#[test]
fn a_whole_pipeline_runs_serial_in_the_calling_thread() {
    let seen = Seen::default();
    let s = seen.clone();
    let got: Vec<u64> = pipe!(serial: 0..100u64 | add_n(1) | on_thread(s) | twice | segment!(evens | add_n(10)) | parapipe::stages::take(6))
        .collect()
        .unwrap();
    assert_eq!(got, [12, 12, 14, 14, 16, 16]);
    // Every stage ran right here: no thread at all.
    assert_eq!(
        *seen.lock().unwrap(),
        HashSet::from([thread::current().id()])
    );
}

#[test]
fn serial_pipeline_errors_panics_and_reruns() {
    let results: Vec<_> = pipe!(serial: 0..100u64 | add_n(1) | fail_at(10) | add_n(1))
        .results()
        .collect();
    assert_eq!(results.len(), 10);
    let err = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.stage(), "fail_at");
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(10)));

    // A panic unwinds into the caller, as in any iterator chain.
    let caught = std::panic::catch_unwind(|| pipe!(serial: 0..100u64 | panic_at(5)).run());
    assert!(caught.is_err());

    // It runs once.
    let pipeline = pipe!(serial: 0..3u64 | add_n(1));
    assert_eq!(pipeline.results().count(), 3);
    assert_eq!(pipeline.results().count(), 0);

    // Skipped and filtered items are counted.
    let pipeline = pipe!(serial: 0..10u64 | fail_at(3).filter_errors(true));
    assert_eq!(pipeline.results().count(), 9);
    assert_eq!(pipeline.filtered(), 1);
    assert_eq!(pipe!(serial: 0..10u64 | total).execute().unwrap(), Some(45));
}

#[test]
fn fused_stages_and_segment_names_are_checked_as_stages_are() {
    use parapipe::{Failure, stages};
    let config_error = |r: Result<Vec<Vec<u64>>, PipelineError>| match r {
        Err(e) => matches!(e.failure(), Failure::Config(_)),
        Ok(_) => false,
    };
    // chunk(0) fused in a serial segment: an error, as with workers of its own.
    let seg = segment!(stages::chunk(0)).serial();
    assert!(config_error(pipe!(0..10u64 | { seg }).collect()));
    // Also run in the calling thread.
    let seg = segment!(stages::chunk::<u64>(0)).serial();
    assert!(seg.iter(0..10u64).next().unwrap().is_err());
    // A bad name of a fused stage, and of a parallel segment.
    let seg = segment!(stages::chunk(2).name("")).serial();
    assert!(config_error(pipe!(0..10u64 | { seg }).collect()));
    let seg = segment!(stages::chunk(2)).name("a__b");
    assert!(config_error(pipe!(0..10u64 | { seg }).collect()));
}
