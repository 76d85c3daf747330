use parapipe::prelude::*;

#[stage(qsize = "30")]
fn double(xs: impl Iterator<Item = u32>) -> impl Iterator<Item = u32> {
    xs.map(|x| x * 2)
}

fn main() {}
