//! Built-in closure stages: map, filter, filter_map, flat_map, inspect,
//! flatten, chunk, take, fold (with `Pipeline::reduce`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use common::{LIMIT, watchdog};
use parapipe::prelude::*;
use parapipe::{Failure, stages};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn closures_as_stages() {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let got: Vec<u64> = pipe!(
        0..100u64
            | stages::map(|x| x + 1).workers(3)
            | stages::filter(|x: &u64| x.is_multiple_of(2))
            | stages::filter_map(|x: u64| x.is_multiple_of(4).then_some(x / 4))
            | stages::flat_map(|x: u64| [x, x])
            | stages::inspect(move |_: &u64| {
                s.fetch_add(1, SeqCst);
            })
    )
    .collect()
    .unwrap();
    let want: Vec<u64> = (1..=25).flat_map(|x| [x, x]).collect();
    assert_eq!(sorted(got), want);
    assert_eq!(seen.load(SeqCst), 50);
}

#[test]
fn chunk_and_flatten() {
    let got: Vec<Vec<u64>> = pipe!(0..10u64 | stages::chunk(4)).collect().unwrap();
    assert_eq!(got, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let got: Vec<u64> = pipe!(0..10u64 | stages::chunk(3) | stages::flatten)
        .collect()
        .unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn take_stops_an_endless_pipeline() {
    let got = watchdog(LIMIT, "take", || {
        pipe!(0..u64::MAX | stages::map(|x: u64| x * 2).workers(2) | stages::take(7))
            .collect::<Vec<u64>>()
    });
    let got = got.unwrap();
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|x| x % 2 == 0));
}

#[test]
fn misuse_is_a_configuration_error() {
    let err = pipe!(0..10u64 | stages::take(3).workers(2))
        .run()
        .unwrap_err();
    assert!(matches!(err.failure(), Failure::Config(_)), "{err}");
    assert!(err.to_string().contains("take runs on one worker"), "{err}");

    let err = pipe!(0..10u64 | stages::chunk(0)).run().unwrap_err();
    assert!(matches!(err.failure(), Failure::Config(_)), "{err}");
}

#[test]
fn builtins_fuse_in_a_serial_segment() {
    let seg = segment!(
        stages::map(|x: u64| x + 1)
            | stages::filter(|x: &u64| x.is_multiple_of(3))
            | stages::chunk(2)
    );
    let got: Vec<Vec<u64>> = seg.iter(0..10u64).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, [vec![3, 6], vec![9]]);
    let got: Vec<Vec<u64>> = pipe!(0..10u64 | { seg.serial() }).collect().unwrap();
    assert_eq!(got, [vec![3, 6], vec![9]]);
}

#[parapipe::map_stage(workers = 2)]
fn odd_only(x: u64) -> Result<u64, parapipe::Skip> {
    if x % 2 == 1 {
        Ok(x)
    } else {
        Err(parapipe::Skip)
    }
}

#[parapipe::stage]
fn skip_or_fail(
    xs: impl Iterator<Item = u64>,
) -> impl Iterator<Item = Result<u64, parapipe::BoxError>> {
    xs.map(|x| match x {
        3 => Err(parapipe::Skip.into()),
        1000 => Err("too big".into()),
        x => Ok(x),
    })
}

#[test]
fn skipped_items_are_counted_not_failures() {
    let mut results = pipe!(0..10u64 | odd_only).results();
    let got: Vec<u64> = results.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(sorted(got), [1, 3, 5, 7, 9]);
    assert_eq!(results.skipped(), 5);
    assert_eq!(results.filtered(), 0);

    // Skip next to real failures in one stage.
    let mut results = pipe!(0..10u64 | skip_or_fail).results();
    let got: Vec<u64> = results.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 9);
    assert_eq!(results.skipped(), 1);
    let err = pipe!(995..1005u64 | skip_or_fail).run().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the task \"skip_or_fail-0\" failed: too big"
    );

    // In a serial segment, and in a segment run in the calling thread.
    let seg = segment!(odd_only | skip_or_fail).serial();
    let mut results = pipe!(0..10u64 | { seg }).results();
    assert_eq!(results.by_ref().count(), 4);
    assert_eq!(results.skipped(), 6);
    let seg = segment!(odd_only | skip_or_fail);
    assert_eq!(seg.iter(0..10u64).count(), 4);
    assert_eq!(seg.skipped(), 6);
}

