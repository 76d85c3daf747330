//! Issue 18: keyed partitioning, fan-out and fan-in.
//!
//! - `keyed_wordcount`: the words of the Debian package index (apt's lists,
//!   decompressed with `apt-helper`, about 50 MB: real text, not generated)
//!   counted per word. `sequential` is a plain loop into one map;
//!   `rayon_fold_reduce` is `par_lines` with `fold` into a map per task and
//!   `reduce` merging them; `parapipe_keyed_k` splits lines into words on
//!   the pipeline's workers and counts them on `k` workers with
//!   `partition_by(word)` (the maps have disjoint keys: no merge);
//!   `parapipe_one_counter` counts on a single worker. The text is split
//!   into 64 KiB blocks of whole lines, one block per item.
//! - `fanout`: the per-item cost of `tee` (both branches read at once),
//!   `split`, `merge` and a tee's branches `zip`ped back, beside one plain
//!   pipeline over the same items.
//! - `keyed_order`: what order across keys costs: a map stage on 2
//!   workers, unkeyed or keyed, unordered or `ordered`.
//!
//! Run with `cargo bench --bench graphs`.

#[allow(dead_code, reason = "each bench uses part of the shared module")]
mod common;

#[allow(dead_code, reason = "the bench uses the example's index loader")]
#[path = "../examples/packages.rs"]
mod packages;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use parapipe::prelude::*;
use rayon::prelude::*;

type Counts = HashMap<String, u64>;

/// The text in blocks of whole lines of about `size` bytes.
fn blocks(text: &str, size: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = match rest.get(size..).and_then(|tail| tail.find('\n')) {
            Some(at) => size + at + 1,
            None => rest.len(),
        };
        let (block, tail) = rest.split_at(cut);
        out.push(block.to_owned());
        rest = tail;
    }
    out
}

#[stage(workers = 2)]
fn split_words(blocks: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    blocks.flat_map(|block| {
        block
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
}

#[stage]
fn count_words(words: impl Iterator<Item = String>) -> impl Iterator<Item = Counts> {
    let mut counts = Counts::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    std::iter::once(counts)
}

fn total(maps: &[Counts]) -> (usize, u64) {
    let words = maps.iter().map(HashMap::len).sum();
    let count = maps.iter().flat_map(HashMap::values).sum();
    (words, count)
}

fn keyed_wordcount(c: &mut Criterion) {
    let text = match packages::package_index() {
        Ok(text) => text,
        Err(why) => {
            eprintln!("SKIPPED keyed_wordcount: no package index: {why}");
            return;
        }
    };
    let blocks = blocks(&text, 64 << 10);
    let mut want = Counts::new();
    for word in text.split_whitespace() {
        *want.entry(word.to_owned()).or_default() += 1;
    }
    let want = total(&[want]);
    let pool = common::rayon_pool();
    let mut group = c.benchmark_group("keyed_wordcount");
    common::configure(&mut group, Duration::from_secs(10));
    let mb = text.len() >> 20;
    let id = |name: &str| BenchmarkId::new(name, format!("{mb}MB"));
    group.bench_function(id("sequential"), |bench| {
        bench.iter(|| {
            let mut counts = Counts::new();
            for word in black_box(&text).split_whitespace() {
                match counts.get_mut(word) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(word.to_owned(), 1);
                    }
                }
            }
            assert_eq!(total(&[counts]), want);
        })
    });
    group.bench_function(id("rayon_fold_reduce"), |bench| {
        bench.iter(|| {
            let counts = pool.install(|| {
                black_box(&text)
                    .par_lines()
                    .fold(Counts::new, |mut counts, line| {
                        for word in line.split_whitespace() {
                            match counts.get_mut(word) {
                                Some(n) => *n += 1,
                                None => {
                                    counts.insert(word.to_owned(), 1);
                                }
                            }
                        }
                        counts
                    })
                    .reduce(Counts::new, |mut a, b| {
                        for (word, n) in b {
                            *a.entry(word).or_default() += n;
                        }
                        a
                    })
            });
            assert_eq!(total(&[counts]), want);
        })
    });
    group.bench_function(id("parapipe_one_counter"), |bench| {
        bench.iter(|| {
            let maps: Vec<Counts> = pipe!(blocks.clone() | split_words | count_words)
                .collect()
                .unwrap();
            assert_eq!(total(&maps), want);
        })
    });
    for k in [1, 2, 4] {
        group.bench_function(id(&format!("parapipe_keyed_{k}")), |bench| {
            bench.iter(|| {
                let counter = count_words::new()
                    .workers(k)
                    .partition_by(|w: &String| w.clone());
                let maps: Vec<Counts> = pipe!(blocks.clone() | split_words | { counter })
                    .collect()
                    .unwrap();
                assert_eq!(total(&maps), want);
            })
        });
    }
    group.finish();
}

