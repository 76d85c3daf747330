//! Randomised fault injection (proptest, so a failure shrinks to a minimal
//! pipeline): random pipelines of 1 to 6 stages over 0 to 10,000 items (from
//! a plain iterator, a `Stream::feed` closure or a channel), with
//! up to three of them fused into a serial segment, an `Err` or a panic
//! injected at a random item of a random stage or of the source, stages that
//! emit more or fewer items than they take, and consumers that stop early or
//! read slowly. Every run must end (watchdog),
//! deliver exactly the expected items or only genuine ones before the
//! reported fault, name the right stage and message, and leave no thread.
//!
//! `PARAPIPE_FAULT_CASES` sets the number of cases (default 500).
//! One test in this binary, so the thread count sees no other test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Boom, assert_threads_back_to, thread_count, watchdog};
use parapipe::chain::{Leaf, Then};
use parapipe::handwritten::Worker;
use parapipe::prelude::*;
use parapipe::{IntoSource, Stream};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// What a stage does with each item it takes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A map stage: `x + 1`.
    AddOne,
    /// An iterator stage emitting every item twice.
    Twice,
    /// An iterator stage dropping odd items.
    EvensOnly,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Err(u64),
    Panic(u64),
}

#[derive(Clone, Debug)]
struct StageSpec {
    kind: Kind,
    workers: usize,
    qsize: usize,
    filter_errors: bool,
    ordered: bool,
    fault: Option<Fault>,
}

/// How the items enter the pipeline.
#[derive(Clone, Copy, Debug)]
enum SourceKind {
    /// A plain iterator, read in batches.
    Iter,
    /// A `Stream::feed` closure on a thread of its own.
    Feed,
    /// A channel fed by a thread outside the pipeline (no source panic).
    Channel,
}

#[derive(Clone, Copy, Debug)]
enum Consumer {
    ReadAll,
    /// Sleeps a little every 100 items.
    Slow,
    /// Drops the results after this many items.
    DropAfter(usize),
}

#[derive(Clone, Debug)]
struct Spec {
    n: u64,
    source: SourceKind,
    source_panic: Option<u64>,
    stages: Vec<StageSpec>,
    /// Stages `start..start + len` run as one serial segment named `seg`
    /// with this many workers, ordered or not: `(start, len, workers, ordered)`.
    serial: Option<(usize, usize, usize, bool)>,
    consumer: Consumer,
    /// Profiled (in memory) and debugged: the measuring threads must not
    /// change what is delivered, and the profile must count it.
    observed: bool,
}

impl Spec {
    /// Whether every stage keeps its input order (ordered, or one worker),
    /// so the output must come in exactly the sequential order.
    fn keeps_order(&self) -> bool {
        self.stages
            .iter()
            .enumerate()
            .all(|(j, s)| match self.serial {
                Some((start, len, workers, ordered)) if (start..start + len).contains(&j) => {
                    ordered || workers == 1
                }
                _ => s.ordered || s.workers == 1,
            })
    }

    /// The name a panic in stage `j` is reported with: a serial segment's
    /// panic names the segment.
    fn panic_name(&self, j: usize) -> String {
        match self.serial {
            Some((start, len, ..)) if (start..start + len).contains(&j) => "seg".to_owned(),
            _ => format!("s{j}"),
        }
    }
}

/// The stage under test: one struct for every kind, so pipelines can be
/// built in a loop.
struct Op {
    config: StageConfig,
    kind: Kind,
    fault: Option<Fault>,
}

impl Op {
    fn check(&self, x: u64) -> Result<u64, Boom> {
        match self.fault {
            Some(Fault::Panic(v)) if v == x => panic!("injected panic at {v}"),
            Some(Fault::Err(v)) if v == x => Err(Boom(v)),
            _ => Ok(x),
        }
    }
}

impl Configurable for Op {
    fn config(&self) -> &StageConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.config
    }
}

impl Stage for Op {
    type In = u64;
    type Out = u64;
    type Error = Boom;
    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = u64> + 'a,
    ) -> impl Iterator<Item = Result<u64, Boom>> + 'a {
        input.flat_map(|x| match self.check(x) {
            Err(e) => vec![Err(e)],
            Ok(x) => match self.kind {
                Kind::AddOne => vec![Ok(x + 1)],
                Kind::Twice => vec![Ok(x), Ok(x)],
                Kind::EvensOnly if x % 2 == 0 => vec![Ok(x)],
                Kind::EvensOnly => vec![],
            },
        })
    }

    /// Map stages take the worker's map loop, the others `apply`: both paths
    /// get faults.
    fn run(&self, worker: Worker<'_, u64, u64>) -> Result<(), StageError> {
        match self.kind {
            Kind::AddOne => worker.try_map(|x| self.check(x).map(|x| x + 1)),
            _ => worker.try_transform(|input| self.apply(input)),
        }
    }
}

/// What a sequential run of the spec gives.
#[derive(Debug)]
struct Expected {
    /// The final items if no fault fired, or, if one did, every item the
    /// pipeline could have produced without it.
    items: Vec<u64>,
    /// The fault that must be reported (stage name, message), if one fires.
    failure: Option<(String, String)>,
    filtered: u64,
}

