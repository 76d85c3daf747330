use parapipe::prelude::*;

#[map_stage(pipeline::workers = 4)]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {}
