use parapipe::prelude::*;
use std::collections::HashMap;

#[stage]
fn count_words(words: impl Iterator<Item = String>) -> impl Iterator<Item = HashMap<String, u64>> {
    let mut counts = HashMap::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    std::iter::once(counts)
}

fn build(words: Vec<String>) -> Pipeline<HashMap<String, u64>> {
    pipe!(words | count_words.workers(4).partition_by(|w: &u32| *w))
}

fn main() {}
