//! Streaming input, promptness of trickling items, and backpressure.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use common::{LIMIT, watchdog};
use parapipe::prelude::*;

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[stage(workers = 2)]
fn double(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.map(|x| x * 2)
}

#[map_stage(workers = 2, qsize = 30)]
fn small_queue(x: u64) -> u64 {
    x
}

#[test]
fn each_streamed_item_comes_out_before_the_next_goes_in() {
    // Lock-step: the feeder sends item i only after the consumer has seen
    // item i - 1. If any thread held an item back waiting for more to fill
    // a batch, this would deadlock (and the watchdog would fail it).
    for _ in 0..5 {
        watchdog(LIMIT, "lock-step flume", || {
            let (tx, rx) = flume::bounded::<u64>(1);
            let (ack_tx, ack_rx) = flume::bounded::<u64>(1);
            let feeder = thread::spawn(move || {
                for i in 0..300 {
                    tx.send(i).unwrap();
                    assert_eq!(ack_rx.recv().unwrap(), (i + 1) * 2 + 1);
                }
            });
            for r in pipe!(rx | inc | double | inc).results() {
                ack_tx.send(r.unwrap()).unwrap();
            }
            feeder.join().unwrap();
        });
    }
}

#[test]
fn a_blocking_iterator_streams_through_pipeline_streaming() {
    // The same lock-step with a plain iterator that blocks between items,
    // after a first burst of 100 items: `Pipeline::streaming` passes each
    // item on as it comes.
    watchdog(LIMIT, "lock-step streaming", || {
        let (ack_tx, ack_rx) = flume::bounded::<u64>(1);
        let mut next = 0u64;
        let items = std::iter::from_fn(move || {
            if next >= 100 {
                // After the burst, wait for the previous item to come out.
                assert_eq!(ack_rx.recv().ok()?, next);
            }
            next += 1;
            (next <= 300).then_some(next - 1)
        });
        let mut seen = 0;
        for r in pipe!(Pipeline::streaming(items) | inc).results() {
            let v = r.unwrap();
            seen += 1;
            if v >= 100 {
                ack_tx.send(v).unwrap();
            }
        }
        assert_eq!(seen, 300);
    });
}

#[test]
fn std_channel_streams_too() {
    watchdog(LIMIT, "lock-step std", || {
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<u64>();
        let feeder = thread::spawn(move || {
            for i in 0..200 {
                tx.send(i).unwrap();
                assert_eq!(ack_rx.recv().unwrap(), i + 1);
            }
        });
        for r in pipe!(rx | inc).results() {
            ack_tx.send(r.unwrap()).unwrap();
        }
        feeder.join().unwrap();
    });
}

#[test]
fn stream_fed_from_two_threads_ends_when_both_senders_drop() {
    let (tx, rx) = flume::bounded::<u64>(16);
    let feeders: Vec<_> = (0..2u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..10_000 {
                    tx.send(t * 10_000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut got: Vec<u64> = watchdog(LIMIT, "two feeders", move || {
        pipe!(rx | inc).collect().unwrap()
    });
    for f in feeders {
        f.join().unwrap();
    }
    got.sort_unstable();
    assert_eq!(got, (1..=20_000).collect::<Vec<_>>());
}

#[test]
fn a_slow_consumer_holds_back_a_fast_source() {
    // An endless source: without backpressure it would run away. The source
    // may be ahead of the consumer by at most the queues (the source's
    // DEFAULT_QSIZE items, the stage's 30) plus what threads hold in hand: a
    // batch of at most 512 items in the source and in each of the two
    // workers, and small batches (at most 15, half of qsize 30) in the
    // workers' output buffers and the consumer.
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let max_ahead = watchdog(LIMIT, "backpressure", move || {
        let source = (0..u64::MAX).inspect(move |_| {
            p.fetch_add(1, SeqCst);
        });
        let mut results = pipe!(source | small_queue).results();
        let mut max_ahead = 0;
        for consumed in 1..=3000u64 {
            results.next().unwrap().unwrap();
            if consumed % 100 == 0 {
                thread::sleep(Duration::from_millis(2));
                max_ahead = max_ahead.max(produced.load(SeqCst) - consumed);
            }
        }
        max_ahead
    });
    let bound = parapipe::DEFAULT_QSIZE as u64 + 30 + 512 * 3 + 15 * 3;
    assert!(
        max_ahead <= bound,
        "source ran {max_ahead} items ahead (bound {bound})"
    );
    assert!(max_ahead > 0);
}

#[test]
fn unbounded_queue_lets_the_stage_run_ahead() {
    // The opposite check, so the test above can fail: with an unbounded
    // stage queue and a paused consumer, the stage runs far ahead.
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    watchdog(LIMIT, "unbounded", move || {
        #[map_stage(unbounded)]
        fn counted(x: u64, done: Arc<AtomicU64>) -> u64 {
            done.fetch_add(1, SeqCst);
            x
        }
        let mut results = pipe!(0..200_000u64 | counted(d)).results();
        results.next().unwrap().unwrap();
        // Generous: waits for the stage to finish everything, unread.
        for _ in 0..3000 {
            if done.load(SeqCst) == 200_000 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(done.load(SeqCst), 200_000);
    });
}
