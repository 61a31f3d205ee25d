//! Tools: the [`Tool`] trait, the [`ToolRegistry`] and the built-in tools.
//!
//! A tool runs one action with rendered parameters and returns a JSON result,
//! or a [`ToolError`] whose `kind` becomes the step's error type.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "charts")]
pub mod charts;
mod error_kind;
pub use error_kind::ErrorKind;
pub mod data;
pub mod echo;
pub mod filesystem;
#[cfg(any(feature = "charts", feature = "pdf"))]
mod fonts;
pub mod http;
pub mod human;
pub mod images;
pub mod log;
pub mod markdown;
pub mod mcp;
pub mod mcp_memory;
pub mod memory;
pub mod models;
pub mod net;
#[cfg(feature = "pdf")]
pub mod pdf;
pub mod pipeline_executor;
pub mod python;
pub mod recursion;
pub mod remote;
pub mod report;
pub mod routing;
pub mod search;
pub mod terminal;
pub mod testing;
pub mod validation;
#[cfg(feature = "web-pages")]
pub mod web;

/// Everything a tool may use besides its parameters.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The folder the execution may read and write; tools never leave it.
    pub workspace: PathBuf,
    /// Cancelled when the step times out or the execution is cancelled.
    pub cancel: CancellationToken,
    pub execution_id: String,
    pub step_id: String,
    pub attempt: i64,
    /// For services the operator configured (search backends, tools over
    /// HTTP, model providers). The `http` tool uses its own guarded client.
    pub http: reqwest::Client,
    /// Durable state shared by the execution's tree (`None` where there is
    /// no store, e.g. a tool run on its own).
    pub memory: Option<Arc<dyn memory::Memory>>,
    /// The step's log (`None` where nothing keeps one).
    pub log: Option<Arc<dyn log::LogSink>>,
    /// The server's models, for tools that choose or call one (`None`
    /// where there are none, e.g. a tool run on its own).
    pub models: Option<Arc<dyn models::ModelGateway>>,
}

impl ToolContext {
    /// The durable memory, for tools that keep state (`tool` names the tool
    /// in the error where there is none, e.g. a tool run on its own).
    pub fn memory(&self, tool: &str) -> Result<&dyn memory::Memory, ToolError> {
        self.memory.as_deref().ok_or_else(|| {
            ToolError::new(
                ErrorKind::ExecutionError,
                format!(
                    "{tool} keeps its state in the server's database; run it as a pipeline step"
                ),
            )
        })
    }

    /// The server's models, for tools that need them (`tool` names the
    /// tool in the error where there are none).
    pub fn models(&self, tool: &str) -> Result<&dyn models::ModelGateway, ToolError> {
        self.models.as_deref().ok_or_else(|| {
            ToolError::new(
                ErrorKind::ModelUnavailableError,
                format!("{tool} works with the server's models; run it as a pipeline step"),
            )
        })
    }

    /// Writes a line to the step's log, if it has one.
    pub fn log(&self, stream: log::Stream, text: &str) {
        if let Some(sink) = &self.log {
            sink.line(stream, text);
        }
    }
}

/// Why a tool action failed. `kind` is the error type users see
/// (`ValidationError`, `FileNotFoundError`, `PermissionError`, …).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ToolError {
            kind,
            message: message.into(),
        }
    }

    /// Parameters that do not fit the action.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ValidationError, message)
    }
}

/// One action of a tool, with the JSON Schema of its parameters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// A tool.
#[async_trait]
pub trait Tool: Send + Sync + std::fmt::Debug {
    fn id(&self) -> &str;
    fn description(&self) -> &str;
    fn actions(&self) -> Vec<ActionSpec>;
    /// Runs `action`. The engine has already checked that the action exists.
    async fn execute(
        &self,
        action: &str,
        parameters: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError>;

    /// A tool that asks a person (the engine makes its step wait).
    fn human(&self) -> Option<&dyn human::Human> {
        None
    }

    /// An execution ended (succeeded, failed or cancelled) in this
    /// process: what the tool keeps for its tree (whose root it was) can go.
    async fn execution_ended(&self, _execution_id: &str) {}
}

/// The tools a server offers, by id.
#[derive(Debug, Clone)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    http: reqwest::Client,
    /// Model actions (and `llm-generate`) are offered.
    models: bool,
}

impl Default for ToolRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl ToolRegistry {
    pub fn new() -> Self {
        ToolRegistry {
            tools: BTreeMap::new(),
            http: net::default_client(),
            models: false,
        }
    }

