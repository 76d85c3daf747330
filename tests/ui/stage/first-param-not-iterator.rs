use parapipe::prelude::*;

#[stage(workers = 2)]
fn double(x: u32) -> impl Iterator<Item = u32> {
    std::iter::once(x * 2)
}

fn main() {}
