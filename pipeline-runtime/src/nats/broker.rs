//! The connection to the broker, for threads that are not async: each call
//! blocks its thread on the client's runtime, and retries what failed until
//! the job's broker timeout (the client reconnects by itself meanwhile).

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::{self, AckKind, Context};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{BrokerError, Job};

/// Why a broker call gave up.
pub(crate) enum Halt {
    /// The run is being cancelled: not an error of the call.
    Cancelled,
    /// The broker failed, for longer than the job's broker timeout.
    Broker(BrokerError),
}

impl From<BrokerError> for Halt {
    fn from(e: BrokerError) -> Self {
        Halt::Broker(e)
    }
}

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
    rt: tokio::runtime::Runtime,
    js: Context,
    timeout: Duration,
    /// How long one attempt of a call may take.
    attempt: Duration,
}

impl Broker {
    /// Connects, giving up after the job's broker timeout.
    pub(crate) fn connect(job: &Job) -> Result<Broker, BrokerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("parapipe-nats")
            .enable_all()
            .build()
            .map_err(|e| BrokerError::new("could not start the client's runtime", e))?;
        let url = job.url.clone();
        let timeout = job.broker_timeout;
        let attempt = timeout.min(ATTEMPT);
        let deadline = Instant::now() + timeout;
        // Connecting is retried here, not by the client, so that a wrong
        // address fails after the broker timeout with what went wrong.
        let client = loop {
            let process = job.process.clone();
            let options = async_nats::ConnectOptions::new()
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
            let error = match rt.block_on(options.connect(url.as_str())) {
                Ok(client) => break client,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(BrokerError::new(
                    format!(
                        "could not connect to {url} within {timeout:?} (is nats-server running there, with JetStream, `-js`?)"
                    ),
                    error,
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut js = jetstream::new(client);
        js.set_timeout(attempt);
        Ok(Broker {
            rt,
            js,
            timeout,
            attempt,
        })
    }

    /// Runs `attempt` until it succeeds, `cancelled()` is true after a failed
    /// attempt (`|| true`: one attempt), or the broker timeout has passed
    /// since the first failure.
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

    /// [`retry`](Broker::retry), each attempt given at most `limit`.
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
        let mut failing_since: Option<Instant> = None;
        loop {
            let error = match self
                .rt
                .block_on(async { tokio::time::timeout(limit, attempt()).await })
            {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => BrokerError::new(what, e),
                Err(_) => BrokerError::msg(format!("{what}: no answer within {limit:?}")),
            };
            if cancelled() {
                return Err(Halt::Cancelled);
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.timeout {
                return Err(Halt::Broker(error.after(self.timeout)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Deletes what an earlier run of the job left, then creates the
    /// control stream and every edge with its consumer.
    pub(crate) fn create_job(
        &self,
        control: &EdgeSpec,
        edges: &[EdgeSpec],
        ack_wait: Duration,
        duplicate_window: Duration,
    ) -> Result<(), Halt> {
        let never = &|| false;
        for spec in std::iter::once(control).chain(edges) {
            let name = spec.stream.clone();
            self.retry("could not delete a stream", never, || {
                let js = self.js.clone();
                let name = name.clone();
                async move {
                    match js.delete_stream(&name).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.to_string().contains("not found") => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            })?;
        }
        // Read with direct gets (see `last`).
        let control_config = stream::Config {
            name: control.stream.clone(),
            subjects: vec![format!("{}.>", control.subject)],
            max_messages_per_subject: 1,
            allow_direct: true,
            ..Default::default()
        };
        self.retry("could not create the job's control stream", never, || {
            self.js.create_stream(control_config.clone())
        })?;
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

    /// Deletes the edges' streams, best effort (one short attempt each):
    /// what a finished run leaves behind.
    pub(crate) fn delete_edges(&self, edges: &[EdgeSpec]) {
        let limit = self.attempt.min(Duration::from_secs(2));
        for spec in edges {
            let _ = self.retry_within("could not delete a stream", limit, &|| true, || {
                self.js.delete_stream(&spec.stream)
            });
        }
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
        self.rt
            .block_on(message.ack())
            .map_err(|e| BrokerError::new("could not acknowledge a message", e))
    }

    /// Tells the broker a message is still being worked on, so it is not
    /// redelivered yet.
    pub(crate) fn in_progress(&self, message: &jetstream::Message) {
        // Best effort: at worst the message is redelivered and its outputs
        // dropped as duplicates.
        let _ = self.rt.block_on(message.ack_with(AckKind::Progress));
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
    ) -> Result<Option<Bytes>, Halt> {
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
                    Ok(message) => Ok(Some(message.payload)),
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
