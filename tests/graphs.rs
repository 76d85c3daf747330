//! Fan-out (`tee`, `split`, `split_result`, `route`), fan-in (`merge`) and
//! recombining (`zip`):
//! every item where it belongs, every order of consumption, one fate for
//! the whole graph, and no thread left after any ending. One test in this
//! binary, running the cases one after the other, so no other test's
//! threads are counted.

mod common;

use std::thread;
use std::time::Duration;

use common::{Boom, LIMIT, assert_threads_back_to, fail_at, panic_at, thread_count, watchdog};
use parapipe::prelude::*;
use parapipe::{Failure, Uneven, Unread};

#[test]
fn graphs() {
    tee_gives_every_item_to_every_branch_read_at_once();
    tee_branches_read_one_after_the_other_on_one_thread();
    tee_interleaved_on_one_thread();
    a_branch_nobody_reads_fails_the_graph_beyond_its_bound();
    the_unread_error_has_its_type_where_the_branches_were_read();
    dropped_branches_leave_and_the_others_go_on();
    dropping_every_branch_of_an_endless_stream_stops_it();
    empty_input_ends_every_branch();
    an_upstream_failure_reaches_every_branch();
    a_branch_failure_stops_the_whole_graph();
    a_panicking_router_fails_the_graph();
    split_result_sends_errors_one_way_and_values_the_other();
    route_by_variant();
    merge_reads_every_input();
    merge_fails_with_any_input_and_stops_the_others();
    dropping_a_merge_stops_its_inputs();
    a_diamond_tee_then_merge();
    a_split_inside_a_split();
    a_zero_branch_buffer_is_a_configuration_error();
    profiles_name_the_branches();
    a_branch_read_a_little_then_left_for_another_fails_rather_than_hangs();
    zip_pairs_the_branches_of_a_tee();
    zip_refuses_inputs_that_do_not_pair();
    zip_fails_and_stops_with_its_inputs();
}

/// Runs `f` under a watchdog, and checks that every thread it started has
/// ended.
fn graph_test(what: &'static str, f: impl FnOnce() + Send + 'static) {
    let before = thread_count();
    watchdog(LIMIT, what, f);
    assert_threads_back_to(before, what);
}

#[map_stage(workers = 2)]
fn double(x: u64) -> u64 {
    x * 2
}

#[map_stage(workers = 2, ordered)]
fn in_order(x: u64) -> u64 {
    x
}

#[map_stage]
fn parse(line: String) -> Result<u64, String> {
    line.parse().map_err(|_| format!("bad line {line:?}"))
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn on_thread<T: Send + 'static>(
    p: Pipeline<T>,
) -> thread::JoinHandle<Result<Vec<T>, PipelineError>> {
    thread::spawn(move || p.collect())
}

fn tee_gives_every_item_to_every_branch_read_at_once() {
    graph_test("tee, read at once", || {
        let n = 100_000u64;
        let [a, b, c] = pipe!(0..n | double).tee();
        let a = on_thread(pipe!(a | double));
        let b = on_thread(b);
        let c: Vec<u64> = c.collect().unwrap();
        let expected: Vec<u64> = (0..n).map(|x| x * 2).collect();
        assert_eq!(sorted(c), expected);
        assert_eq!(sorted(b.join().unwrap().unwrap()), expected);
        let a_expected: Vec<u64> = (0..n).map(|x| x * 4).collect();
        assert_eq!(sorted(a.join().unwrap().unwrap()), a_expected);
    });
}

fn tee_branches_read_one_after_the_other_on_one_thread() {
    graph_test("tee, one after the other", || {
        let n = 10_000u64;
        // The first branch read to its end first, then the second; then
        // the other way round.
        for first_a in [true, false] {
            let [a, b] = pipe!(0..n | in_order).tee();
            let (first, second) = if first_a { (a, b) } else { (b, a) };
            let first: Vec<u64> = first.collect().unwrap();
            let second: Vec<u64> = second.collect().unwrap();
            // Through one ordered stage and the fork, in order.
            assert_eq!(first, (0..n).collect::<Vec<_>>());
            assert_eq!(second, first);
        }
        // Both started, results asked for in turn: the second is not read
        // while the first is, so it holds its items.
        let [a, b] = pipe!(0..n).tee();
        let a = a.results();
        let b = b.results();
        let a: Vec<u64> = a.collect::<Result<_, _>>().unwrap();
        let b: Vec<u64> = b.collect::<Result<_, _>>().unwrap();
        assert_eq!(sorted(a), sorted(b));
    });
}

