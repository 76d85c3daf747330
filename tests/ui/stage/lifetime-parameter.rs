use parapipe::prelude::*;

#[map_stage]
fn first_word<'a>(line: &'a str) -> &'a str {
    line.split(' ').next().unwrap_or("")
}

fn main() {}
