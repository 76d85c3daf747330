use parapipe::prelude::*;

#[map_stage(filter_errors = 1)]
fn parse(s: String) -> Result<u32, std::num::ParseIntError> {
    s.parse()
}

fn main() {}