fn tee_interleaved_on_one_thread() {
    graph_test("tee, interleaved", || {
        let n = 50_000u64;
        let [a, b] = pipe!(0..n).tee();
        let (mut a, mut b) = (a.results(), b.results());
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        loop {
            let x = a.next().map(Result::unwrap);
            let y = b.next().map(Result::unwrap);
            got_a.extend(x);
            got_b.extend(y);
            if x.is_none() && y.is_none() {
                break;
            }
        }
        assert_eq!(sorted(got_a), (0..n).collect::<Vec<_>>());
        assert_eq!(sorted(got_b), (0..n).collect::<Vec<_>>());
    });
}

fn a_branch_nobody_reads_fails_the_graph_beyond_its_bound() {
    graph_test("tee, unread branch", || {
        let [a, b] = pipe!(0..1_000_000u64).branch_buffer(1_000).tee();
        // `b` is alive but never read while `a` is read to its end.
        let err = a.collect::<Vec<u64>>().unwrap_err();
        assert_eq!(err.stage(), "tee", "{err}");
        assert_eq!(
            err.downcast_ref::<Unread>().map(Unread::branch),
            Some(1),
            "{err}"
        );
        assert!(err.to_string().contains("branch 1 of the tee"), "{err}");
        // The unread branch, read at last, tells the same, with the error's type.
        let err = b.collect::<Vec<u64>>().unwrap_err();
        assert_eq!(err.stage(), "tee", "{err}");
        assert!(err.to_string().contains("nobody reads"), "{err}");
    });
    graph_test("tee, unread branch read", || {
        // Read from the start: the same stream goes through.
        let [a, b] = pipe!(0..200_000u64).branch_buffer(1_000).tee();
        let b = on_thread(b);
        assert_eq!(a.collect::<Vec<u64>>().unwrap().len(), 200_000);
        assert_eq!(b.join().unwrap().unwrap().len(), 200_000);
    });
}

fn the_unread_error_has_its_type_where_the_branches_were_read() {
    graph_test("tee, unread error type", || {
        let [a, b] = pipe!(0..100_000u64).branch_buffer(10).tee();
        let b = b.results();
        // `b` started but is never asked for results: `a`'s reader gets
        // the fork's own error, typed.
        let err = a.collect::<Vec<u64>>().unwrap_err();
        let unread = err
            .downcast_ref::<Unread>()
            .unwrap_or_else(|| panic!("{err}"));
        assert_eq!(unread.branch(), 1);
        drop(b);
    });
}

fn dropped_branches_leave_and_the_others_go_on() {
    graph_test("tee, dropped branch", || {
        let n = 200_000u64;
        // Never consumed.
        let [a, b] = pipe!(0..n).tee();
        drop(b);
        assert_eq!(a.collect::<Vec<u64>>().unwrap().len(), n as usize);
        // Consumed a little, then dropped, while the other is read.
        let [a, b] = pipe!(0..n).tee();
        let mut b = b.results();
        let some: Vec<u64> = b.by_ref().take(3).map(Result::unwrap).collect();
        assert_eq!(some.len(), 3);
        drop(b);
        assert_eq!(a.collect::<Vec<u64>>().unwrap().len(), n as usize);
        // Every branch dropped before anything ran: nothing starts.
        let [a, b, c] = pipe!(0..n).tee();
        drop((a, b, c));
    });
}

