use parapipe::prelude::*;

struct Counter;

impl Counter {
    #[map_stage]
    fn add_one(&self, x: u32) -> u32 {
        x + 1
    }
}

fn main() {}
