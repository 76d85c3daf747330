use parapipe::prelude::*;

struct Config {
    factor: u32,
}

#[map_stage]
fn scale(x: u32, config: Config) -> u32 {
    x * config.factor
}

fn main() {}
