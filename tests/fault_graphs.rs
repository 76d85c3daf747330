//! Randomised fault injection for graphs: a pipeline forked by `tee` (2 or
//! 3 branches), `split`, `split_result` or `route`, each branch with 0 to 2
//! stages of its own (1 to 3 workers, ordered or not, keyed with
//! `partition_by` over 1 to 9 keys or not), read at once (each
//! branch on a thread), one after the other on one thread, merged back
//! with `Pipeline::merge`, the first two zipped (`zip`), or with branches dropped (before starting, or
//! after a few items); an `Err` or a panic injected at a random item of the
//! upstream stage or of a branch's stage; small and default branch buffers.
//!
//! What each consumer may get: every item its branch should see (exactly,
//! as a multiset; in order where the branch's items keep their order), or a
//! failure of a stage that was given one, or of the fork (a branch nobody
//! read outgrew its buffer) where that was possible. A consumer that reads
//! to its end must fail if the upstream's fault was reached; the branch
//! whose own stage faulted must fail. Every run must end (watchdog) and
//! leave no thread.
//!
//! Deterministic: case `i` of a run is drawn from seed `i`, printed on
//! failure. `PARAPIPE_FAULT_CASES` sets the number of cases (default 300),
//! `PARAPIPE_FAULT_SEED` runs one case. One test in this binary, so the
//! thread count sees no other test.

mod common;

use std::thread;
use std::time::Duration;

use common::{assert_threads_back_to, thread_count, watchdog};
use parapipe::prelude::*;

/// splitmix64: small, deterministic, good enough to draw cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    Err(u64),
    Panic(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ForkKind {
    Tee(usize),
    Split,
    SplitResult,
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// Each branch on a thread of its own.
    AtOnce,
    /// On one thread, one branch after the other.
    InTurn,
    /// Merged back into one pipeline.
    Merged,
    /// On one thread: one item of the last branch, then the others in
    /// turn, then the rest of the last (the fork may wait for the last
    /// branch while its reader waits for another: an `Unread` error).
    PeekLastFirst,
    /// The first two branches zipped (`zip`: pairs by position), the rest
    /// dropped before they start.
    Zipped,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Consumer {
    All,
    /// Dropped before it starts.
    Dropped,
    /// Dropped after this many items.
    DropAfter(usize),
}

#[derive(Debug, Clone)]
struct Branch {
    /// Each stage: workers, ordered, keyed by `x % keys`.
    stages: Vec<(usize, bool, Option<u64>)>,
    /// A fault in its first stage, at an item value (after the upstream).
    fault: Fault,
    consumer: Consumer,
}

#[derive(Debug, Clone)]
struct Spec {
    items: u64,
    upstream_workers: usize,
    upstream_ordered: bool,
    upstream_fault: Fault,
    kind: ForkKind,
    branches: Vec<Branch>,
    reading: Reading,
    buffer: Option<usize>,
}

fn fault(rng: &mut Rng, items: u64) -> Fault {
    match rng.below(6) {
        0 => Fault::Err(rng.below(items.max(1) * 5 / 4 + 1)),
        1 => Fault::Panic(rng.below(items.max(1) * 5 / 4 + 1)),
        _ => Fault::None,
    }
}

fn draw(seed: u64) -> Spec {
    let mut rng = Rng(seed);
    let items = match rng.below(4) {
        0 => rng.below(10),
        1 => rng.below(1_000),
        _ => rng.below(20_000),
    };
    let kind = match rng.below(5) {
        0 => ForkKind::Tee(2),
        1 => ForkKind::Tee(3),
        2 => ForkKind::Split,
        3 => ForkKind::SplitResult,
        _ => ForkKind::Route,
    };
    let n = match kind {
        ForkKind::Tee(n) => n,
        ForkKind::Route => 3,
        _ => 2,
    };
    let reading = match rng.below(8) {
        0 | 1 => Reading::AtOnce,
        2 | 3 => Reading::InTurn,
        4 | 5 => Reading::Merged,
        6 => Reading::PeekLastFirst,
        _ => Reading::Zipped,
    };
    let branches = (0..n)
        .map(|_| Branch {
            stages: (0..rng.below(3))
                .map(|_| {
                    let workers = 1 + rng.below(3) as usize;
                    match rng.below(4) {
                        0 => (workers, rng.chance(2), Some(1 + rng.below(9))),
                        _ => (workers, rng.chance(2), None),
                    }
                })
                .collect(),
            fault: if rng.chance(3) {
                fault(&mut rng, items)
            } else {
                Fault::None
            },
            consumer: match (reading, rng.below(6)) {
                (Reading::Merged | Reading::PeekLastFirst | Reading::Zipped, _) | (_, 0..=3) => {
                    Consumer::All
                }
                (_, 4) => Consumer::Dropped,
                _ => Consumer::DropAfter(rng.below(50) as usize),
            },
        })
        .collect();
    Spec {
        items,
        upstream_workers: 1 + rng.below(3) as usize,
        upstream_ordered: rng.chance(2),
        upstream_fault: if rng.chance(3) {
            fault(&mut rng, items)
        } else {
            Fault::None
        },
        kind,
        branches,
        reading,
        buffer: rng.chance(3).then(|| 1 + rng.below(3_000) as usize),
    }
}

#[derive(Debug)]
struct Injected {
    at: u64,
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected at {}", self.at)
    }
}

impl std::error::Error for Injected {}

#[map_stage]
fn step(x: u64, fault: Fault) -> Result<u64, Injected> {
    match fault {
        Fault::Err(at) if at == x => Err(Injected { at }),
        Fault::Panic(at) if at == x => panic!("injected panic at {at}"),
        _ => Ok(x),
    }
}

/// Not a multiple of 3: an `Err` item of `classify`.
#[derive(Debug)]
struct NotMultiple(u64);

impl std::fmt::Display for NotMultiple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a multiple of 3", self.0)
    }
}

