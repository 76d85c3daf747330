//! The queues between a fork's thread and its branches' sources.
//!
//! All branches of a fork share one lock, so the fork can wait until the
//! branches it must wait for have room. Which are those is the rule that
//! keeps a tee from hanging: the fork waits only for a branch somebody
//! reads (its consumer has asked for results). A branch nobody reads yet
//! (its pipeline not started, or its results not asked for, say because
//! the one thread reading the graph reads another branch to its end
//! first) holds what arrives, up to `bound` items. There the fork waits a
//! grace time for it to be read (a branch read from a thread that is
//! still starting), and then fails the graph with an error naming the
//! branch, rather than hang. One more wait cannot end: for a full branch
//! whose consumer's thread is the one waiting for a sibling branch that has
//! nothing (a thread that read a little of one branch, then reads another
//! to its end); after the grace time it fails the graph the same way.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::control::{Control, POLL, lock};
use crate::error::PipelineError;

/// How long the fork waits for a branch nobody reads that holds its bound
/// to be read before it fails the graph: long next to a thread's start,
/// short next to a person waiting for a program that cannot go on.
pub(crate) const UNREAD_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Outlets<T> {
    state: Mutex<State<T>>,
    /// One per branch: items, or the end, arrived.
    arrived: Vec<Condvar>,
    /// A branch took its items, or went away.
    room: Condvar,
    /// How many items a branch somebody reads may hold before the fork
    /// waits for it to take them.
    room_at: usize,
    /// How many items a branch nobody reads may hold.
    bound: usize,
}

struct State<T> {
    branches: Vec<Branch<T>>,
    /// The fork delivered its last item.
    closed: bool,
    /// If the fork's upstream failed, its failure, for branches that start
    /// after the fork ended.
    failure: Option<PipelineError>,
}

struct Branch<T> {
    items: VecDeque<T>,
    /// Its pipeline ended or was dropped: nothing more goes to it.
    gone: bool,
    /// Its run, once started.
    run: Option<Weak<Control>>,
}

impl<T> Branch<T> {
    fn is_read(&self) -> bool {
        let run = self.run.as_ref().and_then(Weak::upgrade);
        run.is_some_and(|run| run.is_reading())
    }

    /// Whether the fork waits for it: somebody reads it, and it holds
    /// `room_at` items.
    fn is_full(&self, room_at: usize) -> bool {
        !self.gone && self.items.len() >= room_at && self.is_read()
    }

    /// Its consumer's thread and whether it waits for results now.
    fn consumer(&self) -> Option<(u64, bool)> {
        let run = self.run.as_ref().and_then(Weak::upgrade)?;
        Some(run.consumer())
    }
}

/// A full branch somebody reads, whose consumer's thread is the thread
/// waiting for another branch that has nothing: `(full, starved)`. Neither
/// can go on while that lasts: the thread would have to read the full
/// branch to end its wait for the other.
fn same_thread<T>(branches: &[Branch<T>], room_at: usize) -> Option<(usize, usize)> {
    branches
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_full(room_at))
        .find_map(|(f, full)| {
            let (thread, waiting) = full.consumer()?;
            if waiting || thread == 0 {
                return None;
            }
            let starved = branches.iter().enumerate().position(|(s, b)| {
                s != f && !b.gone && b.items.is_empty() && b.consumer() == Some((thread, true))
            })?;
            Some((f, starved))
        })
}

/// Why the fork cannot deliver.
pub(crate) enum Refused {
    /// Every branch is gone.
    Gone,
    /// The fork's run was cancelled while it waited.
    Cancelled,
    /// For the grace time, a branch nobody reads held its bound
    /// (`starved` is `None`), or a full branch's consumer was the thread
    /// that waited for the branch `starved`, which had nothing.
    Unread {
        branch: usize,
        items: usize,
        starved: Option<usize>,
    },
}

/// What a branch's source takes.
pub(crate) enum Taken<T> {
    Items(VecDeque<T>),
    Empty,
    /// The fork has ended; with its upstream's failure, if it failed.
    Closed(Option<PipelineError>),
}

impl<T> Outlets<T> {
    pub(crate) fn new(branches: usize, room_at: usize, bound: usize) -> Self {
        let branch = || Branch {
            items: VecDeque::new(),
            gone: false,
            run: None,
        };
        Outlets {
            state: Mutex::new(State {
                branches: (0..branches).map(|_| branch()).collect(),
                closed: false,
                failure: None,
            }),
            arrived: (0..branches).map(|_| Condvar::new()).collect(),
            room: Condvar::new(),
            room_at: room_at.clamp(1, bound.max(1)),
            bound,
        }
    }

