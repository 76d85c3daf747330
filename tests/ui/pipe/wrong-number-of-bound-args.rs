use parapipe::prelude::*;

#[map_stage]
fn add_n(x: u32, n: u32) -> u32 {
    x + n
}

fn build() -> Pipeline<u32> {
    pipe!(0..10u32 | add_n(1, 2))
}

fn main() {}
