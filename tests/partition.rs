//! Keyed stages (`partition_by`): every key on one worker, each key's items
//! in their order of arrival, on real threads; failures, early drops and
//! the settings a keyed stage refuses.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Boom, LIMIT, watchdog};
use parapipe::prelude::*;
use parapipe::profile::Profiler;
use parapipe::{Failure, Threads};

/// An item: its key and its number among that key's items (from 0).
type Tagged = (u32, u64);

/// What one worker of `check_order` saw.
#[derive(Debug, Default)]
struct Seen {
    keys: HashSet<u32>,
    items: u64,
    /// The first item whose key's number was not the next one.
    out_of_order: Option<Tagged>,
}

/// Checks that each key's items come in order; emits what it saw at the end.
#[stage]
fn check_order(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = Seen> {
    let mut seen = Seen::default();
    let mut next: HashMap<u32, u64> = HashMap::new();
    for (key, n) in items {
        let expected = next.entry(key).or_default();
        if n != *expected && seen.out_of_order.is_none() {
            seen.out_of_order = Some((key, n));
        }
        *expected = n + 1;
        seen.keys.insert(key);
        seen.items += 1;
    }
    std::iter::once(seen)
}

/// `n` items over `keys` keys, interleaved pseudo-randomly, numbered per key.
fn tagged(n: u64, keys: u32) -> Vec<Tagged> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next: HashMap<u32, u64> = HashMap::new();
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let key = ((state >> 33) % u64::from(keys)) as u32;
            let seq = next.entry(key).or_default();
            *seq += 1;
            (key, *seq - 1)
        })
        .collect()
}

/// The workers' reports: one per worker, every item there once, keys
/// disjoint, each key's items in order.
fn assert_partitioned(seen: &[Seen], workers: usize, items: &[Tagged]) {
    assert_eq!(seen.len(), workers, "one report per worker");
    assert_eq!(
        seen.iter().map(|s| s.items).sum::<u64>(),
        items.len() as u64
    );
    let mut owner: HashMap<u32, usize> = HashMap::new();
    for (w, s) in seen.iter().enumerate() {
        assert_eq!(s.out_of_order, None, "a key's items out of order");
        for key in &s.keys {
            if let Some(other) = owner.insert(*key, w) {
                panic!("key {key} reached two workers ({other} and {w})");
            }
        }
    }
    let keys: HashSet<u32> = items.iter().map(|(k, _)| *k).collect();
    assert_eq!(owner.len(), keys.len(), "every key arrived");
}

fn run_keyed(workers: usize, n: u64, keys: u32) {
    let items = tagged(n, keys);
    let input = items.clone();
    let seen: Vec<Seen> = watchdog(LIMIT, "keyed run", move || {
        pipe!(
            input
                | check_order
                    .workers(workers)
                    .partition_by(|item: &Tagged| item.0)
        )
        .collect()
        .unwrap()
    });
    assert_partitioned(&seen, workers, &items);
}

#[test]
fn each_key_reaches_one_worker_in_order() {
    run_keyed(4, 50_000, 100);
}

#[test]
fn one_worker() {
    run_keyed(1, 10_000, 30);
}

#[test]
fn many_workers() {
    run_keyed(64, 50_000, 1_000);
}

#[test]
fn more_workers_than_keys() {
    run_keyed(16, 5_000, 3);
}

#[test]
fn empty_input() {
    run_keyed(4, 0, 1);
}

#[test]
fn with_pipeline_then() {
    let items = tagged(20_000, 50);
    let input = items.clone();
    let seen: Vec<Seen> = watchdog(LIMIT, "then", move || {
        Pipeline::source(input)
            .then(
                check_order::new()
                    .partition_by(|item: &Tagged| item.0)
                    .workers(8),
            )
            .collect()
            .unwrap()
    });
    assert_partitioned(&seen, 8, &items);
}

#[stage]
fn count_words(words: impl Iterator<Item = String>) -> impl Iterator<Item = HashMap<String, u64>> {
    let mut counts = HashMap::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    std::iter::once(counts)
}

