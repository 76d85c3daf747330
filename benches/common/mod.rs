//! What the benches share: the competitors that are not a crate of their
//! own (hand-written pipelines of threads over flume or crossbeam channels),
//! the criterion settings, and the work functions.
//!
//! Each bench includes this file with `mod common;` and uses part of it.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkGroup, SamplingMode, measurement::WallTime};

/// Capacity of each hand-written channel, in items.
pub const CAP: usize = 1024;
/// Items per message in the batched hand-written pipelines.
pub const BATCH: usize = 64;

/// Flat sampling (every sample runs the same number of iterations), 10
/// samples, a short warm-up: the slowest competitors take over a second per
/// iteration, and linear sampling would run them 55 times.
pub fn configure(group: &mut BenchmarkGroup<'_, WallTime>, measurement: Duration) {
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(measurement);
}

/// Threads per parallel variant: one per core of the reference machine (2),
/// or `PARAPIPE_BENCH_THREADS` to run the suite unchanged on a bigger one
/// (rayon's pool, the parallel stages' workers, the hand-written and the
/// other crates' thread counts all follow it).
pub fn threads() -> usize {
    match std::env::var("PARAPIPE_BENCH_THREADS") {
        Ok(n) => n
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("PARAPIPE_BENCH_THREADS: a number of threads, at least 1"),
        Err(_) => 2,
    }
}

/// A rayon pool of [`threads`] threads, as many as the pipelines' workers.
pub fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build()
        .expect("rayon pool")
}

/// pariter's settings for a stage of `threads` threads: at most `CAP` items
/// in flight, as in the hand-written pipelines (its default is 2 per
/// thread).
pub fn pariter_stage<I: Iterator>(
    threads: usize,
) -> impl FnOnce(pariter::ParallelMapBuilder<I>) -> pariter::ParallelMapBuilder<I> {
    move |b| b.threads(threads).buffer_size(CAP)
}

/// The recursive Fibonacci function: a fixed amount of pure CPU work per
/// call, about 1.6 times more per step of `k`.
pub fn fib(k: u64) -> u64 {
    if k < 2 { k } else { fib(k - 1) + fib(k - 2) }
}

/// `fib(k)` plus the item: every item costs the same, but gives its own
/// result, so a checksum sees a lost or repeated item.
pub fn fib_work(x: u64, k: u64) -> u64 {
    fib(black_box(k)).wrapping_add(x)
}

/// The sum of `(0..n).map(|x| x + add)`.
pub const fn sum_plus(n: u64, add: u64) -> u64 {
    n * (n - 1) / 2 + add * n
}

/// The sum of the items if they are exactly `first, first + 1, ...` in that
/// order, `None` if any is out of place: an ordered variant's checksum.
pub fn sum_if_consecutive(items: impl Iterator<Item = u64>, first: u64) -> Option<u64> {
    let mut sum = 0u64;
    for (want, x) in (first..).zip(items) {
        if x != want {
            return None;
        }
        sum = sum.wrapping_add(x);
    }
    Some(sum)
}

/// The channels the hand-written pipelines run on.
pub trait Channel {
    type Tx<M: Send>: Clone + Send;
    type Rx<M: Send>: Clone + Send;
    fn bounded<M: Send>(cap: usize) -> (Self::Tx<M>, Self::Rx<M>);
    /// `false` once every receiver is gone.
    fn send<M: Send>(tx: &Self::Tx<M>, m: M) -> bool;
    /// `None` once every sender is gone and the channel is drained.
    fn recv<M: Send>(rx: &Self::Rx<M>) -> Option<M>;
}

/// flume 0.11, as the runtime uses it.
pub struct Flume;

impl Channel for Flume {
    type Tx<M: Send> = flume::Sender<M>;
    type Rx<M: Send> = flume::Receiver<M>;
    fn bounded<M: Send>(cap: usize) -> (Self::Tx<M>, Self::Rx<M>) {
        flume::bounded(cap)
    }
    fn send<M: Send>(tx: &Self::Tx<M>, m: M) -> bool {
        tx.send(m).is_ok()
    }
    fn recv<M: Send>(rx: &Self::Rx<M>) -> Option<M> {
        rx.recv().ok()
    }
}

/// crossbeam-channel 0.5.
pub struct Crossbeam;