impl std::error::Error for NotMultiple {}

#[map_stage]
fn classify(x: u64) -> Result<u64, NotMultiple> {
    if x.is_multiple_of(3) {
        Ok(x)
    } else {
        Err(NotMultiple(x))
    }
}

#[map_stage]
fn unwrap_err(e: NotMultiple) -> u64 {
    e.0
}

/// Which branch an item goes to, for split and route (`None`: all, a tee).
fn branch_of(kind: ForkKind, x: u64) -> Option<usize> {
    match kind {
        ForkKind::Tee(_) => None,
        ForkKind::Split | ForkKind::SplitResult => Some(usize::from(!x.is_multiple_of(3))),
        ForkKind::Route => Some((x % 3) as usize),
    }
}

/// The stage names a failure may come from, per branch.
const UPSTREAM: &str = "upstream";

fn branch_stage(b: usize) -> String {
    format!("branch{b}")
}

/// The branches of the spec's graph, each with its stages.
fn build(spec: &Spec) -> Vec<Pipeline<u64>> {
    let up = step::new(spec.upstream_fault)
        .workers(spec.upstream_workers)
        .ordered(spec.upstream_ordered)
        .name(UPSTREAM);
    let mut source = pipe!(0..spec.items | { up });
    if let Some(buffer) = spec.buffer {
        source = source.branch_buffer(buffer);
    }
    let kind = spec.kind;
    let forked: Vec<Pipeline<u64>> = match kind {
        ForkKind::Tee(2) => source.tee::<2>().into(),
        ForkKind::Tee(_) => source.tee::<3>().into(),
        ForkKind::Split => {
            let (a, b) = source.split(move |x| branch_of(kind, *x) == Some(0));
            vec![a, b]
        }
        ForkKind::Route => source
            .route::<3>(move |x| branch_of(kind, *x).unwrap_or(0))
            .into(),
        ForkKind::SplitResult => {
            // `classify` cannot fail the run: its `Err`s are items, the
            // `Err` branch's.
            let (ok, err) = pipe!(source | classify.keep_errors()).split_result();
            vec![ok, pipe!(err | unwrap_err)]
        }
    };
    forked
        .into_iter()
        .zip(&spec.branches)
        .enumerate()
        .map(|(b, (pipeline, branch))| {
            let mut pipeline = pipeline;
            for (i, &(workers, ordered, keys)) in branch.stages.iter().enumerate() {
                let fault = if i == 0 { branch.fault } else { Fault::None };
                let stage = step::new(fault)
                    .workers(workers)
                    .ordered(ordered)
                    .name(branch_stage(b));
                pipeline = match keys {
                    Some(keys) => pipe!(pipeline | { stage.partition_by(move |x: &u64| x % keys) }),
                    None => pipe!(pipeline | { stage }),
                };
            }
            pipeline
        })
        .collect()
}

/// What one consumer got.
#[derive(Debug)]
enum Got {
    Items(Vec<u64>),
    Pairs(Vec<(u64, u64)>),
    Failed { stage: String, message: String },
    Dropped,
}