const ITEMS: u64 = 1_000_000;

fn fanout(c: &mut Criterion) {
    let want: u64 = (0..ITEMS).sum();
    let mut group = c.benchmark_group("fanout");
    common::configure(&mut group, Duration::from_secs(3));
    let id = |name: &str| BenchmarkId::new(name, ITEMS);
    group.bench_function(id("plain"), |bench| {
        bench.iter(|| {
            let sum: u64 = pipe!(0..black_box(ITEMS))
                .results()
                .map(Result::unwrap)
                .sum();
            assert_eq!(sum, want);
        })
    });
    group.bench_function(id("tee_2"), |bench| {
        bench.iter(|| {
            let [a, b] = pipe!(0..black_box(ITEMS)).tee();
            let b = std::thread::spawn(move || b.results().map(Result::unwrap).sum::<u64>());
            let a: u64 = a.results().map(Result::unwrap).sum();
            assert_eq!((a, b.join().unwrap()), (want, want));
        })
    });
    group.bench_function(id("split_2"), |bench| {
        bench.iter(|| {
            let (a, b) = pipe!(0..black_box(ITEMS)).split(|x| x % 2 == 0);
            let b = std::thread::spawn(move || b.results().map(Result::unwrap).sum::<u64>());
            let a: u64 = a.results().map(Result::unwrap).sum();
            assert_eq!(a + b.join().unwrap(), want);
        })
    });
    group.bench_function(id("zip_2"), |bench| {
        bench.iter(|| {
            let [a, b] = pipe!(0..black_box(ITEMS)).tee();
            let sum: u64 = a.zip(b).results().map(|pair| pair.unwrap().1).sum();
            assert_eq!(sum, want);
        })
    });
    group.bench_function(id("merge_2"), |bench| {
        bench.iter(|| {
            let half = black_box(ITEMS) / 2;
            let merged = Pipeline::merge([pipe!(0..half), pipe!(half..ITEMS)]);
            let sum: u64 = merged.results().map(Result::unwrap).sum();
            assert_eq!(sum, want);
        })
    });
    group.finish();
}

#[map_stage]
fn pass(x: u64) -> u64 {
    x
}

/// What order across keys costs: 1,000,000 integers through a map stage
/// on 2 workers, unkeyed or keyed by `x % 1024`, unordered or `ordered`.
fn keyed_order(c: &mut Criterion) {
    let want: u64 = (0..ITEMS).sum();
    let mut group = c.benchmark_group("keyed_order");
    common::configure(&mut group, Duration::from_secs(3));
    let id = |name: &str| BenchmarkId::new(name, ITEMS);
    let sum = |p: Pipeline<u64>| p.results().map(Result::unwrap).sum::<u64>();
    for (name, keyed, ordered) in [
        ("plain", false, false),
        ("ordered", false, true),
        ("keyed", true, false),
        ("keyed_ordered", true, true),
    ] {
        group.bench_function(id(name), |bench| {
            bench.iter(|| {
                let stage = pass::new().workers(2).ordered(ordered);
                let p = match keyed {
                    true => pipe!(0..black_box(ITEMS) | { stage.partition_by(|x: &u64| x % 1024) }),
                    false => pipe!(0..black_box(ITEMS) | { stage }),
                };
                assert_eq!(sum(p), want);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, keyed_wordcount, fanout, keyed_order);
criterion_main!(benches);
