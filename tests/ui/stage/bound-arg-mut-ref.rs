use parapipe::prelude::*;

#[map_stage]
fn push(x: u32, log: &mut Vec<u32>) -> u32 {
    log.push(x);
    x
}

fn main() {}