    pub(crate) fn branches(&self) -> usize {
        self.arrived.len()
    }

    /// The runs of the branches that started and are still alive.
    pub(crate) fn runs(&self) -> Vec<Arc<Control>> {
        let state = lock(&self.state);
        let runs = state.branches.iter().filter_map(|b| b.run.as_ref());
        runs.filter_map(Weak::upgrade).collect()
    }

    /// Branch `branch` started, as the run `run`.
    pub(crate) fn started(&self, branch: usize, run: &Arc<Control>) {
        lock(&self.state).branches[branch].run = Some(Arc::downgrade(run));
    }

    /// Appends each branch's share (`shares[i]` for branch `i`), after
    /// waiting while a branch somebody reads is full. A gone branch's share
    /// is dropped, after the lock is released (an item's `Drop` is the
    /// user's code).
    pub(crate) fn deliver(&self, shares: Vec<Vec<T>>, ctl: &Control) -> Result<(), Refused> {
        let mut dropped = Vec::new();
        let result = self.deliver_keeping(shares, ctl, &mut dropped);
        drop(dropped);
        result
    }

    fn deliver_keeping(
        &self,
        shares: Vec<Vec<T>>,
        ctl: &Control,
        dropped: &mut Vec<Vec<T>>,
    ) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        // Since when the fork has waited for a branch it cannot get past,
        // and whether that is because of a sibling waiting on the same thread.
        let mut stuck_since: Option<(bool, Instant)> = None;
        loop {
            if state.branches.iter().all(|b| b.gone) {
                return Err(Refused::Gone);
            }
            if ctl.is_cancelled() {
                return Err(Refused::Cancelled);
            }
            let over = |b: &Branch<T>| !b.gone && b.items.len() >= self.bound && !b.is_read();
            let stuck = match state.branches.iter().position(over) {
                Some(branch) => Some((branch, None)),
                None if !state.branches.iter().any(|b| b.is_full(self.room_at)) => break,
                // Waiting for a full branch: a wait that cannot end if the
                // thread reading it is waiting for a sibling.
                None => same_thread(&state.branches, self.room_at).map(|(b, s)| (b, Some(s))),
            };
            match stuck {
                Some((branch, starved)) => {
                    let since = match stuck_since {
                        Some((same, since)) if same == starved.is_some() => since,
                        _ => Instant::now(),
                    };
                    stuck_since = Some((starved.is_some(), since));
                    if since.elapsed() >= UNREAD_GRACE {
                        let items = state.branches[branch].items.len();
                        return Err(Refused::Unread {
                            branch,
                            items,
                            starved,
                        });
                    }
                }
                None => stuck_since = None,
            }
            // Polled as well as notified: a branch's consumer starting to
            // read changes whom to wait for, and tells nobody.
            state = (self.room.wait_timeout(state, POLL))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        for (index, share) in shares.into_iter().enumerate() {
            let branch = &mut state.branches[index];
            if branch.gone {
                dropped.push(share);
            } else if !share.is_empty() {
                branch.items.extend(share);
                self.arrived[index].notify_one();
            }
        }
        Ok(())
    }

    /// The fork has ended, with its upstream's failure if it failed.
    pub(crate) fn close(&self, failure: Option<PipelineError>) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.failure = failure;
        for arrived in &self.arrived {
            arrived.notify_all();
        }
    }

    /// Branch `branch` takes everything it holds, waiting up to `wait` for
    /// something to arrive if it holds nothing.
    pub(crate) fn take(&self, branch: usize, wait: Option<Duration>) -> Taken<T> {
        let mut state = lock(&self.state);
        let mut waited = false;
        loop {
            if !state.branches[branch].items.is_empty() {
                let items = std::mem::take(&mut state.branches[branch].items);
                self.room.notify_one();
                return Taken::Items(items);
            }
            if state.closed {
                return Taken::Closed(state.failure.as_ref().map(PipelineError::elsewhere));
            }
            match wait {
                Some(wait) if !waited => {
                    waited = true;
                    state = (self.arrived[branch].wait_timeout(state, wait))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                _ => return Taken::Empty,
            }
        }
    }

    /// Branch `branch` is gone: the fork stops sending to it, and what it
    /// held is returned, for the caller to drop outside the lock.
    pub(crate) fn leave(&self, branch: usize) -> VecDeque<T> {
        let mut state = lock(&self.state);
        let branch = &mut state.branches[branch];
        branch.gone = true;
        let items = std::mem::take(&mut branch.items);
        self.room.notify_all();
        items
    }
}