#[test]
fn timed_chunk_flushes_a_partial_chunk_when_items_stop_coming() {
    watchdog(LIMIT, "timed chunk", || {
        let (tx, rx) = flume::unbounded::<u64>();
        let mut results =
            pipe!(rx | stages::chunk(10).timeout(std::time::Duration::from_millis(300))).results();
        // Three items, then silence with the sender alive: only the time-out
        // can release them.
        for x in 0..3 {
            tx.send(x).unwrap();
        }
        assert_eq!(results.next().unwrap().unwrap(), [0, 1, 2]);
        for x in 3..5 {
            tx.send(x).unwrap();
        }
        assert_eq!(results.next().unwrap().unwrap(), [3, 4]);
        // A full chunk needs no time-out.
        for x in 0..10 {
            tx.send(x).unwrap();
        }
        assert_eq!(
            results.next().unwrap().unwrap(),
            (0..10).collect::<Vec<_>>()
        );
        drop(tx);
        assert!(results.next().is_none());
    });
}

#[test]
fn timed_chunk_in_an_ordered_stage() {
    // Two workers, ordered: each worker groups its own share, and a chunk
    // made of several items follows the last of them, so the chunks' last
    // items come in input order.
    let got: Vec<Vec<u64>> = pipe!(
        0..1000u64
            | stages::chunk(7)
                .timeout(std::time::Duration::from_millis(5))
                .workers(2)
                .ordered(true)
    )
    .collect()
    .unwrap();
    assert!(got.iter().all(|c| !c.is_empty() && c.len() <= 7));
    let lasts: Vec<u64> = got.iter().map(|c| *c.last().unwrap()).collect();
    assert!(lasts.windows(2).all(|w| w[0] < w[1]), "{lasts:?}");
    let mut flat: Vec<u64> = got.into_iter().flatten().collect();
    flat.sort_unstable();
    assert_eq!(flat, (0..1000).collect::<Vec<_>>());
}

fn add(acc: u64, x: u64) -> u64 {
    acc + x
}

#[test]
fn fold_emits_one_partial_per_worker_and_reduce_merges_them() {
    for workers in [1, 2, 3, 8] {
        let partials: Vec<u64> = pipe!(1..=10_000u64 | stages::fold(|| 0, add).workers(workers))
            .collect()
            .unwrap();
        assert_eq!(partials.len(), workers, "one partial per worker");
        assert_eq!(partials.iter().sum::<u64>(), 50_005_000);

        let total = pipe!(1..=10_000u64 | stages::fold(|| 0, add).workers(workers))
            .reduce(|a, b| a + b)
            .unwrap();
        assert_eq!(total, Some(50_005_000), "{workers} workers");
    }
}

#[test]
fn fold_of_no_items_is_the_initial_value_of_each_worker() {
    let partials: Vec<Vec<u64>> = pipe!(
        std::iter::empty::<u64>()
            | stages::fold(Vec::new, |mut v: Vec<u64>, x| {
                v.push(x);
                v
            })
            .workers(3)
    )
    .collect()
    .unwrap();
    assert_eq!(partials, [Vec::<u64>::new(), vec![], vec![]]);
    // Reduce of a pipeline with no items at all: nothing to combine.
    let none = pipe!(std::iter::empty::<u64>() | stages::map(|x: u64| x))
        .reduce(|a, b| a + b)
        .unwrap();
    assert_eq!(none, None);
}

#[test]
fn fold_keeps_each_workers_order_in_a_serial_segment() {
    // Fused in a serial segment with one worker, the fold sees the items in
    // input order.
    let seg = segment!(
        stages::map(|x: u64| x * 2)
            | stages::fold(Vec::new, |mut v: Vec<u64>, x| {
                v.push(x);
                v
            })
    );
    let got: Vec<Vec<u64>> = pipe!(0..5u64 | { seg.serial() }).collect().unwrap();
    assert_eq!(got, [vec![0, 2, 4, 6, 8]]);
}

#[test]
fn reduce_returns_the_first_failure() {
    let err = pipe!(
        0..1000u64
            | stages::map(|x: u64| {
                assert!(x != 500, "item 500 is poison");
                x
            })
            .workers(2)
            | stages::fold(|| 0, add).workers(2)
    )
    .reduce(|a, b| a + b)
    .unwrap_err();
    assert!(matches!(err.failure(), Failure::Panic(_)), "{err}");
    assert!(err.to_string().contains("item 500 is poison"), "{err}");
    assert!(err.to_string().contains("map-"), "names the stage: {err}");
}

#[test]
fn reduce_stops_an_endless_pipeline_when_its_merge_panics() {
    // The merge runs in the caller's thread: its panic is the caller's, and
    // unwinding drops the results, which stops and joins the pipeline.
    let outcome = watchdog(LIMIT, "reduce panic", || {
        std::panic::catch_unwind(|| {
            pipe!(0..u64::MAX | stages::map(|x: u64| x).workers(2)).reduce(|a, b| {
                if a > 1000 {
                    panic!("merge gave up")
                } else {
                    a + b
                }
            })
        })
    });
    assert!(outcome.is_err(), "the merge's panic reaches the caller");
}
