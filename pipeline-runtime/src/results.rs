//! A running pipeline's results, as the consumer takes them, and its
//! shutdown: the end of the results, or their drop, stops what is left and
//! joins every thread.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::control::Control;
use crate::debug::Monitor;
use crate::error::{Counters, PipelineError};
use crate::launch::{Thread, join};
use crate::link::Rx;
use crate::profile::{Outcome, Profile, Profiler, RunStats};

/// The results of a running pipeline, as they come: see [`Pipeline::results`](crate::Pipeline::results).
pub struct Results<T> {
    rx: Option<Rx<T>>,
    batch: std::vec::IntoIter<T>,
    ctl: Arc<Control>,
    threads: Vec<Thread>,
    counters: Vec<(String, Arc<Counters>)>,
    observed: Option<Observed>,
    profile: Option<Profile>,
}

impl<T> Results<T> {
    /// The results of a run whose threads have started.
    pub(crate) fn new(
        rx: Rx<T>,
        ctl: Arc<Control>,
        threads: Vec<Thread>,
        counters: Vec<(String, Arc<Counters>)>,
        observed: Option<Observed>,
    ) -> Self {
        Results {
            rx: Some(rx),
            batch: Vec::new().into_iter(),
            ctl,
            threads,
            counters,
            observed,
            profile: None,
        }
    }
}

impl<T> std::fmt::Debug for Results<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("threads", &self.threads.len())
            .field("ended", &self.rx.is_none())
            .finish_non_exhaustive()
    }
}

/// A profiled or debugged run in progress.
pub(crate) struct Observed {
    pub(crate) run: Arc<RunStats>,
    pub(crate) monitor: Option<Monitor>,
    pub(crate) profiler: Option<Profiler>,
}

impl<T> Results<T> {
    /// The pipeline's shared state, to cancel it from elsewhere.
    pub(crate) fn control(&self) -> Arc<Control> {
        self.ctl.clone()
    }

    /// How many failing items were dropped so far by stages with
    /// `filter_errors`, in all.
    pub fn filtered(&self) -> u64 {
        self.counters
            .iter()
            .map(|(_, c)| c.filtered.load(Relaxed))
            .sum()
    }

    /// How many items stages skipped so far with [`Skip`](crate::Skip), in all.
    pub fn skipped(&self) -> u64 {
        self.counters
            .iter()
            .map(|(_, c)| c.skipped.load(Relaxed))
            .sum()
    }

    /// How many failing items each stage dropped so far, by stage name, in
    /// pipeline order.
    pub fn filtered_by_stage(&self) -> Vec<(String, u64)> {
        self.counters
            .iter()
            .map(|(name, c)| (name.clone(), c.filtered.load(Relaxed)))
            .collect()
    }

    /// The run's profile, once the results have ended (or the pipeline
    /// failed); `None` before that or if the pipeline was not profiled.
    /// See [`profile`](crate::profile).
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Ends the observation of a run whose threads are all joined: the
    /// monitor's final report, then the profile, stored.
    fn finish_observing(&mut self, outcome: Outcome) {
        let Some(mut observed) = self.observed.take() else {
            return;
        };
        let writer = observed.monitor.take().and_then(Monitor::stop);
        if let Some(profiler) = &observed.profiler {
            let duration = observed.run.epoch.elapsed();
            let mut profile = crate::profile::summarize(&observed.run, profiler, duration, outcome);
            if let Some(writer) = writer {
                let stored = writer.finish(&profile);
                profile.stored(stored);
            }
            self.profile = Some(profile);
        }
    }

