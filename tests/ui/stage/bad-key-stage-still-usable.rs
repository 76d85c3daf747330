use parapipe::prelude::*;

// A misspelt key: the stage is still generated (with the default
// configuration), so `pipe!` below gives no second error.
#[map_stage(wokers = 2)]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn main() {
    let _: Result<Vec<u32>, PipelineError> = pipe!(0..10u32 | add_one).collect();
}
