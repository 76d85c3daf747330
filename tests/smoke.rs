use parapipe::prelude::*;

#[map_stage(workers = 4)]
fn add_n(x: i64, n: i64) -> i64 {
    x + n
}

#[stage(workers = 2, qsize = 30)]
fn lens(words: impl Iterator<Item = String>) -> impl Iterator<Item = usize> {
    words.map(|w| w.len())
}

#[test]
fn smoke() {
    assert_eq!(add_n(1, 2), 3);
    let mut v: Vec<i64> = pipe!(0..100 | add_n(7)).collect().unwrap();
    v.sort();
    assert_eq!(v, (7..107).collect::<Vec<_>>());
    let total: usize = pipe!(vec!["a".to_string(), "bb".to_string()] | lens)
        .collect::<Vec<_>>()
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(total, 3);
}
