//! The connection to the broker, for threads that are not async: each call
//! blocks its thread on the client's runtime, and retries what failed until
//! the job's broker timeout (the client reconnects by itself meanwhile).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::{self, AckKind, Context};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{BrokerError, Job};

/// `url` without the credentials it may carry, for messages.
pub(crate) fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.split_once("://"), one.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
            (None, Some((_, host))) => format!("***@{host}"),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a broker call gave up: the run is being cancelled (not an error of
/// the call), or the broker failed for longer than the job's broker
/// timeout.
pub(crate) type Halt = crate::error::Stop<BrokerError>;

/// One attempt of a call never waits longer than this, so a call notices
/// cancellation and its own deadline in time.
const ATTEMPT: Duration = Duration::from_secs(10);

/// An edge of the job: a work-queue stream, and the durable consumer that
/// pulls from it.
pub(crate) struct EdgeSpec {
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    /// The stream's limit, in messages.
    pub max_messages: i64,
}

/// Every message of a pull.
async fn all(
    mut batch: async_nats::jetstream::consumer::pull::Batch,
) -> Result<Vec<jetstream::Message>, async_nats::Error> {
    let mut got = Vec::new();
    while let Some(message) = batch.next().await {
        got.push(message?);
    }
    Ok(got)
}

pub(crate) struct Broker {
    /// `None` only while being dropped.
    rt: Option<tokio::runtime::Runtime>,
    client: async_nats::Client,
    js: Context,
    timeout: Duration,
    /// How long one attempt of a call may take.
    attempt: Duration,
    /// When the broker last answered a call. A failing call gives up the
    /// broker timeout after this (or after it started, if later), however
    /// many attempts that leaves it: the timeout is the time the broker
    /// was out of reach, not a time per call.
    last_ok: Mutex<Instant>,
    /// The largest message the server takes (headers included).
    max_payload: usize,
    /// A call has given up on the broker: the job is failing, and what is
    /// left to do (final counts, an end record, deleting streams) gets one
    /// short attempt, not another broker timeout.
    gave_up: std::sync::atomic::AtomicBool,
}

impl Drop for Broker {
    /// Without waiting for the client's tasks: a pipeline may end (and this
    /// be dropped) on a thread of the user's own async runtime, where a
    /// blocking shutdown would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` where it can block on the client's runtime: here, or, on a
/// thread of an async runtime (where blocking on another runtime panics),
/// on a thread of its own, which this one waits for.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(r) => r,
        Err(payload) => std::panic::resume_unwind(payload),
    })
}

/// Ends once `cancelled()` is true (polled).
async fn until(cancelled: &dyn Fn() -> bool) {
    while !cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Credentials in the (first) URL: `user:password@` or `token@`. The client
/// does not read them from there itself.
fn url_auth(urls: &str) -> Option<super::Auth> {
    let first = urls.split(',').next()?.trim();
    let addr: async_nats::ServerAddr = first.parse().ok()?;
    let user = decode(addr.username()?);
    Some(match addr.password() {
        Some(password) => super::Auth::UserPassword(user, decode(password)),
        None => super::Auth::Token(user),
    })
}

/// `%`-escapes of a URL's user part decoded (`%40` is `@`).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connection errors that waiting cannot cure.
fn permanent(kind: async_nats::ConnectErrorKind) -> Option<&'static str> {
    use async_nats::ConnectErrorKind::*;
    match kind {
        ServerParse => Some("its address is invalid"),
        AuthorizationViolation => Some(
            "it refused the credentials (authorization violation): check the user and password or token, in the URL or Job::user_password / Job::token",
        ),
        Authentication => Some("authentication failed"),
        Tls => Some("the TLS setup failed"),
        _ => None,
    }
}

