//! The examples of parallelpipe's README, done in Rust.

mod common;

use std::collections::HashMap;

use common::{LIMIT, watchdog};
use parapipe::prelude::*;

// ---- "Parametrical stage" and "Mapping stage" ----

#[stage(workers = 4)]
fn add_n_iter(input: impl Iterator<Item = i64>, n: i64) -> impl Iterator<Item = i64> {
    input.map(move |x| x + n)
}

#[map_stage(workers = 4)]
fn add_n(x: i64, n: i64) -> i64 {
    x + n
}

#[test]
fn parametric_stage() {
    let mut got: Vec<i64> = pipe!(0..100 | add_n_iter(7)).collect().unwrap();
    got.sort();
    assert_eq!(got, (7..107).collect::<Vec<_>>());
}

#[test]
fn map_stage_and_setup_override() {
    let mut got: Vec<i64> = pipe!(0..100 | add_n(7).workers(2).qsize(5))
        .collect()
        .unwrap();
    got.sort();
    assert_eq!(got, (7..107).collect::<Vec<_>>());
    // The function is still an ordinary function.
    assert_eq!(add_n(1, 2), 3);
    assert_eq!(
        add_n_iter([1, 2].into_iter(), 10).collect::<Vec<_>>(),
        [11, 12]
    );
}

// ---- fetch | get_titles | most_common ----

/// Stands in for downloading: a page per url, some without a title.
#[stage(workers = 4)]
fn fetch_urls(urls: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    urls.map(|url| {
        let n: usize = url.rsplit('/').next().unwrap().parse().unwrap();
        if n.is_multiple_of(5) {
            format!("<html><body>{url}</body></html>")
        } else {
            format!(
                "<html><title>Title {}</title><body>{url}</body></html>",
                n % 3
            )
        }
    })
}

#[stage(workers = 2)]
fn get_titles(contents: impl Iterator<Item = String>) -> impl Iterator<Item = String> {
    contents.filter_map(|c| {
        let start = c.find("<title>")? + "<title>".len();
        let end = c[start..].find("</title>")? + start;
        Some(c[start..end].to_owned())
    })
}

/// Aggregates everything: one worker, one result.
#[stage]
fn most_common(titles: impl Iterator<Item = String>) -> impl Iterator<Item = (String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in titles {
        *counts.entry(t).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .into_iter()
}

#[test]
fn titles_pipeline() {
    let urls: Vec<String> = (0..1000).map(|i| format!("http://test.com/{i}")).collect();
    let mut titles: Vec<String> = pipe!(urls.clone() | fetch_urls | get_titles)
        .collect()
        .unwrap();
    assert_eq!(titles.len(), 800);
    titles.sort();
    titles.dedup();
    assert_eq!(titles, ["Title 0", "Title 1", "Title 2"]);

    let best = pipe!(urls | fetch_urls | get_titles | most_common)
        .execute()
        .unwrap();
    // Among 0..1000 minus multiples of 5, n % 3 == 0 and == 1 occur 267 times,
    // 2 occurs 266 times; ties go to the smaller title.
    assert_eq!(best, Some(("Title 0".to_owned(), 267)));
}

// ---- Exception handling: [2, 3, "ops", 7] | add_one ----

#[derive(Debug)]
enum Value {
    Int(i64),
    Str(&'static str),
}

#[derive(Debug)]
struct TypeError(String);

impl std::fmt::Display for TypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TypeError {}

#[stage(workers = 2)]
fn add_one(numbers: impl Iterator<Item = Value>) -> impl Iterator<Item = Result<i64, TypeError>> {
    numbers.map(|v| match v {
        Value::Int(n) => Ok(n + 1),
        Value::Str(s) => Err(TypeError(format!("cannot add 1 to the string {s:?}"))),
    })
}

#[test]
fn exception_handling() {
    let err = watchdog(LIMIT, "error example", || {
        let input = vec![
            Value::Int(2),
            Value::Int(3),
            Value::Str("ops"),
            Value::Int(7),
        ];
        pipe!(input | add_one).collect::<Vec<i64>>().unwrap_err()
    });
    assert_eq!(err.stage(), "add_one");
    assert!(matches!(err.worker(), Some(0 | 1)));
    assert!(err.task().starts_with("add_one-"));
    assert_eq!(
        err.downcast_ref::<TypeError>().unwrap().0,
        "cannot add 1 to the string \"ops\""
    );
    let msg = err.to_string();
    assert!(msg.starts_with("the task \"add_one-"), "{msg}");
    assert!(msg.contains("cannot add 1 to the string \"ops\""), "{msg}");
    // The original error is the source, as `std::error::Error` sees it.
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.downcast_ref::<TypeError>().is_some());
}

#[test]
fn filter_errors_keeps_going_and_counts() {
    let input = vec![
        Value::Int(2),
        Value::Int(3),
        Value::Str("ops"),
        Value::Int(7),
        Value::Str("no"),
    ];
    let mut results = pipe!(input | add_one.filter_errors(true)).results();
    let mut got: Vec<i64> = results.by_ref().map(|r| r.unwrap()).collect();
    got.sort();
    assert_eq!(got, [3, 4, 8]);
    assert_eq!(results.filtered(), 2);
    assert_eq!(results.filtered_by_stage(), [("add_one".to_owned(), 2)]);
}
