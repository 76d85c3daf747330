use parapipe::prelude::*;

#[map_stage]
fn to_text(x: u32) -> String {
    x.to_string()
}

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn build() -> Pipeline<u32> {
    pipe!(0..10u32 | to_text | segment!(add_one | add_one).serial())
}

fn main() {}
