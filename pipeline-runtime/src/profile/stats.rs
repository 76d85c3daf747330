//! What a profiled or debugged pipeline measures while it runs: counters per
//! stage, shared by its workers, and the probe each worker fills locally and
//! publishes once per batch, so that workers never contend per item.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::control::lock;
use crate::error::Counters;
use crate::link::Gauge;
use crate::profile::JobSample;
use crate::profile::hist::Histogram;
use crate::time::nanos;

/// What kind of stage a row measures; decides how its latency is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StageKind {
    /// One output per input: latency is the time of one call.
    Map,
    /// An iterator stage (or a segment run as one): latency is busy time
    /// per item emitted.
    Iter,
    /// A producer: busy time per item emitted.
    Producer,
    /// An async stage: latency from an item's future starting to its
    /// output; busy while any future is in flight.
    Async,
}

impl StageKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StageKind::Map => "map",
            StageKind::Iter => "iter",
            StageKind::Producer => "producer",
            StageKind::Async => "async",
        }
    }
}

/// Counters of one stage, shared by its workers.
pub(crate) struct StageStats {
    /// Hierarchical profile name: `MainPipeline__child__stage`.
    pub(crate) key: String,
    /// When the run started: the origin of `first_ns` and `last_ns`.
    epoch: Instant,
    /// A [`StageKind`], set by the loop the workers run.
    kind: AtomicU8,
    pub(crate) workers: usize,
    pub(crate) taken: AtomicU64,
    /// What `taken` counts, by worker index: where one worker takes far
    /// more than the others (a keyed stage's hot key), it shows here.
    pub(crate) taken_by_worker: Vec<AtomicU64>,
    /// Whether its input is partitioned by a key, each worker reading its
    /// own keys' items: the live reports show `taken_by_worker` only then,
    /// where an uneven spread means a hot key rather than scheduling.
    pub(crate) keyed: bool,
    pub(crate) emitted: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    /// When the stage first took an item, in ns since the run started
    /// (`u64::MAX` until then).
    pub(crate) first_ns: AtomicU64,
    /// When it last emitted one.
    pub(crate) last_ns: AtomicU64,
    pub(crate) hist: Mutex<Histogram>,
    pub(crate) cpu: Mutex<Cpu>,
    /// The stage's output queue.
    pub(crate) queue: Arc<Gauge>,
    pub(crate) counters: Arc<Counters>,
    /// An async stage's futures in flight now, and the most at once.
    #[cfg_attr(
        not(feature = "async"),
        allow(dead_code, reason = "only async stages have futures")
    )]
    pub(crate) in_flight: AtomicU64,
    pub(crate) in_flight_max: AtomicU64,
}

/// CPU time of a stage's threads, in clock ticks.
#[derive(Default)]
pub(crate) struct Cpu {
    /// Of the threads that have ended.
    pub(crate) done: CpuTicks,
    /// Thread ids of the running ones, read live from `/proc`.
    pub(crate) live: Vec<u32>,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
}

impl CpuTicks {
    /// User and system time.
    pub(crate) fn durations(self) -> (Duration, Duration) {
        let time = |ticks: u64| Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC);
        (time(self.user), time(self.system))
    }

    fn add(&mut self, other: CpuTicks) {
        self.user += other.user;
        self.system += other.system;
    }
}

