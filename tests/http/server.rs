//! A real HTTP/1.1 server (hyper) on a free loopback port, for the tests of
//! async stages: it runs on a tokio runtime of its own, on a thread of its
//! own, so it serves whatever runtime the test uses (none, current-thread or
//! multi-thread), and dropping the [`Server`] stops it and joins that thread.
//! It counts the requests it handles ([`Server::stats`]): those whose client
//! went away before the answer, and the most handled at once, show that a
//! client cancelled its requests and that a concurrency cap held.
//! Used by tests/http_server.rs (its self-test).
//!
//! Routes (`GET` only; any other method answers 405, any other path 404):
//! - `/page/{i}`: after [`Options::latency`], 200 with the HTML of [`page`]
//!   for `i < pages`, 404 past the end, 500 for the pages that
//!   [`Server::fails`].
//! - `/slow/{i}`: after [`Options::slow`], 200 with `slow {i}`.
//! - `/echo/{text}`: at once, 200 with `text` (the path's rest, as sent: not
//!   percent-decoded).

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// How a server answers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pages `0..pages` exist; `/page/{pages}` and past it answer 404.
    pub pages: usize,
    /// How long every `/page/{i}` request waits before its answer.
    pub latency: Duration,
    /// `Some(n)`: one page in `n` answers 500 (see [`Server::fails`]).
    /// `Some(0)` is refused by [`start`].
    pub fail_one_in: Option<u64>,
    /// How long every `/slow/{i}` request waits before its answer.
    pub slow: Duration,
}

impl Default for Options {
    /// 100 pages, no latency, no failures, 10 s for `/slow`.
    fn default() -> Self {
        Options {
            pages: 100,
            latency: Duration::ZERO,
            fail_one_in: None,
            slow: Duration::from_secs(10),
        }
    }
}

/// The server's counters at one moment (each read on its own: while
/// requests are in flight they need not add up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests whose handler started (every route, 404s included).
    pub started: u64,
    /// Requests whose handler finished: it produced an answer.
    pub completed: u64,
    /// Requests whose handler was dropped before it finished: the client
    /// went away (or the server was dropped) while it was waiting.
    pub abandoned: u64,
    /// Requests being handled now (`started - completed - abandoned` once
    /// none is in flight).
    pub in_flight: u64,
    /// The most requests handled at once so far.
    pub in_flight_max: u64,
}

/// A running server; dropping it stops it (handlers still waiting are
/// dropped, and count as abandoned) and joins its thread.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Stop>,
    thread_name: String,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    options: Options,
    started: AtomicU64,
    completed: AtomicU64,
    abandoned: AtomicU64,
    in_flight: AtomicU64,
    in_flight_max: AtomicU64,
}

/// The HTML of page `i`: its title is `Page {i}`, and its body has a few
/// words that depend on `i`.
pub fn page(i: usize) -> String {
    const WORDS: [&str; 12] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliett", "kilo", "lima",
    ];
    let words: Vec<&str> = (0..8)
        .map(|k| WORDS[(i.wrapping_mul(7).wrapping_add(k * 5)) % WORDS.len()])
        .collect();
    format!(
        "<html><head><title>Page {i}</title></head><body><h1>Page {i}</h1><p>{}</p></body></html>",
        words.join(" ")
    )
}

/// The failure rule: with `fail_one_in: Some(n)`, page `i` fails exactly when
/// `i % n == n - 1` (pages n - 1, 2n - 1, ...: one in every n, none of the
/// first n - 1; all of them for n = 1); with `None`, none fails.
fn fails(fail_one_in: Option<u64>, i: usize) -> bool {
    fail_one_in.is_some_and(|n| i as u64 % n == n - 1)
}