fn dropping_every_branch_of_an_endless_stream_stops_it() {
    graph_test("tee, endless, dropped", || {
        let [a, b] = pipe!((0..).map(|x: u64| x) | double).tee();
        let mut a = a.results();
        let mut b = b.results();
        assert!(a.next().is_some() && b.next().is_some());
        drop(a);
        drop(b);
    });
    graph_test("split, endless, one branch taken from", || {
        let (even, odd) = pipe!((0..).map(|x: u64| x)).split(|x| x % 2 == 0);
        drop(odd);
        let got: Vec<u64> = even.results().take(10).map(Result::unwrap).collect();
        assert_eq!(got.len(), 10);
    });
}

fn empty_input_ends_every_branch() {
    graph_test("tee, empty", || {
        let [a, b] = pipe!(Vec::<u64>::new() | double).tee();
        let b = on_thread(b);
        assert!(a.collect::<Vec<u64>>().unwrap().is_empty());
        assert!(b.join().unwrap().unwrap().is_empty());
        let (good, bad) = pipe!(Vec::<String>::new() | parse.keep_errors()).split_result();
        assert!(good.collect::<Vec<u64>>().unwrap().is_empty());
        assert!(bad.collect::<Vec<String>>().unwrap().is_empty());
    });
}

fn an_upstream_failure_reaches_every_branch() {
    graph_test("tee, upstream error", || {
        let [a, b] = pipe!(0..100_000u64 | fail_at(5_000)).tee();
        let b = on_thread(b);
        for err in [
            a.collect::<Vec<u64>>().unwrap_err(),
            b.join().unwrap().unwrap_err(),
        ] {
            assert_eq!(err.stage(), "fail_at", "{err}");
            assert!(err.worker().is_some(), "{err}");
            assert!(err.to_string().contains("boom at 5000"), "{err}");
        }
    });
    graph_test("tee, upstream panic, branches read in turn", || {
        let [a, b] = pipe!(0..1_000u64 | panic_at(10)).tee();
        let err = a.collect::<Vec<u64>>().unwrap_err();
        assert_eq!(err.stage(), "panic_at", "{err}");
        let err = b.collect::<Vec<u64>>().unwrap_err();
        assert!(err.to_string().contains("panicked: assertion"), "{err}");
    });
}

fn a_branch_failure_stops_the_whole_graph() {
    graph_test("tee, branch error, endless", || {
        // Endless: without the graph's one fate, `b` would never end.
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        let a = on_thread(pipe!(a | fail_at(1_000)));
        let err = pipe!(b | double).run().unwrap_err();
        assert_eq!(err.stage(), "fail_at", "{err}");
        assert!(matches!(err.failure(), Failure::Elsewhere(_)), "{err}");
        let err = a.join().unwrap().unwrap_err();
        // Where it happened, the stage's own error.
        assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom(1_000)));
    });
    graph_test("split, branch panic", || {
        let (even, odd) = pipe!((0..).map(|x: u64| x)).split(|x| x % 2 == 0);
        let odd = on_thread(pipe!(odd | panic_at(11)));
        let err = even.run().unwrap_err();
        assert_eq!(err.stage(), "panic_at", "{err}");
        assert!(odd.join().unwrap().unwrap_err().is_panic());
    });
}

fn a_panicking_router_fails_the_graph() {
    graph_test("split, predicate panics", || {
        let (a, b) = pipe!(0..1_000u64).split(|x| {
            assert!(*x < 500, "predicate boom");
            true
        });
        let b = on_thread(b);
        let err = a.run().unwrap_err();
        assert_eq!(err.stage(), "split", "{err}");
        assert!(err.to_string().contains("predicate boom"), "{err}");
        assert_eq!(b.join().unwrap().unwrap_err().stage(), "split");
    });
    graph_test("route, no such branch", || {
        let [a, b] = pipe!(0..100u64).route(|x| *x as usize);
        let b = on_thread(b);
        let err = a.run().unwrap_err();
        assert_eq!(err.stage(), "route", "{err}");
        assert!(
            err.to_string().contains("chose branch 2, but there are 2"),
            "{err}"
        );
        assert!(b.join().unwrap().is_err());
    });
}

