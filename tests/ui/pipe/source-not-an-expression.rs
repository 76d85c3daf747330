use parapipe::prelude::*;

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn build() -> Pipeline<u32> {
    pipe!(let x = 1 | add_one)
}

fn main() {}
