//! The records the store takes and gives: executions, steps, checkpoints,
//! claims, results and the context a step runs with.

use orchestrator_core::flow::{ExecutionStatus, StepStatus};
use orchestrator_core::plan::PlannedStep;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A new execution to insert.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub source: String,
    pub plan: Value,
    pub inputs: Value,
    pub options: Value,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    /// The API token that submitted it, if any.
    pub token_id: Option<String>,
    pub steps: Vec<NewStep>,
    /// Execution-wide timeout: past it the execution fails and its steps stop.
    pub timeout_ms: Option<i64>,
    /// Its `<AUTO>` tags are still to be answered: stored as `resolving`,
    /// without steps, in the resolve queue (see [`Store::claim_resolving`]).
    pub resolving: bool,
    /// Started by a step of another execution (`pipeline-executor`).
    pub parent: Option<ParentLink>,
}

/// The execution and step that start a child execution.
#[derive(Debug, Clone)]
pub struct ParentLink {
    pub execution_id: String,
    pub step_id: String,
    /// The root of the tree (the parent's root, or the parent).
    pub root_execution_id: String,
    /// The child's depth (the parent's plus one).
    pub depth: i64,
    /// Its first steps run no earlier than this (Unix ms): a retried child
    /// after its backoff.
    pub start_after: Option<i64>,
    /// The parent's step waits for the child: made `waiting` in the
    /// transaction that creates the child (fenced by its lease).
    pub wait: Option<ChildWait>,
}

/// How the parent's step waits for its child.
#[derive(Debug, Clone)]
pub struct ChildWait {
    pub lease_token: String,
    /// What the step shows while it waits (the child's id among it).
    pub request: Value,
    /// The step's rendered parameters.
    pub parameters: Option<Value>,
}

/// An execution in the resolving phase, leased to one process.
#[derive(Debug, Clone)]
pub struct ResolveJob {
    pub execution: ExecutionRecord,
    pub lease_token: String,
    /// How often it was leased (1 the first time): more than once means
    /// the processes before lost it.
    pub attempts: i64,
}

/// How the resolving phase ended.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The answered pipeline, compiled: its steps are stored and queued.
    Planned {
        pipeline_id: String,
        pipeline_name: String,
        plan: Value,
        inputs: Value,
        steps: Vec<NewStep>,
    },
    /// A tag could not be answered (or the answered pipeline is invalid).
    Failed(String),
}

/// A step row of a new execution.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub planned: PlannedStep,
    pub max_attempts: u32,
}

/// An execution as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub status: ExecutionStatus,
    pub source: String,
    pub plan: Value,
    pub inputs: Value,
    pub options: Value,
    pub outputs: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// The number of its newest event (0 before any).
    pub last_event_seq: i64,
    /// The execution and step that started it (`pipeline-executor`).
    #[serde(default)]
    pub parent_execution_id: Option<String>,
    #[serde(default)]
    pub parent_step_id: Option<String>,
    /// The execution at the top of its tree (`None` for a root).
    #[serde(default)]
    pub root_execution_id: Option<String>,
    /// How deep in a tree of executions (0: started by a client).
    #[serde(default)]
    pub depth: i64,
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub execution_id: String,
    pub step_id: String,
    pub position: i64,
    pub status: StepStatus,
    pub attempt: i64,
    pub max_attempts: i64,
    pub depends_on: Vec<String>,
    pub definition: PlannedStep,
    pub parameters: Option<Value>,
    /// The envelope `{result, success, error}` once finished.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub reason: Option<String>,
    pub timed_out: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A step as its execution's view shows it: no definition (its tool,
/// action and kind are read out of it by the database), parameters and
/// result as the JSON text stored, not parsed.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub step_id: String,
    pub status: StepStatus,
    pub tool: Option<String>,
    /// The resolved action; empty for loops.
    pub action: String,
    /// `task`, `for_each`, `while` or `join` (the planned step's kind).
    pub kind: String,
    pub depends_on: Vec<String>,
    pub attempt: i64,
    pub max_attempts: i64,
    pub parameters: Option<Box<serde_json::value::RawValue>>,
    /// The envelope `{result, success, error}` once finished.
    pub result: Option<Box<serde_json::value::RawValue>>,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub reason: Option<String>,
    pub timed_out: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A recorded attempt of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub id: i64,
    pub execution_id: String,
    pub step_id: String,
    pub attempt: i64,
    pub status: StepStatus,
    pub parameters: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub created_at: i64,
    /// The worker that recorded this attempt.
    pub worker: Option<String>,
}

