//! Stages with more workers than a link lets wait on its queue at once
//! (more than 16: one waits on the queue, the others on a gate), every way
//! they end. Apart from `tests/shutdown.rs`: a thousand threads would make
//! its timing-sensitive checks (how far a source runs on after a failure)
//! depend on the scheduler.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Boom, LIMIT, watchdog};
use parapipe::Failure;
use parapipe::prelude::*;

#[map_stage(workers = 2)]
fn inc(x: u64) -> u64 {
    x + 1
}

#[map_stage(workers = 3)]
fn fail_at(x: u64, at: u64) -> Result<u64, Boom> {
    if x == at { Err(Boom(x)) } else { Ok(x) }
}

#[map_stage(workers = 3)]
fn panic_at(x: u64, at: u64) -> u64 {
    if x == at {
        panic!("panicked on {x}");
    }
    x
}

#[stage]
fn first_five(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.take(5)
}

#[stage]
fn count(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = usize> {
    std::iter::once(xs.count())
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// Waits as a blocking request would.
#[map_stage]
fn slow_inc(x: u64, wait_us: u64) -> u64 {
    thread::sleep(Duration::from_micros(wait_us));
    x + 1
}

#[stage]
fn iter_inc(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.map(|x| x + 1)
}

#[test]
fn crowded_stages_end_every_way() {
    // Stages with more workers than a link lets wait on its queue at once
    // (one waits on the queue, the others on a gate): every ending, with
    // slow and fast items, queues smaller and larger than the worker count,
    // map and iterator stages.
    watchdog(Duration::from_secs(300), "crowded stages", || {
        for round in 0..40u64 {
            let workers = [17, 64, 300, 1000][(round % 4) as usize];
            let qsize = [1, 10, 4096][(round % 3) as usize];
            let n = 500 + round * 97 % 3000;
            let wait = (round % 2) * 200;
            match round % 6 {
                0 => {
                    let got = pipe!(0..n | slow_inc(wait).workers(workers).qsize(qsize) | inc)
                        .collect::<Vec<_>>()
                        .unwrap();
                    assert_eq!(sorted(got), (2..n + 2).collect::<Vec<_>>(), "round {round}");
                }
                1 => {
                    let got = pipe!(0..n | iter_inc.workers(workers).qsize(qsize) | first_five)
                        .collect::<Vec<_>>()
                        .unwrap();
                    assert_eq!(got.len(), 5, "round {round}");
                }
                2 => {
                    let r =
                        pipe!(0..n | slow_inc(wait).workers(workers).qsize(qsize) | fail_at(n / 2))
                            .run();
                    assert!(r.is_err(), "round {round}");
                }
                3 => {
                    let r = pipe!(0..n | panic_at(n / 3).workers(workers).qsize(qsize) | inc).run();
                    let err = r.unwrap_err();
                    assert!(
                        matches!(err.failure(), Failure::Panic(_)),
                        "round {round}: {err}"
                    );
                }
                4 => {
                    let mut results =
                        pipe!(0..n | slow_inc(wait).workers(workers).qsize(qsize) | inc).results();
                    let _ = results.nth((round % 13) as usize);
                }
                _ => {
                    // An iterator stage of many workers, each counting its share.
                    let got = pipe!(0..n | count.workers(workers).qsize(qsize))
                        .collect::<Vec<_>>()
                        .unwrap();
                    assert_eq!(got.len(), workers, "round {round}");
                    assert_eq!(got.iter().sum::<usize>() as u64, n, "round {round}");
                }
            }
        }
    });
}

#[test]
fn thousands_of_waiting_workers_stop_promptly() {
    // 4,000 workers waiting on an idle channel source: dropping the results
    // wakes them all (the gate passes the cancel on from one to the next).
    watchdog(LIMIT, "thousands of workers", || {
        let (tx, rx) = flume::unbounded::<u64>();
        let mut results = Pipeline::from_receiver(rx)
            .then(inc::new().workers(4000))
            .results();
        for x in 0..100 {
            tx.send(x).unwrap();
        }
        let got: Vec<u64> = results.by_ref().take(100).map(Result::unwrap).collect();
        assert_eq!(sorted(got), (1..=100).collect::<Vec<_>>());
        let start = Instant::now();
        drop(results);
        // Generous: the point is that it ends, not how fast.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
        drop(tx);
    });
}
