use parapipe::prelude::*;

#[map_stage]
fn inc(x: u32) -> u32 {
    x + 1
}

fn main() {
    // Without the `nats` feature there is no `Job`; whatever stands in its
    // place is refused, saying which feature to enable.
    let job = "wordcount";
    let _ = pipe!(distributed(&job): 0..10u32 | inc);
}