#[stage]
fn split_words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    lines.flat_map(|line| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

#[test]
fn word_count_gives_one_map_per_worker_with_disjoint_keys() {
    let lines: Vec<String> = (0..2_000)
        .map(|i| format!("w{} w{} common w{}", i % 7, i % 13, i % 101))
        .collect();
    let partials: Vec<HashMap<String, u64>> = watchdog(LIMIT, "word count", move || {
        pipe!(lines | split_words | count_words.workers(4).partition_by(|w: &String| w.clone()))
            .collect()
            .unwrap()
    });
    assert_eq!(partials.len(), 4);
    let mut total: HashMap<String, u64> = HashMap::new();
    for map in &partials {
        for (word, n) in map {
            assert!(
                total.insert(word.clone(), *n).is_none(),
                "{word} counted twice"
            );
        }
    }
    assert_eq!(total["common"], 2_000);
    assert_eq!(total.values().sum::<u64>(), 8_000);
}

#[test]
fn a_hot_key_shows_in_the_per_worker_counts() {
    // Nine items in ten have key 0.
    let items: Vec<Tagged> = (0..20_000u64)
        .map(|i| {
            if i % 10 == 9 {
                ((i % 97) as u32 + 1, i)
            } else {
                (0, i)
            }
        })
        .collect();
    let profile = watchdog(LIMIT, "hot key", move || {
        let mut results =
            pipe!(items | check_order.workers(4).partition_by(|item: &Tagged| item.0))
                .profile_with(Profiler::new().in_memory())
                .results();
        results.by_ref().for_each(|r| drop(r.unwrap()));
        results.profile().cloned().expect("profiled")
    });
    let row = profile
        .stage("MainPipeline__check_order")
        .expect("the stage's row");
    assert_eq!(row.items_in, 20_000);
    assert_eq!(row.items_in_by_worker.len(), 4);
    assert_eq!(row.items_in_by_worker.iter().sum::<u64>(), 20_000);
    let hot = *row.items_in_by_worker.iter().max().unwrap();
    assert!(
        hot >= 18_000,
        "the hot key's worker took {hot} items: {:?}",
        row.items_in_by_worker
    );
}

/// A map-like iterator stage that fails at `(key, n)` with `Boom`.
#[stage]
fn fail_at(
    items: impl Iterator<Item = Tagged>,
    key: u32,
    n: u64,
) -> impl Iterator<Item = Result<Tagged, Boom>> {
    items.map(move |item| {
        if item == (key, n) {
            Err(Boom(n))
        } else {
            Ok(item)
        }
    })
}

/// Panics at `(key, n)`.
#[stage]
fn panic_at(items: impl Iterator<Item = Tagged>, key: u32, n: u64) -> impl Iterator<Item = Tagged> {
    items.inspect(move |item| assert_ne!(*item, (key, n), "boom in the stage"))
}

#[test]
fn an_error_in_the_stage_names_the_stage_and_worker() {
    let err = watchdog(LIMIT, "stage error", || {
        pipe!(
            tagged(20_000, 40)
                | fail_at(7, 3)
                    .workers(4)
                    .partition_by(|item: &Tagged| item.0)
        )
        .run()
        .unwrap_err()
    });
    assert_eq!(err.stage(), "fail_at");
    assert!(err.worker().is_some_and(|w| w < 4), "{err}");
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(3)));
}

#[test]
fn a_panic_in_the_stage_names_the_stage_and_worker() {
    let err = watchdog(LIMIT, "stage panic", || {
        pipe!(
            tagged(20_000, 40)
                | panic_at(7, 3)
                    .workers(4)
                    .partition_by(|item: &Tagged| item.0)
        )
        .run()
        .unwrap_err()
    });
    assert_eq!(err.stage(), "panic_at");
    assert!(err.worker().is_some_and(|w| w < 4), "{err}");
    assert!(
        err.panic_message().unwrap().contains("boom in the stage"),
        "{err}"
    );
}

#[test]
fn a_panic_in_the_key_function_names_the_stage_and_its_router() {
    let err = watchdog(LIMIT, "key panic", || {
        let key = |item: &Tagged| {
            assert_ne!(*item, (7, 3), "boom in the key");
            item.0
        };
        pipe!(tagged(20_000, 40) | check_order.workers(4).partition_by(key))
            .run()
            .unwrap_err()
    });
    assert_eq!(err.stage(), "check_order");
    assert_eq!(err.worker(), None);
    let message = err.panic_message().expect("a panic");
    assert!(
        message.contains("key function") && message.contains("router"),
        "{err}"
    );
    assert!(message.contains("boom in the key"), "{err}");
}

