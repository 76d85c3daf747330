//! What the monitor thread records of a running stage, over time.

/// One row of the `samples` table: a stage's counts at a moment of the run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// Hierarchical stage name.
    pub stage: String,
    /// Items taken so far.
    pub items_in: u64,
    /// Items emitted so far.
    pub items_out: u64,
    /// Busy time so far, in seconds.
    pub busy: f64,
    /// Items in the stage's output queue at that moment.
    pub queue_depth: u64,
}

impl Sample {
    pub(crate) fn new(
        t: f64,
        stage: String,
        items_in: u64,
        items_out: u64,
        busy: f64,
        queue_depth: u64,
    ) -> Self {
        Sample {
            t,
            stage,
            items_in,
            items_out,
            busy,
            queue_depth,
        }
    }
}
