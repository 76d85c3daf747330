//! The control records of a job: what the processes of a run tell each
//! other through the job's control stream, one subject each (`run`,
//! `source`, `end`, `stats.<process>`), the newest kept. Typed, so that a
//! record that does not read as its type is an error, never a silent
//! default.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A stage as a run knows it: its name and item types, so that a process
/// whose build has other types under the same stage names is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StageInfo {
    pub(crate) name: String,
    pub(crate) input: String,
    pub(crate) output: String,
}

/// What a type is on the wire's two ends: its name, size and alignment.
/// Two builds that agree on these agree on the type as far as a process
/// can tell; a mismatch is a different type for sure.
pub(crate) fn type_info<T>() -> String {
    format!(
        "{} ({} bytes, align {})",
        std::any::type_name::<T>(),
        std::mem::size_of::<T>(),
        std::mem::align_of::<T>()
    )
}

/// A record of one run.
pub(crate) trait Record: Serialize + DeserializeOwned {
    fn run(&self) -> u64;
}

/// `run`: the job's newest run, which its driver claimed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    pub(crate) run: u64,
    /// When it was claimed, in Unix milliseconds.
    pub(crate) at: u64,
    /// The source's item type.
    pub(crate) source: String,
    pub(crate) stages: Vec<StageInfo>,
    pub(crate) ordered: bool,
    pub(crate) driver: String,
}

/// `source`: the source has ended, after this many messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SourceRecord {
    pub(crate) run: u64,
    pub(crate) at: u64,
    pub(crate) messages: u64,
}

/// `end`: how the run ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EndRecord {
    pub(crate) run: u64,
    pub(crate) at: u64,
    pub(crate) outcome: Outcome,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// Every result reached the driver.
    Done,
    /// The driver stopped reading the results.
    Cancelled,
    /// A task failed.
    Failed(Failed),
}

/// A task's failure, as the other processes report it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Failed {
    pub(crate) stage: String,
    pub(crate) worker: Option<usize>,
    pub(crate) process: String,
    pub(crate) panic: bool,
    pub(crate) message: String,
    /// The whole error, as the failing process displayed it.
    pub(crate) display: String,
}

/// `stats.<process>`: a process's counts, published twice a second.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StatsRecord {
    pub(crate) run: u64,
    pub(crate) at: u64,
    pub(crate) process: String,
    pub(crate) stages: Vec<StageCounts>,
    /// The process's part has ended: these counts are final.
    pub(crate) last: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StageCounts {
    pub(crate) name: String,
    /// Whether the process runs workers of the stage.
    pub(crate) runs: bool,
    pub(crate) taken: u64,
    pub(crate) emitted: u64,
}

impl Record for RunRecord {
    fn run(&self) -> u64 {
        self.run
    }
}

impl Record for SourceRecord {
    fn run(&self) -> u64 {
        self.run
    }
}

impl Record for EndRecord {
    fn run(&self) -> u64 {
        self.run
    }
}

impl Record for StatsRecord {
    fn run(&self) -> u64 {
        self.run
    }
}
