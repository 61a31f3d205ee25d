//! An execution as `GET /executions/{id}` shows it: its progress, its
//! steps with their results, questions and model usage.

use orchestrator_core::flow::StepStatus;
use orchestrator_store::{ExecutionRecord, StepSummary};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{is_zero, time};
use crate::error::ProblemItem;

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
