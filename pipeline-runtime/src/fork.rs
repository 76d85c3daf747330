//! Fan-out: one pipeline's items dealt to several branch pipelines
//! ([`Pipeline::tee`], [`split`](Pipeline::split),
//! [`split_result`](Pipeline::split_result), [`route`](Pipeline::route)).
//!
//! Each branch is an ordinary pipeline whose source reads the branch's
//! outlet (`outlet.rs`). Ownership: every branch holds the fork, in its
//! plan until it starts and in its source while it runs. The first branch
//! to start starts the upstream pipeline and the fork's thread, which reads
//! the upstream's results a batch at a time, routes each item into the
//! branches' shares and delivers them. A branch that ends or is dropped
//! leaves (its share is dropped from then on; the other branches go on).
//! When the last branch lets go of the fork, the fork cancels the upstream
//! if it still runs and joins its thread, which joins the upstream's: no
//! thread outlives the last branch.
//!
//! One fate: the upstream's run and each branch's run are joined in one
//! graph when the branch starts (`Control::join_graph`), so the first
//! failure anywhere fails every run of the graph, and each consumer sees it
//! naming the task that failed. A branch that starts after the fork ended
//! finds the upstream's failure in its outlet.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::control::{Control, POLL, lock};
use crate::error::{Failure, PipelineError, into_panic_message};
use crate::outlet::{Outlets, Refused, Taken};
use crate::pipeline::Pipeline;
use crate::results::Results;
use crate::source::{Polled, Queue, Source};

/// How many items a branch nobody reads holds, by default, before the
/// graph fails: see [`Pipeline::branch_buffer`].
pub const DEFAULT_BRANCH_BUFFER: usize = 65_536;

/// How many items a branch somebody reads holds before the fork waits for
/// it: backpressure, as a stage's queue.
const ROOM: usize = crate::config::DEFAULT_QSIZE;

/// Deals one item into the branches' shares (`shares[i]` for branch `i`).
type Router<U> = Box<dyn FnMut(U, &mut [Vec<U>]) -> Result<(), NoSuchBranch> + Send>;

struct Fork<U> {
    /// `tee`, `split`...: the fork's name in errors and thread names.
    kind: &'static str,
    /// The branch path of the pipeline it forks, if that is a branch too.
    path: Option<String>,
    outlets: Arc<Outlets<U>>,
    state: Mutex<State<U>>,
}

enum State<U> {
    /// No branch has started yet.
    Waiting(Box<(Pipeline<U>, Router<U>)>),
    Running {
        upstream: Arc<Control>,
        /// The fork's thread (none if it could not start).
        thread: Option<JoinHandle<()>>,
    },
}

