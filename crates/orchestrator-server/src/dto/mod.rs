//! What the API sends and receives (an execution's view is in `view.rs`).

use std::collections::BTreeMap;

use orchestrator_store::{CheckpointRecord, ExecutionRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ProblemItem;

mod view;
pub use view::*;

/// A pipeline in a JSON body: YAML text (as most clients send it), or the
/// same structure as a JSON object. Only describes the schema; the field is
/// read as any JSON value and checked by the compiler.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PipelineBody {
    /// The pipeline's YAML text.
    Yaml(String),
    /// The pipeline as a JSON object (`name`, `steps`, …).
    Object(Map<String, Value>),
}

/// `POST /executions` and `POST /pipelines/validate` with a JSON body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "pipeline": "name: hello\nparameters:\n  who: {type: string, default: world}\nsteps:\n  - id: greet\n    tool: echo\n    parameters: {text: 'hello, {{ who }}'}\noutputs:\n  greeting: '{{ greet.text }}'\n",
    "context": {"who": "Ada"}
}))]
pub struct SubmitRequest {
    /// The pipeline: YAML text, or the same structure as a JSON object.
    #[schema(value_type = PipelineBody)]
    pub pipeline: Value,
    /// Inputs for the run (overrides the pipeline's defaults).
    #[serde(default, alias = "inputs")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "options_object")]
    pub options: Option<OptionsDto>,
}

/// `options` as a JSON object (or null): serde would also take a list,
/// read field by field.
fn options_object<'de, D>(d: D) -> Result<Option<OptionsDto>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "options must be an object, got {}",
            match other {
                Value::Array(_) => "a list",
                Value::String(_) => "text",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
    }
}

/// Execution options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsDto {
    /// Checkpoints are always written; accepted for compatibility with the seed API.
    #[serde(default)]
    pub checkpoint_enabled: Option<bool>,
    /// Total attempts for steps that set no `max_retries` of their own.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_retries: Option<u32>,
    /// `shared` (default): the workspace root; `isolated`: a folder of the execution's own.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "shared")]
    pub workspace: Option<String>,
    /// Execution-wide timeout in seconds: past it the execution fails and its
    /// running steps are stopped.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 315_360_000)]
    pub timeout_seconds: Option<u64>,
    /// Budget in US dollars for model calls: a model step that could spend
    /// past it fails with `BudgetExceeded` instead of calling the model.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub max_cost: Option<f64>,
}

/// Query of `GET /executions`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions with this status (`resolving`, `queued`, `running`, `succeeded`, `failed`, `cancelled`).
    #[param(pattern = "^(resolving|queued|running|succeeded|failed|cancelled)$")]
    pub status: Option<String>,
    /// Only executions of this pipeline name; with `*` (any run of
    /// characters), those whose name matches, without regard to case
    /// (`report*`, `*etl*`).
    pub pipeline: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^([0-9]{1,15}\.[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub cursor: Option<String>,
    /// Only the executions started by steps of this one (its children).
    pub parent: Option<String>,
}

/// `POST /executions/{id}/recover`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Run this step (a step id, or a checkpoint id from `/checkpoints`) and
    /// everything downstream of it again. Without it, failed, cancelled and
    /// never-run steps run again and succeeded steps keep their results.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "read_greeting")]
    pub from_checkpoint: Option<Value>,
}

/// What a recovery does.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecoverResult {
    /// The steps that run again.
    pub rerun: Vec<String>,
    pub execution: ExecutionView,
}