impl Broker {
    /// Connects, giving up after the job's broker timeout, or at once if
    /// waiting cannot help (see [`permanent`]). Call it off any async
    /// runtime ([`off_runtime`]).
    pub(crate) fn connect(job: &Job) -> Result<Broker, BrokerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("parapipe-nats")
            .enable_all()
            .build()
            .map_err(|e| BrokerError::new("could not start the client's runtime", e))?;
        let url = job.url.clone();
        let timeout = job.broker_timeout;
        let attempt = timeout.min(ATTEMPT).max(Duration::from_millis(100));
        let deadline = Instant::now() + timeout;
        // Connecting is retried here, not by the client, so that a wrong
        // address fails after the broker timeout with what went wrong.
        let client = loop {
            let process = job.process.clone();
            let mut options = async_nats::ConnectOptions::new()
                .name(format!("parapipe {} {}", job.name, job.process))
                .connection_timeout(attempt)
                .max_reconnects(None)
                .event_callback(move |event| {
                    // What the client recovers from by itself, for the logs.
                    let process = process.clone();
                    async move {
                        let level = match event {
                            async_nats::Event::Connected => log::Level::Info,
                            _ => log::Level::Warn,
                        };
                        log::log!(target: "parapipe::nats", level, "process {process}: NATS client: {event}");
                    }
                });
            options = match job.auth.clone().or_else(|| url_auth(&url)) {
                None => options,
                Some(super::Auth::UserPassword(user, password)) => {
                    options.user_and_password(user, password)
                }
                Some(super::Auth::Token(token)) => options.token(token),
            };
            // The whole handshake is bounded: a listener that is not a NATS
            // server never sends its greeting.
            let connecting =
                async { tokio::time::timeout(attempt, options.connect(url.as_str())).await };
            let error = match rt.block_on(connecting) {
                Ok(Ok(client)) => break client,
                Ok(Err(e)) => {
                    if let Some(why) = permanent(e.kind()) {
                        return Err(BrokerError::new(
                            format!("could not connect to {}: {why}", redact(&url)),
                            e,
                        ));
                    }
                    BrokerError::new(format!("could not connect to {}", redact(&url)), e)
                }
                Err(_) => BrokerError::msg(format!(
                    "{} did not greet us as a NATS server within {attempt:?}",
                    redact(&url)
                )),
            };
            if Instant::now() >= deadline {
                return Err(error
                    .after(timeout)
                    .hint("is nats-server running there, with JetStream (`nats-server -js`)?"));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let max_payload = client.server_info().max_payload;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(attempt);
        let broker = Broker {
            rt: Some(rt),
            client,
            js,
            timeout,
            attempt,
            last_ok: Mutex::new(Instant::now()),
            max_payload,
            gave_up: std::sync::atomic::AtomicBool::new(false),
        };
        broker.check_jetstream(&url)?;
        Ok(broker)
    }

    /// Fails at once if the server has no JetStream: every request would
    /// otherwise fail, and be retried, for the whole broker timeout.
    fn check_jetstream(&self, url: &str) -> Result<(), BrokerError> {
        use async_nats::jetstream::context::AccountErrorKind;
        let asked = self
            .block_on(async { tokio::time::timeout(self.attempt, self.js.query_account()).await });
        match asked {
            Ok(Ok(_)) => Ok(()),
            // (The client's own words for it, "requested JetStream resource
            // does not exist", would mislead.)
            Ok(Err(e)) if e.kind() == AccountErrorKind::JetStreamUnavailable => {
                Err(BrokerError::msg(format!(
                    "the server at {} does not have JetStream enabled: start it with `nats-server -js`",
                    redact(url)
                )))
            }
            // Slow, or something that may pass: the calls that follow retry.
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// Answers every request on `subject` with `reply`, for as long as this
    /// connection lives: how a live driver makes itself known at once to a
    /// process that asks (a dead one's connection is gone, and with it the
    /// answer).
    pub(crate) fn answer(&self, subject: &str, reply: Bytes) -> Result<(), Halt> {
        let client = self.client.clone();
        let subject = subject.to_owned();
        let mut subscriber = self.retry("could not subscribe", &|| false, || {
            let (client, subject) = (client.clone(), subject.clone());
            async move { client.subscribe(subject).await }
        })?;
        // Lands before anyone can ask: the subscription must be registered
        // with the server first.
        let _ = self.block_on(client.flush());
        if let Some(rt) = &self.rt {
            // Ends with the runtime, when the broker is dropped.
            drop(rt.spawn(async move {
                while let Some(request) = subscriber.next().await {
                    if let Some(inbox) = request.reply {
                        let _ = client.publish(inbox, reply.clone()).await;
                    }
                }
            }));
        }
        Ok(())
    }

    /// Asks `subject` (see [`answer`](Broker::answer)): the answer, or
    /// `None` at once if nobody answers there.
    pub(crate) fn ask(&self, subject: &str) -> Result<Option<Bytes>, Halt> {
        use async_nats::RequestErrorKind;
        let none = std::cell::Cell::new(false);
        let answer = self.retry("could not ask the job's driver", &|| false, || {
            let client = self.client.clone();
            let subject = subject.to_owned();
            let none = &none;
            async move {
                match client.request(subject, Bytes::new()).await {
                    Ok(message) => Ok(Some(message.payload)),
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                        none.set(true);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
        })?;
        Ok(answer.filter(|_| !none.get()))
    }

    /// Whether the client is connected to the server now.
    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The largest message the server takes, headers included.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(future),
            None => unreachable!("the runtime is only taken when the broker is dropped"),
        }
    }

    /// When a call that started at `started` gives up.
    fn deadline(&self, started: Instant) -> Instant {
        let last_ok = *crate::control::lock(&self.last_ok);
        last_ok.max(started) + self.timeout
    }

    /// Runs `attempt` until it succeeds, `cancelled()` is true after a failed
    /// attempt (`|| true`: one attempt), or the broker timeout has passed
    /// since the broker last answered (see [`Broker::last_ok`]).
    fn retry<T, E, F, Fut>(
        &self,
        what: &'static str,
        cancelled: &dyn Fn() -> bool,
        attempt: F,
    ) -> Result<T, Halt>
    where
        E: Into<async_nats::Error>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.retry_within(what, self.attempt, cancelled, attempt)
    }

    /// [`retry`](Broker::retry), each attempt given at most `limit`. An
    /// attempt also ends as soon as `cancelled()` turns true, unless it was
    /// true from the start (a one-attempt call).
    fn retry_within<T, E, F, Fut>(
        &self,
        what: &'static str,
        limit: Duration,
        cancelled: &dyn Fn() -> bool,
        mut attempt: F,
    ) -> Result<T, Halt>
    where
        E: Into<async_nats::Error>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        use futures_util::future::{Either, select};
        use std::sync::atomic::Ordering::Relaxed;
        let started = Instant::now();
        let given_up = self.gave_up.load(Relaxed);
        let limit = match given_up {
            true => limit.min(Duration::from_secs(1)),
            false => limit,
        };
        loop {
            let left = self
                .deadline(started)
                .saturating_duration_since(Instant::now());
            let this = limit.min(left).max(Duration::from_millis(100));
            let race = !cancelled();
            let outcome = self.block_on(async {
                let call = std::pin::pin!(tokio::time::timeout(this, attempt()));
                if !race {
                    return Some(call.await);
                }
                match select(call, std::pin::pin!(until(cancelled))).await {
                    Either::Left((result, _)) => Some(result),
                    Either::Right(((), _)) => None,
                }
            });
            let error = match outcome {
                None => return Err(Halt::Cancelled),
                Some(Ok(Ok(value))) => {
                    *crate::control::lock(&self.last_ok) = Instant::now();
                    return Ok(value);
                }
                Some(Ok(Err(e))) => BrokerError::new(what, e),
                Some(Err(_)) => BrokerError::msg(format!("{what}: no answer within {this:?}")),
            };
            if cancelled() {
                return Err(Halt::Cancelled);
            }
            if given_up || Instant::now() >= self.deadline(started) {
                self.gave_up.store(true, Relaxed);
                return Err(Halt::Failed(error.after(self.timeout)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates the job's control stream, unless it exists: it outlives
    /// runs, and holds the record that makes a run the job's live one.
    pub(crate) fn ensure_control(&self, control: &EdgeSpec) -> Result<(), Halt> {
        // Read with direct gets (see `last`).
        let config = stream::Config {
            name: control.stream.clone(),
            subjects: vec![format!("{}.>", control.subject)],
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        };
        self.retry(
            "could not create the job's control stream",
            &|| false,
            || self.js.get_or_create_stream(config.clone()),
        )?;
        Ok(())
    }

    /// Creates a run's edges, each with its consumer.
    pub(crate) fn create_edges(
        &self,
        edges: &[EdgeSpec],
        ack_wait: Duration,
        duplicate_window: Duration,
    ) -> Result<(), Halt> {
        let never = &|| false;
        for spec in edges {
            let config = stream::Config {
                name: spec.stream.clone(),
                subjects: vec![spec.subject.clone()],
                retention: RetentionPolicy::WorkQueue,
                discard: DiscardPolicy::New,
                max_messages: spec.max_messages,
                duplicate_window,
                ..Default::default()
            };
            let stream = self.retry("could not create a stream", never, || {
                self.js.create_stream(config.clone())
            })?;
            let consumer = consumer::pull::Config {
                durable_name: Some(spec.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                max_ack_pending: 10_000,
                ..Default::default()
            };
            self.retry("could not create a consumer", never, || {
                stream.create_consumer(consumer.clone())
            })?;
        }
        Ok(())
    }

    /// Publishes `payload` on `subject` only if the subject's newest
    /// message is still number `expected` (0: it has none): `false` if
    /// another process published there first. What makes one driver, of
    /// two starting at once, the job's.
    pub(crate) fn publish_if_last(
        &self,
        subject: &str,
        payload: Bytes,
        expected: u64,
    ) -> Result<bool, Halt> {
        let lost = std::cell::Cell::new(false);
        self.retry("could not record the run", &|| false, || {
            let js = self.js.clone();
            let (subject, payload) = (subject.to_owned(), payload.clone());
            let lost = &lost;
            async move {
                let publish = jetstream::context::Publish::build()
                    .payload(payload)
                    .expected_last_subject_sequence(expected);
                match js.send_publish(subject, publish).await?.await {
                    Err(e) if e.to_string().contains("wrong last sequence") => {
                        lost.set(true);
                        Ok(())
                    }
                    other => other.map(drop),
                }
            }
        })?;
        Ok(!lost.get())
    }

    /// The names of the streams that start with `prefix`.
    pub(crate) fn streams_named(&self, prefix: &str) -> Result<Vec<String>, Halt> {
        self.retry("could not list streams", &|| false, || async {
            let mut names = self.js.stream_names();
            let mut all = Vec::new();
            while let Some(name) = names.next().await {
                all.push(name?);
            }
            Ok::<_, async_nats::Error>(all)
        })
        .map(|names| {
            names
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
    }

    /// Deletes streams, best effort (one short attempt each); `true` if
    /// every one is gone.
    pub(crate) fn delete_streams<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let limit = self.attempt.min(Duration::from_secs(2));
        names.into_iter().fold(true, |all, name| {
            let gone = self.retry_within("could not delete a stream", limit, &|| true, || {
                let js = self.js.clone();
                async move {
                    match js.delete_stream(name).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.to_string().contains("not found") => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            });
            all && gone.is_ok()
        })
    }

    /// The durable consumer of an edge.
    pub(crate) fn consumer(
        &self,
        spec: &EdgeSpec,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<PullConsumer, Halt> {
        self.retry("could not find a consumer", cancelled, || async {
            let stream = self.js.get_stream_no_info(&spec.stream).await?;
            stream
                .get_consumer::<consumer::pull::Config>(&spec.consumer)
                .await
        })
    }

    /// Publishes a message and waits for the broker to store it. A full
    /// stream is backpressure: the call waits, with no deadline, until
    /// there is room or the run is cancelled.
    pub(crate) fn publish(
        &self,
        subject: &str,
        id: &str,
        headers: &[(&str, String)],
        payload: Bytes,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), Halt> {
        let mut map = HeaderMap::new();
        map.insert(async_nats::header::NATS_MESSAGE_ID, id);
        for (name, value) in headers {
            map.insert(*name, value.as_str());
        }
        let mut pause = Duration::from_millis(1);
        loop {
            let full = std::cell::Cell::new(false);
            let result = self.retry("could not publish", cancelled, || {
                let js = self.js.clone();
                let (map, payload, subject) = (map.clone(), payload.clone(), subject.to_owned());
                let full = &full;
                async move {
                    let ack = js.publish_with_headers(subject, map, payload).await?.await;
                    match ack {
                        Err(e) if e.to_string().contains("maximum messages") => {
                            full.set(true);
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                }
            });
            result?;
            if !full.get() {
                return Ok(());
            }
            if cancelled() {
                return Err(Halt::Cancelled);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Up to `max` messages: those ready now, or else the first to arrive
    /// within `wait` (none if none did).
    pub(crate) fn fetch(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<jetstream::Message>, Halt> {
        // A pull is answered within its wait; one that is not (its consumer
        // was deleted as the run ended) is retried soon, not after the
        // general attempt limit.
        let limit = (wait + Duration::from_secs(1)).min(self.attempt);
        let ready = self.retry_within("could not fetch messages", limit, cancelled, || async {
            all(consumer.fetch().max_messages(max).messages().await?).await
        })?;
        if !ready.is_empty() {
            return Ok(ready);
        }
        self.retry_within("could not fetch messages", limit, cancelled, || async {
            all(consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await?)
            .await
        })
    }

    /// Acknowledges a message: done with it. Not confirmed: a lost
    /// acknowledgement only redelivers a message whose outputs the broker
    /// then drops as duplicates.
    pub(crate) fn ack(&self, message: &jetstream::Message) -> Result<(), BrokerError> {
        self.block_on(message.ack())
            .map_err(|e| BrokerError::new("could not acknowledge a message", e))
    }

    /// Tells the broker a message is still being worked on, so it is not
    /// redelivered yet.
    pub(crate) fn in_progress(&self, message: &jetstream::Message) {
        // Best effort: at worst the message is redelivered and its outputs
        // dropped as duplicates.
        let _ = self.block_on(message.ack_with(AckKind::Progress));
    }

    /// The newest message of `subject` in the control stream, if any.
    ///
    /// A direct get, answered by the stream itself: the JetStream API's
    /// `STREAM.MSG.GET` crashed nats-server 2.9.10 (a nil pointer in
    /// `jsMsgGetRequest`) when it raced the stream's creation or deletion,
    /// which joining workers and a new run's driver do.
    pub(crate) fn last(
        &self,
        stream: &str,
        subject: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<(Bytes, u64)>, Halt> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        // Answered at once by a stream that exists, never by one that does
        // not: a short attempt.
        let limit = self.attempt.min(Duration::from_secs(2));
        self.retry_within(
            "could not read the job's state",
            limit,
            cancelled,
            || async {
                let stream = self.js.get_stream_no_info(stream).await?;
                match stream.direct_get_last_for_subject(subject).await {
                    Ok(message) => Ok(Some((message.payload, message.sequence))),
                    Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Box::new(e) as async_nats::Error),
                }
            },
        )
    }

    /// Whether a stream named `stream` exists (one attempt). Asks for the
    /// list of stream names rather than for the stream itself.
    pub(crate) fn exists(&self, stream: &str) -> bool {
        let names = self.retry("could not list streams", &|| true, || async {
            let mut names = self.js.stream_names();
            let mut all = Vec::new();
            while let Some(name) = names.next().await {
                all.push(name?);
            }
            Ok::<_, async_nats::Error>(all)
        });
        names.is_ok_and(|names| names.iter().any(|n| n == stream))
    }

    /// The subjects of the control stream below `filter`.
    pub(crate) fn subjects(
        &self,
        stream: &str,
        filter: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<String>, Halt> {
        self.retry("could not read the job's state", cancelled, || async {
            let stream = self.js.get_stream_no_info(stream).await?;
            let mut subjects = stream.info_with_subjects(filter).await?;
            let mut names = Vec::new();
            while let Some(subject) = subjects.next().await {
                names.push(subject?.0);
            }
            Ok::<_, async_nats::Error>(names)
        })
    }

    /// An edge's stream state and its consumer's counts.
    pub(crate) fn edge_state(
        &self,
        spec: &EdgeSpec,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(stream::State, consumer::Info), Halt> {
        self.retry("could not read a stream's state", cancelled, || async {
            let stream = self.js.get_stream(&spec.stream).await?;
            let state = stream.cached_info().state.clone();
            let info = stream.consumer_info(&spec.consumer).await?;
            Ok::<_, async_nats::Error>((state, info))
        })
    }
}
