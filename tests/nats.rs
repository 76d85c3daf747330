//! Distributed pipelines against a real `nats-server` (skipped, saying so,
//! where none is installed): in one process, and across OS processes of
//! this test binary, which runs itself again (the ignored test `child`) as
//! the job's other processes.
// Its profiled runs store into SQLite (feature `store`, on by default).
#![cfg(all(feature = "nats", feature = "store"))]

#[path = "common/mod.rs"]
mod common;
#[path = "nats/server.rs"]
mod server;
#[path = "../examples/wordcount.rs"]
mod wordcount;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::watchdog;
use parapipe::nats::{Job, JobState};
use parapipe::prelude::*;
use parapipe::profile::{self, JobSample, MAIN_PIPELINE_NAME, Profiler};
use server::Server;

/// Sleeps `micros` (a slow item), then squares.
#[map_stage(workers = 2)]
fn spin(x: u64, micros: u64) -> u64 {
    if micros > 0 {
        std::thread::sleep(Duration::from_micros(micros));
    }
    x * x
}

#[derive(Debug)]
struct Bad(u64);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad item {}", self.0)
    }
}

impl std::error::Error for Bad {}

/// Two outputs per input; fails at the square of `fail_at`.
#[stage(workers = 2)]
fn pairs(
    xs: impl Iterator<Item = u64>,
    fail_at: u64,
) -> impl Iterator<Item = Result<(u64, u64), Bad>> {
    xs.flat_map(move |x| {
        if Some(x) == fail_at.checked_mul(fail_at) {
            vec![Err(Bad(x))]
        } else {
            vec![Ok((x, 0)), Ok((x, 1))]
        }
    })
}

#[map_stage]
fn show(p: (u64, u64)) -> String {
    format!("{}:{}", p.0, p.1)
}

/// No item fails.
const NEVER: u64 = u64::MAX;

fn job(server: &Server, name: &str) -> Job {
    // The client's warnings, printed with a failing test's output.
    static LOGGER: std::sync::Once = std::sync::Once::new();
    LOGGER.call_once(|| {
        if log::set_logger(&StderrLog).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
    Job::new(name)
        .url(server.url())
        .broker_timeout(Duration::from_secs(10))
}

/// The children's pipeline, run in one process without the broker. A
/// distributed `ordered` stage gives its results in source order, which
/// locally takes every stage ordered.
fn local(n: u64, ordered: bool) -> Vec<String> {
    pipe!(0..n | spin(0).ordered(ordered) | pairs(NEVER).ordered(ordered) | show.ordered(ordered))
        .collect()
        .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn one_process_matches_the_local_pipeline() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "one");
    let got: Vec<String> = watchdog(Duration::from_secs(120), "distributed run", move || {
        pipe!(distributed(&job): 0..10_000u64 | spin(0) | pairs(NEVER) | show).collect()
    })
    .unwrap();
    assert_eq!(got.len(), 20_000);
    assert_eq!(sorted(got), sorted(local(10_000, false)));
}

/// An async stage (feature `async`) in a distributed job.
#[cfg(feature = "async")]
#[map_stage(concurrency = 32)]
async fn delayed_square(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_micros(200 + x % 7 * 100)).await;
    x * x
}

/// `spin` as an async stage: its futures sleep `micros`, then square.
#[cfg(feature = "async")]
#[map_stage(concurrency = 32)]
async fn async_spin(x: u64, micros: u64) -> u64 {
    if micros > 0 {
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
    x * x
}

/// Fails at `fail_at`.
#[cfg(feature = "async")]
#[map_stage(concurrency = 8)]
async fn fallible_square(x: u64, fail_at: u64) -> Result<u64, Bad> {
    tokio::task::yield_now().await;
    if x == fail_at {
        return Err(Bad(x));
    }
    Ok(x * x)
}

#[cfg(feature = "async")]
#[map_stage]
fn show_one(x: u64) -> String {
    x.to_string()
}

/// An async stage in a distributed job: each message's futures all finish
/// before the message's outputs are published and it is acknowledged.
#[cfg(feature = "async")]
#[test]
fn async_stage_in_a_distributed_job() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "async").batch(16);
    let got: Vec<String> = watchdog(
        Duration::from_secs(120),
        "distributed async run",
        move || {
            pipe!(distributed(&job): 0..2_000u64 | delayed_square | pairs(NEVER) | show).collect()
        },
    )
    .unwrap();
    assert_eq!(sorted(got), sorted(local(2_000, false)));
}

#[cfg(feature = "async")]
#[test]
fn ordered_async_stage_in_a_distributed_job() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "async-ordered").batch(7);
    let got: Vec<String> = watchdog(Duration::from_secs(120), "ordered distributed async run", move || {
        pipe!(distributed(&job): 0..1_000u64 | delayed_square.ordered(true) | pairs(NEVER) | show.ordered(true))
            .collect()
    })
    .unwrap();
    assert_eq!(got, local(1_000, true));
}

#[cfg(feature = "async")]
#[test]
fn async_stage_error_in_a_distributed_job_names_the_stage() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "async-error");
    let err = watchdog(
        Duration::from_secs(60),
        "failing distributed async run",
        move || {
            pipe!(distributed(&job): 0..500u64 | fallible_square(77) | show_one)
                .collect::<Vec<String>>()
        },
    )
    .unwrap_err();
    assert_eq!(err.stage(), "fallible_square");
    assert!(err.to_string().contains("77"), "{err}");
}

