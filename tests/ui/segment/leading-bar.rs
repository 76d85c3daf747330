use parapipe::prelude::*;

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn build() {
    let _ = segment!(| add_one);
}

fn main() {}