/// Holds a fork's thread back until its branches that start together have
/// started: see [`start_together`].
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn open(&self) {
        *lock(&self.open) = true;
        self.opened.notify_all();
    }

    /// Waits until the gate opens or `ctl` is cancelled.
    fn wait(&self, ctl: &Control) {
        let mut open = lock(&self.open);
        while !*open && !ctl.is_cancelled() {
            open = (self.opened.wait_timeout(open, POLL))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

thread_local! {
    /// The gates of the forks started inside [`start_together`] on this thread.
    static HELD: RefCell<Option<Vec<Arc<Gate>>>> = const { RefCell::new(None) };
}

/// Runs `start`, which starts pipelines (a merge's inputs), holding back
/// every fork it starts until it returns. A merge of branches of one fork
/// starts them all before the fork deals its first item, so no branch is
/// taken for one nobody reads while its siblings start.
pub(crate) fn start_together<R>(start: impl FnOnce() -> R) -> R {
    /// Opens the gates, even if `start` unwinds.
    struct Release(Option<Vec<Arc<Gate>>>);
    impl Drop for Release {
        fn drop(&mut self) {
            let held = HELD.with(|held| held.borrow_mut().take());
            HELD.with(|slot| *slot.borrow_mut() = self.0.take());
            for gate in held.into_iter().flatten() {
                gate.open();
            }
        }
    }
    let outer = HELD.with(|held| held.borrow_mut().replace(Vec::new()));
    let _release = Release(outer);
    start()
}

impl<U: Send + 'static> Fork<U> {
    /// Starts the upstream and the fork's thread if `branch` is the first
    /// branch to start, and joins the branch's `run` to the graph.
    fn start(&self, branch: usize, run: &Arc<Control>) {
        let mut state = lock(&self.state);
        if let State::Waiting(_) = &*state {
            let placeholder = State::Running {
                upstream: Arc::default(),
                thread: None,
            };
            let State::Waiting(waiting) = std::mem::replace(&mut *state, placeholder) else {
                unreachable!("matched just above")
            };
            let (pipeline, router) = *waiting;
            let upstream = pipeline.results();
            let ctl = upstream.control();
            let outlets = self.outlets.clone();
            let kind = self.kind;
            let gate = Arc::new(Gate::default());
            let held = HELD.with(|held| held.borrow_mut().as_mut().map(|h| h.push(gate.clone())));
            if held.is_none() {
                gate.open();
            }
            let spawned = std::thread::Builder::new()
                .name(format!("parapipe-{kind}"))
                .spawn(move || {
                    gate.wait(&upstream.control());
                    deal(upstream, router, &outlets, kind)
                });
            let thread = match spawned {
                Ok(thread) => Some(thread),
                Err(error) => {
                    // The upstream's results were dropped with the closure:
                    // its threads are stopped and joined.
                    ctl.fail(PipelineError::new(kind, None, Failure::Spawn(error)));
                    self.outlets.close(ctl.failure_copy());
                    None
                }
            };
            *state = State::Running {
                upstream: ctl,
                thread,
            };
        }
        self.outlets.started(branch, run);
        if let State::Running { upstream, .. } = &*state {
            Control::join_graph(upstream, run);
        }
    }
}

impl<U> Drop for Fork<U> {
    /// The last branch let go: the upstream is not needed any more.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let State::Running { upstream, thread } = state {
            upstream.cancel();
            if let Some(thread) = thread.take() {
                // Its body catches the user's panics; nothing is left to report.
                let _ = thread.join();
            }
        }
    }
}

/// The fork's thread: the upstream's batches, routed and delivered, until
/// the upstream ends, fails, or every branch is gone.
fn deal<U>(
    mut upstream: Results<U>,
    mut router: Router<U>,
    outlets: &Outlets<U>,
    kind: &'static str,
) {
    let ctl = upstream.control();
    let failure = loop {
        let batch = match upstream.next_batch() {
            Some(Ok(batch)) => batch,
            Some(Err(error)) => break Some(error.elsewhere()),
            None => break None,
        };
        let mut shares: Vec<Vec<U>> = (0..outlets.branches()).map(|_| Vec::new()).collect();
        let routed = catch_unwind(AssertUnwindSafe(|| {
            batch
                .into_iter()
                .try_for_each(|item| router(item, &mut shares))
        }));
        let failure = match routed {
            Ok(Ok(())) => match outlets.deliver(shares, &ctl) {
                Ok(()) => continue,
                // A failure that cancelled the upstream is the graph's
                // already; the upstream's results end with it, next.
                Err(Refused::Cancelled) => continue,
                Err(Refused::Gone) => break None,
                Err(Refused::Unread {
                    branch,
                    items,
                    starved,
                }) => Failed::Unread(Unread {
                    kind,
                    branch,
                    items,
                    starved,
                }),
            },
            Ok(Err(no_such)) => Failed::NoSuchBranch(no_such),
            Err(payload) => Failed::Panic(into_panic_message(payload)),
        };
        // The fork's own failure: each run of the graph gets it with its
        // type, the upstream's and every started branch's.
        let make = || PipelineError::new(kind, None, failure.to_failure());
        let mut runs = outlets.runs();
        runs.push(ctl.clone());
        Control::fail_together(&runs, make);
        break Some(make().elsewhere());
    };
    outlets.close(failure);
    // Stops the upstream if it still runs, and joins its threads.
    drop(upstream);
}

