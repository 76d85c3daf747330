use parapipe::prelude::*;

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn build() -> Pipeline<u32> {
    pipe!(0..10u32 | add_one 5)
}

fn main() {}
