//! Recombining: two pipelines read as one of pairs, the `i`-th item of one
//! with the `i`-th of the other ([`Pipeline::zip`]).
//!
//! A zip starts like a merge (`merge::adopt`: both inputs start together,
//! one graph with the zip's run), with one worker per input. Each worker
//! puts its input's batches on its side of a shared [`Sides`], takes the
//! pairs that are now complete and sends them under the lock, so pairs
//! leave in order whichever worker completed them. One input ahead of the
//! other by more than the bound, or one ending while the other has items
//! left, fails the zip with [`Uneven`]: pairing by position is only right
//! if both inputs give one item per item of what they came from, and a
//! bound is what keeps a zip whose branches are not from a hanging (the
//! one behind waits for items a fork cannot deal until the one ahead is
//! read).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::config::StageConfig;
use crate::control::lock;
use crate::error::StageError;
use crate::launch::{PerWorker, WorkerStart};
use crate::merge::{adopt, next_input_batch};
use crate::pipeline::Pipeline;
use crate::results::Results;

impl<A: Send + 'static> Pipeline<A> {
    /// One pipeline of pairs: the first item of this pipeline with the
    /// first of `other`, the second with the second, and so on. For
    /// "compute two things on the same item in parallel, then combine":
    /// [`tee`](Pipeline::tee) the items, give each branch its stages, zip
    /// the branches back.
    ///
    /// Pairing by position is right only when both inputs keep their order
    /// (stages on one worker or `ordered`) and give exactly one item per
    /// item they got (map stages, no filtering). What the zip can see, it
    /// refuses: an input that ends while the other still has items, or one
    /// more than [`branch_buffer`](Pipeline::branch_buffer) items (the
    /// larger of the two inputs' settings, 65,536 by default) ahead of the
    /// other, fails the whole graph with [`Uneven`]. A branch that drops or
    /// reorders items while keeping the count is not seen: the pairs are
    /// then wrong. Two branches of one tee are never further apart than
    /// what the slower one holds in its queues (4,096 items a stage by
    /// default, and as many at the fork): raise the bound with
    /// `a.branch_buffer(n).zip(b)` if that branch's queues hold more.
    ///
    /// Both inputs start when the zip does and are one graph with it, as a
    /// [`merge`](Pipeline::merge)'s are: the first failure anywhere fails
    /// them all, and dropping the zip's results stops both.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage(workers = 2, ordered)]
    /// fn square(x: u64) -> u64 { x * x }
    /// #[map_stage]
    /// fn describe(x: u64) -> String { format!("#{x}") }
    ///
    /// let [a, b] = pipe!(1..=4u64).tee();
    /// let pairs: Vec<(u64, String)> = pipe!(a | square).zip(pipe!(b | describe)).collect()?;
    /// assert_eq!(pairs, [(1, "#1".into()), (4, "#2".into()), (9, "#3".into()), (16, "#4".into())]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn zip<B: Send + 'static>(self, other: Pipeline<B>) -> Pipeline<(A, B)> {
        let bound = self.branch_buffer.max(other.branch_buffer);
        let mut config = StageConfig::new("zip");
        config.set_workers(2);
        let left = PerWorker::empty(1);
        let right = PerWorker::empty(1);
        let sides = Arc::new(Mutex::new(Sides::new(bound)));
        let (started_left, started_right) = (left.clone(), right.clone());
        let body = move |w: WorkerStart<(A, B)>| match w.index {
            0 => feed(left.take(0), &sides, w, Sides::put_left),
            _ => feed(right.take(0), &sides, w, Sides::put_right),
        };
        let (inputs_left, inputs_right) = (self, other);
        Pipeline::from_workers(config, body).with_thread(move |launch| {
            let ctl = launch.control();
            crate::fork::start_together(|| {
                started_left.put(0, adopt(&ctl, inputs_left));
                started_right.put(0, adopt(&ctl, inputs_right));
            });
        })
    }
}

/// What two inputs have given and not yet paired.
struct Sides<A, B> {
    left: VecDeque<A>,
    right: VecDeque<B>,
    /// Whether each input (left, right) has ended.
    ended: [bool; 2],
    /// Pairs made so far.
    paired: u64,
    /// The most items one input may be ahead of the other.
    bound: usize,
}

impl<A, B> Sides<A, B> {
    fn new(bound: usize) -> Self {
        Sides {
            left: VecDeque::new(),
            right: VecDeque::new(),
            ended: [false; 2],
            paired: 0,
            bound,
        }
    }

    /// The left input's next batch (`None`: it ended).
    fn put_left(&mut self, batch: Option<Vec<A>>) {
        match batch {
            Some(batch) => self.left.extend(batch),
            None => self.ended[0] = true,
        }
    }

