use parapipe::prelude::*;

#[map_stage(concurrency = 0)]
async fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _ = pipe!(0..10u32 | add_one).collect::<Vec<u32>>();
}
