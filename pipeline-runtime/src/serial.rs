//! A whole pipeline run in the calling thread, fused: `pipe!(serial: ...)`.

use crate::chain::Chain;
use crate::error::PipelineError;
use crate::segment::Segment;

/// A whole pipeline run serial, in the calling thread, with no thread and no
/// queue at all: what `pipe!(serial: source | stage | ...)` builds: the zero-overhead
/// mode for single-threaded work.
///
/// Its stages are fused into one iterator chain over the source, as in
/// [`Segment::iter`]: a 20-stage chain costs what the same hand-written
/// iterator chain costs. Worker counts, queue sizes and `ordered` have no
/// effect (one thread, in order); a panic in a stage unwinds into the
/// caller, as in any iterator chain.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage(workers = 4)]
/// fn add_n(x: u64, n: u64) -> u64 {
///     x + n
/// }
///
/// #[stage]
/// fn evens(xs: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
///     xs.filter(|x| x % 2 == 0)
/// }
///
/// let got: Vec<u64> = pipe!(serial: 0..10u64 | add_n(1) | evens).collect()?;
/// assert_eq!(got, [2, 4, 6, 8, 10]);
///
/// let pipeline = pipe!(serial: 0..3u64 | add_n(10));
/// for item in pipeline.results() {
///     println!("{}", item?);
/// }
/// # Ok::<(), PipelineError>(())
/// ```
pub struct SerialPipeline<S, C> {
    source: std::cell::Cell<Option<S>>,
    segment: Segment<C>,
}

impl<S, C> std::fmt::Debug for SerialPipeline<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialPipeline")
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

impl<S, C> SerialPipeline<S, C>
where
    C: Chain,
    S: IntoIterator<Item = C::In>,
{
    /// The pipeline `source | chain`.
    pub fn new(source: S, chain: C) -> Self {
        SerialPipeline {
            source: std::cell::Cell::new(Some(source)),
            segment: Segment::new(chain),
        }
    }

    /// Runs the pipeline as its results are taken: every item as `Ok`, then,
    /// if a stage failed, one `Err`. A pipeline runs once: a second call
    /// yields nothing.
    pub fn results(&self) -> impl Iterator<Item = Result<C::Out, PipelineError>> + '_ {
        self.source
            .take()
            .into_iter()
            .flat_map(|source| self.segment.iter(source))
    }

    /// Runs the pipeline to the end and collects its items, or returns its
    /// first failure.
    pub fn collect<B: FromIterator<C::Out>>(self) -> Result<B, PipelineError> {
        self.results().collect()
    }

    /// Runs the pipeline to the end and returns its last item.
    pub fn execute(self) -> Result<Option<C::Out>, PipelineError> {
        crate::results::last_item(self.results())
    }

    /// Runs the pipeline to the end, discarding its items.
    pub fn run(self) -> Result<(), PipelineError> {
        self.results().try_for_each(|item| item.map(drop))
    }

    /// How many failing items `filter_errors` dropped.
    pub fn filtered(&self) -> u64 {
        self.segment.filtered()
    }

    /// How many items stages skipped with [`Skip`](crate::Skip).
    pub fn skipped(&self) -> u64 {
        self.segment.skipped()
    }
}
