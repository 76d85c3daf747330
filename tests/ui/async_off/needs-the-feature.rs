use parapipe::prelude::*;

// Without the `async` feature, the one error names it; the stage still
// exists, so its use in `pipe!` adds none.
#[map_stage(concurrency = 8)]
async fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _ = pipe!(0..10u32 | add_one).collect::<Vec<u32>>();
}
