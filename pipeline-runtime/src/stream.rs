//! Input that arrives over time: channels with an idle timeout, a `feed`
//! closure, a real-time ticker; and output where only the newest result
//! matters.

use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use std::time::{Duration, Instant};

use crate::control::{Control, lock};
use crate::error::{Failure, PipelineError};
use crate::launch::Launch;
use crate::link::MAX_BATCH;
use crate::pipeline::{IntoSource, Pipeline};
use crate::results::Results;
use crate::source::{Channel, Gate, Source};
use crate::user_code::UserCode;

/// A streaming source: items arrive over time, each passed on as soon as it
/// arrives, and the stream ends when its producer is done, or, with
/// [`idle_timeout`](Stream::idle_timeout), when no item came for that long.
///
/// ```
/// use parapipe::prelude::*;
/// use parapipe::Stream;
///
/// #[map_stage]
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// // A closure on a thread of its own, pushing items into the bucket.
/// let source = Stream::feed(|bucket| {
///     for x in 0..5 {
///         if bucket.push(x).is_err() {
///             return; // the pipeline stopped
///         }
///     }
/// });
/// let mut got: Vec<u64> = pipe!(source | double).collect()?;
/// got.sort();
/// assert_eq!(got, [0, 2, 4, 6, 8]);
/// # Ok::<(), PipelineError>(())
/// ```
pub struct Stream<T> {
    origin: Origin<T>,
    idle_timeout: Option<Duration>,
}

impl<T> std::fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

type Feeder<T> = Box<dyn FnOnce(&Bucket<T>) + Send>;

enum Origin<T> {
    Channel(flume::Receiver<T>),
    Feed(Feeder<T>),
}

/// Where a [`Stream::feed`] closure puts its items.
pub struct Bucket<T> {
    tx: flume::Sender<T>,
    pub(crate) ctl: Arc<Control>,
    /// Counts the feed closure as the user's code, except inside `push`.
    user: UserCode,
    /// With an idle time-out: shut when the stream ends (see [`Gate`]).
    gate: Option<Gate>,
}

impl<T> std::fmt::Debug for Bucket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").finish_non_exhaustive()
    }
}

/// The pipeline behind a [`Bucket`] has stopped: stop feeding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the pipeline has stopped")
    }
}

impl std::error::Error for Stopped {}

impl<T> Bucket<T> {
    /// Passes an item to the pipeline, waiting while its queue is full.
    /// Fails once the pipeline has stopped (or the stream has ended on its
    /// idle time-out). An item for which it returns `Ok` is processed.
    pub fn push(&self, item: T) -> Result<(), Stopped> {
        if self.ctl.is_cancelled() {
            return Err(Stopped);
        }
        self.user.outside(|| match &self.gate {
            None => self.tx.send(item).map_err(|_| Stopped),
            Some(gate) => self.push_gated(gate, item),
        })
    }

    /// A push that the idle time-out cannot overtake: sent while holding the
    /// gate, which is never held while the channel is full (the source
    /// takes the gate to end the stream, and must not wait on a push that
    /// waits on it).
    fn push_gated(&self, gate: &Gate, mut item: T) -> Result<(), Stopped> {
        let mut pause = std::time::Duration::from_micros(20);
        loop {
            match gate.pass(|| self.tx.try_send(item)) {
                None => return Err(Stopped),
                Some(Ok(())) => return Ok(()),
                Some(Err(flume::TrySendError::Disconnected(_))) => return Err(Stopped),
                Some(Err(flume::TrySendError::Full(back))) => item = back,
            }
            // Full: the pipeline is behind. Wait outside the gate.
            let wake = Instant::now() + pause;
            if !self.ctl.sleep_until(Some(wake)) {
                return Err(Stopped);
            }
            pause = (pause * 2).min(std::time::Duration::from_millis(2));
        }
    }

    /// Waits until `deadline` (forever if `None`), or until the pipeline
    /// stops: `false` then. A wait of the runtime's, not the user's code, so
    /// a dropped pipeline does not leave it behind.
    fn sleep_until(&self, deadline: Option<Instant>) -> bool {
        self.user.outside(|| self.ctl.sleep_until(deadline))
    }
}