    /// The right input's next batch (`None`: it ended).
    fn put_right(&mut self, batch: Option<Vec<B>>) {
        match batch {
            Some(batch) => self.right.extend(batch),
            None => self.ended[1] = true,
        }
    }

    /// The pairs complete now, or why the inputs cannot be paired.
    fn pairs(&mut self) -> Result<Vec<(A, B)>, Uneven> {
        let n = self.left.len().min(self.right.len());
        let pairs: Vec<(A, B)> = self.left.drain(..n).zip(self.right.drain(..n)).collect();
        self.paired += n as u64;
        let (left, right) = (self.left.len(), self.right.len());
        let uneven = |ahead: usize, by: usize, ended: bool| Uneven {
            ahead,
            by,
            ended,
            paired: self.paired,
        };
        match () {
            _ if left > 0 && self.ended[1] => Err(uneven(0, left, true)),
            _ if right > 0 && self.ended[0] => Err(uneven(1, right, true)),
            _ if left > self.bound => Err(uneven(0, left, false)),
            _ if right > self.bound => Err(uneven(1, right, false)),
            _ => Ok(pairs),
        }
    }
}

/// A zip worker: puts its input's batches on its side with `put`, and
/// sends the pairs each one completes.
fn feed<T, A, B>(
    input: Option<Results<T>>,
    sides: &Mutex<Sides<A, B>>,
    mut w: WorkerStart<(A, B)>,
    put: fn(&mut Sides<A, B>, Option<Vec<T>>),
) -> Result<(), StageError>
where
    T: Send + 'static,
{
    let Some(mut input) = input else {
        return Ok(());
    };
    loop {
        let batch = next_input_batch(&mut input, &w.ctl)?;
        let end = batch.is_none();
        // Sent under the lock: pairs leave in order, whichever worker
        // completed them. The other worker waits meanwhile, as it would
        // for room in the output queue anyway.
        let mut sides = lock(sides);
        put(&mut sides, batch);
        for pair in sides.pairs().map_err(StageError::failed)? {
            w.tx.push(pair, &w.ctl)?;
        }
        w.tx.flush(&w.ctl)?;
        if end {
            return Ok(());
        }
    }
}

/// The error of a [`zip`](Pipeline::zip) whose inputs do not pair up: one
/// ended while the other had items left, or got further ahead of the other
/// than the zip holds.
#[derive(Debug, Clone)]
pub struct Uneven {
    ahead: usize,
    by: usize,
    ended: bool,
    paired: u64,
}

impl Uneven {
    /// The input that gave more: `0` for the pipeline `zip` was called on,
    /// `1` for its argument.
    pub fn ahead(&self) -> usize {
        self.ahead
    }

    /// How many pairs were made before.
    pub fn paired(&self) -> u64 {
        self.paired
    }
}

impl std::fmt::Display for Uneven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ahead, by, paired) = (self.ahead, self.by, self.paired);
        let behind = 1 - ahead;
        match self.ended {
            true => write!(
                f,
                "input {behind} of the zip ended after {paired} items, and input {ahead} has at least {by} more"
            )?,
            false => write!(
                f,
                "input {ahead} of the zip is {by} items ahead of input {behind} (after {paired} pairs), more than it holds"
            )?,
        }
        f.write_str(
            ": a zip pairs items by position, so each input must give one item per item it got, in order",
        )
    }
}

impl std::error::Error for Uneven {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_by_position_and_refuses_what_cannot_pair() {
        let mut sides: Sides<u32, char> = Sides::new(3);
        sides.put_left(Some(vec![1, 2, 3]));
        assert!(sides.pairs().unwrap().is_empty());
        sides.put_right(Some(vec!['a', 'b']));
        assert_eq!(sides.pairs().unwrap(), [(1, 'a'), (2, 'b')]);
        sides.put_right(Some(vec!['c', 'd']));
        assert_eq!(sides.pairs().unwrap(), [(3, 'c')]);
        // The right input is one ahead, and the left one ends.
        sides.put_left(None);
        let uneven = sides.pairs().unwrap_err();
        assert_eq!((uneven.ahead(), uneven.paired()), (1, 3));
        assert!(
            uneven
                .to_string()
                .contains("input 0 of the zip ended after 3 items")
        );

        let mut sides: Sides<u32, char> = Sides::new(3);
        sides.put_left(Some(vec![1, 2, 3, 4]));
        let uneven = sides.pairs().unwrap_err();
        assert_eq!(uneven.ahead(), 0);
        assert!(
            uneven.to_string().contains("4 items ahead of input 1"),
            "{uneven}"
        );

        let mut sides: Sides<u32, char> = Sides::new(3);
        sides.put_left(Some(vec![1]));
        sides.put_right(Some(vec!['a']));
        sides.put_left(None);
        sides.put_right(None);
        assert_eq!(sides.pairs().unwrap(), [(1, 'a')]);
    }
}