    /// The client tools get in their context.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The built-in tools that need no configuration.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        r.register(Arc::new(echo::Echo));
        r.register(Arc::new(filesystem::Filesystem::default()));
        r.register(Arc::new(report::ReportGenerator));
        r.register(Arc::new(validation::Validation));
        r.register(Arc::new(data::DataProcessing));
        r.register(Arc::new(http::HttpTool::default()));
        r.register(Arc::new(http::HttpClient::default()));
        r.register(Arc::new(human::UserPrompt));
        r.register(Arc::new(human::ApprovalGate));
        r.register(Arc::new(human::FeedbackCollection));
        r.register(Arc::new(pipeline_executor::PipelineExecutor));
        r.register(Arc::new(recursion::RecursionControl));
        r.register(Arc::new(mcp_memory::McpMemory));
        r.register(Arc::new(markdown::MarkdownToHtml));
        #[cfg(feature = "mcp")]
        r.register(Arc::new(mcp::McpServer::default()));
        #[cfg(feature = "charts")]
        r.register(Arc::new(charts::Visualization));
        #[cfg(feature = "pdf")]
        r.register(Arc::new(pdf::PdfCompiler));
        #[cfg(feature = "web-pages")]
        {
            r.register(Arc::new(web::HeadlessBrowser::default()));
            r.register(Arc::new(web::WebScraper::default()));
        }
        r
    }

    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.id().to_string(), tool);
    }

    /// Offers model actions and `llm-generate` (the engine runs them), and
    /// the tools that work with the server's models.
    pub fn enable_models(&mut self) {
        self.models = true;
        self.register(Arc::new(images::ImageAnalysis));
        self.register(Arc::new(images::ImageGeneration));
        self.register(Arc::new(routing::TaskDelegation));
        self.register(Arc::new(routing::MultiModelRouting::default()));
        self.register(Arc::new(routing::PromptOptimization));
    }

    pub fn models_enabled(&self) -> bool {
        self.models
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    /// Tells every tool that an execution ended.
    pub async fn execution_ended(&self, execution_id: &str) {
        for tool in self.tools.values() {
            tool.execution_ended(execution_id).await;
        }
    }

    /// Every tool with its description and actions, `llm-generate` included
    /// when model actions are offered; sorted by id.
    pub fn describe(&self) -> Vec<(String, String, Vec<ActionSpec>)> {
        let mut out: Vec<(String, String, Vec<ActionSpec>)> = self
            .tools
            .values()
            .map(|t| (t.id().to_string(), t.description().to_string(), t.actions()))
            .collect();
        if self.models {
            out.push((
                orchestrator_core::catalog::LLM_TOOL.to_string(),
                "Text generation on a registered model (the model actions)".to_string(),
                models::action_specs(),
            ));
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }
}

impl orchestrator_core::ToolCatalog for ToolRegistry {
    fn actions(&self, tool: &str) -> Option<Vec<String>> {
        if self.models && tool == orchestrator_core::catalog::LLM_TOOL {
            return Some(
                orchestrator_core::catalog::MODEL_ACTIONS
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            );
        }
        self.tools
            .get(tool)
            .map(|t| t.actions().into_iter().map(|a| a.name).collect())
    }

    fn tool_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.tools.keys().cloned().collect();
        if self.models {
            ids.push(orchestrator_core::catalog::LLM_TOOL.to_string());
            ids.sort();
        }
        ids
    }

    fn unavailable(&self, tool: &str) -> Option<String> {
        if self.tools.contains_key(tool)
            || (self.models && tool == orchestrator_core::catalog::LLM_TOOL)
            || orchestrator_core::builtin_catalog().actions(tool).is_none()
        {
            return None;
        }
        Some(match tool {
            "terminal" => "is disabled on this server (enable it with tools.enable_terminal or ORCHESTRATOR_ENABLE_TERMINAL=true)".to_string(),
            "python-executor" => "is disabled on this server (enable it with tools.enable_python or ORCHESTRATOR_ENABLE_PYTHON=true)".to_string(),
            "web-search" => "needs a search backend, and none is configured on this server (tools.web_search.backends, or SEARXNG_URL, BRAVE_API_KEY or TAVILY_API_KEY)".to_string(),
            orchestrator_core::catalog::LLM_TOOL
            | "image-analysis"
            | "image-generation"
            | "task-delegation"
            | "multi-model-routing"
            | "prompt-optimization" => "needs a model provider, and none is configured on this server".to_string(),
            "headless-browser" | "web-scraper" => "is not in this build of the server (built without the `web-pages` feature)".to_string(),
            "mcp-server" => "is not in this build of the server (built without the `mcp` feature)".to_string(),
            "visualization" => "is not in this build of the server (built without the `charts` feature)".to_string(),
            "pdf-compiler" => "is not in this build of the server (built without the `pdf` feature)".to_string(),
            _ => "is not available on this server yet".to_string(),
        })
    }
}

/// Reads a required string parameter.
pub fn required_str<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, ToolError> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ToolError::invalid(format!(
            "parameter '{name}' must be a string, got {}",
            type_name(other)
        ))),
        None => Err(ToolError::invalid(format!("missing parameter '{name}'"))),
    }
}

/// Reads an optional whole-number parameter within `range`.
pub fn optional_count(
    params: &Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ToolError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                ToolError::invalid(if *range.end() == u64::MAX {
                    format!(
                        "parameter '{name}' must be a whole number of at least {}",
                        range.start()
                    )
                } else {
                    format!(
                        "parameter '{name}' must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    )
                })
            }),
    }
}

/// Reads an optional string parameter.
pub fn optional_str<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ToolError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ToolError::invalid(format!(
            "parameter '{name}' must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// Reads an optional boolean parameter.
pub fn optional_bool(params: &Map<String, Value>, name: &str) -> Result<Option<bool>, ToolError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ToolError::invalid(format!(
            "parameter '{name}' must be true or false, got {}",
            type_name(other)
        ))),
    }
}

/// A value as text: strings as they are, everything else as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The JSON Schema of an object with `shared` properties (those every action
/// of a tool takes) and `own` ones.
pub fn object_schema(required: &[&str], shared: Value, own: Value) -> Value {
    let mut properties = shared;
    if let (Some(p), Value::Object(more)) = (properties.as_object_mut(), own) {
        p.extend(more);
    }
    json!({"type": "object", "required": required, "properties": properties})
}

/// Builds an action spec from a JSON Schema literal.
pub fn action(name: &str, description: &str, parameters: Value) -> ActionSpec {
    ActionSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    }
}