/// Starts a server with `options` on a free port of 127.0.0.1.
pub fn start(options: Options) -> Server {
    assert_ne!(
        options.fail_one_in,
        Some(0),
        "fail_one_in: Some(0) has no page in 0; use None for no failures"
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("the listener's address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("the HTTP server's runtime");
    let shared = Arc::new(Shared {
        options,
        started: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        abandoned: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        in_flight_max: AtomicU64::new(0),
    });
    let stop = Arc::new(Stop::default());
    // At most 15 bytes: Linux keeps no more of a thread's name.
    let thread_name = format!("http-srv-{}", addr.port());
    let thread = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                runtime.block_on(serve(listener, shared, stop));
                // Dropping the runtime drops every connection's task, and
                // with it the handlers still waiting.
                drop(runtime);
            })
            .expect("the HTTP server's thread")
    };
    Server {
        addr,
        shared,
        stop,
        thread_name,
        thread: Some(thread),
    }
}

#[allow(dead_code, reason = "not every test uses every part")]
impl Server {
    /// The address it listens on (127.0.0.1 and its port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:{port}{path}` (a `/` is put before a `path` without
    /// one).
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{slash}{path}", self.addr)
    }

    /// Whether `/page/{i}` answers 500: with `fail_one_in: Some(n)`, exactly
    /// when `i % n == n - 1`; never with `None`. (Pages past the end answer
    /// 404 whatever this says.)
    pub fn fails(&self, i: usize) -> bool {
        fails(self.shared.options.fail_one_in, i)
    }

    /// The options it was started with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// Its counters now.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            started: s.started.load(Ordering::SeqCst),
            completed: s.completed.load(Ordering::SeqCst),
            abandoned: s.abandoned.load(Ordering::SeqCst),
            in_flight: s.in_flight.load(Ordering::SeqCst),
            in_flight_max: s.in_flight_max.load(Ordering::SeqCst),
        }
    }

    /// The name of its thread (`http-srv-{port}`), as /proc/self/task/*/comm
    /// shows it.
    pub fn thread_name(&self) -> &str {
        &self.thread_name
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the HTTP server's thread panicked");
        }
    }
}

/// Accepts connections until `stop`, each served on a task of its own.
async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: Arc<Stop>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let stream = tokio::select! {
            biased;
            () = stop.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: try again in a while.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            // A client that goes away ends this with an error: nothing to do.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Counts a request from its start; when dropped, as completed if
/// `finished` was set, else as abandoned.
struct Guard<'a> {
    shared: &'a Shared,
    finished: bool,
}

impl<'a> Guard<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.started.fetch_add(1, Ordering::SeqCst);
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.in_flight_max.fetch_max(now, Ordering::SeqCst);
        Guard {
            shared,
            finished: false,
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // Out of flight first: once `completed + abandoned == started`,
        // `in_flight` is 0.
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let counter = if self.finished {
            &self.shared.completed
        } else {
            &self.shared.abandoned
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut guard = Guard::new(&shared);
    let response = route(&shared.options, &request).await;
    guard.finished = true;
    Ok(response)
}

async fn route(options: &Options, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    const HTML: &str = "text/html; charset=utf-8";
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET {
        return respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET".into());
    }
    let path = request.uri().path();
    let (route, rest) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    match route {
        "page" => {
            tokio::time::sleep(options.latency).await;
            match rest.parse::<usize>() {
                Ok(i) if i < options.pages && fails(options.fail_one_in, i) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("page {i} fails"),
                ),
                Ok(i) if i < options.pages => respond(StatusCode::OK, HTML, page(i)),
                _ => respond(StatusCode::NOT_FOUND, TEXT, format!("no page {rest}")),
            }
        }
        "slow" => {
            tokio::time::sleep(options.slow).await;
            respond(StatusCode::OK, TEXT, format!("slow {rest}"))
        }
        "echo" => respond(StatusCode::OK, TEXT, rest.to_owned()),
        _ => respond(StatusCode::NOT_FOUND, TEXT, format!("no route {path}")),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The stop signal from [`Server`]'s drop to the accept loop (a flag and the
/// waker of the loop waiting on it).
#[derive(Default)]
struct Stop {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Stop {
    fn set(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.0 {
                Poll::Ready(())
            } else {
                state.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}
