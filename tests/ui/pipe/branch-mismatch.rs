use parapipe::prelude::*;

#[map_stage]
fn parse(line: String) -> Result<u64, std::num::ParseIntError> {
    line.parse()
}

#[map_stage]
fn double(x: u64) -> u64 {
    x * 2
}

// The `Err` branch of a split carries the parse errors, not numbers: the
// error is on the stage that expects numbers.
fn build() -> (Pipeline<u64>, Pipeline<u64>) {
    let (good, bad) = pipe!(vec![String::new()] | parse.keep_errors()).split_result();
    (pipe!(good | double), pipe!(bad | double))
}

fn main() {}
