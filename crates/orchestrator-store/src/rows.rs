//! The rows the store reads, and how they become the records it returns.

use orchestrator_core::flow::{ExecutionStatus, FlowStep, StepStatus};
use orchestrator_core::model::OnFailure;
use orchestrator_core::plan::PlannedStep;
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::types::Json;

use crate::{
    CheckpointRecord, ExecutionRecord, Result, StepRecord, StepSummary, StoreError, TokenRecord,
};

#[derive(sqlx::FromRow)]
pub(crate) struct ExecutionRow {
    id: String,
    pipeline_id: String,
    pipeline_name: String,
    status: String,
    /// Absent from listings (empty there).
    #[sqlx(default)]
    source: String,
    /// Absent from listings (null there).
    #[sqlx(default)]
    plan: Json<Value>,
    inputs: Json<Value>,
    options: Json<Value>,
    outputs: Option<Json<Value>>,
    error: Option<String>,
    idempotency_key: Option<String>,
    request_hash: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    last_event_seq: i64,
    #[sqlx(default)]
    parent_execution_id: Option<String>,
    #[sqlx(default)]
    parent_step_id: Option<String>,
    #[sqlx(default)]
    root_execution_id: Option<String>,
    #[sqlx(default)]
    depth: i64,
}

impl TryFrom<ExecutionRow> for ExecutionRecord {
    type Error = StoreError;
    fn try_from(r: ExecutionRow) -> Result<Self> {
        Ok(ExecutionRecord {
            status: ExecutionStatus::parse(&r.status)
                .ok_or_else(|| StoreError::Corrupt(format!("execution status '{}'", r.status)))?,
            id: r.id,
            pipeline_id: r.pipeline_id,
            pipeline_name: r.pipeline_name,
            source: r.source,
            plan: r.plan.0,
            inputs: r.inputs.0,
            options: r.options.0,
            outputs: r.outputs.map(|j| j.0),
            error: r.error,
            idempotency_key: r.idempotency_key,
            request_hash: r.request_hash,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            last_event_seq: r.last_event_seq,
            parent_execution_id: r.parent_execution_id,
            parent_step_id: r.parent_step_id,
            root_execution_id: r.root_execution_id,
            depth: r.depth,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StepRow {
    execution_id: String,
    step_id: String,
    position: i64,
    status: String,
    attempt: i64,
    max_attempts: i64,
    depends_on: Json<Vec<String>>,
    definition: Json<PlannedStep>,
    parameters: Option<Json<Value>>,
    result: Option<Json<Value>>,
    error: Option<String>,
    error_type: Option<String>,
    reason: Option<String>,
    timed_out: bool,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl TryFrom<StepRow> for StepRecord {
    type Error = StoreError;
    fn try_from(r: StepRow) -> Result<Self> {
        Ok(StepRecord {
            status: parse_step_status(&r.status)?,
            execution_id: r.execution_id,
            step_id: r.step_id,
            position: r.position,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            depends_on: r.depends_on.0,
            definition: r.definition.0,
            parameters: r.parameters.map(|j| j.0),
            result: r.result.map(|j| j.0),
            error: r.error,
            error_type: r.error_type,
            reason: r.reason,
            timed_out: r.timed_out,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct FlowRow {
    step_id: String,
    status: String,
    depends_on: Json<Vec<String>>,
    on_failure: Json<OnFailure>,
    scope: String,
    ord: i64,
}

impl TryFrom<FlowRow> for FlowStep {
    type Error = StoreError;
    fn try_from(r: FlowRow) -> Result<Self> {
        Ok(FlowStep {
            status: parse_step_status(&r.status)?,
            id: r.step_id,
            depends_on: r.depends_on.0,
            on_failure: r.on_failure.0,
            scope: r.scope,
            order: u32::try_from(r.ord).unwrap_or(u32::MAX),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CheckpointRow {
    id: i64,
    execution_id: String,
    step_id: String,
    attempt: i64,
    status: String,
    parameters: Option<Json<Value>>,
    result: Option<Json<Value>>,
    error: Option<String>,
    error_type: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    created_at: i64,
    worker: Option<String>,
}

impl TryFrom<CheckpointRow> for CheckpointRecord {
    type Error = StoreError;
    fn try_from(r: CheckpointRow) -> Result<Self> {
        Ok(CheckpointRecord {
            status: parse_step_status(&r.status)?,
            id: r.id,
            execution_id: r.execution_id,
            step_id: r.step_id,
            attempt: r.attempt,
            parameters: r.parameters.map(|j| j.0),
            result: r.result.map(|j| j.0),
            error: r.error,
            error_type: r.error_type,
            started_at: r.started_at,
            finished_at: r.finished_at,
            created_at: r.created_at,
            worker: r.worker,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ContextRow {
    pub status: String,
    pub pipeline_id: String,
    pub inputs: Json<Value>,
    pub options: Json<Value>,
    pub created_at: i64,
    pub started_at: Option<i64>,
}

/// An execution's row as a batch of its steps closes (`CLOSE_STEPS`): the
/// counts the batch needs, and the context for steps it hands off (its
/// documents parsed only then).
#[derive(sqlx::FromRow)]
pub(crate) struct CloseRow {
    pub status: String,
    pub open_steps: i64,
    pub last_event_seq: i64,
    pipeline_id: String,
    inputs: Json<Box<RawValue>>,
    options: Json<Box<RawValue>>,
    created_at: i64,
    started_at: Option<i64>,
}

impl CloseRow {
    /// The context of a step handed to a worker as this batch finished.
    pub(crate) fn context(&self) -> Result<crate::StepContext> {
        let document = |raw: &RawValue| {
            serde_json::from_str::<Value>(raw.get())
                .map_err(|e| StoreError::Corrupt(format!("execution document: {e}")))
        };
        Ok(crate::StepContext {
            status: ExecutionStatus::parse(&self.status).ok_or_else(|| {
                StoreError::Corrupt(format!("execution status '{}'", self.status))
            })?,
            pipeline_id: self.pipeline_id.clone(),
            inputs: document(&self.inputs.0)?,
            options: document(&self.options.0)?,
            created_at: self.created_at,
            started_at: self.started_at,
            results: Vec::new(),
        })
    }
}

/// A step as its view shows it (see [`crate::StepSummary`]): one element
/// of the JSON array the database builds (`SELECT_STEP_SUMMARIES`), in
/// column order.
#[derive(serde::Deserialize)]
pub(crate) struct StepSummaryRow(
    String,
    String,
    Option<String>,
    String,
    String,
    Vec<String>,
    i64,
    i64,
    Option<Box<RawValue>>,
    Option<Box<RawValue>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Flag,
    Option<i64>,
    Option<i64>,
);

/// A boolean as JSON gives it: `true`/`false` (PostgreSQL) or 1/0 (SQLite).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl TryFrom<StepSummaryRow> for StepSummary {
    type Error = StoreError;
    fn try_from(r: StepSummaryRow) -> Result<Self> {
        Ok(StepSummary {
            status: parse_step_status(&r.1)?,
            step_id: r.0,
            tool: r.2,
            action: r.3,
            kind: r.4,
            depends_on: r.5,
            attempt: r.6,
            max_attempts: r.7,
            parameters: r.8,
            result: r.9,
            error: r.10,
            error_type: r.11,
            reason: r.12,
            timed_out: match r.13 {
                Flag::Bool(b) => b,
                Flag::Int(i) => i != 0,
            },
            started_at: r.14,
            finished_at: r.15,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ResultRow {
    pub step_id: String,
    pub status: String,
    pub result: Option<Json<Value>>,
}

/// A claimed queue row joined with its step.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    pub execution_id: String,
    pub step_id: String,
    pub lease_token: String,
    pub lost: i64,
    pub run_after: i64,
}

pub(crate) fn parse_step_status(s: &str) -> Result<StepStatus> {
    StepStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("step status '{s}'")))
}

/// A webhook delivery as listed.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: i64,
    webhook_id: String,
    execution_id: String,
    event_seq: i64,
    kind: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    log: Json<Value>,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl From<DeliveryRow> for crate::DeliveryRecord {
    fn from(r: DeliveryRow) -> Self {
        crate::DeliveryRecord {
            id: r.id,
            webhook_id: r.webhook_id,
            execution_id: r.execution_id,
            event_seq: r.event_seq,
            kind: r.kind,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            log: r.log.0,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

/// An API token.
#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    id: String,
    name: String,
    scope: String,
    hash: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<TokenRow> for TokenRecord {
    fn from(r: TokenRow) -> Self {
        TokenRecord {
            id: r.id,
            name: r.name,
            scope: r.scope,
            hash: r.hash,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A model's call totals.
#[derive(sqlx::FromRow)]
pub(crate) struct ModelTotalsRow {
    pub model_id: String,
    pub calls: i64,
    pub successes: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost: f64,
    pub reward_sum: f64,
}

/// One step's use of one model in an execution.
#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    step_id: String,
    model_id: String,
    calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost: f64,
}

impl From<UsageRow> for crate::StepUsage {
    fn from(r: UsageRow) -> Self {
        crate::StepUsage {
            step_id: r.step_id,
            model_id: r.model_id,
            calls: r.calls,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cost: r.cost,
        }
    }
}

/// An event of an execution.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    kind: String,
    step_id: Option<String>,
    data: Json<Value>,
    created_at: i64,
}

impl From<EventRow> for crate::EventRecord {
    fn from(r: EventRow) -> Self {
        crate::EventRecord {
            seq: r.seq,
            kind: r.kind,
            step_id: r.step_id,
            data: r.data.0,
            created_at: r.created_at,
        }
    }
}

/// A registered webhook.
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    id: String,
    url: String,
    events: Json<Vec<String>>,
    secret: String,
    created_at: i64,
}

impl From<WebhookRow> for crate::WebhookRecord {
    fn from(r: WebhookRow) -> Self {
        crate::WebhookRecord {
            id: r.id,
            url: r.url,
            events: r.events.0,
            secret: r.secret,
            created_at: r.created_at,
        }
    }
}

/// A registered model.
#[derive(sqlx::FromRow)]
pub(crate) struct ModelRow {
    id: String,
    spec: Json<Value>,
    source: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ModelRow> for crate::ModelRecord {
    fn from(r: ModelRow) -> Self {
        crate::ModelRecord {
            id: r.id,
            spec: r.spec.0,
            source: r.source,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A waiting step's question and answer.
#[derive(sqlx::FromRow)]
pub(crate) struct WaitRow {
    pub execution_id: String,
    pub step_id: String,
    pub kind: String,
    pub request: Json<Value>,
    pub deadline: Option<i64>,
    pub created_at: i64,
    pub answer: Option<Json<Value>>,
    pub answered_by: Option<String>,
    pub answered_at: Option<i64>,
    pub expired: bool,
}

impl From<WaitRow> for crate::waits::WaitRecord {
    fn from(r: WaitRow) -> Self {
        crate::waits::WaitRecord {
            execution_id: r.execution_id,
            step_id: r.step_id,
            kind: r.kind,
            request: r.request.0,
            deadline: r.deadline,
            created_at: r.created_at,
            answer: r.answer.map(|a| a.0),
            answered_by: r.answered_by,
            answered_at: r.answered_at,
            expired: r.expired,
        }
    }
}
