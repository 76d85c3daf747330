use parapipe::prelude::*;

#[map_stage(qsize = 10, unbounded)]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {}