fn simulate(spec: &Spec) -> Expected {
    let mut failure = None;
    let mut filtered = 0;
    if let Some(k) = spec.source_panic.filter(|&k| k < spec.n) {
        failure = Some(("source".to_owned(), format!("injected panic at {k}")));
    }
    let mut items: Vec<u64> = (0..spec.n).collect();
    for (j, stage) in spec.stages.iter().enumerate() {
        let mut next = Vec::new();
        for x in items {
            match stage.fault {
                Some(Fault::Panic(v)) if v == x => {
                    failure.get_or_insert_with(|| {
                        (spec.panic_name(j), format!("injected panic at {v}"))
                    });
                    continue;
                }
                Some(Fault::Err(v)) if v == x => {
                    if stage.filter_errors {
                        filtered += 1;
                    } else {
                        failure.get_or_insert_with(|| (format!("s{j}"), Boom(v).to_string()));
                    }
                    continue;
                }
                _ => {}
            }
            match stage.kind {
                Kind::AddOne => next.push(x + 1),
                Kind::Twice => next.extend([x, x]),
                Kind::EvensOnly if x % 2 == 0 => next.push(x),
                Kind::EvensOnly => {}
            }
        }
        items = next;
    }
    Expected {
        items,
        failure,
        filtered,
    }
}

fn build(spec: &Spec) -> Pipeline<u64> {
    let (n, source_panic) = (spec.n, spec.source_panic);
    let items = move || {
        (0..n).inspect(move |&x| {
            if Some(x) == source_panic {
                panic!("injected panic at {x}");
            }
        })
    };
    let source = match spec.source {
        SourceKind::Iter => Pipeline::source(items()),
        SourceKind::Feed => Stream::feed(move |bucket| {
            for x in items() {
                if bucket.push(x).is_err() {
                    return;
                }
            }
        })
        .into_pipeline(),
        SourceKind::Channel => {
            let (tx, rx) = flume::bounded(64);
            // Stops at its next send once the pipeline is gone.
            std::thread::spawn(move || {
                for x in 0..n {
                    if tx.send(x).is_err() {
                        return;
                    }
                }
            });
            Pipeline::from_receiver(rx)
        }
    };
    let op = |j: usize| {
        let s = &spec.stages[j];
        let op = Op {
            config: StageConfig::new(format!("s{j}")),
            kind: s.kind,
            fault: s.fault,
        };
        op.workers(s.workers)
            .qsize(s.qsize)
            .filter_errors(s.filter_errors)
            .ordered(s.ordered)
    };
    let mut pipeline = source;
    let mut j = 0;
    while j < spec.stages.len() {
        match spec.serial {
            Some((start, len, workers, ordered)) if start == j => {
                let chain = Leaf(op(j));
                pipeline = match len {
                    1 => pipeline.then(
                        Segment::new(chain)
                            .serial()
                            .workers(workers)
                            .ordered(ordered)
                            .name("seg"),
                    ),
                    2 => pipeline.then(
                        Segment::new(Then(chain, Leaf(op(j + 1))))
                            .serial()
                            .workers(workers)
                            .ordered(ordered)
                            .name("seg"),
                    ),
                    _ => pipeline.then(
                        Segment::new(Then(Then(chain, Leaf(op(j + 1))), Leaf(op(j + 2))))
                            .serial()
                            .workers(workers)
                            .ordered(ordered)
                            .name("seg"),
                    ),
                };
                j += len;
            }
            _ => {
                pipeline = pipeline.then(op(j));
                j += 1;
            }
        }
    }
    pipeline
}

fn counts(items: &[u64]) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for &x in items {
        *m.entry(x).or_insert(0) += 1;
    }
    m
}

/// Whether `sub` is a sub-multiset of `all`.
fn is_submultiset(sub: &[u64], all: &[u64]) -> bool {
    let all = counts(all);
    counts(sub)
        .iter()
        .all(|(x, n)| all.get(x).is_some_and(|m| n <= m))
}