/// Threads of this process whose name starts with `prefix` (Linux).
fn threads_named(prefix: &str) -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Waits (generously) until no thread named with `prefix` is left.
fn assert_no_thread_named(prefix: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads_named(prefix) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "threads `{prefix}*` left running"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[stage]
fn pass(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = Tagged> {
    items
}

/// Reads 1,000 items of an endless source through `pass` keyed on 4
/// workers (`ordered` or not, its threads named `name`), drops the
/// results, and checks every thread of the stage ends.
fn drop_an_endless_keyed_run(ordered: bool, name: &'static str) {
    watchdog(LIMIT, "early drop", move || {
        let endless = (0u64..).map(|i| ((i % 13) as u32, i));
        let stage = pass::new()
            .workers(4)
            .ordered(ordered)
            .partition_by(|item: &Tagged| item.0)
            .name(name);
        let mut results = pipe!(endless | { stage }).results();
        let got: Vec<u64> = results.by_ref().take(1_000).map(|i| i.unwrap().1).collect();
        if ordered {
            assert_eq!(got, (0..1_000).collect::<Vec<_>>());
        }
        // Four workers and a router while it runs (so the check below
        // looks for the right names); a thread is named once it runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while threads_named(name) < 5 {
            assert!(std::time::Instant::now() < deadline, "no `{name}` threads");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(results);
    });
    assert_no_thread_named(name);
}

#[test]
fn dropping_the_results_of_an_endless_source_stops_everything() {
    drop_an_endless_keyed_run(false, "kdrop");
}

#[test]
fn runs_on_a_threads_set() {
    let threads = Threads::new();
    for round in 0..3 {
        let items = tagged(5_000, 20);
        let input = items.clone();
        let seen: Vec<Seen> =
            pipe!(input | check_order.workers(3).partition_by(|item: &Tagged| item.0))
                .on_threads(&threads)
                .collect()
                .unwrap();
        assert_partitioned(&seen, 3, &items);
        assert!(
            threads.len() <= 5,
            "round {round}: the source, a router and three workers"
        );
    }
}

/// Sends 50 items through `pass` keyed on 4 workers (`ordered` or not),
/// one at a time: each must come out before the next goes in, so the
/// router may keep none in its buffers while it waits for more.
fn trickle(ordered: bool) {
    watchdog(LIMIT, "trickle", move || {
        let (tx, rx) = flume::unbounded();
        let stage = pass::new()
            .workers(4)
            .ordered(ordered)
            .partition_by(|item: &Tagged| item.0);
        let mut results = pipe!(rx | { stage }).results();
        for i in 0..50u64 {
            tx.send(((i % 5) as u32, i)).unwrap();
            let got = results.next().expect("an item").unwrap();
            assert_eq!(got, ((i % 5) as u32, i));
        }
        drop(tx);
        assert!(results.next().is_none());
    });
}

#[test]
fn a_trickling_input_is_not_held_back() {
    trickle(false);
}

/// Reads its first `n` items, then stops reading.
#[stage]
fn first(items: impl Iterator<Item = Tagged>, n: usize) -> impl Iterator<Item = Tagged> {
    items.take(n)
}

#[test]
fn a_worker_that_stops_reading_does_not_stop_the_others() {
    let out: Vec<Tagged> = watchdog(LIMIT, "stops reading", || {
        pipe!(tagged(20_000, 40) | first(3).workers(4).partition_by(|item: &Tagged| item.0))
            .collect()
            .unwrap()
    });
    assert!(out.len() <= 12 && !out.is_empty(), "{}", out.len());
}

fn config_error<T: std::fmt::Debug>(result: Result<T, PipelineError>) -> (String, String) {
    let err = result.unwrap_err();
    match err.failure() {
        Failure::Config(why) => (err.stage().to_owned(), why.clone()),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn partition_by_twice_is_a_configuration_error() {
    let (stage, why) = config_error(
        pipe!(
            tagged(100, 4)
                | pass
                    .partition_by(|item: &Tagged| item.0)
                    .partition_by(|item: &Tagged| item.1)
        )
        .collect::<Vec<_>>(),
    );
    assert_eq!(stage, "pass");
    assert!(why.contains("twice"), "{why}");
}

#[test]
fn in_a_serial_segment_of_several_workers_it_is_a_configuration_error() {
    let seg = segment!(pass | pass.workers(4).partition_by(|item: &Tagged| item.0))
        .serial()
        .workers(2)
        .name("seg");
    let (stage, why) = config_error(pipe!(tagged(100, 4) | { seg }).collect::<Vec<_>>());
    assert_eq!(stage, "seg");
    assert!(why.contains("`pass` is keyed"), "{why}");
}

#[test]
fn on_one_thread_every_key_is_in_order_anyway() {
    let items = tagged(5_000, 30);
    // A serial segment of one worker.
    let seg = segment!(pass | check_order.partition_by(|item: &Tagged| item.0)).serial();
    let seen: Vec<Seen> = pipe!(items.clone() | { seg }).collect().unwrap();
    assert_partitioned(&seen, 1, &items);
    // A whole serial pipeline.
    let seen: Vec<Seen> =
        pipe!(serial: items.clone() | check_order.workers(4).partition_by(|item: &Tagged| item.0))
            .collect()
            .unwrap();
    assert_partitioned(&seen, 1, &items);
}

#[test]
fn a_serial_segment_can_be_keyed_itself() {
    let items = tagged(20_000, 60);
    let input = items.clone();
    let seen: Vec<Seen> = watchdog(LIMIT, "keyed segment", move || {
        let seg = segment!(pass | check_order)
            .serial()
            .workers(4)
            .partition_by(|item: &Tagged| item.0);
        pipe!(input | { seg }).collect().unwrap()
    });
    assert_partitioned(&seen, 4, &items);
}

#[test]
fn a_parallel_segment_cannot_be_keyed() {
    let seg = segment!(pass | pass)
        .name("par")
        .partition_by(|item: &Tagged| item.0);
    let (stage, why) = config_error(pipe!(tagged(100, 4) | { seg }).collect::<Vec<_>>());
    assert_eq!(stage, "par");
    assert!(why.contains("parallel segment"), "{why}");
}

#[test]
fn keyed_stages_in_a_parallel_segment_keep_their_keys() {
    let items = tagged(10_000, 25);
    let input = items.clone();
    let seen: Vec<Seen> = watchdog(LIMIT, "parallel segment", move || {
        let seg = segment!(pass | check_order.workers(3).partition_by(|item: &Tagged| item.0));
        pipe!(input | { seg }).collect().unwrap()
    });
    assert_partitioned(&seen, 3, &items);
}

/// In a distributed pipeline, a stage's workers in every process pull from
/// one stream: a keyed stage is refused when the pipeline is consumed,
/// before anything reaches the broker (there is none here).
#[cfg(feature = "nats")]
#[test]
fn a_keyed_stage_cannot_run_distributed() {
    let job = parapipe::nats::Job::new("keyed").url("nats://127.0.0.1:1");
    let result: Result<Vec<Tagged>, _> = watchdog(LIMIT, "distributed", move || {
        pipe!(distributed(&job): tagged(100, 4) | pass.workers(2).partition_by(|item: &Tagged| item.0))
            .collect()
    });
    let (stage, why) = config_error(result);
    assert_eq!(stage, "pass");
    assert!(why.contains("distributed"), "{why}");
}

#[test]
fn a_keyed_serial_segment_is_checked_as_a_serial_segment() {
    // `take` in a serial segment of several copies: refused, keyed or not.
    let seg = segment!(pass | { parapipe::stages::take::new(5) })
        .serial()
        .workers(2)
        .name("seg")
        .partition_by(|item: &Tagged| item.0);
    let (stage, why) = config_error(pipe!(tagged(100, 4) | { seg }).collect::<Vec<_>>());
    assert_eq!(stage, "seg");
    assert!(why.contains("`take` runs on one worker"), "{why}");
}

/// Sleeps on every item of key 0: its worker falls behind.
#[stage]
fn slow_on_key_zero(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = Tagged> {
    items.inspect(|item| {
        if item.0 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[test]
fn a_worker_behind_does_not_lose_or_hold_the_others_items() {
    // Key 0's worker is slow and its queue (2 items) fills; the other keys
    // still arrive, each in order, and every item arrives.
    let items: Vec<Tagged> = (0..3_000u64).map(|i| ((i % 3) as u32, i / 3)).collect();
    let input = items.clone();
    let out: Vec<Tagged> = watchdog(LIMIT, "a worker behind", move || {
        let stage = slow_on_key_zero::new()
            .workers(3)
            .qsize(6)
            .partition_by(|item: &Tagged| item.0);
        pipe!(input | { stage }).collect().unwrap()
    });
    assert_eq!(out.len(), items.len());
    for key in 0..3u32 {
        let seqs: Vec<u64> = out.iter().filter(|i| i.0 == key).map(|i| i.1).collect();
        assert_eq!(seqs, (0..1_000).collect::<Vec<_>>(), "key {key}");
    }
}

// `ordered` on a keyed stage: the output in input order, across keys.

/// Numbers each key's items as it sees them: state per key, which only a
/// keyed stage may keep in its workers.
#[stage]
fn running_count(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = (Tagged, u64)> {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    items.map(move |item| {
        let count = counts.entry(item.0).or_default();
        *count += 1;
        (item, *count)
    })
}

/// Emits each item three times: several outputs per input.
#[stage]
fn thrice(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = Tagged> {
    items.flat_map(|item| [item; 3])
}

#[map_stage]
fn keep(item: Tagged) -> Tagged {
    item
}

/// `stage` on `workers` workers, keyed by each item's key and `ordered`,
/// over `items`: all it gives, or its error, under the watchdog.
fn keyed_in_order<S>(
    what: &'static str,
    items: impl IntoSource<Item = Tagged> + Send + 'static,
    stage: S,
    workers: usize,
) -> Result<Vec<S::Out>, PipelineError>
where
    S: Stage<In = Tagged> + Send + Sync + 'static,
    S::Out: Send + 'static,
{
    watchdog(LIMIT, what, move || {
        let stage = stage
            .workers(workers)
            .ordered(true)
            .partition_by(|item: &Tagged| item.0);
        pipe!(items | { stage }).collect()
    })
}

/// Runs `running_count` keyed and ordered, and checks the output is the
/// input, in its order, each key counted in its order.
fn run_keyed_ordered(workers: usize, n: u64, keys: u32, qsize: usize) {
    let items = tagged(n, keys);
    let stage = running_count::new().qsize(qsize);
    let out = keyed_in_order("keyed ordered run", items.clone(), stage, workers).unwrap();
    let got: Vec<Tagged> = out.iter().map(|(item, _)| *item).collect();
    assert!(
        got == items,
        "{workers} workers, {n} items, {keys} keys, qsize {qsize}: output out of input order"
    );
    for (item, count) in &out {
        assert_eq!(
            *count,
            item.1 + 1,
            "key {} counted out of its order",
            item.0
        );
    }
}

#[test]
fn ordered_keeps_the_input_order_across_keys() {
    run_keyed_ordered(4, 50_000, 100, 4096);
    run_keyed_ordered(1, 5_000, 7, 4096);
    run_keyed_ordered(2, 20_000, 1, 4096);
    run_keyed_ordered(16, 20_000, 3, 4096);
    run_keyed_ordered(64, 20_000, 1_000, 4096);
    run_keyed_ordered(3, 10_000, 50, 1);
    run_keyed_ordered(5, 10_000, 50, 7);
    run_keyed_ordered(4, 0, 1, 4096);
}

#[test]
fn ordered_with_a_slow_worker_keeps_every_item_in_order() {
    // Key 0's worker sleeps on each of its items; the others run ahead as
    // far as the reorder step lets them, and wait.
    let items: Vec<Tagged> = (0..3_000u64).map(|i| ((i % 3) as u32, i / 3)).collect();
    let stage = slow_on_key_zero::new().qsize(6);
    let out = keyed_in_order("ordered, a worker behind", items.clone(), stage, 3).unwrap();
    assert!(out == items, "output out of input order");
}

#[test]
fn ordered_with_several_outputs_per_item_and_a_map_stage_after_it() {
    let items = tagged(20_000, 30);
    let input = items.clone();
    let out: Vec<Tagged> = watchdog(LIMIT, "ordered, several outputs", move || {
        pipe!(
            input
                | thrice
                    .workers(3)
                    .ordered(true)
                    .partition_by(|item: &Tagged| item.0)
                | keep.workers(2).ordered(true)
        )
        .collect()
        .unwrap()
    });
    let expected: Vec<Tagged> = items.iter().flat_map(|item| [*item; 3]).collect();
    assert!(out == expected, "output out of input order");
}

#[test]
fn ordered_keyed_map_stage() {
    let items = tagged(30_000, 200);
    let out = keyed_in_order("ordered keyed map stage", items.clone(), keep::new(), 4).unwrap();
    assert!(out == items, "output out of input order");
}

#[test]
fn ordered_a_trickling_input_is_not_held_back() {
    trickle(true);
}

/// Where each item of `out` stands in `items` (each item is unique).
fn positions(out: &[Tagged], items: &[Tagged]) -> Vec<usize> {
    let at: HashMap<Tagged, usize> = items.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    out.iter().map(|t| at[t]).collect()
}

#[test]
fn ordered_a_worker_that_stops_reading_does_not_stop_the_others() {
    // Each worker takes 3 items and returns: the batches still in its
    // queue are skipped, so the reorder step does not wait for them.
    let items = tagged(20_000, 40);
    let out = keyed_in_order("ordered, stops reading", items.clone(), first::new(3), 4).unwrap();
    assert!(out.len() <= 12 && !out.is_empty(), "{}", out.len());
    let at = positions(&out, &items);
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order: {at:?}");
}

#[test]
fn ordered_one_worker_stops_while_the_others_read_everything() {
    // Worker of key 0 stops after 3 items; every other key's items all
    // come out, in input order, with key 0's first three among them.
    #[stage]
    fn stop_on_key_zero(items: impl Iterator<Item = Tagged>) -> impl Iterator<Item = Tagged> {
        items.take_while(|item| item.0 != 0 || item.1 < 3)
    }
    let items = tagged(20_000, 40);
    let stage = stop_on_key_zero::new();
    let out = keyed_in_order("ordered, one stops", items.clone(), stage, 4).unwrap();
    let at = positions(&out, &items);
    assert!(at.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(out.contains(&(0, 2)) && !out.contains(&(0, 3)));
    // Keys sharing key 0's worker stop with it; the other workers' keys
    // all come through.
    let key_zero_worker_keys = out.iter().filter(|t| t.0 != 0).count();
    assert!(key_zero_worker_keys > 10_000, "{key_zero_worker_keys}");
}

#[test]
fn ordered_every_worker_stopping_on_an_endless_source_ends_the_run() {
    let endless = (0u64..).map(|i| ((i % 64) as u32, i / 64));
    let out = keyed_in_order("ordered, all stop, endless", endless, first::new(3), 4).unwrap();
    assert_eq!(out.len(), 12);
    let index = |t: &Tagged| t.1 * 64 + u64::from(t.0);
    assert!(
        out.windows(2).all(|w| index(&w[0]) < index(&w[1])),
        "{out:?}"
    );
}

#[test]
fn ordered_an_error_or_panic_names_the_stage_and_worker() {
    let items = tagged(20_000, 40);
    let err =
        keyed_in_order("ordered stage error", items.clone(), fail_at::new(7, 3), 4).unwrap_err();
    assert_eq!(err.stage(), "fail_at");
    assert!(err.worker().is_some_and(|w| w < 4), "{err}");
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(3)));
    let err = keyed_in_order("ordered stage panic", items, panic_at::new(7, 3), 4).unwrap_err();
    assert_eq!(err.stage(), "panic_at");
    assert!(err.worker().is_some_and(|w| w < 4), "{err}");
}

#[test]
fn ordered_dropping_the_results_of_an_endless_source_stops_everything() {
    drop_an_endless_keyed_run(true, "kodrop");
}