/// A step handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedStep {
    pub execution_id: String,
    pub step_id: String,
    pub lease_token: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub definition: PlannedStep,
    /// How often this step's worker was lost before (its lease expired).
    pub lost: i64,
    /// The worker that holds the lease.
    pub worker: String,
    /// When the step became runnable (Unix ms), and when it was claimed.
    pub ready_at: i64,
    pub claimed_at: i64,
    /// Its execution's context as the claim read it (no results; shared by
    /// the steps of one execution claimed together). `None` for a step
    /// handed to a worker as another finished: read it with
    /// [`Store::step_context`].
    pub context: Option<std::sync::Arc<StepContext>>,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// Tokens whose leases were extended (the others were lost).
    pub held: Vec<String>,
    /// Held tokens whose execution was cancelled: stop that work.
    pub cancelled: Vec<String>,
}

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub status: StepStatus,
    pub parameters: Option<Value>,
    /// The envelope `{result, success, error}`.
    pub envelope: Option<Value>,
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub reason: Option<String>,
    pub timed_out: bool,
    /// A jump to take (`on_success`, `on_false`), already resolved to this scope's id.
    pub jump_to: Option<String>,
    /// What this failure does to the flow, when an `on_error` handler
    /// decided it (instead of the step's `on_failure`).
    pub on_failure: Option<orchestrator_core::OnFailure>,
    pub started_at: i64,
    pub finished_at: i64,
}

/// What finishing a step did to its execution.
#[derive(Debug, Clone)]
pub struct FinishOutcome {
    /// Steps that became ready and were queued (workers should look for work).
    pub ready: Vec<String>,
    /// A step that became ready and was handed to the finishing worker
    /// (see [`Handoff`]): leased to it and started, to run next in the
    /// slot this step frees.
    pub next: Option<ClaimedStep>,
    /// Set when the execution finished with this step.
    pub execution_finished: Option<ExecutionStatus>,
}

/// Asks `finish_step` to hand one step it makes ready straight to the
/// finishing worker instead of queueing it: the next link of a chain runs in
/// the slot the last one freed, with no claim of its own. Declined when
/// other runnable steps wait in the queue (they were ready first), so the
/// queue stays first-come, first-served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// Lease of the handed-off step, as a claim would take it.
    pub lease_ms: i64,
}

/// A submitting worker's free slots: up to `limit` of a new execution's
/// first steps are leased to `worker` in the transaction that creates it
/// (as a claim would lease them), saving the claim's own commit.
#[derive(Debug, Clone)]
pub struct Take {
    pub worker: String,
    pub limit: u32,
    pub lease_ms: i64,
}

/// Renders an execution's outputs when its last step finishes, inside the
/// finishing transaction: gets every step, returns outputs and an error text.
pub type OutputRenderer<'a> =
    &'a (dyn Fn(&ExecutionRecord, &[StepRecord]) -> (Option<Value>, Option<String>) + Sync);

/// The execution data a running step sees.
#[derive(Debug, Clone, PartialEq)]
pub struct StepContext {
    pub status: ExecutionStatus,
    pub pipeline_id: String,
    pub inputs: Value,
    pub options: Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    /// (step id, status, envelope) of the requested steps that exist.
    pub results: Vec<(String, StepStatus, Option<Value>)>,
}

/// Filter and page for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub status: Option<ExecutionStatus>,
    pub pipeline: Option<String>,
    pub limit: u32,
    /// Cursor: return executions strictly older than this (created_at, id).
    pub before: Option<(i64, String)>,
    /// Only the children of this execution ...
    pub parent: Option<String>,
    /// ... started by this step.
    pub parent_step: Option<String>,
}