/// A failure of the fork itself, made anew for each run it fails.
enum Failed {
    Unread(Unread),
    NoSuchBranch(NoSuchBranch),
    Panic(String),
}

impl Failed {
    fn to_failure(&self) -> Failure {
        match self {
            Failed::Unread(unread) => Failure::Error(Box::new(unread.clone())),
            Failed::NoSuchBranch(no_such) => Failure::Error(Box::new(no_such.clone())),
            Failed::Panic(message) => Failure::Panic(message.clone()),
        }
    }
}

/// A branch's source: takes the items its outlet holds, a batch at a time.
struct Reader<U, B> {
    fork: Arc<Fork<U>>,
    branch: usize,
    /// The branch's item from the fork's (`Result::ok` for a split's `Ok`
    /// branch); the router sends a branch only items it maps to `Some`.
    project: fn(U) -> Option<B>,
}

impl<U, B> Reader<U, B> {
    fn poll(&mut self, wait: Option<Duration>, ctl: &Control) -> Polled<B> {
        match self.fork.outlets.take(self.branch, wait) {
            Taken::Items(items) => {
                Polled::Batch(items.into_iter().filter_map(self.project).collect())
            }
            Taken::Empty => Polled::Empty,
            Taken::Closed(failure) => {
                if let Some(failure) = failure {
                    ctl.fail_elsewhere(failure);
                }
                Polled::Closed
            }
        }
    }
}

impl<U: Send, B> Queue<B> for Reader<U, B> {
    fn try_recv(&mut self, ctl: &Control) -> Polled<B> {
        self.poll(None, ctl)
    }

    fn recv_timeout(&mut self, timeout: Duration, ctl: &Control) -> Polled<B> {
        self.poll(Some(timeout), ctl)
    }
}

impl<U, B> Drop for Reader<U, B> {
    fn drop(&mut self) {
        // Dropped here, outside the outlets' lock.
        let left = self.fork.outlets.leave(self.branch);
        drop(left);
    }
}

/// The error of a fork whose branch nobody read while the others were
/// read, once the branch held its bound for a second: reading the
/// branches from one thread, one after the other, or keeping a branch
/// nobody reads. Also for a branch the fork waits for whose reader is the
/// thread waiting for another branch, for a second (a thread that read a
/// little of one branch, then reads another to its end).
#[derive(Debug, Clone)]
pub struct Unread {
    kind: &'static str,
    branch: usize,
    items: usize,
    /// The branch whose consumer's thread waited, if the unread branch is
    /// read on that same thread.
    starved: Option<usize>,
}

impl Unread {
    /// The branch's index (`0` for the first, the `Ok` branch of a split).
    pub fn branch(&self) -> usize {
        self.branch
    }
}

impl std::fmt::Display for Unread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (branch, kind, items) = (self.branch, self.kind, self.items);
        match self.starved {
            None => write!(
                f,
                "branch {branch} of the {kind} holds {items} items nobody reads"
            )?,
            Some(starved) => write!(
                f,
                "branch {branch} of the {kind} holds {items} items, and the thread that reads it \
                 waits for branch {starved}, which cannot get more until branch {branch} is read"
            )?,
        }
        f.write_str(
            ": read every branch at once (each from its own thread, or merged), \
             drop a branch you do not need, or raise `branch_buffer`",
        )
    }
}

impl std::error::Error for Unread {}

/// The error of a [`route`](Pipeline::route) whose function named a branch
/// that does not exist.
#[derive(Debug, Clone)]
pub struct NoSuchBranch {
    branch: usize,
    branches: usize,
}

impl std::fmt::Display for NoSuchBranch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the route function chose branch {}, but there are {} (0 to {})",
            self.branch,
            self.branches,
            self.branches - 1
        )
    }
}

impl std::error::Error for NoSuchBranch {}

