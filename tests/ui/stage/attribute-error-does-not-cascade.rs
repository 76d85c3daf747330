use parapipe::prelude::*;

// The attribute is wrong, but the function still exists: calling it below
// gives no second error.
#[map_stage(workers = 0)]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn call_it() -> u32 {
    add_one(1)
}

fn main() {}
