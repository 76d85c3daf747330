//! The `parapipe-profile` viewer, run as a user runs it: on a database
//! holding two profiled runs of different speeds, and on one holding a
//! keyed stage's run and runs of graph branches.
//!
//! The example chart `docs/profile-example.svg` was made with:
//!
//! ```sh
//! rm -rf /tmp/parapipe-example-profile   # so that the example's run is run 1
//! cargo run --release --example profile
//! cargo run --release -p parapipe-profile -- \
//!     --db /tmp/parapipe-example-profile svg -o docs/profile-example.svg
//! ```
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::{LIMIT, watchdog};
use parapipe::prelude::*;
use parapipe::profile::{DATABASE_FILE, Profiler};

const VIEWER: &str = env!("CARGO_BIN_EXE_parapipe-profile");

/// The stage names of both runs, with characters XML must escape.
const ODD: &str = "odd<&>\"name'";
const NAP: &str = "MainPipeline__nap";
const ODD_KEY: &str = "MainPipeline__odd<&>\"name'";
const TALLY: &str = "MainPipeline__tally";

#[map_stage]
fn nap(x: u64, ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    x
}

#[map_stage(workers = 2)]
fn double(x: u64) -> u64 {
    x * 2
}

#[stage]
fn tally(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    xs.scan(0, |sum, x| {
        *sum += x;
        Some(*sum)
    })
}

/// A database with two runs of 40 items, in a fresh folder removed at the
/// end: run 1 fast (a 1 ms stage), run 2 slow (10 ms) and with one more
/// stage.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "parapipe-test-{}-viewer-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = dir.clone();
        watchdog(LIMIT, "profiled runs", move || {
            let profiler = || {
                Profiler::new()
                    .folder(&folder)
                    .name("viewer <test> & co")
                    .sample_every(Duration::from_millis(5))
            };
            let fast = pipe!(0..40u64 | nap(1) | double.name(ODD))
                .profile_with(profiler())
                .collect::<Vec<_>>()
                .unwrap();
            assert_eq!(fast.len(), 40);
            let mut slow = pipe!(0..40u64 | nap(10) | double.name(ODD) | tally)
                .profile_with(profiler())
                .results();
            assert_eq!(slow.by_ref().count(), 40);
            let profile = slow.profile().expect("profiled");
            assert!(
                profile.store_error().is_none(),
                "{:?}",
                profile.store_error()
            );
        });
        Fixture { dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.join(DATABASE_FILE)
    }

    /// Runs the viewer on this database; it must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let db = self.db();
        let mut all = vec!["--db", db.to_str().unwrap()];
        all.extend_from_slice(args);
        let run = viewer(&all);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(run.stderr.is_empty(), "{args:?}: {}", run.stderr);
        run.stdout
    }
}

/// A keyed stage's item: its key and its number.
type Keyed = (u32, u64);

/// A keyed stage's worker: emits how many items it took, once, at the end.
#[stage]
fn count_taken(items: impl Iterator<Item = Keyed>) -> impl Iterator<Item = u64> {
    std::iter::once(items.count() as u64)
}

#[map_stage]
fn parse(s: String) -> Result<u64, std::num::ParseIntError> {
    s.parse()
}

/// The keys of the graph runs' stages, as the profiler names them.
const TEE_KEY: &str = "MainPipeline__tee0__double";
const SPLIT_OK_KEY: &str = "MainPipeline__split1__ok__double";
const KEYED: &str = "MainPipeline__count_taken";

