//! Regressions from the distributed trial (issue 14): one test per item of
//! the issue, each against a `nats-server` of its own (skipped, saying so,
//! where none is installed; a failure with `PARAPIPE_REQUIRE_NATS` set).
//! Tests that need several OS processes run this test binary again (the
//! ignored test `trial_child`) as the job's other processes.
#![cfg(feature = "nats")]

#[path = "common/mod.rs"]
mod common;
#[path = "nats/server.rs"]
mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::watchdog;
use parapipe::nats::{Job, JobState, Role};
use parapipe::prelude::*;
use server::{Options, Server};

// ---- Shared stages and helpers ----

/// Sleeps `micros` (a slow item), then squares.
#[map_stage(workers = 2)]
fn slow(x: u64, micros: u64) -> u64 {
    if micros > 0 {
        thread::sleep(Duration::from_micros(micros));
    }
    x * x
}

#[map_stage]
fn plus_one(x: u64) -> u64 {
    x + 1
}

/// The pipeline of most tests, and of the child processes.
fn slow_pipeline(
    job: &Job,
    items: std::ops::Range<u64>,
    micros: u64,
) -> Result<Vec<u64>, PipelineError> {
    pipe!(distributed(job): items | slow(micros) | plus_one).collect()
}

/// What [`slow_pipeline`] gives, sorted.
fn expected(items: std::ops::Range<u64>) -> Vec<u64> {
    sorted(items.map(|x| x * x + 1).collect())
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Whether `got` holds exactly the items of `want`, in any order; if not,
/// a short account (counts and a few examples) rather than both lists.
fn same_items(got: &[u64], want: &[u64]) -> Result<(), String> {
    let (got, want) = (sorted(got.to_vec()), sorted(want.to_vec()));
    if got == want {
        return Ok(());
    }
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut g, mut w) = (got.iter().peekable(), want.iter().peekable());
    loop {
        match (g.peek(), w.peek()) {
            (Some(a), Some(b)) if a == b => {
                g.next();
                w.next();
            }
            (Some(a), Some(b)) if a < b => unexpected.push(*g.next().unwrap()),
            (Some(_), Some(_)) | (None, Some(_)) => missing.push(*w.next().unwrap()),
            (Some(_), None) => unexpected.push(*g.next().unwrap()),
            (None, None) => break,
        }
    }
    Err(format!(
        "{} items where {} were expected: {} missing (first {:?}), {} unexpected (first {:?})",
        got.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)],
    ))
}

/// Panics with [`same_items`]'s account unless `got` is `want`.
#[track_caller]
fn assert_same_items(got: &[u64], want: &[u64], what: &str) {
    if let Err(why) = same_items(got, want) {
        panic!("{what}: {why}");
    }
}

#[derive(Debug)]
struct Bad(u64);

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad item {}", self.0)
    }
}

impl std::error::Error for Bad {}

