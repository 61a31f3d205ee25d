//! What tools may ask of the server's models ([`ModelGateway`]): the
//! registry and its statistics, selection under the routing strategies, and
//! calls. The engine implements it for each step, so a tool's calls are
//! recorded, counted against the execution's budget and cancelled with the
//! step, like a model step's.

use std::collections::HashMap;

use super::providers::{ChatRequest, GeneratedImage, ImageRequest};
use super::{ModelSpec, ModelStats, Requirements, Selection, Strategy};
use crate::ToolError;

/// A finished chat call.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    pub text: String,
    /// The registered model's id.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars.
    pub cost: f64,
}

/// The server's models, as a step's tools see them.
#[async_trait::async_trait]
pub trait ModelGateway: Send + Sync + std::fmt::Debug {
    /// The registered models, in registry order.
    async fn registry(&self) -> Result<Vec<ModelSpec>, ToolError>;
    /// Every model's call statistics (all processes sharing the database).
    async fn stats(&self) -> Result<HashMap<String, ModelStats>, ToolError>;
    /// A model by id, `provider:model` or the provider's model name; one
    /// whose key is missing or may not be read is refused.
    async fn named(&self, name: &str) -> Result<ModelSpec, ToolError>;
    /// The choice of `strategy` (the server's when `None`) among `among`
    /// (every registered model when `None`) under `requirements`.
    async fn select(
        &self,
        among: Option<&[ModelSpec]>,
        requirements: &Requirements,
        strategy: Option<Strategy>,
    ) -> Result<Selection, ToolError>;
    /// Calls in flight in this process, by model id.
    fn in_flight(&self) -> HashMap<String, usize>;
    /// One chat call.
    async fn chat(&self, spec: &ModelSpec, request: &ChatRequest) -> Result<ChatReply, ToolError>;
    /// One image from an image-generation model.
    async fn image(
        &self,
        spec: &ModelSpec,
        request: &ImageRequest,
    ) -> Result<GeneratedImage, ToolError>;
    /// The bytes at a URL `spec` answered with (its own endpoint as the
    /// model is reached, any other under the models' egress policy), at
    /// most `max_bytes`.
    async fn download(
        &self,
        spec: &ModelSpec,
        url: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ToolError>;
}
