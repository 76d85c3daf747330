use parapipe::prelude::*;

#[map_stage]
fn show(x: u32) -> impl std::fmt::Display {
    x
}

fn main() {}
