//! `examples/deadletter.rs` on real files of this machine: `/etc/services`
//! (Debian's `netbase`), and `/etc/protocols` (also `netbase`), whose lines
//! are not services and become dead letters.

#[allow(dead_code, reason = "the tests use part of the example")]
#[path = "../examples/deadletter.rs"]
mod deadletter;

use std::path::PathBuf;

use deadletter::{Summary, parse_service, read_lines, run};

/// The real files, or `None` (said loudly) on a machine without them.
fn files(names: &[&str]) -> Option<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
    match paths.iter().find(|p| !p.exists()) {
        None => Some(paths),
        Some(missing) if std::env::var_os("PARAPIPE_REQUIRE_NETBASE").is_some() => {
            panic!(
                "PARAPIPE_REQUIRE_NETBASE is set, but {} is missing",
                missing.display()
            )
        }
        Some(missing) => {
            eprintln!(
                "SKIPPED: {} is missing (Debian's netbase)",
                missing.display()
            );
            None
        }
    }
}

#[test]
fn good_lines_are_summarised_and_bad_ones_written_with_their_line() {
    let Some(paths) = files(&["/etc/services", "/etc/protocols"]) else {
        return;
    };
    let lines = read_lines(&paths).unwrap();
    // The same, by a plain loop.
    let mut want = Summary::default();
    let mut want_bad = Vec::new();
    for line in &lines {
        match parse_service(line) {
            Ok(service) => want = want.with(service),
            Err(why) => want_bad.push(format!(
                "{}:{}: {why}: {}",
                line.file, line.number, line.text
            )),
        }
    }
    assert!(want.services > 100, "{want:?}");
    assert!(want_bad.len() > 10, "{} bad lines", want_bad.len());
    let out = std::env::temp_dir().join(format!("parapipe-dead-{}.txt", std::process::id()));
    let (summary, dead) = run(lines, &out).unwrap();
    assert_eq!(summary, want);
    assert_eq!(dead, want_bad.len());
    let mut written: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    std::fs::remove_file(&out).unwrap();
    written.sort();
    want_bad.sort();
    assert_eq!(written, want_bad);
    // Every dead letter names its file and line.
    assert!(written.iter().all(|l| l.starts_with("/etc/protocols:")));
}

#[test]
fn services_alone_have_no_dead_letters() {
    let Some(paths) = files(&["/etc/services"]) else {
        return;
    };
    let lines = read_lines(&paths).unwrap();
    let records = lines.len();
    let out = std::env::temp_dir().join(format!("parapipe-dead-s-{}.txt", std::process::id()));
    let (summary, dead) = run(lines, &out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert_eq!((summary.services, dead), (records, 0));
    assert!(summary.per_protocol["tcp"] > 50, "{summary:?}");
}
