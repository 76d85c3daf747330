//! parallelpipe's README pipeline, `fetch | get_titles | most_common`, done
//! with real HTTP: an async stage keeps 100 requests in flight on tokio,
//! thread workers pull the titles out of the pages, and one worker counts
//! the words of all the titles.
//!
//! The "web" is a small server started here, on loopback: 400 pages, each
//! answered after 50 ms. For comparison, the first 20 pages are also fetched
//! one after the other.
//!
//! Run with `cargo run --release --features async --example fetch`.
//! `benches/async_io.rs` measures the same stages (`fetch`, `get_title`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parapipe::prelude::*;

const PAGES: usize = 400;
const LATENCY: Duration = Duration::from_millis(50);
pub const CONCURRENCY: usize = 100;
const SEQUENTIAL: usize = 20;

/// Downloads a page: at most `CONCURRENCY` requests in flight, each given
/// 10 s. A non-2xx answer is an error, which fails the pipeline naming
/// this stage.
#[map_stage(concurrency = CONCURRENCY, timeout_ms = 10_000)]
pub async fn fetch(url: String, client: reqwest::Client) -> Result<String, reqwest::Error> {
    client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// The page's title, if it has one: CPU work, on two threads.
#[map_stage(workers = 2)]
pub fn get_title(html: String) -> Option<String> {
    let start = html.find("<title>")? + "<title>".len();
    let end = html[start..].find("</title>")? + start;
    Some(html[start..end].trim().to_owned())
}

/// What the titles add up to.
struct Summary {
    pages: usize,
    untitled: usize,
    /// The `n` most common title words, most common first.
    top: Vec<(String, usize)>,
}

/// Counts the words of every title: one worker, so it sees them all.
#[stage]
fn most_common(
    titles: impl Iterator<Item = Option<String>>,
    n: usize,
) -> impl Iterator<Item = Summary> {
    let (mut pages, mut untitled) = (0, 0);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for title in titles {
        pages += 1;
        let Some(title) = title else {
            untitled += 1;
            continue;
        };
        for word in title.split_whitespace() {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(n);
    std::iter::once(Summary {
        pages,
        untitled,
        top,
    })
}

pub fn client() -> reqwest::Client {
    // Loopback: no proxy from the environment.
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client (no TLS, no proxy: nothing can fail)")
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = start_server(PAGES, LATENCY)?;
    let urls: Vec<String> = (0..PAGES)
        .map(|i| format!("http://{addr}/page/{i}"))
        .collect();

    // The futures run on the pipeline's own tokio runtime: main stays plain.
    let begun = Instant::now();
    let summary = pipe!(urls.clone() | fetch(client()) | get_title | most_common(8))
        .execute()?
        .expect("most_common yields one summary");
    let took = begun.elapsed();

    println!(
        "fetched {} pages ({} without a title) in {:.2} s: {:.0} pages/s \
         ({CONCURRENCY} requests in flight, {} ms each)",
        summary.pages,
        summary.untitled,
        took.as_secs_f64(),
        summary.pages as f64 / took.as_secs_f64(),
        LATENCY.as_millis(),
    );
    println!("most common title words:");
    for (word, count) in &summary.top {
        println!("  {count:>5}  {word}");
    }

    let one_by_one = fetch_sequentially(&urls[..SEQUENTIAL])?;
    let per_page = one_by_one / SEQUENTIAL as u32;
    println!(
        "one after the other, the first {SEQUENTIAL} pages took {:.2} s ({} ms a page): \
         all {PAGES} would take about {:.1} s, {:.0}x as long",
        one_by_one.as_secs_f64(),
        per_page.as_millis(),
        (per_page * PAGES as u32).as_secs_f64(),
        (per_page * PAGES as u32).as_secs_f64() / took.as_secs_f64(),
    );
    Ok(())
}

/// Fetches `urls` one at a time, as a loop without a pipeline would, and
/// says how long that took.
fn fetch_sequentially(urls: &[String]) -> Result<Duration, Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = client();
    let begun = Instant::now();
    runtime.block_on(async {
        for url in urls {
            // The stage's function, called as the plain async fn it is.
            fetch(url.clone(), client.clone()).await?;
        }
        Ok::<_, reqwest::Error>(())
    })?;
    Ok(begun.elapsed())
}

// ---- the local "web" ----

/// Serves `GET /page/{i}` for `i < pages` on a free loopback port, each
/// answer after `latency`, from a tokio runtime on a thread of its own
/// (which ends with the process).
fn start_server(pages: usize, latency: Duration) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("a listener for the server's runtime");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // Out of file descriptors, say: try again shortly.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let service = service_fn(move |request| answer(request, pages, latency));
                    tokio::spawn(async move {
                        // A client that goes away ends this with an error.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}

async fn answer(
    request: Request<Incoming>,
    pages: usize,
    latency: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    tokio::time::sleep(latency).await;
    let page = request
        .uri()
        .path()
        .strip_prefix("/page/")
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|&i| i < pages);
    let (status, body) = match page {
        Some(i) => (StatusCode::OK, html(i)),
        None => (StatusCode::NOT_FOUND, "no such page".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// Page `i`: a title of three words drawn from a small vocabulary (the
/// first words more often than the last), except every 25th page, which
/// has none.
fn html(i: usize) -> String {
    const WORDS: [&str; 12] = [
        "rust", "pipeline", "async", "parallel", "queue", "stage", "worker", "tokio", "thread",
        "future", "batch", "channel",
    ];
    let words: Vec<&str> = (0..3u64)
        .map(|k| {
            // A fixed mix of (page, position): the same text every run.
            let mut h = (i as u64 * 3 + k)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 31;
            let (a, b) = (h % 12, (h >> 8) % 12);
            WORDS[a.min(b) as usize]
        })
        .collect();
    let head = if i.is_multiple_of(25) {
        String::new()
    } else {
        format!("<title>{}</title>", words.join(" "))
    };
    format!(
        "<html><head>{head}</head><body><h1>Page {i}</h1><p>{}</p></body></html>",
        words.join(", ")
    )
}