/// Runs one case; `Err` describes what went wrong.
fn check(spec: &Spec) -> Result<(), String> {
    let expected = simulate(spec);
    let run_spec = spec.clone();
    let (got, error, filtered) =
        watchdog(Duration::from_secs(60), &format!("{spec:?}"), move || {
            let mut pipeline = build(&run_spec);
            if run_spec.observed {
                use parapipe::debug::{Debugger, Report, Reporter};
                struct Quiet;
                impl Reporter for Quiet {
                    fn report(&mut self, _: &Report) {}
                }
                pipeline = pipeline
                    .profile_with(parapipe::profile::Profiler::new().in_memory())
                    .debug(
                        Debugger::new()
                            .every(Duration::from_millis(1))
                            .reporter(Quiet),
                    );
            }
            let mut results = pipeline.results();
            let mut got = Vec::new();
            let mut error = None;
            let limit = match run_spec.consumer {
                Consumer::DropAfter(k) => k,
                _ => usize::MAX,
            };
            while got.len() < limit {
                match results.next() {
                    Some(Ok(x)) => got.push(x),
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                    None => break,
                }
                if matches!(run_spec.consumer, Consumer::Slow) && got.len() % 100 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            let filtered = results.filtered();
            if let Some(profile) = results.profile() {
                // Ended (not dropped): the profile counts what was delivered.
                assert_eq!(profile.items(), got.len() as u64, "profiled item count");
            }
            // Drops the results here: mid-stream for DropAfter.
            (got, error, filtered)
        });
    let read_all = !matches!(spec.consumer, Consumer::DropAfter(k) if k < expected.items.len() || expected.failure.is_some());
    match (&expected.failure, error) {
        (None, Some(e)) => return Err(format!("unexpected failure: {e}")),
        (None, None) => {
            if read_all && spec.keeps_order() {
                if got != expected.items {
                    return Err(format!(
                        "order not kept: got {} items, expected {}",
                        got.len(),
                        expected.items.len()
                    ));
                }
                if filtered != expected.filtered {
                    return Err(format!(
                        "filtered {filtered}, expected {}",
                        expected.filtered
                    ));
                }
            } else if read_all {
                let (mut a, mut b) = (got.clone(), expected.items.clone());
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    return Err(format!("got {} items, expected {}", a.len(), b.len()));
                }
                if filtered != expected.filtered {
                    return Err(format!(
                        "filtered {filtered}, expected {}",
                        expected.filtered
                    ));
                }
            } else if !is_submultiset(&got, &expected.items) {
                return Err("delivered items that the pipeline does not produce".into());
            }
        }
        (Some((stage, message)), error) => {
            if !is_submultiset(&got, &expected.items) {
                return Err("delivered items that were not genuinely produced".into());
            }
            match error {
                Some(e) => {
                    if e.stage() != stage {
                        return Err(format!(
                            "failure reported in {}, expected {stage}: {e}",
                            e.stage()
                        ));
                    }
                    let text = e
                        .panic_message()
                        .map(str::to_owned)
                        .or_else(|| e.downcast_ref::<Boom>().map(|b| b.to_string()));
                    if text.as_deref() != Some(message.as_str()) {
                        return Err(format!("failure message {text:?}, expected {message:?}"));
                    }
                }
                None if read_all => {
                    return Err(format!("no failure reported, expected one in {stage}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let stage = (
        0..3u8,
        1..=4usize,
        1..=64usize,
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(k, workers, qsize, filter_errors, ordered)| StageSpec {
            kind: [Kind::AddOne, Kind::Twice, Kind::EvensOnly][k as usize],
            workers,
            qsize,
            filter_errors,
            ordered,
            fault: None,
        });
    (
        0..=10_000u64,
        proptest::collection::vec(stage, 1..=6),
        // Where the fault goes: 0-1 nowhere, 2 the source, above a stage.
        0..10usize,
        0..12_000u64,
        any::<bool>(),
        0..4u8,
        0..12_000usize,
        (
            any::<bool>(),
            0..6usize,
            1..=3usize,
            1..=3usize,
            any::<bool>(),
        ),
        (0..3u8, proptest::bool::weighted(0.25)),
    )
        .prop_map(
            |(n, mut stages, place, value, panic, consumer, k, serial, (source, observed))| {
                let source =
                    [SourceKind::Iter, SourceKind::Feed, SourceKind::Channel][source as usize];
                let serial = match serial {
                    (true, start, len, workers, ordered) if start < stages.len() => {
                        Some((start, len.min(stages.len() - start), workers, ordered))
                    }
                    _ => None,
                };
                let mut source_panic = None;
                // Aim at an item that exists most of the time.
                let value = if n > 0 && value < 10_000 {
                    value % (n + 2)
                } else {
                    value
                };
                match place {
                    0 | 1 => {}
                    // A channel's feeder is outside the pipeline: no fault there.
                    2 if matches!(source, SourceKind::Channel) => {}
                    2 => source_panic = Some(value),
                    p => {
                        let j = p % stages.len();
                        stages[j].fault = Some(if panic {
                            Fault::Panic(value)
                        } else {
                            Fault::Err(value)
                        });
                    }
                }
                let consumer = match consumer {
                    0 | 1 => Consumer::ReadAll,
                    2 => Consumer::Slow,
                    _ => Consumer::DropAfter(k),
                };
                Spec {
                    n,
                    source,
                    source_panic,
                    stages,
                    serial,
                    consumer,
                    observed,
                }
            },
        )
}

#[test]
fn random_pipelines_with_injected_faults() {
    let cases: u32 = std::env::var("PARAPIPE_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // Injected panics are expected by the hundred: keep them off stderr.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("injected panic"));
        if !injected {
            default_hook(info);
        }
    }));
    let baseline = thread_count();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&spec_strategy(), |spec| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(&spec).map_err(|why| TestCaseError::fail(format!("{why}\n  in {spec:?}")))?;
        assert_threads_back_to(baseline, &format!("{spec:?}"));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!("fault injection: {} cases passed", ran.into_inner());
}
