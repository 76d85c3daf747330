use parapipe::prelude::*;

fn build() -> Pipeline<u32> {
    pipe!()
}

fn main() {}