impl Fixture {
    /// A database with three runs, in a fresh folder removed at the end:
    /// run 1 a keyed stage of four workers whose key 0 has nine items in
    /// ten; run 2 a stage on a tee's first branch; run 3 a stage on the
    /// `ok` branch of a `split_result` on a split's second branch.
    fn keyed_and_branches(test: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "parapipe-test-{}-viewer-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let folder = dir.clone();
        watchdog(LIMIT, "keyed and branch runs", move || {
            let profiler = || Profiler::new().folder(&folder);
            let items: Vec<Keyed> = (0..4_000u64)
                .map(|i| match i % 10 {
                    9 => ((i % 97) as u32 + 1, i),
                    _ => (0, i),
                })
                .collect();
            let taken: Vec<u64> =
                pipe!(items | count_taken.workers(4).partition_by(|item: &Keyed| item.0))
                    .profile_with(profiler())
                    .collect()
                    .unwrap();
            assert_eq!(taken.iter().sum::<u64>(), 4_000);

            // Each branch is a run of its own; the branches not profiled
            // are dropped, which detaches them.
            let [first, second] = pipe!(0..40u64).tee();
            drop(second);
            let doubled = pipe!(first | double)
                .profile_with(profiler())
                .collect::<Vec<_>>()
                .unwrap();
            assert_eq!(doubled.len(), 40);

            let (even, odd) = pipe!((0..40u64).map(|i| i.to_string())).split(|s| s.len() == 1);
            drop(even);
            let (ok, errors) = pipe!(odd | parse.keep_errors()).split_result();
            drop(errors);
            let doubled = pipe!(ok | double)
                .profile_with(profiler())
                .collect::<Vec<_>>()
                .unwrap();
            assert_eq!(doubled.len(), 30);
        });
        Fixture { dir }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the viewer with `args`, under the watchdog.
fn viewer(args: &[&str]) -> Run {
    viewer_with(args, |_| {})
}

fn viewer_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Run {
    let mut cmd = Command::new(VIEWER);
    cmd.args(args);
    setup(&mut cmd);
    let what = format!("parapipe-profile {args:?}");
    let out = watchdog(LIMIT, &what, move || {
        cmd.output().expect("the viewer starts")
    });
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 output"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 errors"),
    }
}

/// The line of `table` that starts with `name`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split("  ").next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
}

fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn list_shows_both_runs() {
    let f = Fixture::new("list");
    let out = f.ok(&["list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("id") && lines[0].contains("outcome"),
        "{out}"
    );
    for (line, id) in lines[1..].iter().zip(["1", "2"]) {
        let c = cells(line);
        assert_eq!(c[0], id, "{out}");
        assert_eq!(c[1], "viewer <test> & co", "{out}");
        assert_eq!(c[4], "40", "{out}");
        assert_eq!(c[5], "completed", "{out}");
    }
}

#[test]
fn show_has_every_stage_and_its_counts() {
    let f = Fixture::new("show");
    let out = f.ok(&["show", "2"]);
    assert!(out.starts_with("run 2: viewer <test> & co\n"), "{out}");
    assert!(out.contains("items     40"), "{out}");
    assert!(out.contains("outcome   completed"), "{out}");
    for (name, kind) in [
        ("MainPipeline", "pipeline"),
        (NAP, "map"),
        (ODD_KEY, "map"),
        (TALLY, "iter"),
    ] {
        let c = cells(row(&out, name));
        assert_eq!(c.len(), 16, "{name}: {c:?}");
        assert_eq!(c[1], kind, "{name}");
        assert_eq!((c[3], c[4]), ("40", "40"), "{name}: in, out");
        // Latencies carry a unit.
        for latency in &c[7..10] {
            assert!(
                ["s", "ms", "µs", "ns"]
                    .iter()
                    .any(|u| latency.ends_with(&format!(" {u}"))),
                "{name}: {latency}"
            );
        }
    }
    assert_eq!(cells(row(&out, ODD_KEY))[2], "2", "workers");

    // Without a run id: the latest.
    assert_eq!(f.ok(&["show"]), out);
    let first = f.ok(&["show", "1"]);
    assert!(first.starts_with("run 1: "), "{first}");
    assert!(!first.contains(TALLY), "{first}");
}

#[test]
fn compare_puts_both_runs_side_by_side() {
    let f = Fixture::new("compare");
    let out = f.ok(&["compare", "1", "2"]);
    assert!(out.contains("A: run 1 (viewer <test> & co)"), "{out}");
    assert!(out.contains("B: run 2 (viewer <test> & co)"), "{out}");
    let names: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("stage"))
        .skip(1)
        .map(|l| l.split("  ").next().unwrap())
        .collect();
    // The source has a row of its own too.
    assert_eq!(
        names,
        ["MainPipeline", "MainPipeline__source", NAP, ODD_KEY, TALLY]
    );
    // stage, mean A, mean B, B/A, items/s A, items/s B, B/A
    let nap = cells(row(&out, NAP));
    assert_eq!(nap.len(), 7, "{nap:?}");
    let ratio: f64 = nap[3].strip_suffix('x').unwrap().parse().unwrap();
    // 10 ms against 1 ms of sleep: slower by far more than noise.
    assert!(ratio > 1.5, "{out}");
    assert!(nap[6].ends_with('x'), "{out}");
    // Only in run 2.
    let tally = cells(row(&out, TALLY));
    assert_eq!(
        (tally[1], tally[3], tally[4], tally[6]),
        ("-", "-", "-", "-")
    );
    assert_ne!(tally[2], "-");
}

