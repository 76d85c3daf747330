use parapipe::prelude::*;

#[stage(producer)]
async fn numbers() -> impl Iterator<Item = u32> {
    0..10
}

fn main() {}
