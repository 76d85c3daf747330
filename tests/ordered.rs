//! Ordered stages: output in input order with any number of workers,
//! streaming, with bounded memory.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use common::{Boom, LIMIT, watchdog};
use parapipe::Failure;
use parapipe::prelude::*;

/// A cheap hash, for delays that vary from item to item.
fn jitter(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60
}

#[map_stage(workers = 4, ordered)]
fn slow_square(x: u64) -> u64 {
    thread::sleep(Duration::from_micros(jitter(x) * 20));
    x * x
}

#[stage(workers = 3)]
fn spread(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.flat_map(|x| {
        thread::sleep(Duration::from_micros(jitter(x) * 10));
        [x * 10, x * 10 + 1, x * 10 + 2]
    })
}

#[map_stage(workers = 4)]
fn fail_at(x: u64, at: u64) -> Result<u64, Boom> {
    if x == at { Err(Boom(x)) } else { Ok(x) }
}

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[test]
fn ordered_map_stage_keeps_input_order_under_random_delays() {
    let got = watchdog(LIMIT, "ordered map", || {
        pipe!(0..3000u64 | slow_square).collect::<Vec<_>>()
    });
    let want: Vec<u64> = (0..3000).map(|x| x * x).collect();
    assert_eq!(got.unwrap(), want);
}

#[test]
fn ordered_iterator_stage_keeps_each_items_outputs_in_order() {
    let got = watchdog(LIMIT, "ordered flat_map", || {
        pipe!(0..2000u64 | spread.ordered(true) | inc.ordered(true)).collect::<Vec<_>>()
    });
    let want: Vec<u64> = (0..2000)
        .flat_map(|x| [x * 10 + 1, x * 10 + 2, x * 10 + 3])
        .collect();
    assert_eq!(got.unwrap(), want);
}

#[test]
fn unordered_is_the_default() {
    // The same stage without `ordered`, to show the test above can fail:
    // with random delays and three workers, the order changes.
    let got: Vec<u64> = pipe!(0..2000u64 | spread).collect().unwrap();
    let want: Vec<u64> = (0..2000)
        .flat_map(|x| [x * 10, x * 10 + 1, x * 10 + 2])
        .collect();
    assert_ne!(got, want);
    let mut sorted = got;
    sorted.sort_unstable();
    assert_eq!(sorted, want);
}

#[test]
fn ordered_output_streams() {
    // Lock-step through an ordered stage with four workers: item i must come
    // out before item i + 1 goes in, so nothing may wait for a later item.
    watchdog(LIMIT, "ordered lock-step", || {
        let (tx, rx) = flume::bounded::<u64>(1);
        let (ack_tx, ack_rx) = flume::bounded::<u64>(1);
        let feeder = thread::spawn(move || {
            for i in 0..300 {
                tx.send(i).unwrap();
                assert_eq!(ack_rx.recv().unwrap(), i + 1);
            }
        });
        for r in pipe!(rx | inc.workers(4).ordered(true)).results() {
            ack_tx.send(r.unwrap()).unwrap();
        }
        feeder.join().unwrap();
    });
}

#[test]
fn a_slow_item_does_not_let_the_others_run_away() {
    // Item 0 takes 300 ms; the other workers may get a bounded window of
    // batches ahead of it, not the whole endless input.
    #[map_stage(workers = 4, ordered)]
    fn first_is_slow(x: u64) -> u64 {
        if x == 0 {
            thread::sleep(Duration::from_millis(300));
        }
        x
    }
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let ahead = watchdog(LIMIT, "ordered window", move || {
        let source = (0..u64::MAX).inspect(move |_| {
            p.fetch_add(1, SeqCst);
        });
        let mut results = pipe!(source | first_is_slow).results();
        assert_eq!(results.next().unwrap().unwrap(), 0);
        produced.load(SeqCst)
    });
    // The source's queue, the window (2 x 4 batches of at most 512) and the
    // output queue, with room for what threads hold in hand.
    let bound = 4096 + 8 * 512 + 4096 + 4 * 512;
    assert!(
        ahead < bound,
        "{ahead} items produced while item 0 was stuck"
    );
}

