use parapipe::prelude::*;

#[map_stage]
fn to_text(x: u32) -> String {
    x.to_string()
}

// Merged pipelines carry one item type: the error is on the input that
// differs.
fn build() -> Pipeline<u32> {
    Pipeline::merge([pipe!(0..3u32), pipe!(0..3u32 | to_text)])
}

fn main() {}