impl<T: Send + 'static> Pipeline<T> {
    /// A fork of this pipeline with `branches` branches, each item going
    /// where `router` puts it.
    fn fork(self, kind: &'static str, branches: usize, router: Router<T>) -> Arc<Fork<T>> {
        let outlets = Arc::new(Outlets::new(branches, ROOM, self.branch_buffer));
        let path = self.observe.branch.clone();
        Arc::new(Fork {
            kind,
            path,
            outlets,
            state: Mutex::new(State::Waiting(Box::new((self, router)))),
        })
    }

    /// Every item to each of `N` branches (clones to all but the first):
    /// fan-out. Each branch is a pipeline like any other; consume them all.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn double(x: u64) -> u64 { x * 2 }
    /// #[map_stage]
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let [a, b] = pipe!(1..=3u64 | double).tee();
    /// let a = std::thread::spawn(move || pipe!(a | square).collect::<Vec<u64>>());
    /// let mut b: Vec<u64> = b.collect()?;
    /// let mut a = a.join().unwrap()?;
    /// a.sort();
    /// b.sort();
    /// assert_eq!((a, b), (vec![4, 16, 36], vec![2, 4, 6]));
    /// # Ok::<(), PipelineError>(())
    /// ```
    ///
    /// # Branches, read or not
    /// Nothing runs until a branch is consumed; the first one consumed
    /// starts this pipeline. Read the branches at the same time (each from
    /// its own thread, or [`merge`](Pipeline::merge)d): the fork goes at
    /// the pace of the slowest branch somebody reads (each holds at most a
    /// queue's worth, [`DEFAULT_QSIZE`](crate::DEFAULT_QSIZE) items).
    /// A branch nobody reads yet (not consumed, or its results not asked
    /// for) is not waited for: it holds what it is sent, up to
    /// [`branch_buffer`](Pipeline::branch_buffer) items (65,536 by
    /// default), so one thread can read a short tee's branches one after
    /// the other. A branch that holds that many and is still not read a
    /// second later fails the whole graph with an [`Unread`] error naming
    /// the branch, rather than hang. So does a branch the fork waits for
    /// that is read on the thread now waiting for another branch (read a
    /// little of one branch, then another to its end). A branch that is dropped,
    /// or whose results are dropped, leaves: the others go on without it.
    ///
    /// # One graph, one fate
    /// The first error or panic anywhere (in this pipeline, in any branch)
    /// stops every part, and the consumer of every branch still running
    /// gets it, naming the task that failed ([`Failure::Elsewhere`] where
    /// it failed in another part). No thread outlives the last branch.
    pub fn tee<const N: usize>(self) -> [Pipeline<T>; N]
    where
        T: Clone,
    {
        let router: Router<T> = Box::new(|item: T, shares: &mut [Vec<T>]| {
            if let Some((first, rest)) = shares.split_first_mut() {
                for share in rest {
                    share.push(item.clone());
                }
                first.push(item);
            }
            Ok(())
        });
        let names: [String; N] = std::array::from_fn(|index| format!("tee{index}"));
        let fork = self.fork("tee", N, router);
        std::array::from_fn(|index| branch(&fork, index, &names[index], Some))
    }

    /// Items for which `to_first` is true to the first branch, the others
    /// to the second: routing by a predicate. Branches behave as
    /// [`tee`](Pipeline::tee)'s.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// let (even, odd) = pipe!(0..10u32).split(|x| x % 2 == 0);
    /// let odd = std::thread::spawn(move || odd.collect::<Vec<u32>>());
    /// let mut even: Vec<u32> = even.collect()?;
    /// even.sort();
    /// assert_eq!(even, [0, 2, 4, 6, 8]);
    /// assert_eq!(odd.join().unwrap()?.len(), 5);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn split(
        self,
        mut to_first: impl FnMut(&T) -> bool + Send + 'static,
    ) -> (Pipeline<T>, Pipeline<T>) {
        let router: Router<T> = Box::new(move |item: T, shares: &mut [Vec<T>]| {
            let branch = if to_first(&item) { 0 } else { 1 };
            shares[branch].push(item);
            Ok(())
        });
        let fork = self.fork("split", 2, router);
        let first = branch(&fork, 0, "split0", Some);
        (first, branch(&fork, 1, "split1", Some))
    }

    /// Each item to the branch `to` names (`0..N`), for example by an
    /// enum's variant. An index out of range fails the graph with a
    /// [`NoSuchBranch`] error. Branches behave as [`tee`](Pipeline::tee)'s.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// let [small, medium, large] = pipe!(0..100u32).route(|x| (*x / 40) as usize);
    /// drop(medium); // not needed: its items are dropped
    /// let large = std::thread::spawn(move || large.collect::<Vec<u32>>());
    /// assert_eq!(small.collect::<Vec<u32>>()?.len(), 40);
    /// assert_eq!(large.join().unwrap()?.len(), 20);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn route<const N: usize>(
        self,
        mut to: impl FnMut(&T) -> usize + Send + 'static,
    ) -> [Pipeline<T>; N] {
        let router: Router<T> = Box::new(move |item: T, shares: &mut [Vec<T>]| {
            let branch = to(&item);
            match shares.get_mut(branch) {
                Some(share) => share.push(item),
                None => {
                    let branches = N;
                    return Err(NoSuchBranch { branch, branches });
                }
            }
            Ok(())
        });
        let names: [String; N] = std::array::from_fn(|index| format!("route{index}"));
        let fork = self.fork("route", N, router);
        std::array::from_fn(|index| branch(&fork, index, &names[index], Some))
    }

    /// How many items a branch nobody reads may hold before the graph fails
    /// (see [`tee`](Pipeline::tee)), for the forks of this pipeline; at
    /// least 1, [`DEFAULT_BRANCH_BUFFER`] by default. A
    /// [`zip`](Pipeline::zip) of this pipeline takes it as the most items
    /// one input may get ahead of the other (the larger of its two inputs'
    /// settings).
    pub fn branch_buffer(mut self, items: usize) -> Self {
        if items == 0 {
            let why = "`branch_buffer(0)`: a branch holds at least 1 item".to_owned();
            return self.failing(PipelineError::new("fork", None, Failure::Config(why)));
        }
        self.branch_buffer = items;
        self
    }
}

