use parapipe::prelude::*;

#[map_stage]
fn inc(x: u32) -> u32 {
    x + 1
}

fn main() {
    let job = ();
    let _ = pipe!(distributed(&job): serial: 0..10u32 | inc);
}
