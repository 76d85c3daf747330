use parapipe::prelude::*;

#[stage]
fn double(xs: impl Iterator<Item = u32>) -> impl Iterator {
    xs.map(|x| x * 2)
}

fn main() {}
