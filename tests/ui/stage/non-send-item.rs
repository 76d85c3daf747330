use parapipe::prelude::*;

use std::rc::Rc;

#[map_stage]
fn unwrap_rc(x: Rc<u32>) -> u32 {
    *x
}

fn main() {}
