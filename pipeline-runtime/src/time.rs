//! Time arithmetic shared by every layer: durations as nanosecond counts,
//! and deadlines that saturate instead of overflowing.

use std::time::{Duration, Instant};

/// `d` in nanoseconds, `u64::MAX` past what that holds (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `now + timeout`, or `None` ("no limit") when that is past what an
/// `Instant` can hold: `Duration::MAX` means "wait forever", not a panic.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