fn split_result_sends_errors_one_way_and_values_the_other() {
    graph_test("split_result", || {
        let lines: Vec<String> = (0..10_000u64)
            .map(|i| {
                if i % 100 == 7 {
                    format!("x{i}")
                } else {
                    i.to_string()
                }
            })
            .collect();
        let (good, bad) = pipe!(lines | parse.keep_errors()).split_result();
        let bad = on_thread(bad);
        let good: Vec<u64> = good.collect().unwrap();
        let bad = bad.join().unwrap().unwrap();
        assert_eq!(good.len(), 9_900);
        assert_eq!(bad.len(), 100);
        assert!(bad.iter().all(|e| e.starts_with("bad line \"x")));
    });
}

fn route_by_variant() {
    #[derive(Clone, Debug)]
    #[allow(dead_code)] // the payloads are there to be routed, not read
    enum Event {
        Click(u64),
        Key(char),
    }
    graph_test("route", || {
        let events = (0..1_000u64).map(|i| {
            if i % 4 == 0 {
                Event::Key('k')
            } else {
                Event::Click(i)
            }
        });
        let [clicks, keys] = pipe!(events).route(|e| match e {
            Event::Click(_) => 0,
            Event::Key(_) => 1,
        });
        let keys = on_thread(keys);
        let clicks: Vec<Event> = clicks.collect().unwrap();
        assert_eq!(clicks.len(), 750);
        assert!(clicks.iter().all(|e| matches!(e, Event::Click(_))));
        assert_eq!(keys.join().unwrap().unwrap().len(), 250);
    });
}

fn merge_reads_every_input() {
    graph_test("merge", || {
        let inputs = (0..4u64).map(|k| pipe!(k * 1_000..(k + 1) * 1_000 | in_order));
        let all: Vec<u64> = Pipeline::merge(inputs).collect().unwrap();
        assert_eq!(sorted(all.clone()), (0..4_000).collect::<Vec<_>>());
        // Each input's items keep their order.
        for k in 0..4u64 {
            let mine: Vec<u64> = all.iter().copied().filter(|x| x / 1_000 == k).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "input {k} out of order"
            );
        }
        let none: Vec<u64> = Pipeline::merge(Vec::new()).collect().unwrap();
        assert!(none.is_empty());
        let one: Vec<u64> = Pipeline::merge([pipe!(0..3u64)]).collect().unwrap();
        assert_eq!(one, [0, 1, 2]);
    });
}

fn merge_fails_with_any_input_and_stops_the_others() {
    graph_test("merge, input fails", || {
        let endless = pipe!((0..).map(|x: u64| x) | double);
        let failing = pipe!(0..10_000u64 | fail_at(77));
        let err = Pipeline::merge([endless, failing]).run().unwrap_err();
        assert_eq!(err.stage(), "fail_at", "{err}");
        assert!(err.to_string().contains("boom at 77"), "{err}");
    });
    graph_test("merge, a stage after it fails", || {
        let endless = || pipe!((0..).map(|x: u64| x));
        let err = pipe!(Pipeline::merge([endless(), endless()]) | panic_at(5))
            .run()
            .unwrap_err();
        assert_eq!(err.stage(), "panic_at", "{err}");
    });
}

fn dropping_a_merge_stops_its_inputs() {
    graph_test("merge, dropped", || {
        let slow = pipe!((0..).inspect(|_: &u64| thread::sleep(Duration::from_millis(1))));
        let fast = pipe!((0..).map(|x: u64| x));
        let mut merged = Pipeline::merge([slow, fast]).results();
        assert!(merged.next().is_some());
        drop(merged);
    });
}

fn a_diamond_tee_then_merge() {
    graph_test("diamond", || {
        let n = 100_000u64;
        let [a, b] = pipe!(0..n).tee();
        let merged = Pipeline::merge([pipe!(a | double), b]);
        let total: u64 = merged.collect::<Vec<u64>>().unwrap().iter().sum();
        assert_eq!(total, 3 * (n * (n - 1) / 2));
        // A failure in one arm of the diamond fails it.
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        let err = Pipeline::merge([pipe!(a | fail_at(300)), b])
            .run()
            .unwrap_err();
        assert_eq!(err.stage(), "fail_at", "{err}");
    });
}

