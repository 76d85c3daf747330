//! The profiler and the live debugger: keys, measures, the SQLite store
//! (reload, concurrent runs, every failure), reporters.
// The SQLite store is the default feature `store`; without it, see
// tests/no_store.rs.
#![cfg(feature = "store")]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{LIMIT, watchdog};
use parapipe::debug::{Debugger, Report, Reporter, TableReporter};
use parapipe::prelude::*;
use parapipe::profile::{self, MAIN_PIPELINE_NAME, Outcome, Profiler};

/// A fresh folder for one test's database.
fn folder(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parapipe-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[map_stage]
fn nap_a(x: u64) -> u64 {
    thread::sleep(Duration::from_millis(10));
    x
}

#[map_stage]
fn nap_b(x: u64) -> u64 {
    thread::sleep(Duration::from_millis(10));
    x
}

#[stage]
fn nap_c(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.inspect(|_| thread::sleep(Duration::from_millis(10)))
}

#[map_stage(workers = 2)]
fn double(x: u64) -> u64 {
    x * 2
}

#[map_stage(workers = 2)]
fn fail_at(x: u64, at: u64) -> Result<u64, std::io::Error> {
    if x == at {
        Err(std::io::Error::other(format!("bad item {x}")))
    } else {
        Ok(x)
    }
}

#[test]
fn sleeping_stages_have_the_expected_latencies_and_keys() {
    let dir = folder("sleep");
    let db = dir.clone();
    let (items, profile) = watchdog(LIMIT, "sleep", move || {
        let mut results = pipe!(0..30u64 | nap_a | nap_b | nap_c)
            .profile_with(Profiler::new().folder(&db))
            .results();
        let items: Vec<u64> = results.by_ref().collect::<Result<_, _>>().unwrap();
        (items, results.profile().cloned().expect("profiled"))
    });
    assert_eq!(items, (0..30).collect::<Vec<_>>());
    let latency = profile.latency();
    let keys: Vec<&str> = latency.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "MainPipeline",
            "MainPipeline__nap_a",
            "MainPipeline__nap_b",
            "MainPipeline__nap_c",
            // The source's row (a slow source shows), in key order here.
            "MainPipeline__source",
        ]
    );
    for stage in [
        "MainPipeline__nap_a",
        "MainPipeline__nap_b",
        "MainPipeline__nap_c",
    ] {
        let l = latency[stage];
        assert!((0.009..0.03).contains(&l), "{stage}: {l} s");
        let s = profile.stage(stage).unwrap();
        assert_eq!((s.items_in, s.items_out), (30, 30), "{stage}");
        assert!(
            s.latency.median >= 0.009 && s.latency.p99 >= s.latency.median,
            "{stage}: {:?}",
            s.latency
        );
        // One worker, 10 ms an item: about 100 items a second.
        let t = profile.throughput()[stage];
        assert!((40.0..110.0).contains(&t), "{stage}: {t} items/s");
    }
    assert_eq!(profile.stage("MainPipeline__nap_a").unwrap().kind, "map");
    assert_eq!(profile.stage("MainPipeline__nap_c").unwrap().kind, "iter");
    // Three stages of 10 ms in a row: an item needs about 30 ms end to end.
    let main = latency[MAIN_PIPELINE_NAME];
    assert!((0.028..0.1).contains(&main), "MainPipeline: {main} s");
    assert_eq!(profile.items(), 30);
    assert_eq!(*profile.outcome(), Outcome::Completed);
    assert!(
        profile.store_error().is_none(),
        "{:?}",
        profile.store_error()
    );

    // The run survives a reload.
    let id = profile.run_id().expect("stored");
    let again = profile::load(dir.join(profile::DATABASE_FILE), id).unwrap();
    assert_eq!(again.latency(), profile.latency());
    assert_eq!(again.throughput(), profile.throughput());
    for (a, b) in again.stages().iter().zip(profile.stages()) {
        assert_eq!(
            (a.items_in, a.items_out, &a.kind),
            (b.items_in, b.items_out, &b.kind)
        );
        assert_eq!(a.latency, b.latency);
        assert_eq!(a.items_in_by_worker, b.items_in_by_worker, "{}", a.name);
    }
    assert_eq!(*again.outcome(), Outcome::Completed);
    let runs = profile::runs(again.database()).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].id, runs[0].items), (id, 30));
    // Samples over time, one row per stage each time, ending at the totals.
    let samples = profile::samples(again.database(), id).unwrap();
    let last_a = samples
        .iter()
        .rfind(|s| s.stage == "MainPipeline__nap_a")
        .unwrap();
    assert_eq!(last_a.items_out, 30);
    assert!(samples.len() >= 3 * 3, "{} samples", samples.len());
    std::fs::remove_dir_all(&dir).ok();
}

