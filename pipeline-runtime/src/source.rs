//! The source thread: pulls the user's iterator or channel into the first link.

use std::time::{Duration, Instant};

use crate::control::Control;
use crate::error::{StageError, Stop};
use crate::link::Tx;

pub(crate) enum Source<I: IntoIterator> {
    Iter(I),
    /// A channel, ended after an idle time without items if one is given.
    Flume(flume::Receiver<I::Item>, Option<Duration>),
    Std(std::sync::mpsc::Receiver<I::Item>),
}

/// How often a source waiting on an empty channel checks for cancellation.
const POLL: Duration = Duration::from_millis(20);

/// One poll of a channel source.
enum Polled<T> {
    Item(T),
    Empty,
    Closed,
}

impl<I: IntoIterator> Source<I> {
    pub(crate) fn run(self, tx: &mut Tx<I::Item>, ctl: &Control) -> Result<(), StageError> {
        match self {
            Source::Iter(items) => {
                for item in items {
                    tx.push(item, ctl)?;
                }
            }
            Source::Flume(rx, idle) => drain_channel(
                tx,
                ctl,
                idle,
                || match rx.try_recv() {
                    Ok(item) => Polled::Item(item),
                    Err(flume::TryRecvError::Empty) => Polled::Empty,
                    Err(flume::TryRecvError::Disconnected) => Polled::Closed,
                },
                |timeout| match rx.recv_timeout(timeout) {
                    Ok(item) => Polled::Item(item),
                    Err(flume::RecvTimeoutError::Timeout) => Polled::Empty,
                    Err(flume::RecvTimeoutError::Disconnected) => Polled::Closed,
                },
            )?,
            Source::Std(rx) => drain_channel(
                tx,
                ctl,
                None,
                || match rx.try_recv() {
                    Ok(item) => Polled::Item(item),
                    Err(std::sync::mpsc::TryRecvError::Empty) => Polled::Empty,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => Polled::Closed,
                },
                |timeout| match rx.recv_timeout(timeout) {
                    Ok(item) => Polled::Item(item),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Polled::Empty,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Polled::Closed,
                },
            )?,
        }
        tx.flush(ctl)?;
        Ok(())
    }
}

/// Passes a channel's items on as they come: whatever is queued goes in one
/// batch, and the batch is flushed before waiting for more, so an item never
/// waits for the next one to arrive. With `idle`, a wait that long for the
/// next item ends the stream, as the last sender going away would.
fn drain_channel<T>(
    tx: &mut Tx<T>,
    ctl: &Control,
    idle: Option<Duration>,
    mut try_recv: impl FnMut() -> Polled<T>,
    mut recv_timeout: impl FnMut(Duration) -> Polled<T>,
) -> Result<(), Stop> {
    loop {
        match try_recv() {
            Polled::Item(item) => tx.push(item, ctl)?,
            Polled::Closed => return Ok(()),
            Polled::Empty => {
                tx.flush(ctl)?;
                let since = Instant::now();
                let item = loop {
                    let wait = match idle {
                        Some(idle) => match idle.checked_sub(since.elapsed()) {
                            Some(left) => left.min(POLL),
                            None => return Ok(()),
                        },
                        None => POLL,
                    };
                    match recv_timeout(wait) {
                        Polled::Item(item) => break item,
                        Polled::Closed => return Ok(()),
                        Polled::Empty if ctl.is_cancelled() => return Err(Stop::Cancelled),
                        Polled::Empty => {}
                    }
                };
                tx.restart_clock(Instant::now());
                tx.push(item, ctl)?;
            }
        }
    }
}