fn consume(p: Pipeline<u64>, consumer: Consumer) -> Got {
    match consumer {
        Consumer::All => match p.collect::<Vec<u64>>() {
            Ok(items) => Got::Items(items),
            Err(e) => Got::Failed {
                stage: e.stage().to_owned(),
                message: e.to_string(),
            },
        },
        Consumer::Dropped => {
            drop(p);
            Got::Dropped
        }
        Consumer::DropAfter(k) => {
            let mut results = p.results();
            for _ in 0..k {
                if results.next().is_none() {
                    break;
                }
            }
            Got::Dropped
        }
    }
}

fn run(spec: &Spec) -> Vec<Got> {
    let branches = build(spec);
    let consumers: Vec<Consumer> = spec.branches.iter().map(|b| b.consumer).collect();
    match spec.reading {
        Reading::InTurn => branches
            .into_iter()
            .zip(consumers)
            .map(|(p, c)| consume(p, c))
            .collect(),
        Reading::AtOnce => {
            let handles: Vec<_> = branches
                .into_iter()
                .zip(consumers)
                .map(|(p, c)| thread::spawn(move || consume(p, c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        }
        Reading::Merged => vec![consume(Pipeline::merge(branches), Consumer::All)],
        Reading::Zipped => {
            let mut branches = branches.into_iter();
            let (a, b) = (branches.next().unwrap(), branches.next().unwrap());
            drop(branches);
            vec![match a.zip(b).collect::<Vec<(u64, u64)>>() {
                Ok(pairs) => Got::Pairs(pairs),
                Err(e) => Got::Failed {
                    stage: e.stage().to_owned(),
                    message: e.to_string(),
                },
            }]
        }
        Reading::PeekLastFirst => {
            let mut branches = branches;
            let last = branches.pop().expect("a fork has branches");
            let mut last = last.results();
            let first = last.next();
            let mut got: Vec<Got> = branches
                .into_iter()
                .map(|p| consume(p, Consumer::All))
                .collect();
            let rest: Result<Vec<u64>, PipelineError> = first.into_iter().chain(last).collect();
            got.push(match rest {
                Ok(items) => Got::Items(items),
                Err(e) => Got::Failed {
                    stage: e.stage().to_owned(),
                    message: e.to_string(),
                },
            });
            got
        }
    }
}

/// Checks what the consumers got against what the spec allows.
fn check(spec: &Spec, got: &[Got]) -> Result<(), String> {
    let fault_at = |f: Fault| match f {
        Fault::Err(at) | Fault::Panic(at) => Some(at),
        Fault::None => None,
    };
    let upstream_hit = fault_at(spec.upstream_fault).filter(|at| *at < spec.items);
    // What each branch should see, if nothing fails.
    let mut want: Vec<Vec<u64>> = vec![Vec::new(); spec.branches.len()];
    for x in 0..spec.items {
        match branch_of(spec.kind, x) {
            None => want.iter_mut().for_each(|w| w.push(x)),
            Some(b) => want[b].push(x),
        }
    }
    let branch_hit: Vec<bool> = (spec.branches.iter().zip(&want))
        .map(|(b, w)| !b.stages.is_empty() && fault_at(b.fault).is_some_and(|at| w.contains(&at)))
        .collect();
    // A fork's own failure is possible when a branch may go unread while
    // another is read: read in turn, or a branch kept and dropped later.
    let fork = match spec.kind {
        ForkKind::Tee(_) => "tee",
        ForkKind::Split => "split",
        ForkKind::SplitResult => "split_result",
        ForkKind::Route => "route",
    };
    let mut allowed: Vec<String> = vec![UPSTREAM.to_owned(), fork.to_owned()];
    for (b, branch) in spec.branches.iter().enumerate() {
        if branch.fault != Fault::None && !branch.stages.is_empty() {
            allowed.push(branch_stage(b));
        }
    }
    if spec.reading == Reading::Zipped {
        let hit = upstream_hit.is_some() || branch_hit[..2].iter().any(|h| *h);
        return check_zip(spec, &got[0], &want, hit);
    }
    let merged_want: Vec<u64> = want.iter().flatten().copied().collect();
    let wants: Vec<(&Vec<u64>, bool)> = match spec.reading {
        Reading::Merged => vec![(&merged_want, branch_hit.iter().any(|h| *h))],
        _ => want.iter().zip(branch_hit.iter().copied()).collect(),
    };
    for (i, (got, (want, own_hit))) in got.iter().zip(wants).enumerate() {
        match got {
            Got::Dropped => {}
            Got::Pairs(_) => return Err(format!("consumer {i}: pairs, not zipped")),
            Got::Items(items) => {
                if upstream_hit.is_some() {
                    return Err(format!(
                        "consumer {i} ended well, past the upstream's fault"
                    ));
                }
                if own_hit {
                    return Err(format!(
                        "consumer {i} ended well, past its own stage's fault"
                    ));
                }
                let mut sorted = items.clone();
                sorted.sort_unstable();
                let mut want = want.clone();
                want.sort_unstable();
                if sorted != want {
                    return Err(format!(
                        "consumer {i}: {} items, {} wanted",
                        items.len(),
                        want.len()
                    ));
                }
                // One worker, no stage in between: the fork keeps the order.
                let in_order = spec.reading != Reading::Merged
                    && (spec.upstream_workers == 1 || spec.upstream_ordered)
                    && spec.branches[i].stages.iter().all(|&(w, o, _)| w == 1 || o);
                if in_order && items != &want {
                    return Err(format!("consumer {i}: out of order"));
                }
            }
            Got::Failed { stage, message } => {
                if !allowed.contains(stage) {
                    return Err(format!("consumer {i} failed in {stage:?}: {message}"));
                }
                let unread = stage == fork && message.contains("read every branch at once");
                let possible_unread =
                    matches!(spec.reading, Reading::InTurn | Reading::PeekLastFirst)
                        || spec.branches.iter().any(|b| b.consumer != Consumer::All);
                if stage == fork && !(unread && possible_unread) {
                    return Err(format!("consumer {i}: unexpected fork failure: {message}"));
                }
            }
        }
    }
    Ok(())
}

/// Checks a zip of the first two branches: the pairs of what each branch
/// should see, if both see as many items and nothing failed; else a
/// failure, of the zip (`Uneven`) only where the counts differ or a fault
/// cut a branch short.
fn check_zip(spec: &Spec, got: &Got, want: &[Vec<u64>], hit: bool) -> Result<(), String> {
    let even = want[0].len() == want[1].len();
    let keeps_order = |b: usize| spec.branches[b].stages.iter().all(|&(w, o, _)| w == 1 || o);
    match got {
        Got::Pairs(pairs) => {
            if hit {
                return Err("the zip ended well, past a fault".to_owned());
            }
            if !even {
                return Err(format!(
                    "the zip of {} and {} items ended well",
                    want[0].len(),
                    want[1].len()
                ));
            }
            let (mut left, mut right): (Vec<u64>, Vec<u64>) = pairs.iter().copied().unzip();
            if keeps_order(0) && keeps_order(1) {
                // Each branch in the order the fork dealt: a tee's two
                // branches pair each item with itself.
                if matches!(spec.kind, ForkKind::Tee(_)) && left != right {
                    return Err("a tee's branches zipped into unequal pairs".to_owned());
                }
                let upstream_order = spec.upstream_workers == 1 || spec.upstream_ordered;
                if upstream_order && (left != want[0] || right != want[1]) {
                    return Err("the zip's pairs are not the branches' items in order".to_owned());
                }
            }
            left.sort_unstable();
            right.sort_unstable();
            let mut sorted_want = want[..2].to_vec();
            sorted_want.iter_mut().for_each(|w| w.sort_unstable());
            if left != sorted_want[0] || right != sorted_want[1] {
                return Err("the zip's pairs hold other items than its branches'".to_owned());
            }
        }
        Got::Failed { stage, message } => {
            let mut allowed = vec![UPSTREAM.to_owned()];
            for b in 0..2 {
                if spec.branches[b].fault != Fault::None && !spec.branches[b].stages.is_empty() {
                    allowed.push(branch_stage(b));
                }
            }
            if !even || hit {
                allowed.push("zip".to_owned());
            }
            if !allowed.contains(stage) {
                return Err(format!("the zip failed in {stage:?}: {message}"));
            }
            if stage == "zip" && !message.contains("pairs items by position") {
                return Err(format!("the zip failed, not as uneven: {message}"));
            }
            if !hit && stage != "zip" {
                return Err(format!(
                    "the zip failed in {stage:?} with no fault: {message}"
                ));
            }
        }
        Got::Items(_) | Got::Dropped => return Err("zipped, but no pairs".to_owned()),
    }
    Ok(())
}

#[test]
fn random_graphs() {
    let cases: u64 = std::env::var("PARAPIPE_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("PARAPIPE_FAULT_SEED") {
        Ok(seed) => vec![seed.parse().expect("PARAPIPE_FAULT_SEED is a number")],
        Err(_) => (0..cases).collect(),
    };
    let before = thread_count();
    for seed in seeds {
        let spec = draw(seed);
        let what = format!("graph case {seed}: {spec:?}");
        let run_spec = spec.clone();
        let got = watchdog(Duration::from_secs(120), &what, move || run(&run_spec));
        if let Err(why) = check(&spec, &got) {
            panic!("{what}\n{why}\ngot: {got:?}");
        }
        assert_threads_back_to(before, &what);
    }
}