impl StageStats {
    pub(crate) fn new(
        key: String,
        epoch: Instant,
        workers: usize,
        queue: Arc<Gauge>,
        counters: Arc<Counters>,
    ) -> Self {
        StageStats {
            key,
            epoch,
            kind: AtomicU8::new(StageKind::Iter as u8),
            workers,
            taken: AtomicU64::new(0),
            taken_by_worker: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            keyed: false,
            emitted: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            hist: Mutex::new(Histogram::default()),
            cpu: Mutex::new(Cpu::default()),
            queue,
            counters,
            in_flight: AtomicU64::new(0),
            in_flight_max: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_kind(&self, kind: StageKind) {
        self.kind.store(kind as u8, Relaxed);
    }

    pub(crate) fn kind(&self) -> StageKind {
        match self.kind.load(Relaxed) {
            k if k == StageKind::Map as u8 => StageKind::Map,
            k if k == StageKind::Producer as u8 => StageKind::Producer,
            k if k == StageKind::Async as u8 => StageKind::Async,
            _ => StageKind::Iter,
        }
    }

    /// User and system CPU time of the stage's threads so far.
    pub(crate) fn cpu_ticks(&self) -> CpuTicks {
        let cpu = lock(&self.cpu);
        let mut total = cpu.done;
        for tid in &cpu.live {
            // A thread that ended since is counted in `done` once it
            // unregisters; until then its file may already be gone.
            if let Some(t) = read_ticks(&format!("/proc/self/task/{tid}/stat")) {
                total.add(t);
            }
        }
        total
    }
}

/// Clock ticks per second of `/proc` CPU times: `USER_HZ`, 100 on every
/// Linux architecture we know of (reading `sysconf` would need `unsafe`).
const TICKS_PER_SEC: f64 = 100.0;

/// User and system time from a `/proc/.../stat` file (fields 14 and 15).
fn read_ticks(path: &str) -> Option<CpuTicks> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Resident memory of the process in bytes, if the platform tells.
pub(crate) fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Everything measured for one run.
pub(crate) struct RunStats {
    pub(crate) epoch: Instant,
    pub(crate) started: SystemTime,
    pub(crate) stages: Mutex<Vec<Arc<StageStats>>>,
    pub(crate) rss_at_start: Option<u64>,
    /// Items the consumer received.
    pub(crate) received: AtomicU64,
    pub(crate) first_received_ns: AtomicU64,
    pub(crate) last_received_ns: AtomicU64,
    /// Source-to-consumer latency of received items.
    pub(crate) end_to_end: Mutex<Histogram>,
    /// A distributed job's status samples not yet stored, and the newest.
    job: Mutex<(Vec<JobSample>, Option<JobSample>)>,
    /// Whether the run is stored, so that its job samples are taken away
    /// (otherwise only the newest is kept: a long debugged run must not
    /// pile them up).
    stores_job_samples: std::sync::atomic::AtomicBool,
}

impl RunStats {
    pub(crate) fn new() -> Self {
        RunStats {
            epoch: Instant::now(),
            started: SystemTime::now(),
            stages: Mutex::new(Vec::new()),
            rss_at_start: rss_bytes(),
            received: AtomicU64::new(0),
            first_received_ns: AtomicU64::new(u64::MAX),
            last_received_ns: AtomicU64::new(0),
            end_to_end: Mutex::new(Histogram::default()),
            job: Mutex::default(),
            stores_job_samples: Default::default(),
        }
    }

    /// The run is stored: keep every job sample until the store takes it.
    pub(crate) fn store_job_samples(&self) {
        self.stores_job_samples.store(true, Relaxed);
    }

    /// A distributed job's status, as this process read it now.
    #[cfg(feature = "nats")]
    pub(crate) fn job_status(&self, mut sample: JobSample) {
        sample.t = self.epoch.elapsed().as_secs_f64();
        let mut job = lock(&self.job);
        if self.stores_job_samples.load(Relaxed) {
            job.0.push(sample.clone());
        }
        job.1 = Some(sample);
    }

    /// The job status samples since the last call, for the store.
    pub(crate) fn take_job_samples(&self) -> Vec<JobSample> {
        std::mem::take(&mut lock(&self.job).0)
    }

    /// The newest job status sample.
    pub(crate) fn last_job(&self) -> Option<JobSample> {
        lock(&self.job).1.clone()
    }

    pub(crate) fn since_epoch(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.epoch))
    }

    pub(crate) fn add_stage(&self, stage: Arc<StageStats>) {
        lock(&self.stages).push(stage);
    }

    pub(crate) fn stages(&self) -> Vec<Arc<StageStats>> {
        lock(&self.stages).clone()
    }

    /// The consumer got a batch of `n` items whose oldest left the source
    /// at `born`.
    pub(crate) fn received(&self, n: usize, born: Option<Instant>) {
        let now = Instant::now();
        let at = self.since_epoch(now);
        self.received.fetch_add(n as u64, Relaxed);
        self.first_received_ns.fetch_min(at, Relaxed);
        self.last_received_ns.fetch_max(at, Relaxed);
        if let Some(born) = born {
            lock(&self.end_to_end).record_n(nanos(now.saturating_duration_since(born)), n as u64);
        }
    }
}

/// One worker's measurements, kept locally and published per batch.
pub(crate) struct Probe {
    stats: Arc<StageStats>,
    /// The worker it measures, for the per-worker counts; `None` where
    /// there is no such index (the source, a distributed run's workers).
    worker: Option<usize>,
    taken: u64,
    emitted: u64,
    busy_ns: u64,
    hist: Histogram,
    /// Iterator stages and producers: the last emission (or the start).
    since: Instant,
    /// Time spent waiting since `since`, not counted as busy.
    waited_ns: u64,
    /// The output queue's blocked time at the last emission.
    blocked_seen: u64,
    /// For a stage fused in a serial segment: its input count so far,
    /// as last published.
    taken_seen: u64,
    tid: Option<u32>,
    /// Whether this probe owns its thread's CPU time (a stage fused in a
    /// serial segment shares the segment's thread, which counts it).
    owns_cpu: bool,
    /// Whether an emitted item's busy time is its latency: not for an
    /// async stage, whose futures are timed one by one (see [`Flights`]).
    per_emit: bool,
}

