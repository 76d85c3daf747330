use parapipe::prelude::*;

fn build() -> Pipeline<u32> {
    pipe!(0..10u32 | 42)
}

fn main() {}