fn a_split_inside_a_split() {
    graph_test("nested splits", || {
        let (small, big) = pipe!(0..1_000u64).split(|x| *x < 500);
        let (tiny, rest) = small.split(|x| *x < 100);
        let merged = Pipeline::merge([tiny, rest, big]);
        assert_eq!(
            sorted(merged.collect().unwrap()),
            (0..1_000).collect::<Vec<_>>()
        );
    });
}

fn a_zero_branch_buffer_is_a_configuration_error() {
    graph_test("branch_buffer(0)", || {
        let [a, b] = pipe!(0..10u64).branch_buffer(0).tee();
        drop(b);
        let err = a.run().unwrap_err();
        assert_eq!(err.stage(), "fork", "{err}");
        assert!(err.to_string().contains("branch_buffer(0)"), "{err}");
    });
}

fn profiles_name_the_branches() {
    graph_test("profiles of branches", || {
        let (even, odd) = pipe!(0..1_000u64).split(|x| x % 2 == 0);
        let [odd_a, odd_b] = odd.tee();
        let profiler = || parapipe::profile::Profiler::new().in_memory();
        let b = thread::spawn(move || odd_b.collect::<Vec<u64>>());
        let a = thread::spawn(move || {
            let mut results = pipe!(odd_a | double).profile_with(profiler()).results();
            assert_eq!(results.by_ref().count(), 500);
            keys(&results)
        });
        let mut results = pipe!(even | double).profile_with(profiler()).results();
        assert_eq!(results.by_ref().count(), 500);
        let keys = keys(&results);
        assert!(
            keys.contains(&"MainPipeline__split0__double".to_owned()),
            "{keys:?}"
        );
        let keys = a.join().unwrap();
        assert!(
            keys.contains(&"MainPipeline__split1__tee0__double".to_owned()),
            "{keys:?}"
        );
        assert_eq!(b.join().unwrap().unwrap().len(), 500);
    });
}

/// The stage keys of a profiled run's profile.
fn keys<T>(results: &Results<T>) -> Vec<String> {
    let profile = results.profile().expect("a profiled run has a profile");
    profile.stages().iter().map(|s| s.name.clone()).collect()
}

fn a_branch_read_a_little_then_left_for_another_fails_rather_than_hangs() {
    graph_test("tee, read a little, then the other", || {
        let [a, b] = pipe!(0..1_000_000u64).tee();
        let (mut a, mut b) = (a.results(), b.results());
        // `b` is read now: the fork waits for it once it is full.
        assert!(b.next().is_some());
        let err = a.find_map(Result::err).expect("branch 0 cannot end");
        let unread = err
            .downcast_ref::<Unread>()
            .unwrap_or_else(|| panic!("{err}"));
        assert_eq!(unread.branch(), 1, "{err}");
        assert!(err.to_string().contains("waits for branch 0"), "{err}");
        assert!(b.find_map(Result::err).is_some());
    });
}

#[map_stage(workers = 2, ordered)]
fn square(x: u64) -> u64 {
    if x.is_multiple_of(10_000) {
        // Now and then slow: the other branch runs ahead, and waits.
        thread::sleep(Duration::from_millis(5));
    }
    x * x
}

#[map_stage]
fn describe(x: u64) -> String {
    format!("#{x}")
}

/// Keeps the even items only: not one output per input.
#[stage]
fn evens(items: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    items.filter(|x| x.is_multiple_of(2))
}

/// Gives nothing.
#[stage]
fn drop_all(items: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    items.filter(|_| false)
}

