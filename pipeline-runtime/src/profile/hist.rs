//! A latency histogram: log-linear buckets over nanoseconds, 16 per power of
//! two, so any percentile read from it is within about 3% of the true value,
//! in a fixed 7.6 KiB whatever the number of samples.

/// Buckets below this are one nanosecond wide (exact).
const LINEAR: u64 = 16;
/// Bits of mantissa kept above the leading one.
const SUB_BITS: u32 = 4;
pub(crate) const BUCKETS: usize = 976;

#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_ns: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
        }
    }
}

pub(crate) fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= 4
    let mantissa = (ns >> (exp - SUB_BITS)) & (LINEAR - 1);
    ((exp - SUB_BITS + 1) as usize) * LINEAR as usize + mantissa as usize
}

/// The middle of bucket `i`, in nanoseconds: what a percentile falling in it
/// reports.
pub(crate) fn bucket_value(i: usize) -> f64 {
    let i = i as u64;
    if i < LINEAR {
        return i as f64;
    }
    let exp = (i / LINEAR) as u32 + SUB_BITS - 1;
    let low = (LINEAR + i % LINEAR) << (exp - SUB_BITS);
    let width = 1u64 << (exp - SUB_BITS);
    low as f64 + width as f64 / 2.0
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    /// Records `n` samples of the same value at once.
    pub(crate) fn record_n(&mut self, ns: u64, n: u64) {
        self.counts[bucket_of(ns)] += n;
        self.count += n;
        self.sum_ns += u128::from(ns) * u128::from(n);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    pub(crate) fn sum_ns(&self) -> u128 {
        self.sum_ns
    }

    /// The non-empty buckets, as `(bucket, count)`: what the store keeps.
    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    pub(crate) fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
    }

    /// Rebuilds a histogram from stored buckets and the exact sum.
    #[cfg_attr(
        not(feature = "store"),
        allow(dead_code, reason = "only the store reads or writes it")
    )]
    pub(crate) fn from_parts(
        buckets: impl IntoIterator<Item = (usize, u64)>,
        sum_ns: u128,
    ) -> Self {
        let mut h = Histogram::default();
        for (i, c) in buckets {
            if i < BUCKETS {
                h.counts[i] += c;
                h.count += c;
            }
        }
        h.sum_ns = sum_ns;
        h
    }

    /// The value below which a fraction `q` of the samples fall, in
    /// nanoseconds (the middle of the bucket it falls in); `None` if empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        // The rank of the sample sought, 1-based: the smallest r with
        // r >= q * count (nearest-rank definition).
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_value(i));
            }
        }
        None
    }

    pub(crate) fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last && b < BUCKETS, "{ns}");
            last = b;
            let mid = bucket_value(b);
            let err = (mid - ns as f64).abs() / (ns.max(1) as f64);
            assert!(err <= 1.0 / 32.0 + 1e-9, "{ns}: bucket middle {mid}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ns in 1..=1000u64 {
            h.record(ns * 1000);
        }
        let median = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((median - 500_000.0).abs() / 500_000.0 < 0.04, "{median}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.04, "{p99}");
        assert_eq!(h.mean_ns(), Some(500_500.0));
        let copy = Histogram::from_parts(h.nonzero().collect::<Vec<_>>(), h.sum_ns());
        assert_eq!(copy.quantile(0.99), h.quantile(0.99));
        assert_eq!(copy.count(), 1000);
    }
}
