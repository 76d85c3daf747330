use parapipe::prelude::*;

#[map_stage]
fn to_text(x: u32) -> String {
    x.to_string()
}

#[map_stage]
fn add_one(x: u32) -> u32 {
    x + 1
}

fn build() {
    let _ = segment!(to_text | add_one);
}

fn main() {}