#[cfg(feature = "async")]
#[tokio::test(flavor = "current_thread")]
async fn async_stage_locally_inside_tokio_beside_a_distributed_job() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "async-local-feed");
    // The supported shape: the async stage runs locally and feeds the job.
    let squares: Vec<u64> = pipe!(0..500u64 | delayed_square)
        .collect_async()
        .await
        .unwrap();
    let got: Vec<String> = pipe!(distributed(&job): squares | spin(0) | pairs(NEVER) | show)
        .collect()
        .unwrap();
    assert_eq!(got.len(), 1_000);
}

#[test]
fn ordered_stage_keeps_source_order() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "ordered").batch(7);
    let got: Vec<String> = watchdog(Duration::from_secs(120), "ordered run", move || {
        pipe!(distributed(&job): 0..5_000u64 | spin(0) | pairs(NEVER) | show.ordered(true))
            .collect()
    })
    .unwrap();
    assert_eq!(got, local(5_000, true));
}

#[test]
fn empty_source_ends_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "empty");
    let got: Vec<String> = watchdog(Duration::from_secs(60), "empty run", move || {
        pipe!(distributed(&job): Vec::<u64>::new() | spin(0) | pairs(NEVER) | show).collect()
    })
    .unwrap();
    assert!(got.is_empty());
}

#[test]
fn stage_error_in_one_process_names_stage_worker_and_process() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "fails").process_name("solo");
    let error = watchdog(Duration::from_secs(60), "failing run", move || {
        pipe!(distributed(&job): 0..10_000u64 | spin(0) | pairs(70) | show).run()
    })
    .unwrap_err();
    assert_eq!(error.stage(), "pairs");
    assert!(error.worker().is_some());
    assert_eq!(error.process(), Some("solo"));
    assert_eq!(error.downcast_ref::<Bad>().map(|b| b.0), Some(4900));
    assert!(error.to_string().contains("in process \"solo\""), "{error}");
}

#[test]
fn dropping_the_results_early_cancels_the_job() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "dropped");
    let status_job = job.clone();
    watchdog(Duration::from_secs(60), "early drop", move || {
        let mut results =
            pipe!(distributed(&job): 0..1_000_000u64 | spin(0) | pairs(NEVER) | show).results();
        let first: Vec<_> = results.by_ref().take(10).collect();
        assert_eq!(first.len(), 10);
        drop(results);
    });
    assert_eq!(status_job.status().unwrap().state, JobState::Cancelled);
}

#[test]
fn status_counts_every_stage() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "counted").process_name("counter");
    let status_job = job.clone();
    let n = watchdog(Duration::from_secs(60), "counted run", move || {
        pipe!(distributed(&job): 0..3_000u64 | spin(0) | pairs(NEVER) | show)
            .results()
            .count()
    });
    assert_eq!(n, 6_000);
    let status = status_job.status().unwrap();
    assert_eq!(status.state, JobState::Done);
    assert_eq!(status.processes, ["counter"]);
    let counts: Vec<(&str, u64, u64)> = status
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.taken, s.emitted))
        .collect();
    assert_eq!(
        counts,
        [
            ("spin", 3_000, 3_000),
            ("pairs", 3_000, 6_000),
            ("show", 6_000, 6_000)
        ]
    );
    assert!(status.stages.iter().all(|s| s.pending_messages == 0));
}

#[test]
fn no_server_fails_with_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let job = Job::new("nowhere")
        .url(format!("nats://127.0.0.1:{port}"))
        .broker_timeout(Duration::from_secs(1));
    let error = watchdog(Duration::from_secs(30), "no server", move || {
        pipe!(distributed(&job): 0..10u64 | spin(0)).run()
    })
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("NATS broker") && message.contains("could not connect"),
        "{message}"
    );
}

#[test]
fn bad_configuration_fails_before_connecting() {
    let bad_name = Job::new("no spaces please");
    let error = pipe!(distributed(&bad_name): 0..10u64 | spin(0))
        .run()
        .unwrap_err();
    assert!(error.to_string().contains("is not a job name"), "{error}");

    let unknown = Job::new("stages")
        .stages(["spin", "nope"])
        .broker_timeout(Duration::from_secs(1));
    let error = pipe!(distributed(&unknown): 0..10u64 | spin(0))
        .run()
        .unwrap_err();
    assert!(error.to_string().contains("\"nope\""), "{error}");

    let zero = Job::new("zero");
    let workers = 0; // a constant would be refused at compile time
    let error = pipe!(distributed(&zero): 0..10u64 | spin(0).workers(workers))
        .run()
        .unwrap_err();
    assert_eq!(error.stage(), "spin");
}

#[test]
fn worker_without_a_running_job_gives_up_after_the_join_timeout() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "absent")
        .role(parapipe::nats::Role::Worker)
        .join_timeout(Duration::from_millis(500));
    let error = watchdog(Duration::from_secs(30), "lonely worker", move || {
        pipe!(distributed(&job): 0..10u64 | spin(0)).run()
    })
    .unwrap_err();
    assert!(
        error.to_string().contains("no running job \"absent\""),
        "{error}"
    );
}

// ---- Several processes ----

