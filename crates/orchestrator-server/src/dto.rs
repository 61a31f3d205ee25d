//! What the API sends and receives.

use std::collections::BTreeMap;

use orchestrator_core::flow::StepStatus;
use orchestrator_store::{CheckpointRecord, ExecutionRecord, StepSummary};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ProblemItem;

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

/// Step counts by status.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Progress {
    pub total: usize,
    pub pending: usize,
    pub ready: usize,
    pub running: usize,
    pub retrying: usize,
    /// Waiting for a person's answer.
    pub waiting: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    /// Finished steps (succeeded, failed, skipped, cancelled) in percent.
    pub percent: f64,
}

/// One step of an execution.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub id: String,
    #[schema(example = "succeeded")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub action: String,
    pub depends_on: Vec<String>,
    pub attempt: i64,
    pub max_attempts: i64,
    /// The rendered parameters of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Box<RawValue>>,
    /// `{result, success, error}` once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    pub timed_out: bool,
    /// Why a step was skipped or cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Model calls of a model step (every attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
    /// What a `waiting` step asks, and how to answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitView>,
}

/// A step's question to a person (`user-prompt`, `approval-gate`,
/// `feedback-collection`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitView {
    pub execution_id: String,
    pub step_id: String,
    /// The tool asking.
    #[schema(example = "approval-gate")]
    pub kind: String,
    /// What is asked; `request.schema` is the JSON Schema of the answer.
    #[schema(value_type = Object)]
    pub request: Value,
    /// When the question was asked.
    pub asked_at: String,
    /// After this the step goes on without an answer (its default, or it fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Where to `POST` the answer.
    #[schema(example = "/executions/0199a1f0-0000-7000-8000-000000000000/steps/approve/answer")]
    pub answer_url: String,
    /// The answer as recorded, once given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub answer: Option<Value>,
    /// The name of the token that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

impl From<&orchestrator_store::WaitRecord> for WaitView {
    fn from(w: &orchestrator_store::WaitRecord) -> Self {
        WaitView {
            execution_id: w.execution_id.clone(),
            step_id: w.step_id.clone(),
            kind: w.kind.clone(),
            request: w.request.clone(),
            asked_at: time(w.created_at),
            deadline: w.deadline.map(time),
            answer_url: format!("/executions/{}/steps/{}/answer", w.execution_id, w.step_id),
            answer: w.answer.clone(),
            answered_by: w.answered_by.clone(),
            answered_at: w.answered_at.map(time),
        }
    }
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

/// What model calls used.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct UsageView {
    /// The models called, in order of first use.
    pub models: Vec<String>,
    pub calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// US dollars.
    pub cost: f64,
}

impl UsageView {
    fn add(&mut self, u: &orchestrator_store::StepUsage) {
        if !self.models.contains(&u.model_id) {
            self.models.push(u.model_id.clone());
        }
        self.calls += u.calls;
        self.input_tokens += u.input_tokens;
        self.output_tokens += u.output_tokens;
        self.cost += u.cost;
    }
}

/// An execution with its steps.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecutionView {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    /// The execution whose step started this one (`pipeline-executor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    /// That step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<String>,
    /// How deep it nests (0: started by a client).
    #[serde(skip_serializing_if = "is_zero")]
    pub depth: i64,
    /// `resolving` (its `<AUTO>` tags are being answered; no steps yet),
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Object)]
    pub options: Value,
    pub progress: Progress,
    /// Steps that can run in parallel, level by level.
    pub levels: Vec<Vec<String>>,
    pub steps: Vec<StepView>,
    /// Rendered `outputs` once the execution has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Model calls of the whole execution (steps and `<AUTO>` tags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageView>,
    /// What models answered for the pipeline's `<AUTO>` tags when it was
    /// submitted: `{step, pointer, question, answer, model}` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub auto_answers: Vec<Value>,
    /// What the compiler warned about when the pipeline was submitted (keys
    /// it ignores, declarations it read generously), each with its place.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ProblemItem>,
    /// The number of the execution's newest event: stream
    /// `/executions/{id}/events` with `Last-Event-ID` set to it to follow on
    /// from this snapshot.
    pub last_event_seq: i64,
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