/// Checks that `svg` is one balanced XML element tree: every start tag
/// closed in order, nothing outside the root, no stray `<` or `&`.
fn check_balanced(svg: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg.trim();
    let mut roots = 0;
    while !rest.is_empty() {
        let Some(start) = rest.find('<') else {
            check_text(rest)?;
            if open.is_empty() {
                return Err(format!("text outside the root: {rest:?}"));
            }
            break;
        };
        let (text, tag) = rest.split_at(start);
        check_text(text)?;
        if open.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root: {text:?}"));
        }
        let end = tag.find('>').ok_or("unterminated tag")?;
        let inner = &tag[1..end];
        rest = &tag[end + 1..];
        if inner.starts_with("!--") {
            continue;
        }
        if inner.contains('<') {
            return Err(format!("'<' inside a tag: {inner:?}"));
        }
        if let Some(name) = inner.strip_prefix('/') {
            match open.pop() {
                Some(top) if top == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            continue;
        }
        let name = inner
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        if name.is_empty() {
            return Err(format!("empty tag name: <{inner}>"));
        }
        if open.is_empty() {
            roots += 1;
        }
        if !inner.ends_with('/') {
            open.push(name);
        }
        if inner.matches('"').count() % 2 != 0 {
            return Err(format!("unbalanced quotes in <{inner}>"));
        }
    }
    match (open.last(), roots) {
        (Some(unclosed), _) => Err(format!("<{unclosed}> never closed")),
        (None, 1) => Ok(()),
        (None, n) => Err(format!("{n} root elements")),
    }
}

/// Text may hold only the five predefined entities (and numeric ones).
fn check_text(text: &str) -> Result<(), String> {
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..text.len().min(i + 8)];
        let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"];
        if !known.iter().any(|k| entity.starts_with(k)) {
            return Err(format!("bare '&' in text: {entity:?}"));
        }
    }
    if text.contains('>') {
        return Err(format!("bare '>' in text: {text:?}"));
    }
    Ok(())
}

#[test]
fn the_tag_checker_catches_broken_documents() {
    assert!(check_balanced("<svg><g><text>a &amp; b</text></g><rect/></svg>").is_ok());
    for bad in [
        "<svg><g></svg>",
        "<svg></g></svg>",
        "<svg><text>a & b</text></svg>",
        "<svg></svg><svg></svg>",
        "<svg><text>a < b</text></svg>",
        "<svg>",
    ] {
        assert!(check_balanced(bad).is_err(), "{bad}");
    }
}

