//! A stage's worker in a distributed run: pulling messages, feeding their
//! items to the stage, publishing each message's outputs, keeping messages
//! alive while it holds them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::Wire;
use crate::error::{Counters, StageError, Stop};
use crate::profile::Probe;
use crate::stage::Stage;

use super::collector::seq_of;
use super::run::Decode;
use super::shared::{Shared, halt_to_stage_error};

/// How long an idle pull waits for a message before checking the job.
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Messages pulled at once: few, so that slow items spread over every
/// process instead of piling up in the first worker's hands.
pub(super) const FETCH: usize = 4;

/// One `apply` of a stage worker: the messages it has pulled and the
/// outputs of the message it is on.
pub(super) struct Session<'s, O> {
    pub(super) sh: &'s Shared,
    pub(super) consumer: &'s jetstream::consumer::PullConsumer,
    /// The stage's number, from 1: it reads edge `k - 1` and feeds edge `k`.
    pub(super) k: usize,
    pub(super) buffered: VecDeque<jetstream::Message>,
    /// The message whose items the stage is taking, its source sequence
    /// number, and when the broker last heard from us about it.
    pub(super) current: Option<(jetstream::Message, u64, Instant)>,
    /// The outputs since the current message was opened.
    pub(super) outbox: Vec<O>,
    /// When the broker last heard from us about the messages in `buffered`.
    pub(super) pulled_at: Instant,
    /// Why the input ended early, for the worker to report.
    pub(super) halt: Option<StageError>,
    /// In a profiled or debugged run, what the worker measures.
    pub(super) probe: Option<&'s mut Probe>,
}

impl<O: Wire> Session<'_, O> {
    /// Passes the current message's outputs on, then acknowledges it.
    pub(super) fn finish_current(&mut self) -> Result<(), StageError> {
        let Some((message, seq, _)) = self.current.take() else {
            return Ok(());
        };
        self.sh
            .publish(self.k, seq, &self.outbox)
            .map_err(halt_to_stage_error)?;
        self.sh.emitted[self.k - 1].fetch_add(self.outbox.len() as u64, Relaxed);
        self.outbox.clear();
        self.sh.broker.ack(&message)?;
        Ok(())
    }

    /// Keeps the current message, and those pulled and waiting their turn,
    /// from being redelivered while this worker has them.
    pub(super) fn keep_alive(&mut self) {
        let every = self.sh.job.ack_wait / 3;
        if let Some((message, _, touched)) = &mut self.current
            && touched.elapsed() >= every
        {
            self.sh.broker.in_progress(message);
            *touched = Instant::now();
        }
        if !self.buffered.is_empty() && self.pulled_at.elapsed() >= every {
            for waiting in &self.buffered {
                self.sh.broker.in_progress(waiting);
            }
            self.pulled_at = Instant::now();
        }
    }

    /// The next message to take items from: a pulled one, or one pulled
    /// now; `None` once the input has ended (or the job stops).
    pub(super) fn next_message(&mut self) -> Result<Option<jetstream::Message>, StageError> {
        loop {
            if let Some(message) = self.buffered.pop_front() {
                return Ok(Some(message));
            }
            if self.sh.stopping() {
                return Ok(None);
            }
            // Nothing pulled is left: pass the current message's outputs on
            // and acknowledge it before waiting for more. A worker must not
            // hold a finished message while it waits: the edge's limit counts
            // the messages workers hold, and a stage upstream would wait for
            // room that only this worker's next item would make (deadlock).
            // What the stage emits from now on goes with the next message.
            self.finish_current()?;
            let stopping = || self.sh.stopping();
            let pulled = self
                .sh
                .broker
                .fetch(self.consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            if pulled.is_empty() {
                if self
                    .sh
                    .input_complete(self.k - 1)
                    .map_err(halt_to_stage_error)?
                {
                    return Ok(None);
                }
            } else {
                self.buffered.extend(pulled);
                self.pulled_at = Instant::now();
            }
        }
    }
}