/// What a child process runs, from its environment.
#[test]
#[ignore = "run by the other tests as a process of a distributed job"]
fn child() {
    let Ok(name) = std::env::var("PARAPIPE_TEST_JOB") else {
        return;
    };
    // The client's warnings (disconnections and the like) go to stderr,
    // which a failing test prints.
    if log::set_logger(&StderrLog).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let var = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    if std::env::var_os("PARAPIPE_TEST_WORDCOUNT").is_some() {
        let job = Job::from_env(name).process_name(std::env::var("PARAPIPE_TEST_PROCESS").unwrap());
        match wordcount::count_words(&job, None) {
            Ok(counts) if job.is_driver() => {
                let lines: Vec<String> = counts.iter().map(|(w, n)| format!("{w} {n}")).collect();
                std::fs::write(
                    std::env::var("PARAPIPE_TEST_OUT").unwrap(),
                    lines.join("\n"),
                )
                .unwrap();
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("CHILD FAILED: {e}");
                std::process::exit(3);
            }
        }
        return;
    }
    let job = Job::from_env(name)
        .process_name(std::env::var("PARAPIPE_TEST_PROCESS").unwrap())
        .ack_wait(Duration::from_millis(var(
            "PARAPIPE_TEST_ACK_WAIT_MS",
            30_000,
        )))
        .broker_timeout(Duration::from_secs(20))
        .join_timeout(Duration::from_secs(30))
        .batch(var("PARAPIPE_TEST_BATCH", 64) as usize);
    let (n, micros, fail_at) = (
        var("PARAPIPE_TEST_ITEMS", 1000),
        var("PARAPIPE_TEST_MICROS", 0),
        var("PARAPIPE_TEST_FAIL_AT", NEVER),
    );
    let ordered = var("PARAPIPE_TEST_ORDERED", 0) == 1;
    // Stage settings (the attributes' unless given), and a consumer that
    // sleeps this long every 100 items.
    let workers = var("PARAPIPE_TEST_WORKERS", 2) as usize;
    let qsize = var("PARAPIPE_TEST_QSIZE", 4096) as usize;
    let slow_ms = var("PARAPIPE_TEST_SLOW_MS", 0);
    let driver = job.is_driver();
    // The first stage async (feature `async`): its futures sleep instead.
    let use_async = var("PARAPIPE_TEST_ASYNC", 0) == 1;
    #[cfg(feature = "async")]
    let async_pipeline = use_async.then(|| {
        pipe!(distributed(&job):
            0..n
                | async_spin(micros).qsize(qsize)
                | pairs(fail_at).workers(workers).qsize(qsize)
                | show.ordered(ordered)
        )
    });
    #[cfg(not(feature = "async"))]
    let async_pipeline = use_async.then(|| panic!("PARAPIPE_TEST_ASYNC needs the async feature"));
    let mut pipeline = match async_pipeline {
        Some(pipeline) => pipeline,
        None => pipe!(distributed(&job):
            0..n
                | spin(micros).workers(workers).qsize(qsize)
                | pairs(fail_at).workers(workers).qsize(qsize)
                | show.ordered(ordered)
        ),
    };
    if let Ok(folder) = std::env::var("PARAPIPE_TEST_PROFILE_DIR") {
        pipeline = pipeline.profile_with(Profiler::new().folder(folder).name(job.process()));
    }
    let mut results = pipeline.results();
    let result: Result<Vec<String>, PipelineError> = results
        .by_ref()
        .enumerate()
        .map(|(i, item)| {
            if slow_ms > 0 && i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(slow_ms));
            }
            item
        })
        .collect();
    match result {
        Ok(items) => {
            if driver {
                let out = std::env::var("PARAPIPE_TEST_OUT").unwrap();
                std::fs::write(out, items.join("\n")).unwrap();
            }
        }
        Err(e) => {
            eprintln!("CHILD FAILED: {e}");
            std::process::exit(3);
        }
    }
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!("{} {}: {}", record.level(), record.target(), record.args());
    }
    fn flush(&self) {}
}

/// The processes of one job, each this test binary running `child`.
struct Processes {
    job: String,
    children: Vec<(String, Child, PathBuf)>,
    dir: PathBuf,
}