/// A page of executions, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionPage {
    pub items: Vec<ExecutionSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An execution in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionSummary {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    /// `resolving`, `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(example = "running")]
    pub status: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The execution whose step started this one (`pipeline-executor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    /// That step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
}

/// Query of `GET /waiting`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitingQuery {
    /// At most this many (1–1000, default 100).
    pub limit: Option<u32>,
}

/// Open questions, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitPage {
    pub items: Vec<WaitView>,
}

/// A recorded attempt of a step: a recovery point.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointView {
    pub id: i64,
    pub step_id: String,
    pub attempt: i64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub created_at: String,
    /// The worker (process) that recorded this attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// The checkpoints of an execution, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointList {
    pub execution_id: String,
    pub items: Vec<CheckpointView>,
}

/// The result of compiling a pipeline: its levels when it compiles; with
/// `Prefer: handling=lenient`, `valid: false` and every error when not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationResult {
    pub valid: bool,
    pub pipeline_id: String,
    pub name: String,
    pub steps: usize,
    pub levels: Vec<Vec<String>>,
    /// Every compile error (only when `valid` is false).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
    pub warnings: Vec<ProblemItem>,
}

/// A tool and its actions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolView {
    pub id: String,
    pub description: String,
    pub actions: Vec<ActionView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    pub name: String,
    pub description: String,
    /// JSON Schema of the parameters.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolList {
    pub items: Vec<ToolView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    #[schema(example = "sqlite")]
    pub database: String,
}

pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<&ExecutionRecord> for ExecutionSummary {
    fn from(r: &ExecutionRecord) -> Self {
        ExecutionSummary {
            id: r.id.clone(),
            pipeline_id: r.pipeline_id.clone(),
            pipeline_name: r.pipeline_name.clone(),
            status: r.status.as_str().to_string(),
            created_at: time(r.created_at),
            started_at: r.started_at.map(time),
            finished_at: r.finished_at.map(time),
            error: r.error.clone(),
            parent_execution_id: r.parent_execution_id.clone(),
            parent_step_id: r.parent_step_id.clone(),
        }
    }
}

impl From<&CheckpointRecord> for CheckpointView {
    fn from(c: &CheckpointRecord) -> Self {
        CheckpointView {
            id: c.id,
            step_id: c.step_id.clone(),
            attempt: c.attempt,
            status: c.status.as_str().to_string(),
            parameters: c.parameters.clone(),
            result: c.result.clone(),
            error: c.error.clone(),
            error_type: c.error_type.clone(),
            started_at: c.started_at.map(time),
            finished_at: c.finished_at.map(time),
            created_at: time(c.created_at),
            worker: c.worker.clone(),
        }
    }
}

/// Query parameters of a raw YAML submission become inputs; values are read
/// as YAML scalars (`n=3` is a number, `flag=true` a boolean).
pub fn inputs_from_query(query: &BTreeMap<String, String>) -> Map<String, Value> {
    query
        .iter()
        .map(|(k, v)| {
            let value = match orchestrator_core::yaml::parse(v) {
                Ok(node) if !matches!(node.value, orchestrator_core::yaml::NodeValue::Map(_)) => {
                    node.to_json()
                }
                _ => Value::String(v.clone()),
            };
            let value = if v.is_empty() {
                Value::String(String::new())
            } else {
                value
            };
            (k.clone(), value)
        })
        .collect()
}

/// A stored pipeline version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredPipeline {
    pub name: String,
    pub version: i64,
    /// `yaml`, or `json` for a pipeline sent as an object.
    pub format: String,
    pub created_at: String,
    /// The name of the token that stored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The pipeline's own id (`id`, else `name`).
    pub pipeline_id: String,
    pub steps: usize,
    /// The text as stored (not in the answer to `PUT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What the compiler warned about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::error::ProblemItem>,
}

/// Stored pipelines, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PipelineList {
    pub items: Vec<PipelineListItem>,
}

/// A stored pipeline and its newest version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PipelineListItem {
    pub name: String,
    pub latest_version: i64,
    /// When its first version was stored.
    pub created_at: String,
    /// When its newest version was stored.
    pub updated_at: String,
}

/// Query of `GET /pipelines/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version (default: the newest).
    #[param(minimum = 1)]
    pub version: Option<i64>,
}

/// `POST /pipelines/{name}/executions`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPipelineRequest {
    /// Inputs for the run.
    #[serde(default, alias = "inputs")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "options_object")]
    pub options: Option<OptionsDto>,
    /// The version to run (default: the newest).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<i64>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}