#[test]
fn svg_is_one_well_formed_chart() {
    let f = Fixture::new("svg");
    let svg = f.ok(&["svg"]);
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    if let Err(e) = check_balanced(&svg) {
        panic!("{e}");
    }
    assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
    // Every stage is named, its special characters escaped.
    let escaped = "MainPipeline__odd&lt;&amp;&gt;&quot;name&apos;";
    for name in ["MainPipeline", NAP, escaped, TALLY] {
        assert!(svg.contains(&format!(">{name}</text>")), "{name}");
    }
    assert!(!svg.contains(ODD), "unescaped name");
    assert!(svg.contains("viewer &lt;test&gt; &amp; co"));
    // Three charts, their axes labelled, the latency legend.
    for title in [
        "Throughput per stage",
        "Latency per item",
        "Queue depth over time",
    ] {
        assert!(svg.contains(title), "{title}");
    }
    for label in [
        "items per second",
        "log scale",
        "seconds since the run started",
    ] {
        assert!(svg.contains(label), "{label}");
    }
    for legend in [">mean</text>", ">median</text>", ">p99</text>"] {
        assert!(svg.contains(legend), "{legend}");
    }
    // Queue depth: one line per stage that was sampled.
    let lines = svg.matches("<polyline").count() + svg.matches("<path").count();
    assert!(lines >= 1, "no queue depth line");
    assert!(
        !svg.contains("NaN") && !svg.contains("inf"),
        "bad coordinates"
    );

    // -o writes the same chart to a file; an explicit run gives the same.
    let file = f.dir.join("chart.svg");
    let out = f.ok(&["svg", "2", "-o", file.to_str().unwrap()]);
    assert!(out.is_empty(), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), svg);
    let first = f.ok(&["svg", "1"]);
    assert!(check_balanced(&first).is_ok());
    assert!(!first.contains(TALLY));
}

#[test]
fn help_is_printed() {
    for flag in ["--help", "-h"] {
        let run = viewer(&[flag]);
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains("Usage:"), "{}", run.stdout);
        for command in ["list", "show", "compare", "svg", "--db"] {
            assert!(run.stdout.contains(command), "{command}");
        }
    }
}

