use parapipe::prelude::*;

use std::rc::Rc;

fn build() -> Pipeline<Rc<u32>> {
    pipe!(vec![Rc::new(1u32)])
}

fn main() {}
