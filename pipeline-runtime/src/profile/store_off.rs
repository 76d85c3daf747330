//! Without the `store` feature: no SQLite. A run asked to be stored is
//! measured as usual, and its profile says why it was not stored.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{JobSample, Profile, Profiler, Sample, StoreError};

/// Stands in for the writer thread: keeps nothing, and says so at the end.
pub(crate) struct Writer {
    database: PathBuf,
}

impl Writer {
    pub(crate) fn start(profiler: &Profiler, _started: SystemTime) -> Writer {
        Writer {
            database: profiler.database(),
        }
    }

    pub(crate) fn sample(&self, _samples: Vec<Sample>) {}

    pub(crate) fn job(&self, _samples: Vec<JobSample>) {}

    pub(crate) fn finish(self, _profile: &Profile) -> Result<i64, StoreError> {
        Err(StoreError::new(
            &self.database,
            "storing profiles needs parapipe's `store` feature (on by default); without it, profile in memory with `Profiler::new().in_memory()`",
            None,
        ))
    }
}