/// An item of a keyed stage: its key and its number.
type Keyed = (u32, u64);

/// A keyed stage's worker: emits how many items it took, once, at the end.
#[stage]
fn count_taken(items: impl Iterator<Item = Keyed>) -> impl Iterator<Item = u64> {
    std::iter::once(items.count() as u64)
}

#[test]
fn a_hot_key_shows_in_the_stored_per_worker_counts() {
    let dir = folder("hot-key");
    let db = dir.clone();
    // Nine items in ten have key 0: its worker takes at least 9 000.
    let items: Vec<Keyed> = (0..10_000u64)
        .map(|i| match i % 10 {
            9 => ((i % 97) as u32 + 1, i),
            _ => (0, i),
        })
        .collect();
    let (mut taken, profile) = watchdog(LIMIT, "hot key", move || {
        let mut results = pipe!(items | count_taken.workers(4).partition_by(|item: &Keyed| item.0))
            .profile_with(Profiler::new().folder(&db))
            .results();
        let taken: Vec<u64> = results.by_ref().map(Result::unwrap).collect();
        (taken, results.profile().cloned().expect("profiled"))
    });
    assert!(
        profile.store_error().is_none(),
        "{:?}",
        profile.store_error()
    );
    let again = profile::load(
        dir.join(profile::DATABASE_FILE),
        profile.run_id().expect("stored"),
    )
    .unwrap();
    let row = again
        .stage("MainPipeline__count_taken")
        .expect("the stage's row");
    let mut by_worker = row.items_in_by_worker.clone();
    assert_eq!(by_worker.len(), 4, "{by_worker:?}");
    assert_eq!(by_worker.iter().sum::<u64>(), 10_000);
    assert!(
        *by_worker.iter().max().unwrap() >= 9_000,
        "no hot worker in {by_worker:?}"
    );
    // What each worker counted itself is what the store says it took.
    taken.sort_unstable();
    by_worker.sort_unstable();
    assert_eq!(taken, by_worker);
    // Every row's counts come back as the run returned them.
    assert_eq!(again.stages().len(), profile.stages().len());
    for (a, b) in again.stages().iter().zip(profile.stages()) {
        assert_eq!(a.items_in_by_worker, b.items_in_by_worker, "{}", a.name);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unprofiled_runs_have_no_profile() {
    let mut results = pipe!(0..10u64 | double).results();
    assert_eq!(results.by_ref().count(), 10);
    assert!(results.profile().is_none());
}

#[test]
fn two_runs_at_once_keep_all_their_rows() {
    let dir = folder("concurrent");
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let dir = dir.clone();
            thread::spawn(move || {
                watchdog(LIMIT, "concurrent", move || {
                    let profiler = Profiler::new()
                        .folder(&dir)
                        .name(format!("run{i}"))
                        .sample_every(Duration::from_millis(1));
                    let mut results = pipe!(0..20_000u64 | double)
                        .profile_with(profiler)
                        .results();
                    let sum: u64 = results.by_ref().map(Result::unwrap).sum();
                    assert_eq!(sum, 20_000 * 19_999);
                    results.profile().cloned().unwrap()
                })
            })
        })
        .collect();
    let profiles: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    for p in &profiles {
        assert!(p.store_error().is_none(), "{:?}", p.store_error());
    }
    let db = dir.join(profile::DATABASE_FILE);
    let stored = profile::runs(&db).unwrap();
    assert_eq!(stored.len(), 2);
    for p in &profiles {
        assert!(p.store_error().is_none(), "{:?}", p.store_error());
        let again = profile::load(&db, p.run_id().unwrap()).unwrap();
        assert_eq!(again.pipeline(), p.pipeline());
        assert_eq!(again.stages().len(), 3, "the pipeline, the source, double");
        assert_eq!(
            again.stage("MainPipeline__double").unwrap().items_out,
            20_000
        );
        let samples = profile::samples(&db, p.run_id().unwrap()).unwrap();
        assert!(
            samples.iter().any(|s| s.items_out == 20_000),
            "final sample kept"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn failed_and_cancelled_runs_are_stored_with_their_outcome() {
    let dir = folder("outcomes");
    let db_dir = dir.clone();
    watchdog(LIMIT, "outcomes", move || {
        let mut results = pipe!(0..1000u64 | fail_at(500))
            .profile_with(Profiler::new().folder(&db_dir))
            .results();
        let err = results.by_ref().find_map(Result::err).unwrap();
        assert!(err.to_string().contains("bad item 500"), "{err}");
        let profile = results.profile().unwrap();
        assert!(matches!(profile.outcome(), Outcome::Failed(why) if why.contains("bad item 500")));

        let mut results = pipe!(0..1_000_000u64 | double)
            .profile_with(Profiler::new().folder(&db_dir))
            .results();
        assert!(results.next().unwrap().is_ok());
        drop(results);
    });
    let runs = profile::runs(dir.join(profile::DATABASE_FILE)).unwrap();
    let outcomes: Vec<_> = runs.iter().map(|r| r.outcome.clone()).collect();
    assert!(
        matches!(&outcomes[0], Outcome::Failed(why) if why.contains("bad item 500")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Outcome::Cancelled);
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs a profiled pipeline whose store will fail: the pipeline's own
/// results must be whole, and the profile must say what failed.
fn run_with_failing_store(profiler: Profiler) -> parapipe::profile::Profile {
    watchdog(LIMIT, "failing store", move || {
        let mut results = pipe!(0..5000u64 | double).profile_with(profiler).results();
        let sum: u64 = results.by_ref().map(Result::unwrap).sum();
        assert_eq!(sum, 5000 * 4999);
        let profile = results.profile().cloned().unwrap();
        assert_eq!(
            profile.stage("MainPipeline__double").unwrap().items_out,
            5000
        );
        assert!(profile.run_id().is_none());
        profile
    })
}

#[test]
fn a_read_only_folder_is_a_store_error() {
    // /proc refuses new files even to root, unlike a chmod-ed folder.
    let profile = run_with_failing_store(Profiler::new().folder("/proc/self/parapipe"));
    let error = profile.store_error().expect("store error");
    assert!(error.to_string().contains("/proc/self/parapipe"), "{error}");
}

#[test]
fn a_file_that_is_not_a_database_is_a_store_error() {
    let dir = folder("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(profile::DATABASE_FILE), vec![0x5a; 8192]).unwrap();
    let profile = run_with_failing_store(Profiler::new().folder(&dir));
    let error = profile.store_error().expect("store error").to_string();
    assert!(error.contains("not a database"), "{error}");
    // Reading it is an error too, not a panic.
    assert!(profile::runs(dir.join(profile::DATABASE_FILE)).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_full_disk_is_a_store_error() {
    let dir = folder("full");
    // A database limited to a few pages fails its writes as a full disk does.
    let profiler = Profiler::new()
        .folder(&dir)
        .sample_every(Duration::from_millis(1))
        .__max_pages(8);
    let profile = run_with_failing_store(profiler);
    let error = profile.store_error().expect("store error").to_string();
    assert!(error.contains("full"), "{error}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_full_writer_queue_loses_no_rows() {
    let dir = folder("queue");
    let db_dir = dir.clone();
    let profile = watchdog(LIMIT, "writer queue", move || {
        let profiler = Profiler::new()
            .folder(&db_dir)
            .sample_every(Duration::from_millis(1))
            .__writer_queue(1);
        let mut results = pipe!(0..200u64 | nap_a).profile_with(profiler).results();
        assert_eq!(results.by_ref().count(), 200);
        results.profile().cloned().unwrap()
    });
    assert!(
        profile.store_error().is_none(),
        "{:?}",
        profile.store_error()
    );
    let db = dir.join(profile::DATABASE_FILE);
    let samples = profile::samples(&db, profile.run_id().unwrap()).unwrap();
    // About 2 s sampled every millisecond, one row each time: every sample
    // the monitor took reached the table, the last one with the totals.
    assert!(samples.len() > 200, "{} samples", samples.len());
    let times: Vec<f64> = samples.iter().map(|s| s.t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(samples.last().unwrap().items_out, 200);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reserved_stage_names_are_rejected() {
    let err = pipe!(0..3u64 | double.name("MainPipeline"))
        .run()
        .unwrap_err();
    assert!(err.to_string().contains("MainPipeline"), "{err}");
    let err = pipe!(0..3u64 | double.name("a__b")).run().unwrap_err();
    assert!(err.to_string().contains("`__`"), "{err}");
}

/// A reporter that keeps every report.
#[derive(Clone, Default)]
struct Keep(Arc<Mutex<Vec<Report>>>);

impl Reporter for Keep {
    fn report(&mut self, report: &Report) {
        self.0.lock().unwrap().push(report.clone());
    }
}

/// A writer whose bytes the test reads afterwards.
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_debugger_reports_stages_and_counts() {
    let keep = Keep::default();
    let table = Arc::new(Mutex::new(Vec::<u8>::new()));
    let debugger = Debugger::new()
        .every(Duration::from_millis(50))
        .reporter(keep.clone())
        .reporter(TableReporter::to(Shared(table.clone())));
    watchdog(LIMIT, "debugger", move || {
        pipe!(0..40u64 | nap_a | double | nap_c)
            .debug(debugger)
            .run()
            .unwrap();
    });
    let reports = keep.0.lock().unwrap();
    // About 1.2 s at 50 ms: periodic reports, then exactly one final one.
    assert!(reports.len() >= 5, "{} reports", reports.len());
    assert_eq!(reports.iter().filter(|r| r.last).count(), 1);
    assert!(reports.last().unwrap().last);
    let last = reports.last().unwrap();
    let names: Vec<&str> = last.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "MainPipeline__source",
            "MainPipeline__nap_a",
            "MainPipeline__double",
            "MainPipeline__nap_c"
        ]
    );
    for s in &last.stages {
        // The source takes nothing: it makes the 40 items.
        let taken = if s.name == "MainPipeline__source" {
            0
        } else {
            40
        };
        assert_eq!((s.items_in, s.items_out), (taken, 40), "{}", s.name);
        assert_eq!(s.queue_depth, 0, "{}: drained at the end", s.name);
    }
    assert_eq!(last.stages[2].workers, 2);
    // Sleeping is not CPU time: the sleeping stages used far less CPU than
    // their 0.4 s of busy time.
    let nap = &last.stages[1];
    assert!(nap.busy >= Duration::from_millis(390), "{:?}", nap.busy);
    let cpu = nap.cpu_user.unwrap() + nap.cpu_system.unwrap();
    assert!(cpu < Duration::from_millis(200), "{cpu:?}");
    // Counts only grow from one report to the next.
    for w in reports.windows(2) {
        for (a, b) in w[0].stages.iter().zip(&w[1].stages) {
            assert!(a.items_out <= b.items_out);
        }
    }
    let text = String::from_utf8(table.lock().unwrap().clone()).unwrap();
    assert!(text.contains("(final)"), "{text}");
    let final_table = text.rsplit("parapipe:").next().unwrap();
    let row = final_table
        .lines()
        .find(|l| l.contains("MainPipeline__double"))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        ["MainPipeline__double", "2", "40", "40"],
        "{row}"
    );
}

#[test]
fn the_debugger_reports_a_keyed_stages_items_per_worker() {
    let keep = Keep::default();
    let table = Arc::new(Mutex::new(Vec::<u8>::new()));
    let debugger = Debugger::new()
        .reporter(keep.clone())
        .reporter(TableReporter::to(Shared(table.clone())));
    // Nine items in ten have key 0.
    let items: Vec<Keyed> = (0..10_000u64)
        .map(|i| match i % 10 {
            9 => ((i % 97) as u32 + 1, i),
            _ => (0, i),
        })
        .collect();
    watchdog(LIMIT, "keyed debugger", move || {
        pipe!(items | count_taken.workers(4).partition_by(|item: &Keyed| item.0) | double)
            .debug(debugger)
            .run()
            .unwrap();
    });
    let reports = keep.0.lock().unwrap();
    let last = reports.last().unwrap();
    let keyed = &last.stages[1];
    assert_eq!(keyed.name, "MainPipeline__count_taken");
    let by_worker = &keyed.items_in_by_worker;
    assert_eq!(by_worker.len(), 4, "{by_worker:?}");
    assert_eq!(by_worker.iter().sum::<u64>(), 10_000);
    assert!(*by_worker.iter().max().unwrap() >= 9_000, "{by_worker:?}");
    // Only keyed stages: not the source, not a stage of two workers on
    // one shared queue.
    assert!(last.stages[0].items_in_by_worker.is_empty());
    assert_eq!(last.stages[2].workers, 2);
    assert!(last.stages[2].items_in_by_worker.is_empty());
    let text = String::from_utf8(table.lock().unwrap().clone()).unwrap();
    let counts: Vec<String> = by_worker.iter().map(u64::to_string).collect();
    let row = text
        .lines()
        .find(|l| l.contains("MainPipeline__count_taken"))
        .unwrap();
    assert!(
        row.ends_with(&format!("  by worker {}", counts.join(" "))),
        "{row}"
    );
    let row = text
        .lines()
        .find(|l| l.contains("MainPipeline__double"))
        .unwrap();
    assert!(!row.contains("by worker"), "{row}");
}

#[test]
fn the_debugger_reports_filtered_and_skipped_items() {
    let keep = Keep::default();
    let debugger = Debugger::new().reporter(keep.clone());
    watchdog(LIMIT, "filtered", move || {
        let out: Vec<u64> = pipe!(0..100u64 | fail_at(7).filter_errors(true))
            .debug(debugger)
            .collect()
            .unwrap();
        assert_eq!(out.len(), 99);
    });
    let reports = keep.0.lock().unwrap();
    assert_eq!(reports.len(), 1, "one final report within 5 s");
    let s = &reports[0].stages[1];
    assert_eq!((s.items_in, s.items_out, s.filtered), (100, 99, 1));
}

#[map_stage]
fn inc(x: u64) -> u64 {
    x + 1
}

fn keys_of<T: Send + 'static>(pipeline: Pipeline<T>) -> Vec<String> {
    let mut results = pipeline.profile_with(Profiler::new().in_memory()).results();
    results.by_ref().for_each(|r| drop(r.unwrap()));
    let profile = results.profile().expect("profiled");
    assert!(profile.run_id().is_none() && profile.store_error().is_none());
    profile.stages().iter().map(|s| s.name.clone()).collect()
}

#[test]
fn segments_and_repeated_stages_get_hierarchical_unique_names() {
    let child = segment!(inc | double).name("Child");
    let inner = segment!(inc).name("Inner");
    let outer = segment!(double | { inner }).name("Outer");
    let keys = keys_of(pipe!(0..100u64 | inc | { child } | { outer } | inc));
    assert_eq!(
        keys,
        [
            "MainPipeline",
            // The source's row: a slow source shows.
            "MainPipeline__source",
            "MainPipeline__inc",
            "MainPipeline__Child__inc",
            "MainPipeline__Child__double",
            "MainPipeline__Outer__double",
            "MainPipeline__Outer__Inner__inc",
            "MainPipeline__inc_2",
        ]
    );
    // A serial segment is a stage, and so is each stage fused in it.
    let serial = segment!(inc | segment!(double | inc).name("In") | double)
        .name("Fused")
        .serial()
        .workers(2);
    let keys = keys_of(pipe!(0..100u64 | { serial } | inc));
    assert_eq!(
        keys,
        [
            "MainPipeline",
            // The source's row: a slow source shows.
            "MainPipeline__source",
            "MainPipeline__Fused",
            "MainPipeline__Fused__inc",
            "MainPipeline__Fused__In__double",
            "MainPipeline__Fused__In__inc",
            "MainPipeline__Fused__double",
            "MainPipeline__inc",
        ]
    );
}

#[stage]
fn evens(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.filter(|x| x % 2 == 0)
}

#[test]
fn stages_fused_in_a_serial_segment_are_measured_one_by_one() {
    let child = segment!(nap_a | double | evens | nap_b)
        .name("Child")
        .serial()
        .workers(2);
    let profile = watchdog(LIMIT, "fused", move || {
        let mut results = pipe!(0..40u64 | { child })
            .profile_with(Profiler::new().in_memory())
            .results();
        let mut got: Vec<u64> = results.by_ref().map(Result::unwrap).collect();
        got.sort_unstable();
        assert_eq!(got, (0..40).map(|x| x * 2).collect::<Vec<_>>());
        results.profile().cloned().unwrap()
    });
    let row = |k: &str| profile.stage(k).unwrap_or_else(|| panic!("no {k}")).clone();
    let (a, d, e, b) = (
        row("MainPipeline__Child__nap_a"),
        row("MainPipeline__Child__double"),
        row("MainPipeline__Child__evens"),
        row("MainPipeline__Child__nap_b"),
    );
    for s in [&a, &d, &e, &b] {
        assert_eq!((s.items_in, s.items_out), (40, 40), "{}", s.name);
        assert_eq!(s.workers, 2, "{}", s.name);
    }
    // Each stage's own time only: the sleeps land where they are.
    assert!(
        (0.009..0.03).contains(&a.latency.mean),
        "nap_a {:?}",
        a.latency
    );
    assert!(
        (0.009..0.03).contains(&b.latency.mean),
        "nap_b {:?}",
        b.latency
    );
    assert!(d.latency.mean < 0.001, "double {:?}", d.latency);
    assert!(e.latency.mean < 0.001, "evens {:?}", e.latency);
    // The segment as a whole: both sleeps per item.
    let seg = row("MainPipeline__Child");
    assert_eq!(seg.items_out, 40);
    assert!(
        (0.018..0.06).contains(&seg.latency.mean),
        "Child {:?}",
        seg.latency
    );
}

/// The progress bars (with `--features progress`): they follow a run to
/// its end without holding it up.
#[cfg(feature = "progress")]
#[test]
fn progress_bars_follow_a_run() {
    use parapipe::debug::Progress;
    let got: Vec<u64> = watchdog(LIMIT, "progress", || {
        pipe!(0..50u64 | nap_a | double)
            .debug(
                Debugger::new()
                    .every(Duration::from_millis(20))
                    .reporter(Progress::new()),
            )
            .collect()
            .unwrap()
    });
    assert_eq!(got.len(), 50);
}
