//! Errors: what a stage returns ([`StageError`]) and what the consumer of a
//! pipeline gets ([`PipelineError`]).

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A boxed error of any stage.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a stage worker stopped early. Returned by [`Stage::run`](crate::Stage::run).
///
/// Any `E: Error + Send + Sync + 'static` converts into it with `?`.
/// `StageError` deliberately does not implement [`Error`] itself, so that this
/// blanket conversion can exist.
#[derive(Debug)]
pub struct StageError(pub(crate) Stop);

#[derive(Debug)]
pub(crate) enum Stop<E = BoxError> {
    /// The stage failed with this error (a distributed run's broker calls
    /// fail with a `BrokerError`: `nats::broker::Halt`).
    Failed(E),
    /// The pipeline was cancelled (another stage failed, or the consumer went
    /// away) or the next stage stopped taking input: not an error of this stage.
    Cancelled,
}

impl StageError {
    /// A failure of the stage with the given error.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        StageError(Stop::Failed(error.into()))
    }

    /// Whether this only reports that the pipeline is shutting down, rather
    /// than a failure of the stage.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.0, Stop::Cancelled)
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for StageError {
    fn from(error: E) -> Self {
        StageError::failed(error)
    }
}

/// What went wrong in a [`PipelineError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The stage returned or yielded this error. Downcast it to your type
    /// with [`PipelineError::downcast_ref`].
    Error(BoxError),
    /// The stage panicked with this message.
    Panic(String),
    /// A thread of the pipeline could not be started.
    Spawn(std::io::Error),
    /// A stage's configuration is invalid (for example `workers(0)`).
    Config(String),
    /// Another pipeline of the same graph failed: a branch of the same
    /// [`tee`](crate::Pipeline::tee) or split, the pipeline it branches
    /// from, or an input of the same [`merge`](crate::Pipeline::merge).
    /// [`stage`](PipelineError::stage) and [`worker`](PipelineError::worker)
    /// name the task that failed there; this is what went wrong
    /// (`failed: ...`, `panicked: ...`).
    Elsewhere(String),
}

/// The first failure of a pipeline, as the consumer sees it: which task
/// failed (`add_one-0` is worker 0 of stage `add_one`; the source is
/// `source`), what went wrong, and how many further failures followed it.
#[derive(Debug)]
pub struct PipelineError(Box<Inner>);

/// Boxed, so that `Result<T, PipelineError>`, which the consumer receives
/// per item, is hardly bigger than `T`.
#[derive(Debug)]
struct Inner {
    stage: String,
    worker: Option<usize>,
    /// In a distributed run, the process where the failure happened.
    process: Option<String>,
    failure: Failure,
    followed_by: usize,
}

impl PipelineError {
    pub(crate) fn new(stage: &str, worker: Option<usize>, failure: Failure) -> Self {
        PipelineError(Box::new(Inner {
            stage: stage.to_owned(),
            worker,
            process: None,
            failure,
            followed_by: 0,
        }))
    }

    /// This failure as another pipeline of its graph reports it: the same
    /// task, what went wrong as text (the stage's own error stays here).
    pub(crate) fn elsewhere(&self) -> PipelineError {
        let what = match &self.0.failure {
            Failure::Elsewhere(what) => what.clone(),
            failure => what_went_wrong(failure),
        };
        PipelineError(Box::new(Inner {
            stage: self.0.stage.clone(),
            worker: self.0.worker,
            process: self.0.process.clone(),
            failure: Failure::Elsewhere(what),
            followed_by: 0,
        }))
    }

    pub(crate) fn set_process(&mut self, process: &str) {
        self.0.process = Some(process.to_owned());
    }

    /// In a distributed pipeline (feature `nats`), the name of the process
    /// where the failure happened; `None` for a pipeline run in one process.
    pub fn process(&self) -> Option<&str> {
        self.0.process.as_deref()
    }

    pub(crate) fn set_followed_by(&mut self, n: usize) {
        self.0.followed_by = n;
    }

    /// The name of the stage that failed (`source` for the pipeline's source).
    pub fn stage(&self) -> &str {
        &self.0.stage
    }

    /// The index of the worker that failed, if a worker failed.
    pub fn worker(&self) -> Option<usize> {
        self.0.worker
    }

    /// The task that failed: `stage-worker`
    /// (`add_one-0`), or the stage name alone when no worker was involved.
    pub fn task(&self) -> String {
        match self.0.worker {
            Some(w) => format!("{}-{}", self.0.stage, w),
            None => self.0.stage.clone(),
        }
    }

    /// What went wrong.
    pub fn failure(&self) -> &Failure {
        &self.0.failure
    }

    /// Takes the failure out of the error.
    pub fn into_failure(self) -> Failure {
        self.0.failure
    }

    /// How many other failures (in any stage) followed the first one before
    /// the pipeline stopped.
    pub fn followed_by(&self) -> usize {
        self.0.followed_by
    }

