//! Regression for the outside trial of issue 13, item 6: an ordered stage's
//! memory is bounded by its queues, even when one input item fans out to
//! millions of outputs, or to an endless stream of them.
//!
//! How memory is measured: the workspace forbids `unsafe` code
//! (`unsafe_code = "forbid"` in its lints, for tests too), so a counting
//! `#[global_allocator]` cannot be written here. Instead, each item counts
//! itself: [`Tracked`] adds one to a live count when made and takes one off
//! when dropped, so the peak of that count is the most items alive at once
//! (in queues, in batches, held back by the ordered stage). And the
//! process's peak resident memory (`VmHWM`, reset through
//! `/proc/self/clear_refs`) is checked as well, where Linux allows it.
//! The two tests share these counters: they take turns.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::watchdog;
use parapipe::prelude::*;
use parapipe::stages;

/// The watchdog's bound: generous, it detects hangs, not slowness.
const BOUND: Duration = Duration::from_secs(30);

/// The memory an ordered stage with `qsize = 16` may take, at most: far
/// above what its queues and window hold, far below what the fan-outs
/// below make.
const BOUND_BYTES: usize = 64 << 20;

/// Items alive now, and the most alive at once since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The two tests take turns: they share `LIVE` and `PEAK`.
static TURN: Mutex<()> = Mutex::new(());

/// An item that counts itself; 32 bytes, so that the 4 million of the
/// fan-out below make 122 MiB (the 40 million `u64` made 306 MiB).
#[derive(Debug)]
struct Tracked {
    n: u64,
    _payload: [u64; 3],
}

impl Tracked {
    fn new(n: u64) -> Self {
        let live = LIVE.fetch_add(1, SeqCst) + 1;
        PEAK.fetch_max(live, SeqCst);
        Tracked {
            n,
            _payload: [n; 3],
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, SeqCst);
    }
}

/// The most `Tracked` items that fit in [`BOUND_BYTES`].
const BOUND_ITEMS: usize = BOUND_BYTES / size_of::<Tracked>();

fn status_kib(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak resident memory to its current value and
/// returns that, in bytes; `None` where Linux does not allow it.
fn reset_peak_rss() -> Option<usize> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    Some(status_kib("VmRSS:")? * 1024)
}

/// The process's peak resident memory since the last reset, in bytes.
fn peak_rss() -> Option<usize> {
    Some(status_kib("VmHWM:")? * 1024)
}

#[test]
fn an_ordered_fan_out_stays_within_its_queues() {
    // Issue 13, item 6: one item fanned out to 4 million outputs by an
    // ordered stage with `qsize = 16` and two workers. Before the fix the
    // worker held all 4 million (122 MiB, twice the bound; the peak grows
    // with the fan-out) until its input item was done. 4 million rather
    // than the 40 million keep the test within seconds in a debug
    // build once the items stream through the 16-item queue.
    const FAN_OUT: u64 = 4_000_000;
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    PEAK.store(LIVE.load(SeqCst), SeqCst);
    let rss_before = reset_peak_rss();
    let (count, in_order) = watchdog(BOUND, "ordered fan-out", || {
        let fan_out = stages::flat_map::new(|_: u64| (0..FAN_OUT).map(Tracked::new))
            .workers(2)
            .qsize(16)
            .ordered(true);
        let mut count = 0u64;
        let mut in_order = true;
        for item in pipe!(vec![0u64] | { fan_out }).results() {
            let item = item.unwrap();
            in_order &= item.n == count;
            count += 1;
        }
        (count, in_order)
    });
    let peak_items = PEAK.load(SeqCst);
    let rss_growth = rss_before.and_then(|before| Some(peak_rss()?.saturating_sub(before)));
    assert_eq!(count, FAN_OUT, "items received");
    assert!(in_order, "the outputs came out of order");
    assert!(
        peak_items <= BOUND_ITEMS,
        "{peak_items} items alive at once ({} MiB), bound {BOUND_ITEMS} ({} MiB); \
         peak resident growth {:?} MiB",
        (peak_items * size_of::<Tracked>()) >> 20,
        BOUND_BYTES >> 20,
        rss_growth.map(|b| b >> 20),
    );
    match rss_growth {
        Some(growth) => assert!(
            growth <= BOUND_BYTES,
            "peak resident memory grew by {} MiB (bound {} MiB)",
            growth >> 20,
            BOUND_BYTES >> 20
        ),
        None => eprintln!("peak resident memory not checked: /proc/self/clear_refs refused"),
    }
}

#[test]
fn an_ordered_endless_fan_out_streams() {
    // Issue 13, item 6: one item fanned out to an endless stream, ordered.
    // The consumer must get the first 1,000 items while the stream goes
    // on, then stop it by dropping the results. Before the fix the worker
    // held everything back, forever: here a safety valve ends the stream
    // once the items alive exceed the bound, rather than filling memory,
    // and the test fails if it had to.
    static VALVE_OPENED: AtomicBool = AtomicBool::new(false);
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    PEAK.store(LIVE.load(SeqCst), SeqCst);
    let first = watchdog(BOUND, "ordered endless fan-out", || {
        let endless = stages::flat_map::new(|_: u64| {
            (0u64..).map_while(|n| {
                if LIVE.load(SeqCst) >= BOUND_ITEMS {
                    VALVE_OPENED.store(true, SeqCst);
                    return None;
                }
                Some(Tracked::new(n))
            })
        })
        .workers(2)
        .qsize(16)
        .ordered(true);
        let mut results = pipe!(vec![0u64] | { endless }).results();
        let first: Vec<u64> = results
            .by_ref()
            .take(1000)
            .map(|item| item.unwrap().n)
            .collect();
        drop(results);
        first
    });
    assert_eq!(first, (0..1000).collect::<Vec<_>>());
    assert!(
        !VALVE_OPENED.load(SeqCst),
        "the ordered stage held {} items ({} MiB) before releasing any: the safety valve \
         had to end the endless stream",
        PEAK.load(SeqCst),
        (PEAK.load(SeqCst) * size_of::<Tracked>()) >> 20,
    );
}
