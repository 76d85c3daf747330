//! A stage whose `Err` items are passed on as items instead of failing
//! the pipeline ([`StageExt::keep_errors`](crate::StageExt::keep_errors)):
//! what a dead-letter path starts from.

use std::convert::Infallible;

use crate::config::StageConfig;
use crate::stage::{Configurable, Stage};

/// A stage whose output is each item's `Result`: see
/// [`StageExt::keep_errors`](crate::StageExt::keep_errors).
#[derive(Debug, Clone)]
pub struct KeepErrors<S>(pub(crate) S);

impl<S: Configurable> Configurable for KeepErrors<S> {
    fn config(&self) -> &StageConfig {
        self.0.config()
    }

    fn config_mut(&mut self) -> &mut StageConfig {
        self.0.config_mut()
    }
}

impl<S> Stage for KeepErrors<S>
where
    S: Stage,
    S::Error: Send,
{
    type In = S::In;
    type Out = Result<S::Out, S::Error>;
    type Error = Infallible;

    fn apply<'a>(
        &'a self,
        input: impl Iterator<Item = Self::In> + 'a,
    ) -> impl Iterator<Item = Result<Self::Out, Infallible>> + 'a {
        self.0.apply(input).map(Ok)
    }

    fn fused_stages(&self) -> Vec<String> {
        self.0.fused_stages()
    }

    fn scope_into(&mut self, segment: &str) {
        self.0.scope_into(segment);
    }

    fn runs_on_one_worker(&self) -> bool {
        self.0.runs_on_one_worker()
    }
}
