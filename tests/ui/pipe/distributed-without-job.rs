use parapipe::prelude::*;

#[map_stage]
fn inc(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _ = pipe!(distributed(): 0..10u32 | inc);
}
