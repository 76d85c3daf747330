use parapipe::nats::Job;
use parapipe::prelude::*;

struct NotSerde(u32);

#[map_stage]
fn wrap(x: u32) -> NotSerde {
    NotSerde(x)
}

#[map_stage]
fn unwrap(x: NotSerde) -> u32 {
    x.0
}

fn main() {
    let job = Job::new("ui");
    // Fine in one process: nothing is serialised.
    let _ = pipe!(0..10u32 | wrap | unwrap);
    // Distributed, `NotSerde` would cross the broker: refused on `wrap`.
    let _ = pipe!(distributed(&job): 0..10u32 | wrap | unwrap);
}
