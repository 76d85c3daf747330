//! Distributed pipelines against a real `nats-server` (skipped, saying so,
//! where none is installed): in one process, and across OS processes of
//! this test binary, which re-runs itself as the job's other processes.
#![cfg(feature = "nats")]

#[path = "common/mod.rs"]
mod common;
#[path = "nats/server.rs"]
mod server;

use std::time::Duration;

use common::watchdog;
use parapipe::nats::Job;
use parapipe::prelude::*;
use server::Server;

#[map_stage(workers = 2)]
fn square(x: u64) -> u64 {
    x * x
}

#[stage(workers = 2)]
fn pairs(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = (u64, u64)> {
    xs.flat_map(|x| [(x, 0), (x, 1)])
}

#[map_stage]
fn show(p: (u64, u64)) -> String {
    format!("{}:{}", p.0, p.1)
}

fn job(server: &Server, name: &str) -> Job {
    Job::new(name)
        .url(server.url())
        .broker_timeout(Duration::from_secs(10))
}

#[test]
fn one_process_matches_the_local_pipeline() {
    let Some(server) = Server::start() else { return };
    let job = job(&server, "one");
    let mut got: Vec<String> = watchdog(Duration::from_secs(120), "distributed run", move || {
        pipe!(distributed(&job): 0..10_000u64 | square | pairs | show).collect()
    })
    .unwrap();
    let mut want: Vec<String> = pipe!(0..10_000u64 | square | pairs | show).collect().unwrap();
    got.sort();
    want.sort();
    assert_eq!(got.len(), 20_000);
    assert_eq!(got, want);
}