impl Processes {
    /// The processes of job `job` (also the test's name).
    fn new(job: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("parapipe-{job}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Processes {
            job: job.to_owned(),
            children: Vec::new(),
            dir,
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("results.txt")
    }

    /// Starts process `name` with `env` (and the role of its name:
    /// `driver`, or a worker).
    fn start(&mut self, server: &Server, name: &str, env: &[(&str, String)]) {
        let log = self.dir.join(format!("{name}.stderr"));
        let role = if name == "driver" { "driver" } else { "worker" };
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PARAPIPE_NATS_URL", server.url())
            .env("PARAPIPE_ROLE", role)
            .env("PARAPIPE_TEST_JOB", &self.job)
            .env("PARAPIPE_TEST_PROCESS", name)
            .env("PARAPIPE_TEST_OUT", self.out())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        self.children.push((name.to_owned(), child, log));
    }

    /// Starts every process of `names`, all with `env`.
    fn start_all(&mut self, server: &Server, names: &[&str], env: &[(&str, String)]) {
        for name in names {
            self.start(server, name, env);
        }
    }

    fn kill(&mut self, name: &str) {
        let (_, child, _) = self.children.iter_mut().find(|c| c.0 == name).unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// Waits for every process; a process still running after `limit` is a
    /// hang: all are killed and the test fails.
    fn wait(&mut self, limit: Duration) -> HashMap<String, (ExitStatus, String)> {
        let deadline = Instant::now() + limit;
        let mut done = HashMap::new();
        while done.len() < self.children.len() {
            for (name, child, log) in &mut self.children {
                if done.contains_key(name) {
                    continue;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let stderr = std::fs::read_to_string(&*log).unwrap_or_default();
                    done.insert(name.clone(), (status, stderr));
                }
            }
            if Instant::now() > deadline {
                let running: Vec<&String> = self
                    .children
                    .iter()
                    .map(|c| &c.0)
                    .filter(|n| !done.contains_key(*n))
                    .collect();
                panic!("hang: processes {running:?} still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done
    }

    fn results(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.out()).expect("the driver wrote its results");
        if text.is_empty() {
            Vec::new()
        } else {
            text.lines().map(str::to_owned).collect()
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_all_succeeded(done: &HashMap<String, (ExitStatus, String)>) {
    for (name, (status, stderr)) in done {
        assert!(
            status.success(),
            "process {name} failed ({status}): {stderr}"
        );
    }
}

#[test]
fn four_processes_match_one_process() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("four");
    let env = [("PARAPIPE_TEST_ITEMS", "100000".to_owned())];
    let started = Instant::now();
    procs.start_all(&server, &["driver", "w1", "w2", "w3"], &env);
    let done = procs.wait(Duration::from_secs(300));
    let took = started.elapsed();
    assert_all_succeeded(&done);
    let got = procs.results();
    eprintln!("4 processes, 100,000 items, 3 stages: {took:?}");
    assert_eq!(got.len(), 200_000);
    assert_eq!(sorted(got), sorted(local(100_000, false)));
}

#[test]
fn ordered_across_processes() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("ordered");
    let env = [
        ("PARAPIPE_TEST_ITEMS", "20000".to_owned()),
        ("PARAPIPE_TEST_ORDERED", "1".to_owned()),
    ];
    procs.start_all(&server, &["driver", "w1"], &env);
    assert_all_succeeded(&procs.wait(Duration::from_secs(300)));
    assert_eq!(procs.results(), local(20_000, true));
}

#[test]
fn sigkill_of_a_worker_process_loses_and_doubles_nothing() {
    // About 7.5 s of sleeping for 8 workers of the first stage: the kill
    // lands mid-run, even on a loaded machine.
    kill_a_worker_mid_run(
        "sigkill",
        &[
            ("PARAPIPE_TEST_ITEMS", "20000".to_owned()),
            ("PARAPIPE_TEST_MICROS", "3000".to_owned()),
            ("PARAPIPE_TEST_ACK_WAIT_MS", "2000".to_owned()),
        ],
    );
}

/// The kill test with an async first stage: a message is acknowledged only
/// once all its futures are done and its outputs published, so a process
/// killed with futures in flight loses and doubles nothing either.
#[cfg(feature = "async")]
#[test]
fn sigkill_of_a_worker_process_with_an_async_stage_loses_and_doubles_nothing() {
    // 32 futures of 20 ms at a time per process: about 3 s in all.
    kill_a_worker_mid_run(
        "sigkill-async",
        &[
            ("PARAPIPE_TEST_ASYNC", "1".to_owned()),
            ("PARAPIPE_TEST_ITEMS", "20000".to_owned()),
            ("PARAPIPE_TEST_MICROS", "20000".to_owned()),
            ("PARAPIPE_TEST_ACK_WAIT_MS", "2000".to_owned()),
        ],
    );
}

/// Runs job `name` on four processes with `env`, SIGKILLs the worker
/// process `w2` once it has taken part and items have gone through, and
/// checks the others deliver every item exactly once.
fn kill_a_worker_mid_run(name: &str, env: &[(&str, String)]) {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new(name);
    procs.start_all(&server, &["driver", "w1", "w2", "w3"], env);
    let status_job = Job::new(name).url(server.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status_job.status();
        if let Ok(status) = &status {
            assert_eq!(
                status.state,
                JobState::Running,
                "the job ended before the kill: {status:?}"
            );
            if status.stages[0].emitted > 1_000 && status.processes.iter().any(|p| p == "w2") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not start: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.kill("w2");
    let mut done = procs.wait(Duration::from_secs(300));
    done.remove("w2");
    assert_all_succeeded(&done);
    let got = procs.results();
    assert_eq!(got.len(), 40_000, "nothing lost, nothing doubled");
    assert_eq!(sorted(got), sorted(local(20_000, false)));
    let status = status_job.status().unwrap();
    eprintln!(
        "after the kill: the first stage took {} items for 20,000 (redelivered: the difference, at most)",
        status.stages[0].taken
    );
}

#[test]
fn stage_error_in_one_process_ends_every_process() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("error");
    let items = [("PARAPIPE_TEST_ITEMS", "100000".to_owned())];
    // The driver runs no stage: the error can only come from a worker.
    let driver_env = [
        items[0].clone(),
        ("PARAPIPE_STAGES", String::new()),
        ("PARAPIPE_TEST_FAIL_AT", "300".to_owned()),
    ];
    let worker_env = [
        items[0].clone(),
        ("PARAPIPE_TEST_FAIL_AT", "300".to_owned()),
    ];
    procs.start(&server, "driver", &driver_env);
    procs.start(&server, "w1", &worker_env);
    procs.start(&server, "w2", &worker_env);
    let started = Instant::now();
    let done = procs.wait(Duration::from_secs(120));
    eprintln!(
        "every process ended {:?} after the start",
        started.elapsed()
    );
    for (name, (status, stderr)) in &done {
        assert_eq!(status.code(), Some(3), "{name} must fail: {stderr}");
        assert!(stderr.contains("\"pairs-"), "{name}: {stderr}");
        assert!(stderr.contains("bad item 90000"), "{name}: {stderr}");
    }
    let (_, driver_err) = &done["driver"];
    assert!(
        driver_err.contains("in process \"w1\"") || driver_err.contains("in process \"w2\""),
        "{driver_err}"
    );
}

#[test]
fn broker_restart_resumes_or_fails_clearly() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("restart");
    let env = [
        ("PARAPIPE_TEST_ITEMS", "20000".to_owned()),
        ("PARAPIPE_TEST_MICROS", "200".to_owned()),
        ("PARAPIPE_TEST_ACK_WAIT_MS", "2000".to_owned()),
    ];
    procs.start_all(&server, &["driver", "w1"], &env);
    std::thread::sleep(Duration::from_millis(1500));
    server.restart(Duration::from_secs(1));
    let done = procs.wait(Duration::from_secs(300));
    let (status, stderr) = &done["driver"];
    if status.success() {
        let got = procs.results();
        assert_eq!(got.len(), 40_000);
        assert_eq!(sorted(got), sorted(local(20_000, false)));
        eprintln!("the job resumed after the broker restarted");
    } else {
        assert_eq!(status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("NATS broker"), "a clear error: {stderr}");
        eprintln!("the job failed clearly: {stderr}");
    }
}

/// Panics at item `at`, or at every item from `at` on if `all`.
#[map_stage(workers = 2)]
fn explode(x: u64, at: u64, all: bool) -> u64 {
    assert!(x != at && !(all && x > at), "exploded at {x}");
    x
}

#[test]
fn stage_panic_fails_the_job_without_hanging() {
    let Some(server) = Server::start() else {
        return;
    };
    for (i, at) in [0u64, 1, 500, 9_999].into_iter().enumerate() {
        let job = job(&server, &format!("panics{i}"));
        let error = watchdog(Duration::from_secs(60), "panicking run", move || {
            pipe!(distributed(&job): 0..10_000u64 | explode(at, false) | spin(0)).run()
        })
        .unwrap_err();
        assert_eq!(error.stage(), "explode");
        assert_eq!(
            error.panic_message(),
            Some(format!("exploded at {at}").as_str())
        );
    }
    // Every worker panics, in a later stage.
    for i in 0..5 {
        let job = job(&server, &format!("allpanic{i}"));
        let error = watchdog(Duration::from_secs(60), "all panicking", move || {
            pipe!(distributed(&job): 0..10_000u64 | spin(0) | explode(0, true)).run()
        })
        .unwrap_err();
        assert_eq!(error.stage(), "explode");
    }
}

#[test]
fn wordcount_example_on_three_processes() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("wordcount");
    let env = [("PARAPIPE_TEST_WORDCOUNT", "1".to_owned())];
    procs.start_all(&server, &["driver", "w1", "w2"], &env);
    assert_all_succeeded(&procs.wait(Duration::from_secs(300)));
    // The same count, by calling the stage functions in a plain loop.
    let mut want: HashMap<String, u64> = HashMap::new();
    for line in wordcount::generated_text() {
        for word in line.split_whitespace() {
            if let Some(w) = wordcount::long_enough(wordcount::normalise(word.to_owned()), 3) {
                *want.entry(w).or_default() += 1;
            }
        }
    }
    let got: HashMap<String, u64> = procs
        .results()
        .iter()
        .map(|l| {
            let (w, n) = l.split_once(' ').unwrap();
            (w.to_owned(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(got["the"], 30_000);
}

#[test]
fn worker_started_before_the_driver_joins() {
    let Some(server) = Server::start() else {
        return;
    };
    let worker_job = job(&server, "early")
        .role(parapipe::nats::Role::Worker)
        .process_name("early");
    // Slow items (about three seconds of work): the run outlasts the
    // worker's poll for it, so the worker takes part rather than arriving
    // late. (With a second of work, CI once saw the run end before the
    // worker joined, on a machine busy with the other tests of this file.)
    let worker = std::thread::spawn(move || {
        pipe!(distributed(&worker_job): 0..2_000u64 | spin(3_000) | pairs(NEVER) | show).run()
    });
    std::thread::sleep(Duration::from_millis(500));
    let job = job(&server, "early").process_name("driver");
    let status_job = job.clone();
    let got: Vec<String> = watchdog(Duration::from_secs(60), "driver after worker", move || {
        pipe!(distributed(&job): 0..2_000u64 | spin(3_000) | pairs(NEVER) | show).collect()
    })
    .unwrap();
    worker.join().unwrap().unwrap();
    assert_eq!(sorted(got), sorted(local(2_000, false)));
    assert_eq!(status_job.status().unwrap().processes, ["driver", "early"]);
}

/// Regression: a worker polling for a job that does not exist yet made
/// nats-server stop answering the driver's request to create it (it failed
/// within 1 to 5 jobs in a row).
#[test]
fn workers_waiting_for_each_job_do_not_stall_its_creation() {
    let Some(server) = Server::start() else {
        return;
    };
    for i in 0..8 {
        let name = format!("waiting{i}");
        let worker_job = job(&server, &name).role(parapipe::nats::Role::Worker);
        let worker = std::thread::spawn(move || {
            pipe!(distributed(&worker_job): 0..2_000u64 | spin(0)).run()
        });
        std::thread::sleep(Duration::from_millis(300));
        let job = job(&server, &name);
        let got: Vec<u64> = watchdog(
            Duration::from_secs(60),
            "job after a waiting worker",
            move || pipe!(distributed(&job): 0..2_000u64 | spin(0)).collect(),
        )
        .unwrap();
        worker.join().unwrap().unwrap();
        assert_eq!(got.len(), 2_000, "job {i}");
    }
}

#[test]
fn workers_of_a_killed_driver_fail_instead_of_waiting_forever() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("orphans");
    let env = [
        ("PARAPIPE_TEST_ITEMS", "100000".to_owned()),
        ("PARAPIPE_TEST_MICROS", "1000".to_owned()),
    ];
    procs.start_all(&server, &["driver", "w1", "w2"], &env);
    let status_job = Job::new("orphans").url(server.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status_job
        .status()
        .is_ok_and(|s| s.processes.len() == 3 && s.stages[0].emitted > 0)
    {
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.kill("driver");
    let killed = Instant::now();
    let mut done = procs.wait(Duration::from_secs(120));
    eprintln!(
        "the workers ended {:?} after the driver was killed",
        killed.elapsed()
    );
    done.remove("driver");
    for (name, (status, stderr)) in &done {
        assert_eq!(status.code(), Some(3), "{name}: {stderr}");
        assert!(
            stderr.contains("has not been heard from"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn a_stage_no_process_runs_fails_after_the_join_timeout() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "uncovered")
        .stages(["spin"])
        .join_timeout(Duration::from_secs(2));
    let error = watchdog(Duration::from_secs(60), "uncovered stage", move || {
        pipe!(distributed(&job): 0..1_000u64 | spin(0) | pairs(NEVER)).run()
    })
    .unwrap_err();
    let job_error = error
        .downcast_ref::<parapipe::nats::JobError>()
        .expect("a JobError");
    assert!(job_error.to_string().contains("stage \"pairs\""), "{error}");
}

/// A driver's own rows (name, items in, items out) for the test pipeline
/// on `n` items, when it runs every stage alone.
fn local_rows(n: u64) -> [(&'static str, u64, u64); 4] {
    [
        ("MainPipeline__spin", n, n),
        ("MainPipeline__pairs", n, 2 * n),
        ("MainPipeline__show", 2 * n, 2 * n),
        ("MainPipeline__results", 0, 2 * n),
    ]
}

/// Each stage's (name, taken, emitted, pending messages) in a job sample.
fn job_counts(sample: &JobSample) -> Vec<(&str, u64, u64, u64)> {
    sample
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.taken, s.emitted, s.pending_messages))
        .collect()
}

#[test]
fn profiled_run_in_one_process_measures_its_stages_and_the_job() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "profiled1").process_name("solo");
    let profile = watchdog(Duration::from_secs(120), "profiled run", move || {
        let mut results = pipe!(distributed(&job): 0..3_000u64 | spin(0) | pairs(NEVER) | show)
            .profile_with(Profiler::new().in_memory())
            .results();
        assert_eq!(results.by_ref().count(), 6_000);
        results.profile().cloned().expect("profiled")
    });
    let main = profile.stage(MAIN_PIPELINE_NAME).unwrap();
    assert_eq!(main.items_out, 6_000);
    // From the source publishing an item to the driver receiving it: it
    // crossed the broker four times, which takes more than a microsecond.
    assert!(
        main.latency.samples == 6_000 && main.latency.mean > 1e-6,
        "{main:?}"
    );
    let rows: Vec<(&str, u64, u64)> = profile.stages()[1..]
        .iter()
        .map(|s| (s.name.as_str(), s.items_in, s.items_out))
        .collect();
    assert_eq!(rows, local_rows(3_000));
    let job = profile.job().expect("the job's status was recorded");
    assert_eq!(job.job, "profiled1");
    assert_eq!(job.state, "done");
    assert_eq!(
        job_counts(job),
        [
            ("spin", 3_000, 3_000, 0),
            ("pairs", 3_000, 6_000, 0),
            ("show", 6_000, 6_000, 0)
        ]
    );
    for stage in &job.stages {
        let parts: Vec<(&str, u64, u64)> = stage
            .by_process
            .iter()
            .map(|p| (p.process.as_str(), p.taken, p.emitted))
            .collect();
        assert_eq!(parts, [("solo", stage.taken, stage.emitted)]);
    }
}

#[test]
fn profiled_processes_store_the_jobs_status_for_the_viewer() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut procs = Processes::new("profiled");
    let folder = procs.dir.join("profiles");
    let env = [
        ("PARAPIPE_TEST_ITEMS", "4000".to_owned()),
        ("PARAPIPE_TEST_MICROS", "100".to_owned()),
        ("PARAPIPE_TEST_PROFILE_DIR", folder.display().to_string()),
    ];
    procs.start_all(&server, &["driver", "w1"], &env);
    assert_all_succeeded(&procs.wait(Duration::from_secs(300)));
    assert_eq!(procs.results().len(), 8_000);

    let db = folder.join(profile::DATABASE_FILE);
    let runs = profile::runs(&db).unwrap();
    let id = |name: &str| runs.iter().find(|r| r.pipeline == name).unwrap().id;
    let (driver, worker) = (id("driver"), id("w1"));
    let expected = [
        ("spin", 4_000, 4_000, 0),
        ("pairs", 4_000, 8_000, 0),
        ("show", 8_000, 8_000, 0),
    ];
    for (run, mine) in [(driver, "driver"), (worker, "w1")] {
        let profile = profile::load(&db, run).unwrap();
        let job = profile.job().expect("the job's status was stored");
        assert_eq!((job.job.as_str(), job.state.as_str()), ("profiled", "done"));
        assert_eq!(job_counts(job), expected, "as {mine} saw it");
        for stage in &job.stages {
            // Both processes ran every stage; their parts add up.
            let names: Vec<&str> = stage
                .by_process
                .iter()
                .map(|p| p.process.as_str())
                .collect();
            assert_eq!(names, ["driver", "w1"]);
            let taken: u64 = stage.by_process.iter().map(|p| p.taken).sum();
            assert_eq!(taken, stage.taken);
            // This process's own rows count what the job says it did.
            let own = stage.by_process.iter().find(|p| p.process == mine).unwrap();
            let row = profile
                .stage(&format!("MainPipeline__{}", stage.name))
                .unwrap();
            assert_eq!((row.items_in, row.items_out), (own.taken, own.emitted));
        }
        // Samples over time too, the last one being the job's end.
        let samples = profile::job_samples(&db, run).unwrap();
        assert_eq!(samples.last(), Some(job));
    }
    assert_eq!(profile::load(&db, driver).unwrap().items(), 8_000);
    assert_eq!(profile::load(&db, worker).unwrap().items(), 0);

    let out = Command::new(viewer())
        .args([
            "--db",
            &db.display().to_string(),
            "show",
            &driver.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.contains("job profiled: done"), "{shown}");
    let line = |start: &str| {
        shown
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .starts_with(&[start])
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        line("pairs").unwrap()[1..],
        ["(all)", "4000", "8000", "0"],
        "{shown}"
    );
    assert_eq!(line("w1").unwrap().len(), 3, "{shown}");
}

#[test]
fn profiled_failing_job_records_the_failure() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "profiledfail").process_name("solo");
    let (error, profile) = watchdog(
        Duration::from_secs(120),
        "profiled failing run",
        move || {
            let mut results = pipe!(distributed(&job): 0..3_000u64 | spin(0) | pairs(10) | show)
                .profile_with(Profiler::new().in_memory())
                .results();
            let error = results.find_map(Result::err).expect("the stage fails");
            (error, results.profile().cloned().expect("profiled"))
        },
    );
    assert_eq!(error.stage(), "pairs");
    let job = profile.job().expect("the job's status was recorded");
    assert!(job.state.starts_with("failed: "), "{job:?}");
    assert!(job.state.contains("pairs"), "{job:?}");
    assert!(matches!(profile.outcome(), profile::Outcome::Failed(_)));
}

/// Keeps the debugger's last report.
struct LastReport(std::sync::Arc<std::sync::Mutex<Option<parapipe::debug::Report>>>);

impl parapipe::debug::Reporter for LastReport {
    fn report(&mut self, report: &parapipe::debug::Report) {
        *self.0.lock().unwrap() = Some(report.clone());
    }
}

#[test]
fn debugged_run_reports_this_processes_stages() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "debugged");
    let last = std::sync::Arc::default();
    let reporter = LastReport(std::sync::Arc::clone(&last));
    let n = watchdog(Duration::from_secs(120), "debugged run", move || {
        pipe!(distributed(&job): 0..2_000u64 | spin(0) | pairs(NEVER) | show)
            .debug(
                parapipe::debug::Debugger::new()
                    .every(Duration::from_millis(20))
                    .reporter(reporter),
            )
            .results()
            .count()
    });
    assert_eq!(n, 4_000);
    let report = last.lock().unwrap().take().expect("a final report");
    assert!(report.last);
    let rows: Vec<(&str, u64, u64)> = report
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.items_in, s.items_out))
        .collect();
    assert_eq!(rows, local_rows(2_000));
}

#[test]
fn filtered_errors_are_counted_per_stage() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "filtered");
    let (n, filtered) = watchdog(Duration::from_secs(120), "filtering run", move || {
        // pairs(3) fails on item 9 only; filter_errors drops that failure.
        let mut results =
            pipe!(distributed(&job): 0..1_000u64 | spin(0) | pairs(3).filter_errors(true) | show)
                .results();
        let n = results.by_ref().map(Result::unwrap).count();
        (n, results.filtered_by_stage())
    });
    assert_eq!(n, 2 * 999);
    assert!(filtered.contains(&("pairs".to_owned(), 1)), "{filtered:?}");
}

