//! The runtime of [parapipe](https://docs.rs/parapipe): stage workers on
//! batched, bounded [`flume`] channels.
//!
//! Use it through the `parapipe` crate, which re-exports everything here
//! together with the `#[stage]`, `#[map_stage]` and `pipe!` macros.
//!
//! Each stage runs on its own worker threads. Items move between threads in
//! batches sized to the work they carry, through queues bounded in items
//! (backpressure). The first error or panic of any stage or of the source
//! stops the pipeline and reaches the consumer as a [`PipelineError`] naming
//! the stage and worker; dropping the results stops the pipeline too, and
//! every thread is joined.

#![deny(missing_docs, missing_debug_implementations)]
#![warn(unreachable_pub)]

#[cfg(feature = "async")]
mod async_map;
#[cfg(feature = "async")]
mod async_results;
#[cfg(feature = "async")]
mod async_source;
pub mod chain;
mod config;
mod control;
pub mod debug;
mod error;
#[cfg(feature = "async")]
mod executor;
mod fork;
mod keep_errors;
mod launch;
mod link;
mod merge;
#[cfg(feature = "nats")]
pub mod nats;
mod ordered;
mod outlet;
mod partition;
mod pipeline;
pub mod profile;
mod results;
mod segment;
mod serial;
mod source;
mod stage;
pub mod stages;
mod stream;
mod threads;
mod time;
mod user_code;
#[cfg(feature = "async")]
mod wake;
mod worker;
mod zip;

#[cfg(feature = "async")]
pub use async_map::TimedOut;
#[cfg(feature = "async")]
pub use async_results::ResultStream;
pub use config::{DEFAULT_CONCURRENCY, DEFAULT_QSIZE, QueueSize, StageConfig};
pub use error::{BoxError, Failure, PipelineError, Skip, StageError};
pub use fork::{DEFAULT_BRANCH_BUFFER, NoSuchBranch, Unread};
pub use keep_errors::KeepErrors;
pub use partition::Partitioned;
pub use pipeline::{IntoSource, Pipeline};
pub use results::Results;
pub use segment::Segment;
pub use serial::SerialPipeline;
#[cfg(feature = "async")]
pub use stage::{AsyncStage, AsyncStageExt};
pub use stage::{Configurable, Producer, Stage, StageExt};
pub use stream::{Bucket, Latest, Stopped, Stream};
pub use threads::Threads;
pub use zip::Uneven;

/// For stages written by hand: what a worker of a [`Stage`] whose
/// [`run`](Stage::run) is overridden, or of a [`Producer`], works with.
pub mod handwritten {
    pub use crate::worker::{Emitter, Input, Next, Worker};
}

#[doc(hidden)]
pub mod __private;
