//! Consuming a pipeline from async code: its results as a
//! [`futures_core::Stream`], and `collect_async`, `execute_async` and
//! `run_async`. None of them blocks the caller's thread.
//!
//! The pipeline's own threads work as they do for a blocking consumer; one
//! more thread hands the results over to the stream, through a bounded
//! channel whose receiving end wakes the task that awaits it. Dropping the
//! stream stops the pipeline, as dropping [`Results`] does.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::runtime::Handle;

use crate::control::Control;
use crate::error::{Failure, PipelineError};
use crate::pipeline::Pipeline;
use crate::results::Results;

/// Results handed to the stream ahead of the task that awaits them.
const AHEAD: usize = 1024;

/// A running pipeline's results as a [`futures_core::Stream`]: see
/// [`Pipeline::stream`]. Every item as `Ok`, then, if the pipeline failed,
/// one `Err` with the first failure. Dropping it stops the pipeline.
pub struct ResultStream<T: 'static> {
    items: flume::r#async::RecvStream<'static, Result<T, PipelineError>>,
    ctl: Option<Arc<Control>>,
}

impl<T> std::fmt::Debug for ResultStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream").finish_non_exhaustive()
    }
}

impl<T> Stream for ResultStream<T> {
    type Item = Result<T, PipelineError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.items).poll_next(cx)
    }
}

impl<T> Drop for ResultStream<T> {
    fn drop(&mut self) {
        // The thread handing results over sees it and drops them, which
        // joins the pipeline's threads.
        if let Some(ctl) = &self.ctl {
            ctl.cancel();
        }
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// Runs the pipeline's async stages on `handle`'s runtime instead of a
    /// runtime of the pipeline's own. Consumed with a blocking call
    /// (`collect`, `results`), the pipeline then needs that runtime to run
    /// on threads other than the one that blocks: give a multi-thread
    /// runtime's handle, or consume it with an `_async` method.
    pub fn on_runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Starts the pipeline and returns its results as a
    /// [`futures_core::Stream`], for async code: it never blocks the task
    /// that polls it. Called inside a tokio runtime, the pipeline's async
    /// stages run their futures on that runtime (unless given another with
    /// [`on_runtime`](Pipeline::on_runtime)).
    pub fn stream(mut self) -> ResultStream<T> {
        if self.runtime.is_none() {
            self.runtime = Handle::try_current().ok();
        }
        ResultStream::of(self.results())
    }

    /// Runs the pipeline to the end and collects its items (in arrival
    /// order), or returns its first failure: [`collect`](Pipeline::collect)
    /// for async code. See [`stream`](Pipeline::stream) for where the
    /// futures of async stages run.
    pub async fn collect_async<C: Default + Extend<T>>(self) -> Result<C, PipelineError> {
        self.stream().collect_all().await
    }

    /// Runs the pipeline to the end and returns its last item:
    /// [`execute`](Pipeline::execute) for async code.
    pub async fn execute_async(self) -> Result<Option<T>, PipelineError> {
        self.stream().last().await
    }

    /// Runs the pipeline to the end, discarding its items:
    /// [`run`](Pipeline::run) for async code.
    pub async fn run_async(self) -> Result<(), PipelineError> {
        self.stream().drain().await
    }
}

impl<T: Send + 'static> Results<T> {
    /// These results as a [`futures_core::Stream`], for async code: a
    /// thread hands them over, so the task that polls the stream never
    /// blocks. Start the pipeline with [`Pipeline::stream`] instead where
    /// its async stages should run on the caller's runtime.
    pub fn into_stream(self) -> ResultStream<T> {
        ResultStream::of(self)
    }
}

impl<T: Send + 'static> ResultStream<T> {
    /// Hands `results` over to a stream, on a thread of their own.
    pub(crate) fn of(results: Results<T>) -> Self {
        let ctl = results.control();
        let (tx, rx) = flume::bounded(AHEAD);
        let handed = std::thread::Builder::new()
            .name("parapipe-results".into())
            .spawn(move || {
                for item in results {
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
        match handed {
            Ok(_) => ResultStream {
                items: rx.into_stream(),
                ctl: Some(ctl),
            },
            // The closure, and the results with it, are dropped: the
            // pipeline stops and is joined.
            Err(e) => {
                let (tx, rx) = flume::bounded(1);
                let failure = Failure::Spawn(e);
                let _ = tx.send(Err(PipelineError::new("results", None, failure)));
                ResultStream {
                    items: rx.into_stream(),
                    ctl: None,
                }
            }
        }
    }

    async fn next_item(&mut self) -> Option<Result<T, PipelineError>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Every item, or the first failure.
    pub(crate) async fn collect_all<C: Default + Extend<T>>(mut self) -> Result<C, PipelineError> {
        let mut collected = C::default();
        while let Some(item) = self.next_item().await {
            collected.extend(Some(item?));
        }
        Ok(collected)
    }

    /// The last item, or the first failure.
    pub(crate) async fn last(mut self) -> Result<Option<T>, PipelineError> {
        let mut last = None;
        while let Some(item) = self.next_item().await {
            last = Some(item?);
        }
        Ok(last)
    }

    /// To the end, or the first failure.
    pub(crate) async fn drain(mut self) -> Result<(), PipelineError> {
        while let Some(item) = self.next_item().await {
            item?;
        }
        Ok(())
    }
}