    /// Whether the stage panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.failure, Failure::Panic(_))
    }

    /// The panic message, if the stage panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.0.failure {
            Failure::Panic(msg) => Some(msg),
            _ => None,
        }
    }

    /// The stage's own error, if it is of type `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        match &self.0.failure {
            Failure::Error(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut task = self.task();
        if let Some(process) = &self.0.process {
            task = format!("{task}\" in process \"{process}");
        }
        match &self.0.failure {
            Failure::Elsewhere(what) => write!(
                f,
                "the task \"{task}\", in another pipeline of this graph, {what}"
            )?,
            Failure::Error(e) => write!(f, "the task \"{task}\" failed: {e}")?,
            Failure::Panic(msg) => write!(f, "the task \"{task}\" panicked: {msg}")?,
            Failure::Spawn(e) => write!(f, "could not start a thread for \"{task}\": {e}")?,
            Failure::Config(msg) => write!(f, "stage \"{task}\" is misconfigured: {msg}")?,
        }
        match self.0.followed_by {
            0 => Ok(()),
            1 => write!(f, " (1 more failure followed)"),
            n => write!(f, " ({n} more failures followed)"),
        }
    }
}

impl Error for PipelineError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.0.failure {
            Failure::Error(e) => Some(&**e),
            Failure::Spawn(e) => Some(e),
            Failure::Panic(_) | Failure::Config(_) | Failure::Elsewhere(_) => None,
        }
    }
}

/// What went wrong, after the task's name: `failed: ...`.
fn what_went_wrong(failure: &Failure) -> String {
    match failure {
        Failure::Error(e) => format!("failed: {e}"),
        Failure::Panic(msg) => format!("panicked: {msg}"),
        Failure::Spawn(e) => format!("could not start a thread: {e}"),
        Failure::Config(msg) => format!("is misconfigured: {msg}"),
        Failure::Elsewhere(what) => what.clone(),
    }
}

/// For code that reports `io::Error`s (a `main` returning `io::Result`, a
/// reader or writer built on a pipeline): the kind is that of an
/// `io::Error` a stage failed with, or of a thread that could not start,
/// else `Other`; the pipeline's error, naming the task, is the source.
///
/// ```
/// use parapipe::prelude::*;
///
/// #[map_stage]
/// fn open(path: String) -> std::io::Result<u64> {
///     Ok(std::fs::metadata(&path)?.len())
/// }
///
/// fn sizes() -> std::io::Result<Vec<u64>> {
///     Ok(pipe!(vec!["/no/such/file".to_owned()] | open).collect()?)
/// }
/// let err = sizes().unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
/// assert!(err.to_string().contains("open-0"), "{err}");
/// ```
impl From<PipelineError> for std::io::Error {
    fn from(e: PipelineError) -> Self {
        let kind = match &e.0.failure {
            Failure::Spawn(spawn) => spawn.kind(),
            _ => e
                .downcast_ref::<std::io::Error>()
                .map_or(std::io::ErrorKind::Other, std::io::Error::kind),
        };
        std::io::Error::new(kind, e)
    }
}

/// The message of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Returned as a stage's error, drops the item without failing the
/// pipeline; skipped items are counted ([`Results::skipped`](crate::Results::skipped)).
///
/// ```
/// use parapipe::prelude::*;
/// use parapipe::Skip;
///
/// #[map_stage]
/// fn non_empty(line: String) -> Result<String, Skip> {
///     if line.is_empty() { Err(Skip) } else { Ok(line) }
/// }
///
/// let lines = vec!["a".to_string(), String::new(), "b".to_string()];
/// let mut results = pipe!(lines | non_empty).results();
/// let got: Vec<String> = results.by_ref().collect::<Result<_, _>>()?;
/// assert_eq!(got, ["a", "b"]);
/// assert_eq!(results.skipped(), 1);
/// # Ok::<(), PipelineError>(())
/// ```
///
/// A stage that can also fail returns a [`BoxError`] and `Skip.into()` for
/// the items it skips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Skip;

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("item skipped")
    }
}

impl Error for Skip {}

/// Items a stage dropped instead of failing.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Counters {
    /// Failing items dropped by `filter_errors`.
    pub(crate) filtered: std::sync::atomic::AtomicU64,
    /// Items the stage skipped with [`Skip`].
    pub(crate) skipped: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// Counts `error` as a skipped or filtered item, or hands it back as a
    /// failure.
    pub(crate) fn drop_or_fail(
        &self,
        filter_errors: bool,
        error: BoxError,
    ) -> Result<(), BoxError> {
        use std::sync::atomic::Ordering::Relaxed;
        if error.is::<Skip>() {
            self.skipped.fetch_add(1, Relaxed);
        } else if filter_errors {
            self.filtered.fetch_add(1, Relaxed);
        } else {
            return Err(error);
        }
        Ok(())
    }
}

/// An error of a stage inside a serial segment, with the stage's name, so the
/// pipeline reports the stage that failed rather than the segment.
#[derive(Debug)]
pub struct Tagged {
    pub(crate) stage: String,
    pub(crate) error: BoxError,
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl Error for Tagged {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.error)
    }
}

/// The message of a caught panic payload, the payload dropped (see
/// [`drop_payload`]).
pub(crate) fn into_panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = panic_message(&*payload);
    drop_payload(payload);
    message
}

/// Drops a caught panic's payload, whose own `Drop` may panic too: that
/// second payload is leaked rather than dropped, so this never unwinds.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
