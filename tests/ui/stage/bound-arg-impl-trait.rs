use parapipe::prelude::*;

#[map_stage]
fn add(x: u32, n: impl Into<u32>) -> u32 {
    x + n.into()
}

fn main() {}
