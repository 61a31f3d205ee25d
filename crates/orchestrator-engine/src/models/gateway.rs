//! The models as a step's tools see them: [`StepModels`] answers
//! [`ModelGateway`] for one step, so each call a tool makes is recorded for
//! the step, held to the execution's budget and cancelled with the step.

use std::collections::HashMap;

use orchestrator_tools::models::providers::{ChatRequest, GeneratedImage, ImageRequest};
use orchestrator_tools::models::{
    ChatReply, ModelGateway, ModelSpec, ModelStats, Requirements, Selection, Strategy,
};
use orchestrator_tools::{ErrorKind, ToolError};
use tokio_util::sync::CancellationToken;

use super::{CallSite, Models, SelectError, worst_case_cost};

/// One step's view of the models.
#[derive(Debug)]
pub struct StepModels {
    pub models: Models,
    pub site: CallSite,
    /// The execution's `max_cost`, in US dollars.
    pub budget: Option<f64>,
    pub cancel: CancellationToken,
}

fn tool_error(e: SelectError) -> ToolError {
    match e {
        SelectError::Store(m) => ToolError::new(ErrorKind::StoreError, m),
        other => ToolError::new(ErrorKind::ModelUnavailableError, other.to_string()),
    }
}

impl StepModels {
    /// Refuses a call that could take the execution past its budget.
    async fn within_budget(&self, spec: &ModelSpec, worst: f64) -> Result<(), ToolError> {
        match (self.budget, &self.site.execution_id) {
            (Some(budget), Some(execution)) => {
                self.models
                    .within_budget(execution, budget, spec, worst)
                    .await
            }
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ModelGateway for StepModels {
    async fn registry(&self) -> Result<Vec<ModelSpec>, ToolError> {
        self.models.registry().await.map_err(tool_error)
    }

    async fn stats(&self) -> Result<HashMap<String, ModelStats>, ToolError> {
        self.models.stats().await.map_err(tool_error)
    }

    async fn named(&self, name: &str) -> Result<ModelSpec, ToolError> {
        self.models
            .resolve(Some(name), None)
            .await
            .map(|(spec, _)| spec)
            .map_err(tool_error)
    }

    async fn select(
        &self,
        among: Option<&[ModelSpec]>,
        requirements: &Requirements,
        strategy: Option<Strategy>,
    ) -> Result<Selection, ToolError> {
        let strategy = strategy.unwrap_or(self.models.settings().strategy);
        let all;
        let among = match among {
            Some(m) => m,
            None => {
                all = self.registry().await?;
                &all
            }
        };
        self.models
            .select_from(among, requirements, strategy)
            .await
            .map_err(tool_error)
    }

    fn in_flight(&self) -> HashMap<String, usize> {
        self.models.in_flight()
    }

    async fn chat(&self, spec: &ModelSpec, request: &ChatRequest) -> Result<ChatReply, ToolError> {
        self.within_budget(spec, worst_case_cost(spec, request))
            .await?;
        let answer = self
            .models
            .call(spec, request, &self.site, &self.cancel)
            .await?;
        Ok(ChatReply {
            text: answer.response.text,
            model: spec.id.clone(),
            input_tokens: answer.response.input_tokens,
            output_tokens: answer.response.output_tokens,
            cost: answer.cost,
        })
    }

    async fn image(
        &self,
        spec: &ModelSpec,
        request: &ImageRequest,
    ) -> Result<GeneratedImage, ToolError> {
        self.within_budget(spec, spec.cost_per_image.unwrap_or(0.0))
            .await?;
        self.models
            .image(spec, request, &self.site, &self.cancel)
            .await
            .map(|(image, _)| image)
    }

    async fn download(
        &self,
        spec: &ModelSpec,
        url: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ToolError> {
        self.models
            .download(spec, url, max_bytes, &self.cancel)
            .await
    }
}