#[test]
fn the_default_database_comes_from_the_environment() {
    let f = Fixture::new("env");
    let folder = f.dir.clone();
    let run = viewer_with(&["list"], |cmd| {
        cmd.env("PARAPIPE_PROFILE_DIR", &folder);
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    // A folder given to --db means its database.
    let run = viewer(&["--db", folder.to_str().unwrap(), "list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = viewer_with(&["list"], |cmd| {
        cmd.env("PARAPIPE_PROFILE_DIR", folder.join("nothing-here"));
    });
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no profile database at"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_is_one_line_and_the_right_exit_code() {
    let f = Fixture::new("bad-input");
    let db = f.db().to_str().unwrap().to_owned();
    let dir = f.dir.as_path();
    let not_db = dir.join("not-a-database.sqlite");
    std::fs::write(&not_db, "this is not SQLite\n".repeat(100)).unwrap();
    let not_db = not_db.to_str().unwrap();
    let empty = dir.join("empty.sqlite");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();
    let missing = dir.join("missing.sqlite");
    let missing = missing.to_str().unwrap();
    let unwritable = dir.join("no-such-folder").join("chart.svg");
    let unwritable = unwritable.to_str().unwrap();

    let cases: &[(&[&str], i32, &str)] = &[
        // Usage errors: 2.
        (&[], 2, "missing command"),
        (&["--db", &db], 2, "missing command"),
        (&["frobnicate"], 2, "unknown command 'frobnicate'"),
        (
            &["--db", &db, "list", "--verbose"],
            2,
            "unknown option '--verbose'",
        ),
        (
            &["--db", &db, "show", "abc"],
            2,
            "run id must be a positive whole number, not 'abc'",
        ),
        (&["--db", &db, "show", "0"], 2, "not '0'"),
        (&["--db", &db, "compare", "1", "x"], 2, "not 'x'"),
        (
            &["--db", &db, "compare", "1"],
            2,
            "compare needs two run ids",
        ),
        (
            &["--db", &db, "show", "1", "2"],
            2,
            "unexpected argument '2'",
        ),
        (
            &["--db", &db, "list", "-o", "x.svg"],
            2,
            "only for the svg command",
        ),
        (&["list", "--db"], 2, "--db needs a path"),
        (&["--db", &db, "svg", "-o"], 2, "-o needs a path"),
        // Data errors: 1.
        (&["--db", missing, "list"], 1, "no profile database at"),
        (&["--db", missing, "show", "1"], 1, "no profile database at"),
        (&["--db", not_db, "list"], 1, "not a database"),
        (&["--db", not_db, "show"], 1, "not a database"),
        (&["--db", empty, "list"], 1, "cannot read the runs"),
        (&["--db", &db, "show", "99"], 1, "no run 99 in"),
        (&["--db", &db, "svg", "99"], 1, "no run 99 in"),
        (&["--db", &db, "compare", "1", "99"], 1, "no run 99 in"),
        (&["--db", &db, "svg", "-o", unwritable], 1, "cannot write"),
    ];
    for (args, code, message) in cases {
        let run = viewer(args);
        assert_eq!(run.code, *code, "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: stdout {}", run.stdout);
        let err = run.stderr.strip_suffix('\n').unwrap_or(&run.stderr);
        assert!(!err.contains('\n'), "{args:?}: more than one line: {err}");
        assert!(err.starts_with("parapipe-profile: "), "{args:?}: {err}");
        assert!(
            err.contains(message),
            "{args:?}: {err:?} should say {message:?}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The run ids an unknown one is told apart from.
    let run = viewer(&["--db", &db, "show", "99"]);
    assert!(run.stderr.contains("its runs are 1 to 2"), "{}", run.stderr);
    let run = viewer(&["--db", missing, "list"]);
    assert!(run.stderr.contains(missing), "{}", run.stderr);
}

#[test]
fn show_gives_each_workers_items_and_flags_a_hot_key() {
    let f = Fixture::keyed_and_branches("per-worker");
    let out = f.ok(&["show", "1"]);
    // The stage's row, then its line under "items taken per worker".
    let section = out
        .split("\nitems taken per worker\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-worker section in\n{out}"));
    let line = row(section, KEYED);
    let c = cells(line);
    assert_eq!(c.len(), 3, "{line}");
    let counts: Vec<u64> = c[1].split(' ').map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts.len(), 4, "{line}");
    assert_eq!(counts.iter().sum::<u64>(), 4_000, "{line}");
    let most = *counts.iter().max().unwrap();
    let busiest = counts.iter().position(|n| *n == most).unwrap();
    assert!(most >= 3_600, "{line}");
    let share = (most as f64 * 100.0 / 4_000.0).round();
    assert_eq!(
        c[2],
        format!(
            "worker {busiest} took {share}% of 4 workers' items: imbalanced (an even share is 25%)"
        ),
        "{line}"
    );
    // A stage of one worker (the source) has no such line.
    assert_eq!(section.lines().count(), 2, "{section}");
    let tee = f.ok(&["show", "2"]);
    let section = tee.split("\nitems taken per worker\n").nth(1).unwrap();
    assert_eq!(section.lines().count(), 2, "{section}");
    row(section, TEE_KEY);

    // The chart has the same, flagged.
    let svg = f.ok(&["svg", "1"]);
    assert!(check_balanced(&svg).is_ok());
    assert!(
        svg.contains("Items taken per worker"),
        "no per-worker panel"
    );
    let flag = c[2].replace('\'', "&apos;");
    assert!(svg.contains(&format!(">{flag}</text>")), "no flag");
    for (w, n) in counts.iter().enumerate() {
        assert!(
            svg.contains(&format!("<title>{KEYED}: worker {w} took {n} items (")),
            "worker {w}"
        );
    }
}

#[test]
fn branch_keys_are_shown_whole() {
    let f = Fixture::keyed_and_branches("branches");
    for (run, key) in [("2", TEE_KEY), ("3", SPLIT_OK_KEY)] {
        let out = f.ok(&["show", run]);
        let c = cells(row(&out, key));
        assert_eq!(
            (c[1], c[3]),
            ("map", if run == "2" { "40" } else { "30" }),
            "{out}"
        );
        let svg = f.ok(&["svg", run]);
        assert!(
            svg.contains(&format!(">{key}</text>")),
            "{key} in the chart"
        );
    }
    let out = f.ok(&["compare", "2", "3"]);
    for key in [TEE_KEY, SPLIT_OK_KEY] {
        assert_eq!(cells(row(&out, key))[0], key, "{out}");
    }
}