/// Fails at item `at`.
#[map_stage(workers = 2)]
fn fail_at(x: u64, at: u64) -> Result<u64, Bad> {
    if x == at { Err(Bad(x)) } else { Ok(x) }
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

/// The client's warnings, printed with a failing test's output.
fn install_logger() {
    static LOGGER: std::sync::Once = std::sync::Once::new();
    LOGGER.call_once(|| {
        if log::set_logger(&StderrLog).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
}

fn job(server: &Server, name: &str) -> Job {
    install_logger();
    Job::new(name)
        .url(server.url())
        .broker_timeout(Duration::from_secs(10))
}

/// Polls `job`'s status until `ready` says so (a generous bound).
fn wait_for_status(job: &Job, what: &str, ready: impl Fn(&parapipe::nats::JobStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = job.status();
        if status.as_ref().is_ok_and(&ready) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The run has started and some items have gone through the first stage.
fn running_with_progress(status: &parapipe::nats::JobStatus) -> bool {
    status.state == JobState::Running && status.stages.first().is_some_and(|s| s.emitted > 0)
}

// ---- Several processes ----

/// What a child process runs, from its environment: [`slow_pipeline`].
#[test]
#[ignore = "run by the other tests as a process of a distributed job"]
fn trial_child() {
    let Ok(name) = std::env::var("PARAPIPE_TRIAL_JOB") else {
        return;
    };
    install_logger();
    let var = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let job = Job::from_env(name)
        .process_name(std::env::var("PARAPIPE_TRIAL_PROCESS").unwrap())
        .batch(var("PARAPIPE_TRIAL_BATCH", 64) as usize)
        .ack_wait(Duration::from_millis(var(
            "PARAPIPE_TRIAL_ACK_WAIT_MS",
            30_000,
        )))
        .broker_timeout(Duration::from_secs(20))
        .join_timeout(Duration::from_secs(30));
    let n = var("PARAPIPE_TRIAL_ITEMS", 1000);
    let micros = var("PARAPIPE_TRIAL_MICROS", 0);
    match slow_pipeline(&job, 0..n, micros) {
        Ok(items) => {
            if job.is_driver() {
                let lines: Vec<String> = items.iter().map(u64::to_string).collect();
                std::fs::write(
                    std::env::var("PARAPIPE_TRIAL_OUT").unwrap(),
                    lines.join("\n"),
                )
                .unwrap();
            }
        }
        Err(e) => {
            eprintln!("CHILD FAILED: {e}");
            std::process::exit(3);
        }
    }
}

/// The processes of one job, each this test binary running `trial_child`.
struct Processes {
    job: String,
    children: Vec<(String, Child, PathBuf)>,
    dir: PathBuf,
}

/// Where the processes of job `job` keep their stderr and results.
fn procs_dir(job: &str) -> PathBuf {
    std::env::temp_dir().join(format!("parapipe-trial-{job}-{}", std::process::id()))
}

impl Processes {
    fn new(job: &str) -> Self {
        let dir = procs_dir(job);
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

    /// Starts process `name` in `role` (`driver` or `worker`) with `env`.
    fn start(&mut self, url: &str, name: &str, role: &str, env: &[(&str, String)]) {
        let log = self.dir.join(format!("{name}.stderr"));
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "trial_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PARAPIPE_NATS_URL", url)
            .env("PARAPIPE_ROLE", role)
            .env_remove("PARAPIPE_STAGES")
            .env("PARAPIPE_TRIAL_JOB", &self.job)
            .env("PARAPIPE_TRIAL_PROCESS", name)
            .env("PARAPIPE_TRIAL_OUT", self.out())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        self.children.push((name.to_owned(), child, log));
    }

    fn kill(&mut self, name: &str) {
        let (_, child, _) = self.children.iter_mut().find(|c| c.0 == name).unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// Waits for the processes of `names` (every one if `None`) until
    /// `deadline`: their exit status and stderr. Those still running then
    /// are a hang: the test fails, naming them (they are killed on drop).
    fn wait_until(
        &mut self,
        names: Option<&[&str]>,
        deadline: Instant,
    ) -> HashMap<String, (ExitStatus, String)> {
        let wanted = |name: &str| names.is_none_or(|names| names.contains(&name));
        let count = self.children.iter().filter(|c| wanted(&c.0)).count();
        let mut done = HashMap::new();
        while done.len() < count {
            for (name, child, log) in &mut self.children {
                if !wanted(name) || done.contains_key(name) {
                    continue;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let stderr = std::fs::read_to_string(&*log).unwrap_or_default();
                    done.insert(name.clone(), (status, stderr));
                }
            }
            if done.len() < count && Instant::now() > deadline {
                let running: Vec<&String> = self
                    .children
                    .iter()
                    .map(|c| &c.0)
                    .filter(|n| wanted(n) && !done.contains_key(*n))
                    .collect();
                panic!("hang: processes {running:?} still running at the deadline");
            }
            thread::sleep(Duration::from_millis(20));
        }
        done
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

// ---- The items of issue 14 ----

/// One worker (with a small queue) before two.
#[map_stage(workers = 1, qsize = 128)]
fn narrow(x: u64) -> u64 {
    x + 1
}

#[map_stage(workers = 2)]
fn wide(x: u64) -> u64 {
    x * 3
}

#[map_stage(workers = 2)]
fn double(x: u64) -> u64 {
    x * 2
}

// Issue 14, item 1.
#[test]
fn held_messages_do_not_fill_an_edge_and_deadlock() {
    let Some(server) = Server::start() else {
        return;
    };
    // An edge of 128 / 64 = 2 messages, and two workers after it that each
    // keep their last message until they take another.
    let job1 = job(&server, "trial1qsize");
    let qsize = thread::spawn(move || {
        watchdog(
            Duration::from_secs(60),
            "qsize 128 before 2 workers",
            move || pipe!(distributed(&job1): 0..10_000u64 | narrow | wide).collect::<Vec<u64>>(),
        )
    });
    // Batches of 4,096 items: every edge holds 2 messages (the least).
    let job2 = job(&server, "trial1batch").batch(4096);
    let batch = thread::spawn(move || {
        watchdog(
            Duration::from_secs(60),
            "batch 4096, 2 workers",
            move || pipe!(distributed(&job2): 0..20_000u64 | double).collect::<Vec<u64>>(),
        )
    });
    let want_qsize: Vec<u64> = pipe!(0..10_000u64 | narrow | wide).collect().unwrap();
    let want_batch: Vec<u64> = pipe!(0..20_000u64 | double).collect().unwrap();
    let mut failures = Vec::new();
    for (case, handle, want) in [
        ("qsize 128 before 2 workers", qsize, want_qsize),
        ("batch 4096, 2 workers", batch, want_batch),
    ] {
        match handle.join() {
            Err(_) => failures.push(format!("{case}: hang (watchdog)")),
            Ok(Err(e)) => failures.push(format!("{case}: failed: {e}")),
            Ok(Ok(got)) => {
                if let Err(why) = same_items(&got, &want) {
                    failures.push(format!("{case}: not the local results: {why}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// Issue 14, item 2.
#[test]
fn a_second_driver_of_a_running_job_is_refused() {
    let Some(server) = Server::start() else {
        return;
    };
    // Driver A: 300 items of 20 ms on 2 workers, about 3 s.
    let a_job = job(&server, "trial2").batch(1).process_name("driver-a");
    let a = thread::spawn(move || {
        watchdog(Duration::from_secs(90), "driver A", move || {
            slow_pipeline(&a_job, 0..300, 20_000)
        })
    });
    wait_for_status(
        &job(&server, "trial2"),
        "driver A's run did not start",
        running_with_progress,
    );
    let b_job = job(&server, "trial2").batch(1).process_name("driver-b");
    let started = Instant::now();
    let b = watchdog(Duration::from_secs(90), "driver B", move || {
        slow_pipeline(&b_job, 1_000..1_100, 0)
    });
    let b_took = started.elapsed();
    let a = a.join();
    eprintln!(
        "driver B: {:?} after {b_took:?}; driver A: {:?}",
        b.as_ref().map(Vec::len),
        a.as_ref().map(|r| r.as_ref().map(Vec::len))
    );
    let error = b.expect_err("driver B must be refused while A's run is live");
    assert!(
        error.to_string().to_lowercase().contains("running driver"),
        "B's error must say the job already has a running driver: {error}"
    );
    assert!(
        b_took < Duration::from_secs(10),
        "B refused only after {b_took:?}"
    );
    let a = a
        .expect("driver A did not hang")
        .expect("driver A completes");
    assert_same_items(&a, &expected(0..300), "driver A's own results");
}

// Issue 14, item 3.
#[test]
fn workers_started_around_run_boundaries_never_hang() {
    let Some(server) = Server::start() else {
        return;
    };
    let url = server.url();
    // Runs of about a second, back to back: each driver process starts as
    // soon as the previous one has exited.
    let env = [
        ("PARAPIPE_TRIAL_ITEMS", "400".to_owned()),
        ("PARAPIPE_TRIAL_MICROS", "5000".to_owned()),
        ("PARAPIPE_TRIAL_BATCH", "8".to_owned()),
    ];
    // When run i's workers start, in ms from the start of its driver
    // process: before it (negative: right after the previous driver ended),
    // with it, or during the run. Each run has a few within milliseconds of
    // its driver (as one run ends and the next begins, a worker reading the
    // job as the new driver replaces it), and one at another moment.
    const AROUND_MS: [i64; 7] = [-5, -3, -1, 0, 1, 3, 5];
    const OTHER_MS: [i64; 8] = [-300, 300, -50, 100, 600, -10, 30, 900];
    let out = |i: usize| procs_dir("trial3").join(format!("results-{i}.txt"));
    let mut procs = Processes::new("trial3");
    let mut last_end = Instant::now();
    for (i, other) in OTHER_MS.iter().enumerate() {
        let driver = format!("driver{i}");
        let mut driver_env = env.to_vec();
        driver_env.push(("PARAPIPE_TRIAL_OUT", out(i).display().to_string()));
        // (offset, process name), the driver as `None`.
        let mut starts: Vec<(i64, Option<String>)> = vec![(0, None)];
        starts.extend(
            AROUND_MS
                .iter()
                .enumerate()
                .map(|(k, ms)| (*ms, Some(format!("w{i}-{k}")))),
        );
        starts.push((*other, Some(format!("w{i}-other"))));
        starts.sort_by_key(|s| s.0);
        let mut at = starts[0].0;
        for (offset, worker) in starts {
            thread::sleep(Duration::from_millis(offset.abs_diff(at)));
            at = offset;
            match worker {
                Some(name) => procs.start(&url, &name, "worker", &env),
                None => procs.start(&url, &driver, "driver", &driver_env),
            }
        }
        let done = procs.wait_until(
            Some(&[driver.as_str()]),
            Instant::now() + Duration::from_secs(120),
        );
        last_end = Instant::now();
        let (status, stderr) = &done[&driver];
        assert!(status.success(), "driver {i} failed ({status}): {stderr}");
    }
    // A worker right after the last run.
    procs.start(&url, "w-after", "worker", &env);
    let done = procs.wait_until(None, last_end + Duration::from_secs(60));
    for i in 0..OTHER_MS.len() {
        let text = std::fs::read_to_string(out(i)).expect("the driver wrote its results");
        let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_same_items(&got, &expected(0..400), &format!("run {i}'s results"));
    }
    let mut failed: Vec<String> = done
        .iter()
        .filter(|(_, (status, _))| !status.success())
        .map(|(name, (status, stderr))| format!("{name} ({status}): {}", stderr.trim()))
        .collect();
    failed.sort();
    eprintln!("{} processes, {} failed", done.len(), failed.len());
    assert!(
        failed.is_empty(),
        "every process ends without error: {failed:#?}"
    );
}

// Issue 14, item 4.
#[test]
fn a_tcp_service_that_is_not_nats_fails_within_the_broker_timeout() {
    // Accepts connections and never says anything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    install_logger();
    let job = Job::new("trial4")
        .url(format!("nats://127.0.0.1:{port}"))
        .broker_timeout(Duration::from_secs(3));
    let started = Instant::now();
    let result = watchdog(Duration::from_secs(60), "silent TCP service", move || {
        pipe!(distributed(&job): 0..10u64 | plus_one).collect::<Vec<u64>>()
    });
    let took = started.elapsed();
    let error = result.expect_err("a silent service is not a broker");
    eprintln!("failed after {took:?}: {error}");
    assert!(took < Duration::from_secs(15), "failed only after {took:?}");
}

// Issue 14, item 5.
#[test]
fn distributed_pipelines_run_inside_a_tokio_runtime() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut failures = Vec::new();
    for flavour in ["multi-thread", "current-thread"] {
        let job = job(&server, &format!("trial5{}", &flavour[..5]));
        let outcome = std::panic::catch_unwind(move || {
            watchdog(
                Duration::from_secs(60),
                "inside a tokio runtime",
                move || {
                    let runtime = match flavour {
                        "multi-thread" => tokio::runtime::Builder::new_multi_thread(),
                        _ => tokio::runtime::Builder::new_current_thread(),
                    }
                    .enable_all()
                    .build()
                    .unwrap();
                    runtime.block_on(async move {
                        let local: Vec<u64> =
                            pipe!(0..500u64 | slow(0) | plus_one).collect().unwrap();
                        let distributed = slow_pipeline(&job, 0..500, 0).unwrap();
                        (sorted(local), sorted(distributed))
                    })
                },
            )
        });
        match outcome {
            Ok((local, distributed)) => {
                assert_same_items(&local, &expected(0..500), &format!("{flavour}: local"));
                assert_same_items(
                    &distributed,
                    &expected(0..500),
                    &format!("{flavour}: distributed"),
                );
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{flavour} runtime: panicked: {message}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same stage name, two item types: what two builds of a program that
/// changed a type between them would run.
#[map_stage(name = "pair")]
fn pair_unsigned(x: u64) -> (u64, u64) {
    (x, x)
}

#[map_stage(name = "pair")]
fn pair_signed(x: u64) -> (u64, i64) {
    (x, -(x as i64))
}

// Issue 14, item 6.
#[test]
fn processes_whose_item_types_differ_are_refused() {
    let Some(server) = Server::start() else {
        return;
    };
    let worker_job = job(&server, "trial6")
        .role(Role::Worker)
        .process_name("signed")
        .join_timeout(Duration::from_secs(30));
    let worker = thread::spawn(move || {
        watchdog(Duration::from_secs(90), "mismatched worker", move || {
            pipe!(distributed(&worker_job): 0..200u64 | pair_signed).run()
        })
    });
    thread::sleep(Duration::from_millis(300));
    // The driver runs no stage: only the worker could do the work.
    let driver_job = job(&server, "trial6")
        .process_name("driver")
        .stages(Vec::<String>::new())
        .join_timeout(Duration::from_secs(5));
    let driver: Result<Vec<(u64, u64)>, PipelineError> =
        watchdog(Duration::from_secs(90), "driver", move || {
            pipe!(distributed(&driver_job): 0..200u64 | pair_unsigned).collect()
        });
    let worker = worker.join().expect("the worker did not hang");
    eprintln!(
        "worker: {:?}; driver: {:?}",
        worker.as_ref().map_err(ToString::to_string),
        driver
            .as_ref()
            .map(|items| items.iter().take(3).copied().collect::<Vec<_>>())
            .map_err(ToString::to_string)
    );
    let error = worker.expect_err("the worker must be refused: its items are not the job's");
    let message = error.to_string();
    assert!(
        message.contains("pair") && message.contains("i64") && message.contains("u64"),
        "the error must name the stage and both types: {message}"
    );
    assert!(
        driver.is_err(),
        "the driver must fail, not report wrong values: {:?}",
        driver.map(|items| items.into_iter().take(5).collect::<Vec<_>>())
    );
}

// Issue 14, item 7.
#[test]
fn a_broker_outage_fails_the_job_after_about_the_broker_timeout() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let driver_job = job(&server, "trial7")
        .batch(4)
        .broker_timeout(Duration::from_secs(5));
    let (tx, rx) = mpsc::channel();
    // 2,000 items of 10 ms on 2 workers: 10 s and more.
    let driver = thread::spawn(move || {
        let result = slow_pipeline(&driver_job, 0..2_000, 10_000);
        let _ = tx.send(Instant::now());
        result
    });
    wait_for_status(
        &job(&server, "trial7"),
        "the run did not start",
        running_with_progress,
    );
    let outage = Instant::now();
    server.stop();
    let ended = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("hang: the driver did not end within 120 s of the outage");
    let result = driver.join().unwrap();
    let after = ended.duration_since(outage);
    eprintln!(
        "the driver ended {after:?} after the outage began: {:?}",
        result.as_ref().map(Vec::len).map_err(ToString::to_string)
    );
    assert!(
        result.is_err(),
        "the broker was gone: the job cannot succeed"
    );
    assert!(
        after <= Duration::from_millis(7_500),
        "broker timeout 5 s: failed only {after:?} after the outage began"
    );
}

// Issue 14, item 8.
#[test]
fn a_new_run_is_not_held_back_by_workers_of_a_killed_driver() {
    let Some(server) = Server::start() else {
        return;
    };
    let url = server.url();
    // The run, without leftovers: 2,000 items of 5 ms on the driver's 2 workers.
    let base_job = job(&server, "trial8base").batch(8);
    let started = Instant::now();
    let got = watchdog(Duration::from_secs(120), "baseline run", move || {
        slow_pipeline(&base_job, 0..2_000, 5_000)
    })
    .unwrap();
    let baseline = started.elapsed();
    assert_same_items(&got, &expected(0..2_000), "the baseline run");

    // A driver and two workers on a long run; the driver is killed.
    let mut procs = Processes::new("trial8");
    let env = [
        ("PARAPIPE_TRIAL_ITEMS", "100000".to_owned()),
        ("PARAPIPE_TRIAL_MICROS", "1000".to_owned()),
        ("PARAPIPE_TRIAL_BATCH", "8".to_owned()),
    ];
    procs.start(&url, "driver", "driver", &env);
    procs.start(&url, "w1", "worker", &env);
    procs.start(&url, "w2", "worker", &env);
    wait_for_status(
        &job(&server, "trial8"),
        "the first run did not start",
        |s| running_with_progress(s) && s.processes.len() == 3,
    );
    // Well into the run (about 16 s of work): the driver is past its start.
    thread::sleep(Duration::from_secs(3));
    procs.kill("driver");
    // A new driver at once, for the same run as the baseline.
    let new_job = job(&server, "trial8").batch(8).process_name("driver-new");
    let started = Instant::now();
    let got = watchdog(
        Duration::from_secs(180),
        "run after the killed driver",
        move || slow_pipeline(&new_job, 0..2_000, 5_000),
    );
    let took = started.elapsed();
    eprintln!("baseline {baseline:?}; with the killed driver's workers left: {took:?}");
    let mut failures = Vec::new();
    match got {
        Ok(got) => {
            if let Err(why) = same_items(&got, &expected(0..2_000)) {
                failures.push(format!("the new run's results: {why}"));
            }
        }
        Err(e) => failures.push(format!("the new run failed: {e}")),
    }
    if took > baseline.mul_f64(1.5) + Duration::from_secs(5) {
        failures.push(format!(
            "the new run took {took:?}, against {baseline:?} without the leftovers"
        ));
    }
    let done = procs.wait_until(
        Some(&["w1", "w2"]),
        Instant::now() + Duration::from_secs(60),
    );
    for (name, (status, stderr)) in &done {
        eprintln!("old worker {name}: {status}");
        if status.success() {
            failures.push(format!(
                "old worker {name} must fail, not end as if its run were done: {stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// Issue 14, item 9.
#[test]
fn a_worker_late_for_a_failed_run_ends_without_error() {
    let Some(server) = Server::start() else {
        return;
    };
    let driver_job = job(&server, "trial9").process_name("driver");
    let error = watchdog(Duration::from_secs(60), "failing run", move || {
        pipe!(distributed(&driver_job): 0..1_000u64 | fail_at(500) | plus_one).run()
    })
    .unwrap_err();
    assert_eq!(error.stage(), "fail_at");
    // Within 10 s of the end: late for that run.
    let worker_job = job(&server, "trial9")
        .role(Role::Worker)
        .process_name("late");
    let started = Instant::now();
    let result = watchdog(Duration::from_secs(60), "late worker", move || {
        pipe!(distributed(&worker_job): 0..1_000u64 | fail_at(500) | plus_one).run()
    });
    let took = started.elapsed();
    eprintln!("the late worker ended after {took:?}: {result:?}");
    assert!(
        result.is_ok(),
        "a late worker's results end without error: {}",
        result.unwrap_err()
    );
    assert!(took < Duration::from_secs(5), "ended only after {took:?}");
}

// Issue 14, item 10.
#[test]
fn permanent_configuration_errors_fail_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let Some(no_js) = Server::start_with(Options {
        jetstream: false,
        ..Options::default()
    }) else {
        return;
    };
    install_logger();
    let port = server.port();
    // (case, name, url, words of which the message must hold one)
    let cases: Vec<(&str, String, String, &[&str])> = vec![
        (
            "malformed URL",
            "trial10a".into(),
            "nats://127.0.0.1:notaport".into(),
            &["url"],
        ),
        (
            "http scheme",
            "trial10b".into(),
            format!("http://127.0.0.1:{port}"),
            &["scheme", "http"],
        ),
        (
            "empty URL",
            "trial10c".into(),
            String::new(),
            &["url", "empty"],
        ),
        (
            "server without JetStream",
            "trial10d".into(),
            no_js.url(),
            &["jetstream"],
        ),
        (
            "job name of 300 characters",
            "n".repeat(300),
            server.url(),
            &["long", "length", "characters", "at most"],
        ),
        (
            "job name of 5,000 characters",
            "m".repeat(5_000),
            server.url(),
            &["long", "length", "characters", "at most"],
        ),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(case, name, url, words)| {
            let job = Job::new(name)
                .url(url)
                .broker_timeout(Duration::from_secs(30));
            let handle = thread::spawn(move || {
                let started = Instant::now();
                let result = watchdog(Duration::from_secs(90), case, move || {
                    pipe!(distributed(&job): 0..10u64 | plus_one).run()
                });
                (started.elapsed(), result)
            });
            (case, words, handle)
        })
        .collect();
    let mut failures = Vec::new();
    for (case, words, handle) in handles {
        let (took, result) = match handle.join() {
            Ok(outcome) => outcome,
            Err(_) => {
                failures.push(format!("{case}: hang (watchdog)"));
                continue;
            }
        };
        let message = match result {
            Ok(()) => {
                failures.push(format!("{case}: succeeded after {took:?}"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        eprintln!("{case}: {took:?}: {message}");
        let lower = message.to_lowercase();
        if took > Duration::from_secs(2) {
            failures.push(format!("{case}: failed only after {took:?}: {message}"));
        }
        if !words.iter().any(|w| lower.contains(w)) {
            failures.push(format!(
                "{case}: the message does not name the cause ({words:?}): {message}"
            ));
        }
        for misleading in [
            "requested jetstream resource does not exist",
            "maximum control line exceeded",
        ] {
            if lower.contains(misleading) {
                failures.push(format!("{case}: a misleading message: {message}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[map_stage]
fn byte_count(bytes: Vec<u8>) -> usize {
    bytes.len()
}

// Issue 14, item 11.
#[test]
fn a_message_over_the_payload_limit_names_the_limit_and_the_batch() {
    let Some(server) = Server::start() else {
        return;
    };
    // 64 items of 64 KiB in a message: 4 MiB, over the broker's 1 MiB.
    let job = job(&server, "trial11").broker_timeout(Duration::from_secs(30));
    let started = Instant::now();
    let result = watchdog(Duration::from_secs(120), "oversized messages", move || {
        let items = (0..200u64).map(|i| vec![i as u8; 64 * 1024]);
        pipe!(distributed(&job): items | byte_count).collect::<Vec<usize>>()
    });
    let took = started.elapsed();
    let message = result.expect_err("4 MiB messages cannot pass").to_string();
    eprintln!("failed after {took:?}: {message}");
    let lower = message.to_lowercase();
    assert!(
        lower.contains("batch") && (lower.contains("payload") || lower.contains("limit")),
        "the message must name the payload limit and `Job::batch`: {message}"
    );
    assert!(took < Duration::from_secs(10), "failed only after {took:?}");
}

/// Serialises as its content: postcard cannot read it back (no
/// self-describing format).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
}

/// A field postcard's reader expects even when the writer skipped it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Sparse {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    weight: u64,
}

#[map_stage]
fn same_loose(x: Loose) -> Loose {
    x
}

#[map_stage]
fn same_sparse(x: Sparse) -> Sparse {
    x
}

// Issue 14, item 12.
#[test]
fn serde_shapes_postcard_cannot_carry_are_named() {
    let Some(server) = Server::start() else {
        return;
    };
    let loose: Vec<Loose> = (0..100u64)
        .map(|i| {
            if i % 2 == 0 {
                Loose::Number(i)
            } else {
                Loose::Text(i.to_string())
            }
        })
        .collect();
    let sparse: Vec<Sparse> = (0..100u64)
        .map(|i| Sparse {
            id: i,
            note: None,
            weight: 2 + i,
        })
        .collect();
    // Locally, both work.
    let local: Vec<Loose> = pipe!(loose.clone() | same_loose).collect().unwrap();
    assert_eq!(sorted(local), sorted(loose.clone()));
    let local: Vec<Sparse> = pipe!(sparse.clone() | same_sparse).collect().unwrap();
    assert_eq!(sorted(local), sorted(sparse.clone()));

    let mut failures = Vec::new();
    let loose_job = job(&server, "trial12loose");
    let started = Instant::now();
    let result = watchdog(Duration::from_secs(60), "untagged enum", move || {
        pipe!(distributed(&loose_job): loose | same_loose).collect::<Vec<Loose>>()
    });
    failures.extend(check_unsupported(
        "Loose",
        started.elapsed(),
        result.map(drop),
    ));
    let sparse_job = job(&server, "trial12sparse");
    let started = Instant::now();
    let result = watchdog(Duration::from_secs(60), "skipped field", move || {
        pipe!(distributed(&sparse_job): sparse | same_sparse).collect::<Vec<Sparse>>()
    });
    failures.extend(check_unsupported(
        "Sparse",
        started.elapsed(),
        result.map(drop),
    ));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// What is wrong with how a run of items of type `name` failed, if anything.
fn check_unsupported(name: &str, took: Duration, result: Result<(), PipelineError>) -> Vec<String> {
    let message = match result {
        Ok(()) => return vec![format!("{name}: the distributed run succeeded")],
        Err(e) => e.to_string(),
    };
    eprintln!("{name}: failed after {took:?}: {message}");
    let mut failures = Vec::new();
    if !message.contains(name) {
        failures.push(format!(
            "{name}: the message does not name the type: {message}"
        ));
    }
    let limitation = [
        "postcard",
        "untagged",
        "skip_serializing_if",
        "self-describing",
    ];
    let lower = message.to_lowercase();
    if !limitation.iter().any(|w| lower.contains(w)) {
        failures.push(format!(
            "{name}: the message does not name the limitation: {message}"
        ));
    }
    if message.contains("same build") {
        failures.push(format!("{name}: the message blames the build: {message}"));
    }
    if took > Duration::from_secs(5) {
        failures.push(format!("{name}: failed only after {took:?}"));
    }
    failures
}

/// `Job::cleanup`, retried for up to 30 s while it refuses (a killed
/// driver's run may take a moment to count as dead).
fn cleanup_when_allowed(job: &Job) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match job.cleanup() {
            Ok(n) => return n,
            Err(e) => {
                assert!(Instant::now() < deadline, "cleanup kept failing: {e}");
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

// Issue 14, item 13.
#[test]
fn cleanup_deletes_what_runs_leave_on_the_broker() {
    let Some(server) = Server::start() else {
        return;
    };
    // A completed run leaves its control stream only.
    let done_job = job(&server, "trial13done");
    let run = done_job.clone();
    let got = watchdog(Duration::from_secs(60), "completed run", move || {
        slow_pipeline(&run, 0..1_000, 0)
    })
    .unwrap();
    assert_same_items(&got, &expected(0..1_000), "the completed run");
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.job_streams("trial13done").len() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        server.job_streams("trial13done"),
        ["PARAPIPE_trial13done_CTL"]
    );

    // A failed run leaves its streams.
    let failed_job = job(&server, "trial13failed");
    let run = failed_job.clone();
    watchdog(Duration::from_secs(60), "failing run", move || {
        pipe!(distributed(&run): 0..1_000u64 | fail_at(500) | plus_one).run()
    })
    .unwrap_err();
    let left = server.job_streams("trial13failed");
    eprintln!("a failed run left {left:?}");
    assert!(!left.is_empty());

    // A killed driver leaves its streams.
    let mut procs = Processes::new("trial13killed");
    let env = [
        ("PARAPIPE_TRIAL_ITEMS", "100000".to_owned()),
        ("PARAPIPE_TRIAL_MICROS", "1000".to_owned()),
    ];
    procs.start(&server.url(), "driver", "driver", &env);
    let killed_job = job(&server, "trial13killed");
    wait_for_status(&killed_job, "the run did not start", running_with_progress);
    procs.kill("driver");
    let left_killed = server.job_streams("trial13killed");
    eprintln!("a killed driver left {left_killed:?}");
    assert!(!left_killed.is_empty());

    let n = watchdog(Duration::from_secs(60), "cleanup", move || {
        [
            done_job.cleanup().expect("cleanup after a completed run"),
            failed_job.cleanup().expect("cleanup after a failed run"),
            cleanup_when_allowed(&killed_job),
        ]
    });
    assert_eq!(n, [1, left.len(), left_killed.len()], "streams deleted");
    for name in ["trial13done", "trial13failed", "trial13killed"] {
        assert_eq!(server.job_streams(name), Vec::<String>::new(), "{name}");
    }
}

static COUNTED_CALLS: AtomicU64 = AtomicU64::new(0);

/// 300 ms per item, each call counted.
#[map_stage(workers = 1)]
fn counted(x: u64) -> u64 {
    COUNTED_CALLS.fetch_add(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(300));
    x
}

// Issue 14, item 14.
#[test]
fn prefetched_messages_are_not_redelivered_while_they_wait() {
    let Some(server) = Server::start() else {
        return;
    };
    let job = job(&server, "trial14")
        .batch(1)
        .ack_wait(Duration::from_secs(1));
    let got: Vec<u64> = watchdog(Duration::from_secs(120), "slow items", move || {
        pipe!(distributed(&job): 0..40u64 | counted).collect()
    })
    .unwrap();
    assert_same_items(&got, &(0..40).collect::<Vec<u64>>(), "the results");
    assert_eq!(
        COUNTED_CALLS.load(Ordering::SeqCst),
        40,
        "each item processed once: none redelivered while waiting in a prefetch buffer"
    );
}

// Issue 14, item 15.
#[test]
fn credentials_in_the_url_authenticate_and_wrong_ones_fail_at_once() {
    let user_pass = Options {
        args: ["--user", "parapipe", "--pass", "secret"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    };
    let Some(with_user) = Server::start_with(user_pass) else {
        return;
    };
    let token = Options {
        args: ["--auth", "s3cr3t-token"].map(String::from).to_vec(),
        ..Options::default()
    };
    let Some(with_token) = Server::start_with(token) else {
        return;
    };
    install_logger();
    let (user_port, token_port) = (with_user.port(), with_token.port());
    let mut failures = Vec::new();
    // Right credentials: the job works.
    for (case, url) in [
        (
            "user and password",
            format!("nats://parapipe:secret@127.0.0.1:{user_port}"),
        ),
        (
            "token",
            format!("nats://s3cr3t-token@127.0.0.1:{token_port}"),
        ),
    ] {
        let job = Job::new(format!("trial15{}", &case[..4]))
            .url(url)
            .broker_timeout(Duration::from_secs(30));
        let result = watchdog(Duration::from_secs(90), case, move || {
            slow_pipeline(&job, 0..500, 0)
        });
        match result {
            Ok(got) => match same_items(&got, &expected(0..500)) {
                Ok(()) => eprintln!("{case}: works"),
                Err(why) => failures.push(format!("{case}: wrong results: {why}")),
            },
            Err(e) => failures.push(format!("{case}: failed: {e}")),
        }
    }
    // Wrong credentials: a clear error at once (in parallel: each would
    // take the broker timeout if retried).
    let handles: Vec<_> = [
        (
            "wrong password",
            format!("nats://parapipe:wrong@127.0.0.1:{user_port}"),
        ),
        ("no credentials", format!("nats://127.0.0.1:{user_port}")),
        (
            "wrong token",
            format!("nats://wrong-token@127.0.0.1:{token_port}"),
        ),
    ]
    .into_iter()
    .map(|(case, url)| {
        let job = Job::new("trial15wrong")
            .url(url)
            .broker_timeout(Duration::from_secs(30));
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let result = watchdog(Duration::from_secs(90), case, move || {
                slow_pipeline(&job, 0..10, 0)
            });
            (started.elapsed(), result)
        });
        (case, handle)
    })
    .collect();
    for (case, handle) in handles {
        let Ok((took, result)) = handle.join() else {
            failures.push(format!("{case}: hang (watchdog)"));
            continue;
        };
        let message = match result {
            Ok(_) => {
                failures.push(format!("{case}: succeeded"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        eprintln!("{case}: {took:?}: {message}");
        if took > Duration::from_secs(2) {
            failures.push(format!("{case}: failed only after {took:?}: {message}"));
        }
        if !message.to_lowercase().contains("authori") {
            failures.push(format!(
                "{case}: the message is not about authorisation: {message}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
