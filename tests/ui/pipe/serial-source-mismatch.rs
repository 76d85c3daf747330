use parapipe::prelude::*;

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _pipeline = pipe!(serial: vec!["one"] | add_one);
}