/// The input of one `apply`: items of the pulled messages, message after
/// message. A message stays current until the stage takes an item of the
/// next one (or the input ends), so its outputs include what the stage
/// emits after taking its last item.
///
/// An async stage takes items ahead of its outputs (its futures in
/// flight), so the outputs it emits after taking an item of the next
/// message may still be the current one's. For it, the input ends with
/// each message (`one_message`): its `apply` then finishes every future of
/// the message before the message's outputs are published, and the next
/// `apply` takes the next message.
pub(super) struct SessionInput<'r, 's, I, O> {
    pub(super) session: &'r RefCell<Session<'s, O>>,
    pub(super) decode: Decode<I>,
    pub(super) items: std::vec::IntoIter<I>,
    pub(super) one_message: bool,
}

impl<I, O: Wire> Iterator for SessionInput<'_, '_, I, O> {
    type Item = I;

    fn next(&mut self) -> Option<I> {
        let mut s = self.session.borrow_mut();
        if s.halt.is_some() {
            return None;
        }
        loop {
            if let Some(item) = self.items.next() {
                s.sh.taken[s.k - 1].fetch_add(1, Relaxed);
                s.keep_alive();
                return Some(item);
            }
            if self.one_message && s.current.is_some() {
                return None;
            }
            // Waiting for the broker (pulling, and passing the finished
            // message's outputs on) is not the stage's work.
            let waiting = Instant::now();
            let step = s.next_message().and_then(|message| {
                let Some(message) = message else {
                    return Ok(None);
                };
                s.finish_current()?;
                let seq = seq_of(&message)?;
                let items = (self.decode)(&message)?;
                s.current = Some((message, seq, Instant::now()));
                Ok(Some(items))
            });
            match step {
                Ok(Some(items)) => {
                    if let Some(probe) = &mut s.probe {
                        let now = Instant::now();
                        probe.took(items.len(), now, now - waiting);
                    }
                    self.items = items.into_iter();
                }
                Ok(None) => return None,
                Err(e) => {
                    s.halt = Some(e);
                    return None;
                }
            }
        }
    }
}

/// One worker of stage `k` in this process: `apply` over the messages it
/// pulls until the stage's input ends, then again for any message the
/// broker redelivers (a process died), until the job ends.
pub(super) fn stage_worker<S>(
    stage: &S,
    decode: Decode<S::In>,
    sh: &Shared,
    k: usize,
    counters: &Counters,
    mut probe: Option<&mut Probe>,
) -> Result<(), StageError>
where
    S: Stage,
    S::Out: Wire,
{
    let stopping = || sh.stopping();
    let consumer = sh
        .broker
        .consumer(&sh.edges[k - 1], &stopping)
        .map_err(halt_to_stage_error)?;
    let filter = stage.config().filter_errors();
    let one_message = stage.config().concurrency().is_some();
    let mut leftover = VecDeque::new();
    loop {
        // A session starts with a message in hand, so a stage's setup does
        // not run for nothing while the job is idle.
        while leftover.is_empty() {
            if sh.stopping() {
                return if sh.over.load(Relaxed) {
                    Ok(())
                } else {
                    Err(StageError(Stop::Cancelled))
                };
            }
            let pulled = sh
                .broker
                .fetch(&consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            leftover.extend(pulled);
        }
        let session = RefCell::new(Session {
            sh,
            consumer: &consumer,
            k,
            buffered: std::mem::take(&mut leftover),
            current: None,
            outbox: Vec::new(),
            pulled_at: Instant::now(),
            halt: None,
            probe: probe.as_deref_mut(),
        });
        {
            let input = SessionInput::<S::In, S::Out> {
                session: &session,
                decode,
                items: Vec::new().into_iter(),
                one_message,
            };
            for output in stage.apply(input) {
                let mut s = session.borrow_mut();
                if let Some(probe) = &mut s.probe {
                    // Its outputs wait in the outbox, never on a queue.
                    probe.emitted(0);
                }
                match output {
                    Ok(item) => s.outbox.push(item),
                    Err(e) => counters
                        .drop_or_fail(filter, e.into())
                        .map_err(StageError::failed)?,
                }
                s.keep_alive();
            }
        }
        let mut s = session.into_inner();
        if let Some(error) = s.halt.take() {
            return Err(error);
        }
        s.finish_current()?;
        // Pulled but not taken (the stage stopped early): the next session's.
        leftover = s.buffered;
    }
}
