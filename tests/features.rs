//! Stage forms: producers, generics, borrowed and multiple bound arguments,
//! fallible stages through aliases, hand-written stages, the builder API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{Boom, LIMIT, watchdog};
use parapipe::handwritten::{Emitter, Worker};
use parapipe::prelude::*;

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A producer stage: no input iterator.
#[stage(workers = 3)]
fn numbers() -> impl Iterator<Item = u32> {
    0..10
}

/// A producer with bound arguments.
#[stage(producer, workers = 2)]
fn count_to(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

/// A fallible producer: its `Err` fails the pipeline like a stage's.
#[stage]
fn readings() -> impl Iterator<Item = Result<u32, Boom>> {
    (0..10u32).map(|i| if i == 7 { Err(Boom(7)) } else { Ok(i) })
}

#[map_stage(workers = 2)]
fn scale<T: std::ops::Mul<Output = T> + Copy + Send + Sync + 'static>(x: T, k: T) -> T {
    x * k
}

#[map_stage]
fn prefix(x: u32, p: &str, sep: char) -> String {
    format!("{p}{sep}{x}")
}

#[map_stage(workers = 2)]
fn parse(s: String) -> std::io::Result<u32> {
    s.parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[map_stage]
fn consume(_x: u32) {}

#[map_stage]
fn label(x: u32, tag: &'static str) -> String {
    format!("{tag}{x}")
}

#[stage(workers = 2)]
fn pairs(xs: impl Iterator<Item = u32>) -> Vec<(u32, u32)> {
    // A concrete `IntoIterator` return type works as well as `impl Iterator`.
    xs.map(|x| (x, x * x)).collect()
}

#[stage(workers = 2, name = "splitter")]
fn split_words(lines: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    lines.flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
}

#[test]
fn producer_stage_runs_once_per_worker() {
    let got: Vec<u32> = pipe!(numbers::new() | scale(2u32)).collect().unwrap();
    // Three workers, each producing 0..10.
    let mut expected: Vec<u32> = (0..10).flat_map(|x| [x * 2; 3]).collect();
    expected.sort();
    assert_eq!(sorted(got), expected);

    let got: Vec<u32> = pipe!(count_to::new(5).workers(1)).collect().unwrap();
    assert_eq!(sorted(got), [0, 1, 2, 3, 4]);
    // Still an ordinary function.
    assert_eq!(count_to(3).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn fallible_producer_fails_or_filters() {
    let err = watchdog(LIMIT, "producer error", || {
        pipe!(readings::new()).run().unwrap_err()
    });
    assert_eq!(err.task(), "readings-0");
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(7)));

    let mut results = pipe!(readings::new().filter_errors(true)).results();
    let got: Vec<u32> = results.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(sorted(got), [0, 1, 2, 3, 4, 5, 6, 8, 9]);
    assert_eq!(results.filtered(), 1);
}

#[test]
fn generic_stage_is_inferred() {
    let got: Vec<f64> = pipe!(vec![1.0, 2.0] | scale(0.5)).collect().unwrap();
    assert_eq!(
        sorted(got.into_iter().map(|x| (x * 10.0) as i64).collect()),
        [5, 10]
    );
    let got: Vec<i8> = pipe!(vec![1i8, 2] | scale(3)).collect().unwrap();
    assert_eq!(sorted(got), [3, 6]);
    // Turbofish works too.
    let got: Vec<u64> = pipe!(vec![1u64] | scale::<u64>(7)).collect().unwrap();
    assert_eq!(got, [7]);
}

#[test]
fn borrowed_and_multiple_bound_arguments() {
    let got: Vec<String> = pipe!(0..3u32 | prefix("n", '=')).collect().unwrap();
    assert_eq!(sorted(got), ["n=0", "n=1", "n=2"]);
    let name = String::from("item");
    let got: Vec<String> = pipe!(0..1u32 | prefix(&name, ':')).collect().unwrap();
    assert_eq!(got, ["item:0"]);
    // A `'static` reference is stored as it is.
    let got: Vec<String> = pipe!(0..1u32 | label("#")).collect().unwrap();
    assert_eq!(got, ["#0"]);
}

#[test]
fn fallible_through_a_result_alias() {
    let got: Vec<u32> = pipe!(vec!["1".to_string(), "2".to_string()] | parse)
        .collect()
        .unwrap();
    assert_eq!(sorted(got), [1, 2]);
    let err = pipe!(vec!["1".to_string(), "x".to_string()] | parse)
        .run()
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::InvalidData
    );
}

#[test]
fn unit_output_and_concrete_return_types() {
    pipe!(0..100u32 | consume).run().unwrap();
    let got: Vec<(u32, u32)> = pipe!(0..4u32 | pairs).collect().unwrap();
    assert_eq!(sorted(got), [(0, 0), (1, 1), (2, 4), (3, 9)]);
}

#[test]
fn renamed_stage_in_errors_and_config() {
    let s = split_words::new();
    assert_eq!(s.config().name(), "splitter");
    assert_eq!(s.config().workers(), 2);
    let s = s.name("words");
    assert_eq!(s.config().name(), "words");
}

