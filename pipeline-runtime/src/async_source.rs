//! A [`futures_core::Stream`] as a pipeline's source. A thread of the
//! pipeline's polls it inside the pipeline's tokio runtime (so that the
//! stream's timers and sockets find one), sleeping until the stream's waker
//! unparks it, and passes each item on as it comes, as a channel source
//! does. It looks for cancellation at least every [`POLL`], so a stream
//! that stays pending does not keep a stopped pipeline's thread.

use std::pin::pin;
use std::task::{Context, Poll};
use std::thread;

use futures_core::Stream;

use crate::control::POLL;
use crate::error::{Failure, PipelineError};
use crate::pipeline::{IntoSource, Pipeline};
use crate::stream::Bucket;
use crate::wake::ThreadWaker;

impl<T: Send + 'static> Pipeline<T> {
    /// A pipeline whose items come from a [`futures_core::Stream`]: each
    /// item goes on as soon as the stream yields it, and the pipeline ends
    /// with the stream. `pipe!` takes a stream as its source directly.
    /// The stream is polled on a thread of the pipeline's, inside the
    /// runtime its async stages use (see [`Pipeline::stream`]): a stream
    /// that needs the runtime you block in with a blocking call cannot make
    /// progress, so consume such a pipeline with an `_async` method.
    ///
    /// ```
    /// use parapipe::prelude::*;
    ///
    /// #[map_stage]
    /// fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// let (tx, rx) = flume::unbounded();
    /// for x in 0..5u32 {
    ///     tx.send(x).unwrap();
    /// }
    /// drop(tx);
    /// let out: Vec<u32> = pipe!(rx.into_stream() | double).collect()?;
    /// assert_eq!(out, [0, 2, 4, 6, 8]);
    /// # Ok::<(), PipelineError>(())
    /// ```
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
    {
        crate::Stream::feed(move |bucket| poll_into(stream, bucket)).into_pipeline()
    }
}

fn poll_into<S: Stream>(stream: S, bucket: &Bucket<S::Item>) {
    let handle = match bucket.ctl.executor.handle() {
        Ok(handle) => handle,
        Err(e) => {
            bucket
                .ctl
                .fail(PipelineError::new("source", None, Failure::Spawn(e)));
            return;
        }
    };
    let _runtime = handle.enter();
    let mut waker = ThreadWaker::default();
    let mut cx = Context::from_waker(waker.get());
    let mut stream = pin!(stream);
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(item)) => {
                if bucket.push(item).is_err() {
                    return;
                }
            }
            Poll::Ready(None) => return,
            Poll::Pending => {
                if bucket.ctl.is_cancelled() {
                    return;
                }
                // A wake that came before this park makes it return at once.
                thread::park_timeout(POLL);
            }
        }
    }
}