    /// Joins every thread. Worker threads always end once the pipeline ends
    /// or is cancelled. A thread blocked in the user's code (a source's
    /// iterator, a feed closure) cannot be interrupted: it is left to end
    /// on its own when that code returns, and sees the pipeline stopped.
    fn join_all(&mut self) {
        let mut watched = Vec::new();
        for thread in self.threads.drain(..) {
            match thread.user {
                Some(user) => watched.push((thread.handle, thread.name, user)),
                None => join(thread.handle, &thread.name, &self.ctl),
            }
        }
        for (handle, name, user) in watched {
            if user.wait_unless_blocked(|| handle.is_finished()) {
                join(handle, &name, &self.ctl);
            }
        }
        // No async stage runs any more: a runtime of the pipeline's own stops.
        #[cfg(feature = "async")]
        self.ctl.executor.stop();
    }
}

/// Once it has returned `None`, it always does.
impl<T> std::iter::FusedIterator for Results<T> {}

impl<T> Iterator for Results<T> {
    type Item = Result<T, PipelineError>;

    // Inlined into the consumer's loop. The batch is read here and refilled
    // by a call that is handed neither it nor `self`, so the compiler can
    // keep the batch's cursor in a register: passing `&mut self` out of line
    // instead cost 0.7 ns an item (+10%) on the one-stage overhead bench.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.batch.next() {
                return Some(Ok(item));
            }
            match receive(&mut self.rx, &self.ctl, &self.observed) {
                Some(batch) => self.batch = batch.into_iter(),
                None => return self.end(),
            }
        }
    }
}

/// The consumer's next batch; `None` once the results have ended.
#[inline(never)]
fn receive<T>(
    rx: &mut Option<Rx<T>>,
    ctl: &Control,
    observed: &Option<Observed>,
) -> Option<Vec<T>> {
    let link = rx.as_mut()?;
    ctl.consumer_waits();
    let batch = link.recv_to_end(ctl);
    ctl.consumer_got();
    match batch {
        Some(batch) => {
            if let Some(observed) = observed {
                observed.run.received(batch.len(), link.born());
            }
            Some(batch)
        }
        None => {
            *rx = None;
            None
        }
    }
}

impl<T> Results<T> {
    /// What is left of the batch at hand, or the next batch, or the end
    /// (with the failure, if any): for runtime threads that consume a
    /// pipeline a batch at a time (a fork, a merge).
    pub(crate) fn next_batch(&mut self) -> Option<Result<Vec<T>, PipelineError>> {
        let rest: Vec<T> = self.batch.by_ref().collect();
        if !rest.is_empty() {
            return Some(Ok(rest));
        }
        match receive(&mut self.rx, &self.ctl, &self.observed) {
            Some(batch) => Some(Ok(batch)),
            None => self.end().map(|end| end.map(|_| Vec::new())),
        }
    }

    #[cold]
    fn end(&mut self) -> Option<Result<T, PipelineError>> {
        // The results are complete, but threads upstream of a stage that
        // stopped early (`take`) may still run, or wait: for a turn in a
        // reorder step, for input from an idle source. Nothing they do now
        // can reach the consumer, so they are stopped, not waited for.
        self.ctl.cancel();
        // Every thread is joined before the failure is read, so a failure
        // recorded by a thread that had already dropped its queue is seen.
        self.join_all();
        let failure = self.ctl.take_failure();
        let outcome = match &failure {
            Some(error) => Outcome::Failed(error.to_string()),
            None => Outcome::Completed,
        };
        self.finish_observing(outcome);
        failure.map(Err)
    }
}

impl<T> Drop for Results<T> {
    fn drop(&mut self) {
        if self.threads.is_empty() && self.observed.is_none() {
            return;
        }
        self.ctl.cancel();
        // Dropping the receiver lets the last stage's workers fail their
        // sends at once; the others see the cancellation.
        self.rx = None;
        self.join_all();
        self.finish_observing(Outcome::Cancelled);
    }
}

/// The last item of a pipeline's results, or its failure: what `execute`
/// returns, for parallel and serial pipelines alike.
pub(crate) fn last_item<T>(
    results: impl Iterator<Item = Result<T, PipelineError>>,
) -> Result<Option<T>, PipelineError> {
    let mut last = None;
    for item in results {
        last = Some(item?);
    }
    Ok(last)
}
