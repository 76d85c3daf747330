//! The memory of fan-out stages, under random settings: one item in,
//! millions of `u64`s out (at least 8 million in all: 64 MB if anything held
//! them), on 1 to 4 workers, ordered or not, with random queues of 256 to
//! 4096 items (smaller ones only make the runs slow: a million hand-offs),
//! followed or not by a map stage, read fully or partly by the consumer.
//! Whatever the settings, the live heap's peak growth during a run must stay
//! under a bound set by the queues: 16 times the bytes of the items they
//! can hold (the source's 4096, the fan-out's and the map's `qsize`, and a
//! batch of 512 in the hands of each worker), plus 1 MiB; between 1.5 and
//! 3.2 MiB, where holding the output would take 64 MB.
//!
//! A counting global allocator (`peak_alloc`: live and peak bytes) sees
//! every allocation of the process, so this binary holds one test only.
//! `PARAPIPE_FAULT_CASES` sets the number of cases (default 20 in release,
//! 12 in a debug build, where each case takes most of a second).

mod common;

use std::time::Duration;

use common::watchdog;
use parapipe::prelude::*;
use parapipe::stages;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// No bound is above this, whatever the settings.
const CAP: usize = 32 << 20;

/// At least this many items come out of the fan-out in all.
const OUTPUT: u64 = 8_000_000;

#[derive(Clone, Debug)]
struct Spec {
    /// Source items, each fanning out to `per_item` outputs.
    items: u64,
    per_item: u64,
    workers: usize,
    ordered: bool,
    qsize: usize,
    /// A map stage after the fan-out: workers, qsize, ordered.
    after: Option<(usize, usize, bool)>,
    /// Items the consumer reads before dropping the results; all if `None`.
    read: Option<u64>,
}

impl Spec {
    fn total(&self) -> u64 {
        self.items * self.per_item
    }

    /// The bound on the live heap's growth during one run, in bytes.
    fn bound(&self) -> usize {
        let (after_workers, after_qsize) = self.after.map_or((0, 0), |(w, q, _)| (w, q));
        let items = 4096 + self.qsize + after_qsize + 512 * (1 + self.workers + after_workers);
        ((1 << 20) + 16 * 8 * items).min(CAP)
    }

    /// Whether the output comes in input order.
    fn in_order(&self) -> bool {
        (self.ordered || self.workers == 1) && self.after.is_none_or(|(w, _, o)| o || w == 1)
    }
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        1..=4u64,
        0..=2_000_000u64,
        1..=4usize,
        any::<bool>(),
        256..=4096usize,
        (any::<bool>(), 1..=4usize, 256..=4096usize, any::<bool>()),
        (0..4u8, 0..=OUTPUT),
    )
        .prop_map(
            |(items, extra, workers, ordered, qsize, (after, aw, aq, ao), (r, k))| Spec {
                items,
                per_item: OUTPUT.div_ceil(items) + extra,
                workers,
                ordered,
                qsize,
                after: after.then_some((aw, aq, ao)),
                read: match r {
                    0 | 1 => None,
                    2 => Some(k % 1000),
                    _ => Some(k),
                },
            },
        )
}

/// Runs one case: the peak growth of the live heap, in bytes.
fn run(spec: &Spec) -> Result<usize, String> {
    let per = spec.per_item;
    let fan_out = stages::flat_map::new(move |x: u64| (0..per).map(move |i| x * per + i))
        .workers(spec.workers)
        .ordered(spec.ordered)
        .qsize(spec.qsize);
    let mut pipeline = Pipeline::source(0..spec.items).then(fan_out);
    if let Some((workers, qsize, ordered)) = spec.after {
        pipeline = pipeline.then(
            stages::map::new(|x: u64| x ^ 1)
                .workers(workers)
                .qsize(qsize)
                .ordered(ordered),
        );
    }
    let unmap = if spec.after.is_some() { 1 } else { 0 };
    let (in_order, read, total) = (spec.in_order(), spec.read, spec.total());
    ALLOC.reset_peak_usage();
    let base = ALLOC.current_usage();
    // Counts and checks the items without keeping them.
    let checked = watchdog(Duration::from_secs(120), &format!("{spec:?}"), move || {
        let mut results = pipeline.results();
        let (mut n, mut sum, mut next) = (0u64, 0u128, 0u64);
        while read.is_none_or(|r| n < r) {
            match results.next() {
                Some(Ok(x)) => {
                    let x = x ^ unmap;
                    if in_order && x != next {
                        return Err(format!("item {n} is {x}, expected {next}"));
                    }
                    next = x + 1;
                    n += 1;
                    sum += u128::from(x);
                }
                Some(Err(e)) => return Err(format!("failure: {e}")),
                None => break,
            }
        }
        if read.is_none() {
            let want = u128::from(total) * u128::from(total - 1) / 2;
            if n != total || sum != want {
                return Err(format!(
                    "{n} items summing to {sum}, expected {total} summing to {want}"
                ));
            }
        }
        Ok(())
    });
    let growth = ALLOC.peak_usage().saturating_sub(base);
    checked.map(|()| growth)
}

#[test]
fn fan_out_memory_is_bounded_by_the_queues() {
    let cases: u32 = std::env::var("PARAPIPE_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 12 } else { 20 });
    // The counter sees what the pipeline's threads allocate: a control.
    ALLOC.reset_peak_usage();
    let base = ALLOC.current_usage();
    std::thread::spawn(|| drop(std::hint::black_box(vec![1u64; OUTPUT as usize])))
        .join()
        .unwrap();
    let seen = ALLOC.peak_usage() - base;
    assert!(
        seen >= 8 * OUTPUT as usize,
        "the allocation counter saw {seen} bytes"
    );
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let most = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&spec_strategy(), |spec| {
        let growth =
            run(&spec).map_err(|why| TestCaseError::fail(format!("{why}\n  in {spec:?}")))?;
        most.fetch_max(growth, std::sync::atomic::Ordering::Relaxed);
        if growth > spec.bound() {
            return Err(TestCaseError::fail(format!(
                "the live heap grew by {:.2} MiB (bound {:.2} MiB) for {} items\n  in {spec:?}",
                growth as f64 / (1 << 20) as f64,
                spec.bound() as f64 / (1 << 20) as f64,
                spec.total(),
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "fault memory: {cases} cases passed, largest growth {:.2} MiB",
        most.into_inner() as f64 / (1 << 20) as f64
    );
}
