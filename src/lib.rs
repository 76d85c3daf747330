//! Typed, parallel data pipelines.

#![deny(missing_docs)]
pub use pipeline_macros::{map_stage, pipe, stage};
pub use pipeline_runtime::*;

/// What a pipeline needs: `use parapipe::prelude::*;`.
pub mod prelude {
    pub use pipeline_macros::{map_stage, pipe, stage};
    pub use pipeline_runtime::{
        Configurable, Emitter, Input, IntoSource, Pipeline, PipelineError, Producer, QueueSize,
        Results, Stage, StageConfig, StageError, StageExt, Worker,
    };
}