/// A tiny seeded generator (xorshift): the cases are reproducible from the
/// seed the test prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<T: Copy>(&mut self, of: &[T]) -> T {
        of[self.below(of.len() as u64) as usize]
    }
}

/// What goes wrong in a random distributed case.
#[derive(Debug, Clone, Copy)]
enum DistFault {
    None,
    /// SIGKILL of a worker process, this long after the start.
    KillWorker(Duration),
    /// The broker killed and restarted (same store) after this long.
    RestartBroker(Duration),
    /// A stage error at this item.
    StageError(u64),
}

/// Fault injection across processes: random jobs of 2 to 4 processes,
/// batch sizes, worker counts and queue sizes, ordered or not, a slow
/// consumer or not, with a worker killed mid-run, the broker restarted, or
/// a stage failing. Every process must exit; the driver's results must be
/// exactly the local pipeline's (in order when ordered), or, for a stage
/// error, every process must end with it. `PARAPIPE_NATS_FAULT_CASES`
/// sets the number of cases (default 4), `PARAPIPE_NATS_FAULT_SEED` the
/// seed.
#[test]
fn random_jobs_with_kills_restarts_and_failures() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let cases: u64 = std::env::var("PARAPIPE_NATS_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("PARAPIPE_NATS_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("distributed fault injection: {cases} cases, PARAPIPE_NATS_FAULT_SEED={seed}");
    let mut rng = Rng(seed);
    for case in 0..cases {
        let processes = 2 + rng.below(3) as usize;
        let n = 100 + rng.below(3000);
        let batch = rng.pick(&[1u64, 7, 64, 300]);
        let workers = 1 + rng.below(4);
        let qsize = rng.pick(&[8u64, 64, 4096]);
        let micros = rng.pick(&[0u64, 0, 300]);
        let ordered = rng.below(3) == 0;
        let slow = rng.pick(&[0u64, 0, 5]);
        let fault = match rng.below(5) {
            0 | 1 => DistFault::None,
            2 => DistFault::KillWorker(Duration::from_millis(200 + rng.below(1500))),
            3 => DistFault::RestartBroker(Duration::from_millis(300 + rng.below(1500))),
            _ => DistFault::StageError(rng.below(n)),
        };
        let what = format!(
            "case {case}: {processes} processes, {n} items, batch {batch}, {workers} workers, qsize {qsize}, {micros} us/item, ordered {ordered}, slow consumer {slow} ms, {fault:?}"
        );
        eprintln!("{what}");
        let job = format!("faults{case}");
        let mut procs = Processes::new(&job);
        let fail_at = match fault {
            DistFault::StageError(at) => at,
            _ => NEVER,
        };
        let env = [
            ("PARAPIPE_TEST_ITEMS", n.to_string()),
            ("PARAPIPE_TEST_BATCH", batch.to_string()),
            ("PARAPIPE_TEST_WORKERS", workers.to_string()),
            ("PARAPIPE_TEST_QSIZE", qsize.to_string()),
            ("PARAPIPE_TEST_MICROS", micros.to_string()),
            ("PARAPIPE_TEST_ORDERED", u64::from(ordered).to_string()),
            ("PARAPIPE_TEST_SLOW_MS", slow.to_string()),
            ("PARAPIPE_TEST_FAIL_AT", fail_at.to_string()),
            ("PARAPIPE_TEST_ACK_WAIT_MS", "2000".to_owned()),
        ];
        let names: Vec<String> = std::iter::once("driver".to_owned())
            .chain((1..processes).map(|w| format!("w{w}")))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        procs.start_all(&server, &names, &env);
        match fault {
            DistFault::KillWorker(after) => {
                std::thread::sleep(after);
                procs.kill("w1");
            }
            DistFault::RestartBroker(after) => {
                std::thread::sleep(after);
                server.restart(Duration::from_millis(500));
            }
            DistFault::None | DistFault::StageError(_) => {}
        }
        let mut done = procs.wait(Duration::from_secs(180));
        if let DistFault::KillWorker(_) = fault {
            done.remove("w1");
        }
        match fault {
            DistFault::StageError(at) => {
                // Every process ends; the driver with the stage's error.
                let (status, stderr) = &done["driver"];
                assert_eq!(status.code(), Some(3), "{what}: {stderr}");
                assert!(
                    stderr.contains(&format!("bad item {}", at * at)),
                    "{what}: {stderr}"
                );
            }
            DistFault::RestartBroker(_) if !done["driver"].0.success() => {
                // A restart may also end the job, clearly.
                let (status, stderr) = &done["driver"];
                assert_eq!(status.code(), Some(3), "{what}: {stderr}");
                assert!(stderr.contains("NATS broker"), "{what}: {stderr}");
            }
            _ => {
                assert_all_succeeded(&done);
                let got = procs.results();
                let expected = local(n, ordered);
                if ordered {
                    assert!(got == expected, "{what}: results out of order or wrong");
                } else {
                    assert_eq!(sorted(got), sorted(expected), "{what}");
                }
            }
        }
    }
}

/// The `parapipe-profile` viewer (package `parapipe-profile`), beside this
/// test's binary when the workspace's tests are built together, else built
/// now.
fn viewer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/parapipe-profile
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let viewer = dir.join("parapipe-profile");
    if !viewer.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "parapipe-profile"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the viewer failed");
    }
    viewer
}