fn zip_pairs_the_branches_of_a_tee() {
    graph_test("zip of a tee", || {
        let n = 100_000u64;
        let [a, b] = pipe!(0..n).tee();
        let pairs: Vec<(u64, String)> = pipe!(a | square)
            .zip(pipe!(b | describe))
            .collect()
            .unwrap();
        assert_eq!(pairs.len(), n as usize);
        for (x, (sq, label)) in pairs.iter().enumerate() {
            assert_eq!(
                (*sq, label.as_str()),
                ((x * x) as u64, format!("#{x}").as_str())
            );
        }
    });
    graph_test("zip of independent pipelines, and nested", || {
        let pairs: Vec<(u64, u64)> = pipe!(0..5u64).zip(pipe!(10..15u64)).collect().unwrap();
        assert_eq!(pairs, [(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)]);
        let [a, b, c] = pipe!(0..1_000u64 | in_order).tee();
        let triples: Vec<((u64, u64), u64)> = a.zip(pipe!(b | in_order)).zip(c).collect().unwrap();
        assert!(
            triples
                .iter()
                .enumerate()
                .all(|(i, t)| *t == ((i as u64, i as u64), i as u64))
        );
    });
    graph_test("zip, empty", || {
        let [a, b] = pipe!(0..0u64).tee();
        let pairs: Vec<(u64, u64)> = a.zip(b).collect().unwrap();
        assert!(pairs.is_empty());
    });
}

fn uneven(err: &PipelineError) -> &Uneven {
    assert_eq!(err.stage(), "zip", "{err}");
    err.downcast_ref::<Uneven>()
        .unwrap_or_else(|| panic!("expected Uneven, got {err}"))
}

fn zip_refuses_inputs_that_do_not_pair() {
    graph_test("zip, one input shorter", || {
        let err = pipe!(0..10u64).zip(pipe!(0..7u64)).run().unwrap_err();
        let e = uneven(&err);
        assert_eq!((e.ahead(), e.paired()), (0, 7));
        assert!(
            err.to_string()
                .contains("input 1 of the zip ended after 7 items"),
            "{err}"
        );
    });
    graph_test("zip, a branch that filters", || {
        let [a, b] = pipe!(0..10_000u64).tee();
        let err = pipe!(a | evens).zip(b).run().unwrap_err();
        assert_eq!(uneven(&err).ahead(), 1, "{err}");
    });
    graph_test(
        "zip, a branch that gives nothing of an endless stream",
        || {
            // Without the bound, the branch ahead would wait for one that can
            // get no more until it is read: a hang.
            let [a, b] = pipe!((0..).map(|x: u64| x)).branch_buffer(100).tee();
            let err = pipe!(a | drop_all).zip(b).run().unwrap_err();
            let e = uneven(&err);
            assert_eq!((e.ahead(), e.paired()), (1, 0));
            assert!(err.to_string().contains("items ahead of input 0"), "{err}");
            let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
            let err = pipe!(a | evens).zip(b).run().unwrap_err();
            assert_eq!(uneven(&err).ahead(), 1, "the default bound: {err}");
        },
    );
}

fn zip_fails_and_stops_with_its_inputs() {
    graph_test("zip, a branch fails", || {
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        let err = pipe!(a | fail_at(300)).zip(b).run().unwrap_err();
        assert_eq!(err.stage(), "fail_at", "{err}");
        assert!(err.to_string().contains("boom at 300"), "{err}");
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        let err = a.zip(pipe!(b | panic_at(300))).run().unwrap_err();
        assert_eq!(err.stage(), "panic_at", "{err}");
    });
    graph_test("zip, a stage after it fails", || {
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        #[map_stage]
        fn sum(pair: (u64, u64)) -> u64 {
            assert!(pair.0 < 1_000, "boom in sum");
            pair.0 + pair.1
        }
        let err = pipe!(a.zip(b) | sum).run().unwrap_err();
        assert_eq!(err.stage(), "sum", "{err}");
    });
    graph_test("zip, dropped", || {
        let [a, b] = pipe!((0..).map(|x: u64| x)).tee();
        let mut zipped = pipe!(a | in_order).zip(b).results();
        for i in 0..1_000u64 {
            assert_eq!(zipped.next().unwrap().unwrap(), (i, i));
        }
        drop(zipped);
    });
}
