//! Fan-in: several pipelines of one item type read as one
//! ([`Pipeline::merge`]).
//!
//! A merge is a producer with one worker per input: the merge's start
//! starts every input (on one thread, so the branches of one fork start
//! together: `fork::start_together`), and worker `i` passes input `i`'s
//! batches on. The merge's run and each input's
//! are one graph (`Control::join_graph`: a failure anywhere fails all),
//! and the merge's run cancels its inputs when it is cancelled, since a
//! worker waiting for an input's next batch cannot see the merge stop.
//! Each worker owns its input's results, so the merge's shutdown joins the
//! inputs' threads.

use std::sync::Arc;

use crate::config::StageConfig;
use crate::control::Control;
use crate::error::{StageError, Stop};
use crate::launch::{PerWorker, WorkerStart};
use crate::pipeline::Pipeline;
use crate::results::Results;

impl<T: Send + 'static> Pipeline<T> {
    /// One pipeline of the items of all of `inputs`, as they arrive: fan-in.
    /// Each input's items keep their order relative to each other; across
    /// inputs the order is the order of arrival, not defined. The inputs
    /// start when the merge does, each read on a thread of its own, and are
    /// one graph with it: the first failure of any input, or of the
    /// merge's stages, fails them all, and dropping the merge's results
    /// stops every input. No inputs: no items.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn label(x: u32) -> String { format!("#{x}") }
    ///
    /// let (even, odd) = pipe!(0..6u32).split(|x| x % 2 == 0);
    /// let all = Pipeline::merge([pipe!(even | label), pipe!(odd | label)]);
    /// let mut out: Vec<String> = all.collect()?;
    /// out.sort();
    /// assert_eq!(out, ["#0", "#1", "#2", "#3", "#4", "#5"]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn merge(inputs: impl IntoIterator<Item = Pipeline<T>>) -> Pipeline<T> {
        let inputs: Vec<Pipeline<T>> = inputs.into_iter().collect();
        if inputs.is_empty() {
            return Pipeline::default();
        }
        let mut config = StageConfig::new("merge");
        config.set_workers(inputs.len());
        let slots = PerWorker::empty(inputs.len());
        let started = slots.clone();
        let body = move |w| pass_on(&slots, w);
        Pipeline::from_workers(config, body).with_thread(move |launch| {
            // Every input starts here, on one thread, before the workers
            // that read them: the branches of one fork start together, and
            // count as read from the start.
            let ctl = launch.control();
            crate::fork::start_together(|| {
                for (index, input) in inputs.into_iter().enumerate() {
                    started.put(index, adopt(&ctl, input));
                }
            });
        })
    }
}

/// Starts `input` as an input of the run `ctl` controls (a merge's, a
/// zip's): read from the start, one graph with it, and cancelled with it,
/// since a worker waiting for the input's next batch cannot see the run
/// stop.
pub(crate) fn adopt<T: Send + 'static>(ctl: &Arc<Control>, input: Pipeline<T>) -> Results<T> {
    let results = input.results();
    let run = results.control();
    run.mark_reading();
    Control::join_graph(ctl, &run);
    ctl.feed_from(&run);
    results
}

/// Worker `w.index` of a merge: passes its input's batches on.
fn pass_on<T: Send + 'static>(
    slots: &PerWorker<Results<T>>,
    mut w: WorkerStart<T>,
) -> Result<(), StageError> {
    let Some(mut results) = slots.take(w.index) else {
        return Ok(());
    };
    while let Some(batch) = next_input_batch(&mut results, &w.ctl)? {
        for item in batch {
            w.tx.push(item, &w.ctl)?;
        }
        // Passed on now: an input that streams is not held back until the
        // next batch.
        w.tx.flush(&w.ctl)?;
    }
    Ok(())
}

/// The next batch of an input [`adopt`]ed by the run `ctl` controls;
/// `None` at its end. An input's failure is the graph's already (joined at
/// the start); in case it was the input's before the join, it is the run's
/// now too, and the worker reading it stops.
pub(crate) fn next_input_batch<T>(
    input: &mut Results<T>,
    ctl: &Control,
) -> Result<Option<Vec<T>>, StageError> {
    match input.next_batch() {
        Some(Ok(batch)) => Ok(Some(batch)),
        None => Ok(None),
        Some(Err(error)) => {
            ctl.fail_elsewhere(error.elsewhere());
            Err(StageError(Stop::Cancelled))
        }
    }
}