impl From<StepSummary> for StepView {
    fn from(s: StepSummary) -> Self {
        StepView {
            action: if s.action.is_empty() {
                match s.kind.as_str() {
                    "while" => "while".to_string(),
                    _ => "for_each".to_string(),
                }
            } else {
                s.action
            },
            id: s.step_id,
            status: s.status.as_str().to_string(),
            tool: s.tool,
            depends_on: s.depends_on,
            attempt: s.attempt,
            max_attempts: s.max_attempts,
            parameters: s.parameters,
            result: s.result,
            error: s.error,
            error_type: s.error_type,
            timed_out: s.timed_out,
            reason: s.reason,
            started_at: s.started_at.map(time),
            finished_at: s.finished_at.map(time),
            duration_ms: match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            usage: None,
            waiting: None,
        }
    }
}

impl ExecutionView {
    pub fn new(mut r: ExecutionRecord, steps: Vec<StepSummary>) -> Self {
        let mut progress = Progress {
            total: steps.len(),
            ..Default::default()
        };
        for s in &steps {
            match s.status {
                StepStatus::Pending => progress.pending += 1,
                StepStatus::Ready => progress.ready += 1,
                StepStatus::Running => progress.running += 1,
                StepStatus::Retrying => progress.retrying += 1,
                StepStatus::Waiting => progress.waiting += 1,
                StepStatus::Succeeded => progress.succeeded += 1,
                StepStatus::Failed => progress.failed += 1,
                StepStatus::Skipped => progress.skipped += 1,
                StepStatus::Cancelled => progress.cancelled += 1,
            }
        }
        let done = progress.succeeded + progress.failed + progress.skipped + progress.cancelled;
        progress.percent = if steps.is_empty() {
            // No steps yet (resolving), or none ever (it ended resolving).
            if r.status.is_terminal() { 100.0 } else { 0.0 }
        } else {
            (done as f64 * 1000.0 / steps.len() as f64).round() / 10.0
        };
        // Only the levels: not a copy and parse of the whole plan, which
        // holds every step's definition.
        let levels = r
            .plan
            .get_mut("levels")
            .and_then(|l| serde_json::from_value::<Vec<Vec<String>>>(l.take()).ok())
            .unwrap_or_default();
        ExecutionView {
            id: r.id,
            pipeline_id: r.pipeline_id,
            pipeline_name: r.pipeline_name,
            parent_execution_id: r.parent_execution_id,
            parent_step_id: r.parent_step_id,
            depth: r.depth,
            status: r.status.as_str().to_string(),
            created_at: time(r.created_at),
            started_at: r.started_at.map(time),
            finished_at: r.finished_at.map(time),
            duration_ms: match (r.started_at, r.finished_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            inputs: r.inputs,
            options: r.options,
            progress,
            levels,
            steps: steps.into_iter().map(StepView::from).collect(),
            outputs: r.outputs,
            error: r.error,
            usage: None,
            last_event_seq: r.last_event_seq,
            auto_answers: match r.plan.get_mut("auto_answers").map(Value::take) {
                Some(Value::Array(answers)) => answers,
                _ => Vec::new(),
            },
            warnings: r
                .plan
                .get_mut("warnings")
                .and_then(|w| {
                    serde_json::from_value::<Vec<orchestrator_core::Diagnostic>>(w.take()).ok()
                })
                .map(|ws| ws.iter().map(ProblemItem::from).collect())
                .unwrap_or_default(),
        }
    }

    /// Adds model usage, per step and in total.
    /// The questions of its waiting steps.
    pub fn with_waits(mut self, waits: &[orchestrator_store::WaitRecord]) -> Self {
        if waits.is_empty() {
            return self;
        }
        let index = self.step_index();
        for w in waits {
            if let Some(&i) = index.get(w.step_id.as_str()) {
                self.steps[i].waiting = Some(WaitView::from(w));
            }
        }
        self
    }

    /// Where each step is in `steps`, by id.
    fn step_index(&self) -> std::collections::HashMap<String, usize> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect()
    }

    pub fn with_usage(mut self, usage: &[orchestrator_store::StepUsage]) -> Self {
        if usage.is_empty() {
            return self;
        }
        let mut total = UsageView::default();
        let index = self.step_index();
        for u in usage {
            total.add(u);
            if let Some(&i) = index.get(u.step_id.as_str()) {
                self.steps[i]
                    .usage
                    .get_or_insert_with(UsageView::default)
                    .add(u);
            }
        }
        self.usage = Some(total);
        self
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
