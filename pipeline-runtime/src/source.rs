//! The source thread: pulls the user's iterator or channel into the first link.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::{Control, POLL, lock};
use crate::error::{StageError, Stop};
use crate::link::Tx;
use crate::profile::Probe;
use crate::user_code::UserCode;

pub(crate) enum Source<I: IntoIterator> {
    Iter(I),
    /// A channel, ended after an idle time without items if one is given.
    Flume(Channel<I::Item>),
    Std(std::sync::mpsc::Receiver<I::Item>),
    /// A queue of the runtime's own: a branch of a fork.
    Queue(Box<dyn Queue<I::Item>>),
}

/// A queue a source drains that is not a channel: a fork's branch
/// (`fork.rs`). Given the run's control, so the queue can hand the run a
/// failure it carries.
pub(crate) trait Queue<T>: Send {
    /// The next item if one is there now.
    fn try_recv(&mut self, ctl: &Control) -> Polled<T>;
    /// The next item, waiting at most `timeout` for it.
    fn recv_timeout(&mut self, timeout: Duration, ctl: &Control) -> Polled<T>;
}

/// A flume channel source.
pub(crate) struct Channel<T> {
    pub(crate) rx: flume::Receiver<T>,
    /// Ends the stream once no item came for this long.
    pub(crate) idle: Option<Duration>,
    /// Shut when the stream ends on its idle time-out, by the feed whose
    /// pushes it guards (see [`Gate`]).
    pub(crate) gate: Option<Gate>,
}

/// Makes "the stream has ended" and "an item was accepted" exclusive: a
/// `Stream::feed` push holds it while it sends, and a source ending on its
/// idle time-out shuts it, then takes what is still in the channel. So an
/// item whose push succeeded is always delivered, and a push after the end
/// fails.
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<Mutex<bool>>);

impl Gate {
    /// Runs `send` unless the gate is shut; `None` if it is.
    pub(crate) fn pass<R>(&self, send: impl FnOnce() -> R) -> Option<R> {
        let shut = lock(&self.0);
        (!*shut).then(send)
    }

    fn shut(&self) {
        *lock(&self.0) = true;
    }
}

/// One poll of a channel source.
pub(crate) enum Polled<T> {
    Item(T),
    /// Several items at once (a fork's branch takes what its outlet holds).
    Batch(Vec<T>),
    Empty,
    Closed,
}

impl<I: IntoIterator> Source<I> {
    /// Runs the source; `user` tells where the user's code runs, `probe`
    /// measures the source in a profiled or debugged run.
    pub(crate) fn run(
        self,
        tx: &mut Tx<I::Item>,
        ctl: &Control,
        user: &UserCode,
        probe: Option<Probe>,
    ) -> Result<(), StageError> {
        match self {
            Source::Iter(items) => {
                // In the user's code but while a batch is sent: marked per
                // batch by the sender, not per item (a cheap iterator's items
                // cost a few nanoseconds, and this loop is a pipeline's first
                // link).
                tx.in_user_code(user.clone());
                user.enter();
                let items = items.into_iter();
                match probe {
                    None => {
                        for item in items {
                            tx.push(item, ctl)?;
                        }
                    }
                    Some(mut probe) => {
                        for item in items {
                            probe.emitted(tx.blocked_ns());
                            tx.push(item, ctl)?;
                        }
                    }
                }
                // The last batch, sent as the others were.
                tx.flush(ctl)?;
                user.leave();
            }
            Source::Flume(Channel { rx, idle, gate }) => drain_channel(
                tx,
                ctl,
                idle,
                probe,
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
                || {
                    // No push can succeed after this; those that did are
                    // in the channel, and go on.
                    if let Some(gate) = &gate {
                        gate.shut();
                    }
                    rx.drain().collect()
                },
            )?,
            Source::Std(rx) => drain_channel(
                tx,
                ctl,
                None,
                probe,
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
                Vec::new,
            )?,
            Source::Queue(queue) => {
                // Both polls need the queue; they never run at once.
                let queue = std::cell::RefCell::new(queue);
                drain_channel(
                    tx,
                    ctl,
                    None,
                    probe,
                    || queue.borrow_mut().try_recv(ctl),
                    |timeout| queue.borrow_mut().recv_timeout(timeout, ctl),
                    Vec::new,
                )?
            }
        }
        tx.flush(ctl)?;
        Ok(())
    }
}

/// Passes a channel's items on as they come: whatever is queued goes in one
/// batch, and the batch is flushed before waiting for more, so an item never
/// waits for the next one to arrive. With `idle`, a wait that long for the
/// next item ends the stream, as the last sender going away would; what
/// `on_idle` then returns (the channel's last items) goes on first.
fn drain_channel<T>(
    tx: &mut Tx<T>,
    ctl: &Control,
    idle: Option<Duration>,
    mut probe: Option<Probe>,
    mut try_recv: impl FnMut() -> Polled<T>,
    mut recv_timeout: impl FnMut(Duration) -> Polled<T>,
    on_idle: impl FnOnce() -> Vec<T>,
) -> Result<(), Stop> {
    let push = |item: T, tx: &mut Tx<T>, probe: &mut Option<Probe>| {
        if let Some(probe) = probe {
            probe.emitted(tx.blocked_ns());
        }
        tx.push(item, ctl)
    };
    loop {
        match try_recv() {
            Polled::Item(item) => push(item, tx, &mut probe)?,
            Polled::Batch(items) => {
                for item in items {
                    push(item, tx, &mut probe)?;
                }
            }
            Polled::Closed => return Ok(()),
            Polled::Empty => {
                tx.flush(ctl)?;
                let since = Instant::now();
                let got = loop {
                    let wait = match idle {
                        Some(idle) => match idle.checked_sub(since.elapsed()) {
                            Some(left) => left.min(POLL),
                            None => {
                                for item in on_idle() {
                                    push(item, tx, &mut probe)?;
                                }
                                return Ok(());
                            }
                        },
                        None => POLL,
                    };
                    match recv_timeout(wait) {
                        Polled::Empty if ctl.is_cancelled() => return Err(Stop::Cancelled),
                        Polled::Empty => {}
                        got => break got,
                    }
                };
                let now = Instant::now();
                if let Some(probe) = &mut probe {
                    // The wait for the channel is not the source's work.
                    probe.took(0, now, now - since);
                }
                tx.restart_clock(now);
                match got {
                    Polled::Item(item) => push(item, tx, &mut probe)?,
                    Polled::Batch(items) => {
                        for item in items {
                            push(item, tx, &mut probe)?;
                        }
                    }
                    Polled::Closed => return Ok(()),
                    Polled::Empty => {}
                }
            }
        }
    }
}
