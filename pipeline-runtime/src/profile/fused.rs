//! Profiling a serial segment: each stage fused into the segment's one
//! iterator chain is timed apart, its own share of each step of the chain.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use crate::profile::Probe;
use crate::time::nanos;

/// The probes of the stages fused in one worker's copy of a serial segment,
/// handed out in chain order as the chain is built.
#[doc(hidden)]
pub struct Clocks {
    probes: RefCell<VecDeque<Probe>>,
    /// The counters of the stage built last, which the next one reads: its
    /// upstream's time and items.
    last: RefCell<Spent>,
}

impl std::fmt::Debug for Clocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clocks").finish_non_exhaustive()
    }
}

/// How long a stage of a fused chain has spent in its `next` in all (its
/// upstream's time included), and how many items it has yielded.
#[derive(Clone, Default)]
struct Spent {
    spent_ns: Rc<Cell<u64>>,
    yielded: Rc<Cell<u64>>,
}

impl Clocks {
    pub(crate) fn new(probes: Vec<Probe>) -> Rc<Self> {
        Rc::new(Clocks {
            probes: RefCell::new(probes.into()),
            last: RefCell::new(Spent::default()),
        })
    }

    /// The input of the chain, timed, so that the first stage's time
    /// excludes waiting for input.
    pub(crate) fn input<I: Iterator>(&self, input: I) -> Timed<I> {
        let own = Spent::default();
        let upstream = self.last.replace(own.clone());
        Timed {
            inner: input,
            probe: None,
            own,
            upstream,
        }
    }

    /// The next stage of the chain, timed by the next probe.
    pub(crate) fn stage<I: Iterator>(&self, inner: I) -> Timed<I> {
        let mut timed = self.input(inner);
        timed.probe = self.probes.borrow_mut().pop_front();
        timed
    }
}

/// A stage of a profiled fused chain: times its own share of each `next`.
pub(crate) struct Timed<I> {
    inner: I,
    probe: Option<Probe>,
    own: Spent,
    upstream: Spent,
}

impl<I: Iterator> Iterator for Timed<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let upstream_before = self.upstream.spent_ns.get();
        let start = Instant::now();
        let item = self.inner.next();
        let now = Instant::now();
        let spent = nanos(now.saturating_duration_since(start));
        self.own.spent_ns.set(self.own.spent_ns.get() + spent);
        if item.is_some() {
            self.own.yielded.set(self.own.yielded.get() + 1);
        }
        if let Some(probe) = &mut self.probe {
            let upstream = self.upstream.spent_ns.get() - upstream_before;
            probe.step(
                spent.saturating_sub(upstream),
                item.is_some(),
                self.upstream.yielded.get(),
                now,
            );
        }
        item
    }
}
