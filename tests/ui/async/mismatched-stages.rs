use parapipe::prelude::*;

#[map_stage(concurrency = 4)]
async fn fetch(url: String) -> usize {
    url.len()
}

fn main() {
    // `fetch` takes `String`, the source gives `u32`: reported on `fetch`.
    let _ = pipe!(0..10u32 | fetch).collect::<Vec<usize>>();
}