impl Probe {
    pub(crate) fn new(stats: Arc<StageStats>) -> Self {
        let tid = current_tid();
        if let Some(tid) = tid {
            lock(&stats.cpu).live.push(tid);
        }
        Probe::with(stats, tid, true)
    }

    /// [`new`](Probe::new), for worker `index` of its stage.
    pub(crate) fn of_worker(stats: Arc<StageStats>, index: usize) -> Self {
        let mut probe = Probe::new(stats);
        probe.worker = Some(index);
        probe
    }

    /// A probe for a stage fused in a serial segment, on the segment's
    /// worker thread.
    pub(crate) fn fused(stats: Arc<StageStats>) -> Self {
        Probe::with(stats, None, false)
    }

    fn with(stats: Arc<StageStats>, tid: Option<u32>, owns_cpu: bool) -> Self {
        Probe {
            stats,
            worker: None,
            taken: 0,
            emitted: 0,
            busy_ns: 0,
            hist: Histogram::default(),
            since: Instant::now(),
            waited_ns: 0,
            blocked_seen: 0,
            taken_seen: 0,
            tid,
            owns_cpu,
            per_emit: true,
        }
    }

    /// A fused stage's `next` took `busy_ns` of its own time (its upstream's
    /// excluded) and emitted an item if `emitted`; its upstream has yielded
    /// `taken_total` items so far.
    #[inline]
    pub(crate) fn step(&mut self, busy_ns: u64, emitted: bool, taken_total: u64, now: Instant) {
        if self.taken_seen == 0 && taken_total > 0 {
            self.stats.first_ns.fetch_min(self.at(now), Relaxed);
        }
        self.taken += taken_total - self.taken_seen;
        self.taken_seen = taken_total;
        self.busy_ns += busy_ns;
        if emitted {
            self.hist.record(busy_ns);
            self.emitted += 1;
            self.since = now;
            if self.emitted >= 1024 {
                self.publish();
            }
        }
    }

    /// A producer starts: it is active from now, with no input to take.
    pub(crate) fn started(&self) {
        self.stats.set_kind(StageKind::Producer);
        self.stats.first_ns.fetch_min(self.at(self.since), Relaxed);
    }

    /// The stage runs a map loop: its latency is per call.
    pub(crate) fn is_map(&self) {
        self.stats.set_kind(StageKind::Map);
    }

    /// The stage is async: its latency and busy time come from its
    /// futures, through the returned [`Flights`].
    #[cfg(feature = "async")]
    pub(crate) fn is_async(&mut self) -> Flights {
        self.stats.set_kind(StageKind::Async);
        self.per_emit = false;
        Flights {
            stats: self.stats.clone(),
            hist: Histogram::default(),
            busy_since: None,
            busy_ns: 0,
        }
    }

    fn at(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.stats.epoch))
    }

    /// A batch of `n` items arrived at `now` after a wait of `waited`.
    pub(crate) fn took(&mut self, n: usize, now: Instant, waited: Duration) {
        self.taken += n as u64;
        self.waited_ns += nanos(waited);
        let at = self.at(now);
        self.stats.first_ns.fetch_min(at, Relaxed);
        self.publish();
    }

    /// A map stage's call took `t0..t1` and emitted an item if `emitted`.
    #[inline]
    pub(crate) fn call(&mut self, t0: Instant, t1: Instant, emitted: bool) {
        let ns = nanos(t1.saturating_duration_since(t0));
        self.hist.record(ns);
        self.busy_ns += ns;
        self.emitted += u64::from(emitted);
        self.since = t1;
    }

    /// An iterator stage or producer emitted an item now; `blocked_total`
    /// is how long its output queue has made it wait, in all.
    #[inline]
    pub(crate) fn emitted(&mut self, blocked_total: u64) {
        let now = Instant::now();
        let blocked =
            blocked_total.saturating_sub(std::mem::replace(&mut self.blocked_seen, blocked_total));
        if self.per_emit {
            let ns = nanos(now.saturating_duration_since(self.since))
                .saturating_sub(self.waited_ns + blocked);
            self.hist.record(ns);
            self.busy_ns += ns;
        }
        self.emitted += 1;
        self.since = now;
        self.waited_ns = 0;
        // Producers take no batches: publish every so often for live reports.
        if self.emitted >= 1024 {
            self.publish();
        }
    }

    /// Publishes the counts so far, for live reports.
    pub(crate) fn publish(&mut self) {
        let s = &self.stats;
        let taken = std::mem::take(&mut self.taken);
        s.taken.fetch_add(taken, Relaxed);
        if let Some(slot) = self.worker.and_then(|w| s.taken_by_worker.get(w)) {
            slot.fetch_add(taken, Relaxed);
        }
        if self.emitted > 0 {
            s.emitted
                .fetch_add(std::mem::take(&mut self.emitted), Relaxed);
            s.last_ns.fetch_max(self.at(self.since), Relaxed);
        }
        s.busy_ns
            .fetch_add(std::mem::take(&mut self.busy_ns), Relaxed);
    }
}

