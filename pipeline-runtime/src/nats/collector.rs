//! The driver's `results` producer: pulls the last edge, drops what it has
//! seen, and puts results in source order when a stage is ordered.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use async_nats::jetstream;

use super::records::{EndRecord, Outcome};
use super::{BrokerError, Role, Wire};
use crate::config::StageConfig;
use crate::error::{StageError, Stop};
use crate::stage::{Configurable, Producer};
use crate::worker::Emitter;

use super::control::WATCH;
use super::naming::SEQ;
use super::run::Decode;
use super::session::{FETCH, POLL};
use super::shared::{Shared, halt_to_stage_error, unix_ms};

/// The `results` producer: the driver pulls the last edge; a worker
/// process waits for the job to end.
pub(super) struct Collector<T> {
    pub(super) config: StageConfig,
    pub(super) shared: Arc<OnceLock<Arc<Shared>>>,
    pub(super) decode: Decode<T>,
}

impl<T> Configurable for Collector<T> {
    fn config(&self) -> &StageConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut StageConfig {
        &mut self.config
    }
}

impl<T: Send + 'static> Producer for Collector<T> {
    type Out = T;

    fn produce(&self, mut emitter: Emitter<'_, T>) -> Result<(), StageError> {
        // Set before any thread starts, unless starting failed.
        let Some(sh) = self.shared.get() else {
            return Err(StageError(Stop::Cancelled));
        };
        if sh.job.role == Role::Worker {
            while !sh.stopping() {
                std::thread::sleep(WATCH);
            }
            return if sh.over.load(Relaxed) {
                Ok(())
            } else {
                Err(StageError(Stop::Cancelled))
            };
        }
        let edge = sh.edges.len() - 1;
        let stopping = || sh.stopping();
        let consumer = sh
            .broker
            .consumer(&sh.edges[edge], &stopping)
            .map_err(halt_to_stage_error)?;
        let mut seen = HashSet::new();
        let mut waiting: BTreeMap<u64, Vec<T>> = BTreeMap::new();
        let mut next_seq = 0;
        // Passes a source message's results on; in a profiled run, stamped
        // with when the source published it, for the end-to-end latency
        // (before every item: a batch sent midway takes the stamp along).
        let mut pass_on = |seq: u64, items: Vec<T>| {
            let born = sh
                .published
                .as_ref()
                .and_then(|published| crate::control::lock(published).remove(&seq));
            items.into_iter().try_for_each(|item| {
                if let Some(born) = born {
                    emitter.born_at(born);
                }
                emitter.emit(item)
            })
        };
        loop {
            if let Some(&total) = sh.source_total.get()
                && seen.len() as u64 == total
            {
                break;
            }
            if sh.stopping() {
                // Failed or cancelled: the end is someone else's to report.
                return Err(StageError(Stop::Cancelled));
            }
            let messages = sh
                .broker
                .fetch(&consumer, FETCH, POLL, &stopping)
                .map_err(halt_to_stage_error)?;
            for message in messages {
                let seq = seq_of(&message)?;
                if seen.insert(seq) {
                    let items = (self.decode)(&message)?;
                    if sh.ordered {
                        waiting.insert(seq, items);
                        while let Some(items) = waiting.remove(&next_seq) {
                            pass_on(next_seq, items)?;
                            next_seq += 1;
                        }
                    } else {
                        pass_on(seq, items)?;
                    }
                }
                sh.broker.ack(&message)?;
            }
        }
        sh.over.store(true, Relaxed);
        sh.completed.store(true, Relaxed);
        let end = EndRecord {
            run: sh.run,
            at: unix_ms(),
            outcome: Outcome::Done,
        };
        sh.record("end", &end).map_err(halt_to_stage_error)
    }
}

pub(super) fn seq_of(message: &jetstream::Message) -> Result<u64, StageError> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(SEQ))
        .and_then(|v| v.as_str().parse().ok())
        .ok_or_else(|| {
            StageError::failed(BrokerError::msg(format!(
                "a message on {} has no {SEQ} header: is another program publishing there?",
                message.subject
            )))
        })
}

pub(super) fn decode<T: Wire>(message: &jetstream::Message) -> Result<Vec<T>, StageError> {
    postcard::from_bytes(&message.payload).map_err(|e| {
        StageError::failed(BrokerError::new(
            format!(
                "could not read the items of a message on {}: do all processes run the same build?",
                message.subject
            ),
            e,
        ))
    })
}