impl<T: Send + 'static, E: Send + 'static> Pipeline<Result<T, E>> {
    /// `Ok` values to the first branch, `Err` values to the second: the
    /// natural dead-letter path. Branches behave as
    /// [`tee`](Pipeline::tee)'s.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn parse(line: &'static str) -> Result<u32, String> {
    ///     line.parse().map_err(|_| format!("not a number: {line:?}"))
    /// }
    ///
    /// let (numbers, bad) = pipe!(vec!["1", "x", "3"] | parse.keep_errors()).split_result();
    /// let bad = std::thread::spawn(move || bad.collect::<Vec<String>>());
    /// assert_eq!(numbers.collect::<Vec<u32>>()?.iter().sum::<u32>(), 4);
    /// assert_eq!(bad.join().unwrap()?, ["not a number: \"x\""]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn split_result(self) -> (Pipeline<T>, Pipeline<E>) {
        let router: Router<Result<T, E>> =
            Box::new(|item: Result<T, E>, shares: &mut [Vec<Result<T, E>>]| {
                let branch = if item.is_ok() { 0 } else { 1 };
                shares[branch].push(item);
                Ok(())
            });
        let fork = self.fork("split_result", 2, router);
        let ok = branch(&fork, 0, "ok", Result::ok);
        (ok, branch(&fork, 1, "err", Result::err))
    }
}

/// Branch `index` of `fork`, named `name` in profiles (after the path of
/// the pipeline forked), its items mapped by `project`.
fn branch<U: Send + 'static, B: Send + 'static>(
    fork: &Arc<Fork<U>>,
    index: usize,
    name: &str,
    project: fn(U) -> Option<B>,
) -> Pipeline<B> {
    let reader = Reader {
        fork: fork.clone(),
        branch: index,
        project,
    };
    let starter = fork.clone();
    let source = Source::<std::iter::Empty<B>>::Queue(Box::new(reader));
    let mut pipeline =
        Pipeline::from_source(source).with_thread(move |launch| starter.start(index, &launch.ctl));
    pipeline.observe.branch = Some(match &fork.path {
        Some(path) => format!("{path}__{name}"),
        None => name.to_owned(),
    });
    pipeline
}