#[test]
fn errors_and_early_drop_in_ordered_stages() {
    let err = watchdog(LIMIT, "ordered error", || {
        pipe!(0..100_000u64 | inc.ordered(true) | fail_at(5000).ordered(true))
            .run()
            .unwrap_err()
    });
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(5000)));

    // Items before the failure arrive in order.
    let results: Vec<_> = watchdog(LIMIT, "ordered partial", || {
        pipe!(0..100_000u64 | fail_at(5000).ordered(true))
            .results()
            .collect()
    });
    let (last, items) = results.split_last().unwrap();
    assert!(last.is_err());
    for (i, item) in items.iter().enumerate() {
        assert_eq!(*item.as_ref().unwrap(), i as u64);
    }

    watchdog(LIMIT, "ordered early drop", || {
        let mut results = pipe!(0..u64::MAX | inc.workers(4).ordered(true) | slow_square).results();
        for i in 0..50u64 {
            assert_eq!(results.next().unwrap().unwrap(), (i + 1) * (i + 1));
        }
    });
}

#[test]
fn ordered_serial_segment() {
    let seg = segment!(inc | spread).serial().workers(3).ordered(true);
    let got: Vec<u64> = pipe!(0..1000u64 | { seg }).collect().unwrap();
    let want: Vec<u64> = (1..1001)
        .flat_map(|x| [x * 10, x * 10 + 1, x * 10 + 2])
        .collect();
    assert_eq!(got, want);
}

#[test]
fn ordered_where_it_means_nothing_is_an_error() {
    #[stage(workers = 2)]
    fn numbers() -> impl Iterator<Item = u64> {
        0..10
    }
    let err = pipe!(numbers::new().ordered(true)).run().unwrap_err();
    assert!(matches!(err.failure(), Failure::Config(_)), "{err}");

    let seg = segment!(inc | inc).ordered(true);
    let err = pipe!(0..10u64 | { seg }).run().unwrap_err();
    assert!(matches!(err.failure(), Failure::Config(_)), "{err}");
}

/// Each worker emits `START` before it takes any input and, once its input
/// has ended, how many items it took (plus `END`).
const START: u64 = u64::MAX;
const END: u64 = 1 << 40;

#[stage(workers = 3, ordered)]
fn bracketed(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let counted = seen.clone();
    std::iter::once(START)
        .chain(xs.inspect(move |_| counted.set(counted.get() + 1)))
        .chain(std::iter::once_with(move || END + seen.get()))
}

#[test]
fn output_outside_any_batch_keeps_the_order_of_the_rest() {
    for n in [0u64, 1, 2, 5_000] {
        let got = watchdog(LIMIT, "bracketed", move || {
            pipe!(0..n | bracketed).collect::<Vec<_>>()
        })
        .unwrap();
        let items: Vec<u64> = got.iter().copied().filter(|&x| x < END).collect();
        assert!(items.iter().copied().eq(0..n), "n = {n}: out of order");
        // One start and one end per worker, and the ends count every item.
        assert_eq!(got.iter().filter(|&&x| x == START).count(), 3, "n = {n}");
        let ends: Vec<u64> = got
            .iter()
            .filter(|&&x| (END..START).contains(&x))
            .map(|x| x - END)
            .collect();
        assert_eq!(ends.len(), 3, "n = {n}");
        assert_eq!(ends.iter().sum::<u64>(), n, "n = {n}");
        // A worker's start comes before the first item it took: the output
        // begins with a start.
        if n > 0 {
            assert_eq!(got[0], START, "n = {n}");
        }
    }
}

#[test]
fn ordered_stage_after_a_stage_with_several_workers() {
    // Several senders take turns numbering the ordered stage's input: every
    // item arrives once, with small queues too (senders block while
    // holding their turn).
    // Fewer items through the tiny queues: a hand-off per item costs a
    // thread switch, which takes milliseconds on a loaded machine.
    for (qsize, n) in [(4096, 100_000u64), (8, 10_000), (1, 5_000)] {
        let got = watchdog(LIMIT, "ordered after unordered", move || {
            pipe!(0..n | inc.workers(3).qsize(qsize) | inc.ordered(true).qsize(qsize))
                .collect::<Vec<_>>()
        })
        .unwrap();
        let mut got = got;
        got.sort_unstable();
        assert!(got.into_iter().eq(2..n + 2), "qsize {qsize}");
    }
}

/// Emits one item without reading its input.
#[stage(workers = 2, ordered)]
fn ignores_input(_xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    std::iter::once(7)
}

#[test]
fn ordered_workers_that_never_take_a_batch_do_not_hang() {
    // The source blocks on the full queue while it holds the numbering of
    // the batches it sends; the workers stop without reading.
    for qsize in [4096, 1] {
        let got = watchdog(LIMIT, "ordered stage ignoring its input", move || {
            pipe!(0..10_000_000u64 | inc.qsize(qsize) | ignores_input).collect::<Vec<_>>()
        });
        assert_eq!(got.unwrap(), [7, 7], "qsize {qsize}");
    }
}
