use parapipe::prelude::*;

#[stage]
fn consume(xs: impl Iterator<Item = u32>) {
    xs.for_each(drop);
}

fn main() {}