impl Channel for Crossbeam {
    type Tx<M: Send> = crossbeam_channel::Sender<M>;
    type Rx<M: Send> = crossbeam_channel::Receiver<M>;
    fn bounded<M: Send>(cap: usize) -> (Self::Tx<M>, Self::Rx<M>) {
        crossbeam_channel::bounded(cap)
    }
    fn send<M: Send>(tx: &Self::Tx<M>, m: M) -> bool {
        tx.send(m).is_ok()
    }
    fn recv<M: Send>(rx: &Self::Rx<M>) -> Option<M> {
        rx.recv().ok()
    }
}

/// A hand-written pipeline whose messages are of type `M`: a source thread
/// runs `source` to fill the first channel; stage `i` has `workers[i]`
/// threads that apply `step(i, message)` and send the result on; the calling
/// thread folds every output message into `init` with `sink`. Each channel
/// holds at most `cap` messages; a stage's threads share its input channel.
pub fn channel_pipeline<C: Channel, M: Send, R>(
    workers: &[usize],
    cap: usize,
    source: impl FnOnce(&C::Tx<M>) + Send,
    step: impl Fn(usize, M) -> M + Sync,
    init: R,
    mut sink: impl FnMut(R, M) -> R,
) -> R {
    let step = &step;
    thread::scope(|s| {
        let (src_tx, mut rx) = C::bounded::<M>(cap);
        s.spawn(move || source(&src_tx));
        for (stage, &w) in workers.iter().enumerate() {
            let (tx, next_rx) = C::bounded::<M>(cap);
            for _ in 0..w {
                let rx = rx.clone();
                let tx = tx.clone();
                s.spawn(move || {
                    while let Some(m) = C::recv(&rx) {
                        if !C::send(&tx, step(stage, m)) {
                            return;
                        }
                    }
                });
            }
            rx = next_rx;
        }
        let mut acc = init;
        while let Some(m) = C::recv(&rx) {
            acc = sink(acc, m);
        }
        acc
    })
}

/// `0..n` through `f(stage, x)` at each stage, one item per message; the sum
/// of the outputs.
pub fn per_item<C: Channel>(
    n: u64,
    workers: &[usize],
    f: impl Fn(usize, u64) -> u64 + Sync,
) -> u64 {
    channel_pipeline::<C, u64, u64>(
        workers,
        CAP,
        |tx| {
            for x in 0..n {
                if !C::send(tx, x) {
                    return;
                }
            }
        },
        f,
        0,
        u64::wrapping_add,
    )
}

/// `0..n` through `f(stage, x)` at each stage, `BATCH` items per `Vec<u64>`
/// message, channels of `CAP / BATCH` messages (`CAP` items); the sum of
/// the outputs.
pub fn batched<C: Channel>(n: u64, workers: &[usize], f: impl Fn(usize, u64) -> u64 + Sync) -> u64 {
    channel_pipeline::<C, Vec<u64>, u64>(
        workers,
        CAP / BATCH,
        |tx| {
            for start in (0..n).step_by(BATCH) {
                let batch: Vec<u64> = (start..n.min(start + BATCH as u64)).collect();
                if !C::send(tx, batch) {
                    return;
                }
            }
        },
        |stage, mut batch| {
            for x in &mut batch {
                *x = f(stage, *x);
            }
            batch
        },
        0,
        |acc, batch| batch.iter().fold(acc, |a, &x| a.wrapping_add(x)),
    )
}

/// `0..n` through `f` on `workers` threads, one item per message, tagged
/// with its index; the consumer puts the outputs back in input order as
/// they arrive (a reorder buffer), and returns them in that order.
pub fn per_item_ordered<C: Channel, T: Send + Default>(
    n: usize,
    workers: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let (out, pending) = channel_pipeline::<C, (usize, T), _>(
        &[workers],
        CAP,
        |tx| {
            for i in 0..n {
                if !C::send(tx, (i, T::default())) {
                    return;
                }
            }
        },
        |_, (i, _)| (i, f(i)),
        (Vec::with_capacity(n), BTreeMap::new()),
        |(mut out, mut pending), (i, t)| {
            if i == out.len() {
                out.push(t);
                while let Some(t) = pending.remove(&out.len()) {
                    out.push(t);
                }
            } else {
                pending.insert(i, t);
            }
            (out, pending)
        },
    );
    assert!(pending.is_empty(), "every index arrives exactly once");
    out
}
