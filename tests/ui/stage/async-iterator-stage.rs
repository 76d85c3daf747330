use parapipe::prelude::*;

#[stage]
async fn evens(input: impl Iterator<Item = u32>) -> impl Iterator<Item = u32> {
    input.filter(|x| x % 2 == 0)
}

fn main() {}