#[test]
fn attribute_configuration_reaches_the_stage() {
    #[map_stage(workers = 3, qsize = 7, filter_errors)]
    fn configured(x: u32) -> Result<u32, Boom> {
        Ok(x)
    }
    #[map_stage(unbounded)]
    fn unbounded_stage(x: u32) -> u32 {
        x
    }
    let c = configured::new();
    assert_eq!(c.config().workers(), 3);
    assert_eq!(c.config().queue(), QueueSize::Bounded(7));
    assert!(c.config().filter_errors());
    assert_eq!(
        unbounded_stage::new().config().queue(),
        QueueSize::Unbounded
    );
    assert_eq!(unbounded_stage::new().config().workers(), 1);
    assert_eq!(
        unbounded_stage::new().config().queue(),
        unbounded_stage::new().qsize(3).unbounded().config().queue()
    );
}

/// A hand-written, stateful stage: counts what each worker saw and emits
/// one total per worker at the end.
struct CountPerWorker {
    config: StageConfig,
    workers_done: AtomicUsize,
}

impl Configurable for CountPerWorker {
    fn config(&self) -> &StageConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.config
    }
}

impl Stage for CountPerWorker {
    type In = u32;
    type Out = (usize, usize);
    type Error = std::convert::Infallible;
    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = u32> + 'a,
    ) -> impl Iterator<Item = Result<(usize, usize), Self::Error>> + 'a {
        let n = input.count();
        self.workers_done.fetch_add(1, SeqCst);
        std::iter::once(Ok((0, n)))
    }

    /// With threads of its own, each worker reports its index too.
    fn run(&self, worker: Worker<'_, u32, (usize, usize)>) -> Result<(), StageError> {
        let index = worker.index();
        worker.try_transform(|input| self.apply(input).map(move |r| r.map(|(_, n)| (index, n))))
    }
}

#[test]
fn hand_written_stage() {
    let stage = CountPerWorker {
        config: StageConfig::new("count_per_worker"),
        workers_done: AtomicUsize::new(0),
    }
    .workers(3);
    let got: Vec<(usize, usize)> = pipe!(0..3000u32 | { stage }).collect().unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got.iter().map(|(_, n)| n).sum::<usize>(), 3000);
    assert_eq!(sorted(got.iter().map(|(i, _)| *i).collect()), [0, 1, 2]);
}

#[test]
fn builder_api_without_the_macro() {
    let p = Pipeline::source(0..10u32)
        .then(scale::new(2u32).workers(3))
        .then(prefix::new("x", '-'));
    let got: Vec<String> = p.collect().unwrap();
    assert_eq!(got.len(), 10);
    // A pipeline is itself a source.
    let inner = Pipeline::source(0..5u32).then(scale::new(10u32));
    let got: Vec<u32> = pipe!(inner | scale(2u32)).collect().unwrap();
    assert_eq!(sorted(got), [0, 20, 40, 60, 80]);
}

#[test]
fn stages_run_in_parallel() {
    // Four workers each hold an item at the same time: with fewer real
    // workers the barrier would never open (the watchdog turns that into a
    // failure instead of a hang).
    #[map_stage(workers = 4)]
    fn meet(x: u32, barrier: std::sync::Arc<std::sync::Barrier>) -> u32 {
        barrier.wait();
        x
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let got = watchdog(LIMIT, "4 workers meet", move || {
        pipe!(0..4u32 | meet(barrier)).collect::<Vec<_>>()
    });
    assert_eq!(sorted(got.unwrap()), [0, 1, 2, 3]);
}

#[test]
fn execute_returns_the_last_item() {
    assert_eq!(pipe!(0..0u32 | scale(1u32)).execute().unwrap(), None);
    assert_eq!(pipe!(vec![5u32] | scale(2u32)).execute().unwrap(), Some(10));
    let _ = Duration::ZERO;
}

#[test]
fn handles_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Pipeline<u64>>();
    assert_send::<Results<u64>>();
    assert_send::<parapipe::Latest<u64>>();
    assert_send::<PipelineError>();
    fn assert_sync<T: Sync>() {}
    assert_sync::<PipelineError>();
    // A pipeline built on one thread and consumed on another.
    let p = pipe!(0..10u32 | scale(2u32));
    let got = std::thread::spawn(move || p.collect::<Vec<u32>>())
        .join()
        .unwrap();
    assert_eq!(
        sorted(got.unwrap()),
        (0..10).map(|x| x * 2).collect::<Vec<_>>()
    );
}

/// A hand-written producer that sends with `Emitter::emit` and returns:
/// the items still buffered when it returns reach the consumer.
struct Counter(StageConfig, u32);

impl Configurable for Counter {
    fn config(&self) -> &StageConfig {
        &self.0
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.0
    }
}

impl Producer for Counter {
    type Out = u32;
    fn produce(&self, mut emitter: Emitter<'_, u32>) -> Result<(), StageError> {
        for i in 0..self.1 {
            emitter.emit(i)?;
        }
        Ok(())
    }
}

#[test]
fn emit_loses_nothing_when_produce_returns() {
    for n in [0, 1, 7, 1000, 100_000] {
        let got: Vec<u32> = watchdog(LIMIT, "emit producer", move || {
            Pipeline::from_producer(Counter(StageConfig::new("counter"), n)).collect()
        })
        .unwrap();
        let want: Vec<u32> = (0..n).collect();
        assert!(got == want, "{n} items emitted, {} received", got.len());
    }
}
