use parapipe::prelude::*;

fn main() {
    let _ = pipe!(serial: 0..10u32);
}
