use parapipe::prelude::*;

#[stage(workers = 2)]
struct Fetch {
    urls: Vec<String>,
}

fn main() {}
