//! The self-test of the loopback HTTP server of tests/http/server.rs, with a
//! real client (reqwest): its routes, its latency, its counters (concurrent
//! and abandoned requests), and that dropping it leaves no thread behind.

#[path = "http/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use server::{Options, Server, Stats};

fn client() -> reqwest::Client {
    // No proxy from the environment: the requests go to loopback directly.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client")
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("a response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The text between `<title>` and `</title>`.
fn title(html: &str) -> &str {
    let start = html.find("<title>").expect("a <title>") + "<title>".len();
    let end = html.find("</title>").expect("a </title>");
    &html[start..end]
}

/// Polls `server`'s stats until `done` holds of them, for up to 10 s.
async fn stats_until(server: &Server, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_have_their_titles_and_end() {
    let server = server::start(Options {
        pages: 5,
        ..Options::default()
    });
    let client = client();
    for i in 0..5 {
        let (status, body) = get(&client, &server.url(&format!("/page/{i}"))).await;
        assert_eq!(status, 200, "page {i}");
        assert_eq!(title(&body), format!("Page {i}"));
        assert_eq!(body, server::page(i));
    }
    for path in ["/page/5", "/page/99", "/page/x", "/nothing", "/"] {
        let (status, _) = get(&client, &server.url(path)).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) = get(&client, &server.url("/echo/hello")).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    let stats = stats_until(&server, |s| s.completed == 11).await;
    assert_eq!(
        (
            stats.started,
            stats.completed,
            stats.abandoned,
            stats.in_flight
        ),
        (11, 11, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_failure_rule_gives_500() {
    let server = server::start(Options {
        pages: 20,
        fail_one_in: Some(4),
        ..Options::default()
    });
    let failing: Vec<usize> = (0..20).filter(|&i| server.fails(i)).collect();
    assert_eq!(failing, [3, 7, 11, 15, 19]);
    let client = client();
    for i in 0..20 {
        let (status, body) = get(&client, &server.url(&format!("/page/{i}"))).await;
        if server.fails(i) {
            assert_eq!(status, 500, "page {i}");
        } else {
            assert_eq!((status, title(&body)), (200, format!("Page {i}").as_str()));
        }
    }
    // Past the end: 404 whatever the rule says.
    assert!(server.fails(23));
    assert_eq!(get(&client, &server.url("/page/23")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_is_honoured() {
    let latency = Duration::from_millis(200);
    let server = server::start(Options {
        latency,
        ..Options::default()
    });
    let client = client();
    let begun = Instant::now();
    let (status, _) = get(&client, &server.url("/page/1")).await;
    let took = begun.elapsed();
    assert_eq!(status, 200);
    assert!(took >= latency, "took {took:?}, latency {latency:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // `/echo` does not wait.
    let (status, body) = get(&client, &server.url("/echo/now")).await;
    assert_eq!((status, body.as_str()), (200, "now"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_overlap() {
    let latency = Duration::from_millis(100);
    let server = server::start(Options {
        latency,
        ..Options::default()
    });
    let client = client();
    let begun = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            let url = server.url(&format!("/page/{i}"));
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, body) = task.await.expect("a request task");
        assert_eq!((status, title(&body)), (200, format!("Page {i}").as_str()));
    }
    let took = begun.elapsed();
    // One after the other they would take 5 s.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    let stats = server.stats();
    assert!(stats.in_flight_max > 1, "{stats:?}");
    assert_eq!((stats.completed, stats.abandoned), (50, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_request_is_abandoned() {
    let server = server::start(Options::default());
    let client = client();
    let url = server.url("/slow/1");
    let result = tokio::time::timeout(Duration::from_millis(100), get(&client, &url)).await;
    assert!(result.is_err(), "a /slow answer within 100 ms");
    let stats = stats_until(&server, |s| s.abandoned == 1).await;
    assert_eq!(
        (
            stats.started,
            stats.completed,
            stats.abandoned,
            stats.in_flight
        ),
        (1, 0, 1, 0),
        "{stats:?}"
    );
    // The server goes on serving.
    let (status, body) = get(&client, &server.url("/echo/after")).await;
    assert_eq!((status, body.as_str()), (200, "after"));
}

/// The number of this process's threads named `name`, or all of them.
fn threads(name: Option<&str>) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| {
            let comm = std::fs::read_to_string(task.ok()?.path().join("comm")).ok()?;
            name.is_none_or(|name| comm.trim_end() == name)
                .then_some(())
        })
        .count()
}

/// Polls `threads(name)` until it is `want`, for up to 5 s.
fn threads_until(name: Option<&str>, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = threads(name);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Without a runtime of the test's: its own, current-thread; a raw request
/// with std's TCP too. The server's thread is gone once it is dropped (other
/// tests run beside this one: its thread is told by its name).
#[test]
fn serves_any_runtime_and_leaves_no_thread() {
    let server = server::start(Options::default());
    let name = server.thread_name().to_owned();
    // The thread names itself as it starts.
    assert_eq!(threads_until(Some(&name), 1), 1, "the server's thread");

    let mut stream = TcpStream::connect(server.addr()).expect("a connection");
    stream
        .write_all(b"GET /echo/raw HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("a request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nraw"), "{answer}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (status, body) = runtime.block_on(get(&client(), &server.url("/page/7")));
    assert_eq!((status, title(&body)), (200, "Page 7"));
    drop(runtime);

    drop(server);
    assert_eq!(threads_until(Some(&name), 0), 0, "the server's thread");
}

/// The environment variable that makes [`thread_count_child`] run.
const CHILD: &str = "PARAPIPE_HTTP_SERVER_CHILD";

/// All of the process's threads, counted before a server starts and after
/// it is dropped: in a process of its own (this test binary again, running
/// only [`thread_count_child`]), where no other test starts or ends threads.
#[test]
fn dropping_the_server_leaves_no_thread() {
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "thread_count_child",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "run by dropping_the_server_leaves_no_thread, in a process of its own"]
fn thread_count_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let before = threads(None);
    let server = server::start(Options {
        latency: Duration::from_millis(50),
        ..Options::default()
    });
    assert_eq!(
        threads_until(None, before + 1),
        before + 1,
        "one thread for the server"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = client();
        assert_eq!(get(&client, &server.url("/page/3")).await.0, 200);
        // A request in flight when the server is dropped.
        let slow = tokio::time::timeout(
            Duration::from_millis(100),
            get(&client, &server.url("/slow/0")),
        )
        .await;
        assert!(slow.is_err());
    });
    drop(runtime);
    drop(server);
    let after = threads_until(None, before);
    assert_eq!(after, before, "threads before the server and after it");
}
