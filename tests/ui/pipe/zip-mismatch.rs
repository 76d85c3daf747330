use parapipe::prelude::*;

#[map_stage]
fn to_text(x: u32) -> String {
    x.to_string()
}

#[map_stage]
fn add(pair: (u32, u32)) -> u32 {
    pair.0 + pair.1
}

// A zip's items are pairs of its inputs' items: a stage after it that takes
// other pairs is reported on that stage.
fn build() -> Pipeline<u32> {
    let [a, b] = pipe!(0..3u32).tee();
    pipe!(a.zip(pipe!(b | to_text)) | add)
}

fn main() {}