impl<T: Send + 'static> Stream<T> {
    /// The items of a channel fed by other threads; the stream ends when
    /// every sender is dropped.
    pub fn channel(receiver: flume::Receiver<T>) -> Self {
        Stream {
            origin: Origin::Channel(receiver),
            idle_timeout: None,
        }
    }

    /// Runs `feed` on a thread of its own; what it pushes into the bucket
    /// is the stream, which ends when `feed` returns.
    /// A panic in `feed` fails the pipeline as the `source`.
    ///
    /// Once the pipeline stops, `push` fails: return then. While `feed`
    /// blocks outside `push` (waiting on a socket, say), it cannot be
    /// interrupted: dropping the pipeline does not wait for it, and its
    /// thread ends when `feed` returns.
    pub fn feed(feed: impl FnOnce(&Bucket<T>) + Send + 'static) -> Self {
        Stream {
            origin: Origin::Feed(Box::new(feed)),
            idle_timeout: None,
        }
    }

    /// A real-time source: calls `tick` once every `period` (at a fixed
    /// rate: a slow call delays the next one but does not shift the
    /// schedule) until it returns `None` or the pipeline stops
    /// The wait between ticks ends as
    /// soon as the pipeline stops; `Duration::MAX` ticks once.
    pub fn every(period: Duration, mut tick: impl FnMut() -> Option<T> + Send + 'static) -> Self {
        Self::feed(move |bucket| {
            let mut next = Some(Instant::now());
            while let Some(item) = tick() {
                if bucket.push(item).is_err() {
                    return;
                }
                next = next.and_then(|n| n.checked_add(period));
                let now = Instant::now();
                match next {
                    Some(n) if n <= now => {
                        // Behind schedule: start again from now rather than
                        // firing a burst to catch up.
                        next = Some(now);
                    }
                    _ => {
                        if !bucket.sleep_until(next) {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Ends the stream once no item arrived for `idle`: what arrived before is processed and delivered, and the
    /// pipeline ends normally. With [`feed`](Stream::feed), a push that
    /// returned `Ok` is always delivered, and a push after the time-out
    /// fails. With [`channel`](Stream::channel), items still in the channel
    /// when the time-out fires are delivered; a send that races the
    /// time-out itself may succeed on your channel after the stream has
    /// ended, and that item is not processed: use `feed` where every
    /// accepted item must be.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }
}

impl<T: Send + 'static> IntoSource for Stream<T> {
    type Item = T;

    fn into_pipeline(self) -> Pipeline<T> {
        let idle = self.idle_timeout;
        let gate = idle.map(|_| Gate::default());
        let (receiver, feed) = match self.origin {
            Origin::Channel(rx) => (rx, None),
            Origin::Feed(feed) => {
                let (tx, rx) = flume::bounded(MAX_BATCH);
                (rx, Some((feed, tx)))
            }
        };
        let channel = Channel {
            rx: receiver,
            idle,
            // Only a feed's pushes can be kept from racing the time-out.
            gate: feed.as_ref().and(gate.clone()),
        };
        let relay = Pipeline::from_source(Source::<std::iter::Empty<T>>::Flume(channel));
        match feed {
            None => relay,
            Some((feed, tx)) => relay.with_thread(move |launch: &mut Launch| {
                // The user's closure may block where we cannot interrupt
                // it; it sees `Stopped` at its next push once the pipeline
                // has stopped.
                let user = UserCode::default();
                let bucket = Bucket {
                    tx,
                    ctl: launch.control(),
                    user: user.clone(),
                    gate,
                };
                launch.spawn_watched("source", user.clone(), move || {
                    user.run(|| feed(&bucket));
                    Ok(())
                });
            }),
        }
    }
}

/// The newest result of a pipeline running in the background: a thread drains the results as they come, so the
/// pipeline never waits for a reader, and keeps only the latest.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let latest = pipe!(0..1000u64 | square).latest();
/// let last = latest.wait();
/// assert!(last.is_ok());
/// ```
pub struct Latest<T> {
    shared: Arc<Mutex<LatestState<T>>>,
    drainer: Option<JoinHandle<()>>,
    ctl: Arc<Control>,
}

impl<T> std::fmt::Debug for Latest<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latest")
            .field("done", &self.drainer.is_none())
            .finish_non_exhaustive()
    }
}

struct LatestState<T> {
    value: Option<T>,
    error: Option<PipelineError>,
    done: bool,
}

impl<T: Send + 'static> Latest<T> {
    pub(crate) fn start(results: Results<T>) -> Self {
        let shared = Arc::new(Mutex::new(LatestState {
            value: None,
            error: None,
            done: false,
        }));
        let ctl = results.control();
        let s = shared.clone();
        let spawned = thread::Builder::new().name("latest".into()).spawn(move || {
            for item in results {
                let mut state = lock(&s);
                match item {
                    Ok(v) => state.value = Some(v),
                    Err(e) => state.error = Some(e),
                }
            }
            lock(&s).done = true;
        });
        let drainer = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                // The results were dropped with the closure: the pipeline stopped.
                let mut state = lock(&shared);
                state.error = Some(PipelineError::new("latest", None, Failure::Spawn(e)));
                state.done = true;
                None
            }
        };
        Latest {
            shared,
            drainer,
            ctl,
        }
    }

    /// The newest result so far, if any, leaving it in place.
    pub fn get(&self) -> Option<T>
    where
        T: Clone,
    {
        lock(&self.shared).value.clone()
    }

    /// The newest result so far, if any, taking it out.
    pub fn take(&self) -> Option<T> {
        lock(&self.shared).value.take()
    }

    /// Whether the pipeline has ended.
    pub fn is_done(&self) -> bool {
        lock(&self.shared).done
    }

    /// Waits for the pipeline to end; its last item, or its failure.
    pub fn wait(mut self) -> Result<Option<T>, PipelineError> {
        if let Some(drainer) = self.drainer.take() {
            let _ = drainer.join();
        }
        let mut state = lock(&self.shared);
        match state.error.take() {
            Some(e) => Err(e),
            None => Ok(state.value.take()),
        }
    }
}

impl<T> Drop for Latest<T> {
    /// Stops the pipeline and joins it.
    fn drop(&mut self) {
        if let Some(drainer) = self.drainer.take() {
            // Cancelling ends the results the drainer waits on, whatever
            // the source is doing.
            self.ctl.cancel();
            let _ = drainer.join();
        }
    }
}
