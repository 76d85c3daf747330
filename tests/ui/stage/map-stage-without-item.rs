use parapipe::prelude::*;

#[map_stage]
fn answer() -> u32 {
    42
}

fn main() {}
