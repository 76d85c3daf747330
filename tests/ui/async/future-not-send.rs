use parapipe::prelude::*;
use std::rc::Rc;

#[map_stage(concurrency = 4)]
async fn add_one(x: u32) -> u32 {
    let shared = Rc::new(x);
    tokio::task::yield_now().await;
    *shared + 1
}

fn main() {
    let _ = pipe!(0..10u32 | add_one).collect::<Vec<u32>>();
}
