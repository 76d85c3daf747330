use parapipe::prelude::*;

fn build() {
    let _ = segment!();
}

fn main() {}
