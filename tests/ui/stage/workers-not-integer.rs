use parapipe::prelude::*;

#[map_stage(workers = 2.5)]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {}
