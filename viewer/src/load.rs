//! A stage's load per worker: the items each worker took, the busiest
//! one's share of them, and whether that share is far from an even one (a
//! keyed stage's hot key, or a worker that fell behind).

use parapipe::profile::StageProfile;

/// The busiest worker is flagged when its share is more than this many
/// times an even share (75% of two workers' items, 38% of four): below
/// that, small runs' noise would be flagged too.
const IMBALANCE: f64 = 1.5;

/// The per-worker counts of a stage that has some to compare.
pub(crate) struct Load<'a> {
    /// Items taken, by worker index.
    pub(crate) counts: &'a [u64],
    /// The index of the worker that took the most (the first such).
    pub(crate) busiest: usize,
    /// Its share of the stage's items, from 0 to 1.
    pub(crate) share: f64,
}

impl Load<'_> {
    /// The stage's load, if it counted two workers or more and they took
    /// something; a stage of one worker has nothing to compare.
    pub(crate) fn of(stage: &StageProfile) -> Option<Load<'_>> {
        Load::of_counts(&stage.items_in_by_worker)
    }

    fn of_counts(counts: &[u64]) -> Option<Load<'_>> {
        let total: u64 = counts.iter().sum();
        if counts.len() < 2 || total == 0 {
            return None;
        }
        let most = counts.iter().copied().max().unwrap_or(0);
        let busiest = counts.iter().position(|n| *n == most).unwrap_or(0);
        Some(Load {
            counts,
            busiest,
            share: most as f64 / total as f64,
        })
    }

    /// What each worker would take if the items were spread evenly.
    pub(crate) fn even_share(&self) -> f64 {
        1.0 / self.counts.len() as f64
    }

    pub(crate) fn imbalanced(&self) -> bool {
        self.share > IMBALANCE * self.even_share()
    }

    /// `worker 2 took 61% of 4 workers' items`, and the flag if it is
    /// imbalanced: `: imbalanced (an even share is 25%)`.
    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "worker {} took {} of {} workers' items",
            self.busiest,
            percent(self.share),
            self.counts.len()
        );
        if self.imbalanced() {
            s.push_str(&format!(
                ": imbalanced (an even share is {})",
                percent(self.even_share())
            ));
        }
        s
    }

    /// The counts, space-separated, in worker order.
    pub(crate) fn counts(&self) -> String {
        let counts: Vec<String> = self.counts.iter().map(u64::to_string).collect();
        counts.join(" ")
    }
}

/// A share as a whole percentage: `61%`.
pub(crate) fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_worker_is_flagged_only_far_from_even() {
        let hot = Load::of_counts(&[100, 610, 190, 100]).unwrap();
        assert_eq!(hot.busiest, 1);
        assert_eq!(
            hot.summary(),
            "worker 1 took 61% of 4 workers' items: imbalanced (an even share is 25%)"
        );
        assert_eq!(hot.counts(), "100 610 190 100");
        let even = Load::of_counts(&[21, 19]).unwrap();
        assert_eq!(even.summary(), "worker 0 took 52% of 2 workers' items");
        // Nothing to compare: one worker, or nothing taken.
        assert!(Load::of_counts(&[5]).is_none());
        assert!(Load::of_counts(&[0, 0]).is_none());
        assert!(Load::of_counts(&[]).is_none());
    }
}