/// What an async stage measures of its futures: each one's latency, from
/// its start to its end; the time any is in flight (its busy time); how
/// many are in flight now and at most.
#[cfg(feature = "async")]
pub(crate) struct Flights {
    stats: Arc<StageStats>,
    hist: Histogram,
    busy_since: Option<Instant>,
    busy_ns: u64,
}

#[cfg(feature = "async")]
impl Flights {
    /// A future starts now; `flying` were in flight before it.
    pub(crate) fn started(&mut self, now: Instant, flying: usize) {
        if flying == 0 {
            self.busy_since = Some(now);
        }
        let n = self.stats.in_flight.fetch_add(1, Relaxed) + 1;
        self.stats.in_flight_max.fetch_max(n, Relaxed);
    }

    /// A future that started at `started` ended now (its output made, or
    /// failed); `flying` are still in flight.
    pub(crate) fn ended(&mut self, started: Instant, now: Instant, flying: usize) {
        self.hist
            .record(nanos(now.saturating_duration_since(started)));
        self.stats.in_flight.fetch_sub(1, Relaxed);
        if flying == 0
            && let Some(since) = self.busy_since.take()
        {
            self.busy_ns += nanos(now.saturating_duration_since(since));
            self.stats
                .busy_ns
                .fetch_add(std::mem::take(&mut self.busy_ns), Relaxed);
        }
    }

    /// A future was cancelled (aborted or dropped): no latency to record.
    pub(crate) fn cancelled(&mut self, flying: usize) {
        self.stats.in_flight.fetch_sub(1, Relaxed);
        if flying == 0
            && let Some(since) = self.busy_since.take()
        {
            self.busy_ns += nanos(Instant::now().saturating_duration_since(since));
        }
    }
}

#[cfg(feature = "async")]
impl Drop for Flights {
    fn drop(&mut self) {
        if let Some(since) = self.busy_since.take() {
            self.busy_ns += nanos(Instant::now().saturating_duration_since(since));
        }
        self.stats.busy_ns.fetch_add(self.busy_ns, Relaxed);
        lock(&self.stats.hist).merge(&self.hist);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.publish();
        lock(&self.stats.hist).merge(&self.hist);
        if !self.owns_cpu {
            return;
        }
        let ticks = read_ticks("/proc/thread-self/stat");
        let mut cpu = lock(&self.stats.cpu);
        if let Some(tid) = self.tid {
            cpu.live.retain(|t| *t != tid);
        }
        if let Some(ticks) = ticks {
            cpu.done.add(ticks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "nats")]
    #[test]
    fn job_samples_pile_up_only_for_the_store() {
        let sample = |state: &str| JobSample {
            t: 0.0,
            job: "j".into(),
            state: state.into(),
            stages: Vec::new(),
        };
        let run = RunStats::new();
        run.job_status(sample("running"));
        run.job_status(sample("done"));
        assert!(run.take_job_samples().is_empty());
        assert_eq!(run.last_job().unwrap().state, "done");
        run.store_job_samples();
        run.job_status(sample("running"));
        run.job_status(sample("done"));
        let taken: Vec<String> = run
            .take_job_samples()
            .into_iter()
            .map(|s| s.state)
            .collect();
        assert_eq!(taken, ["running", "done"]);
        assert!(run.take_job_samples().is_empty());
    }

    #[test]
    fn reads_own_cpu_time() {
        // Busy until the thread's own CPU time shows at least 2 ticks: on a
        // loaded machine that takes longer than 20 ms of wall time, so the
        // bound is generous; it only fails if the count never grows.
        let start = Instant::now();
        let mut x = 0u64;
        let mut ticks = read_ticks("/proc/thread-self/stat").expect("Linux /proc");
        while ticks.user + ticks.system < 2 && start.elapsed() < Duration::from_secs(30) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            ticks = read_ticks("/proc/thread-self/stat").expect("Linux /proc");
        }
        assert!(ticks.user + ticks.system >= 2, "{ticks:?} after 30 s busy");
        assert!(current_tid().is_some());
        assert!(rss_bytes().unwrap() > 0);
    }
}
