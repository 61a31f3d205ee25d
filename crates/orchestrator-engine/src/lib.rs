//! The engine: accepts pipelines and runs their steps.
//!
//! One step, from submit to checkpoint:
//!
//! 1. [`Engine::submit`] (`submit.rs`) compiles the pipeline (AUTO tags
//!    answered by a model first), then stores the execution and every step
//!    of its plan in one transaction; steps without dependencies are queued.
//! 2. The dispatch loop of [`Engine::start`] (`pool.rs`) claims up to as many
//!    ready steps as it has free slots, each with a lease; the heartbeat loop
//!    extends the leases of running steps, and the reaper takes back steps
//!    whose worker died and fails executions past their deadline.
//! 3. `run_step` (`step.rs`) evaluates the step's condition, renders its
//!    parameters against its scope (`scope.rs`: inputs, the results it reads,
//!    loop values) and checks them against the action's schema, runs the tool
//!    (or the model, `models.rs`) under its timeout, and decides on a retry
//!    (`run_after` in the store, not a sleeping task). A loop step expands
//!    into its iterations instead (`expand.rs`).
//! 4. The result goes to the finisher (`finisher.rs`): results that finish
//!    together are written in one transaction — the step row, its checkpoint,
//!    its events, and the dependents it makes ready; one of those may be
//!    handed straight to the slot this step frees. When the execution ends,
//!    its outputs are rendered in the same transaction (`outputs.rs`).
//!
//! Events go out to webhooks (`webhooks.rs`); counters and histograms are in
//! `metrics.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_core::CompileError;
use orchestrator_store::{ExecutionRecord, Store, StoreError};
use orchestrator_tools::ToolRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::info;

mod expand;
mod finisher;
mod human;
mod memory;
pub mod metrics;
pub mod models;
mod outputs;
mod pool;
mod resolve;
pub mod retention;
mod scope;
mod step;
mod step_log;
mod step_tags;
mod submit;
mod subpipeline;
pub mod webhooks;

use finisher::Finisher;
pub use human::AnswerError;
pub use step::is_retryable;

/// How the worker pool of one process behaves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Identifies this process in leases.
    pub worker_id: String,
    /// Steps this process runs at once.
    pub max_concurrent: usize,
    /// How long a claimed step stays leased without a heartbeat.
    pub lease_ms: i64,
    /// How often leases are extended.
    pub heartbeat_ms: u64,
    /// Longest idle wait before looking for work again (other processes may
    /// have queued some).
    pub idle_poll_ms: u64,
    /// The workspace root; executions use it, or `{root}/{id}` when isolated.
    pub workspace_root: PathBuf,
    /// How often a step may lose its worker (lease expired) before it fails.
    pub max_lost: i64,
    /// How often expired leases are looked for.
    pub reap_ms: u64,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl_ms: i64,
    /// How model steps choose and call models.
    pub models: models::ModelSettings,
    /// How webhook deliveries are sent.
    pub webhooks: webhooks::WebhookSettings,
    /// Which finished executions are deleted, and how often that is looked at.
    pub retention: retention::RetentionSettings,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            worker_id: default_worker_id(),
            max_concurrent: 10,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            idle_poll_ms: 500,
            workspace_root: PathBuf::from("workspace"),
            max_lost: 3,
            reap_ms: 5_000,
            idempotency_ttl_ms: 24 * 3600 * 1000,
            models: models::ModelSettings::default(),
            webhooks: webhooks::WebhookSettings::default(),
            retention: retention::RetentionSettings::default(),
        }
    }
}

/// `host-pid-random`: names the process in leases and checkpoints.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "orchestrator".to_string());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

/// Where the pipeline text comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineSource {
    Yaml(String),
    Json(Value),
}

/// Per-execution options (the seed API's `checkpoint_enabled`, `max_retries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionOptions {
    /// Checkpoints are always written; `false` is accepted for compatibility.
    pub checkpoint_enabled: bool,
    /// Total attempts for steps that do not set `max_retries` or `retry`.
    pub max_retries: Option<u32>,
    /// `shared` (default): the workspace root; `isolated`: `{root}/{execution_id}`.
    pub workspace: WorkspaceMode,
    /// Execution-wide timeout in seconds: past it the execution fails and
    /// its running steps are stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// A budget in US dollars: a model step that could spend past it fails
    /// with `BudgetExceeded` instead of calling the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
}

impl Default for ExecutionOptions {
    fn default() -> Self {
        ExecutionOptions {
            checkpoint_enabled: true,
            max_retries: None,
            workspace: WorkspaceMode::Shared,
            timeout_seconds: None,
            max_cost: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    #[default]
    Shared,
    Isolated,
}

/// A request to run a pipeline.
#[derive(Debug, Clone)]
pub struct Submission {
    pub source: PipelineSource,
    pub context: Map<String, Value>,
    pub options: ExecutionOptions,
    pub idempotency_key: Option<String>,
    /// The API token that submits it, if any.
    pub token_id: Option<String>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("pipeline is invalid")]
    Compile(#[from] CompileError),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A compiled JSON Schema for one action's parameters.
type ParameterSchema = Arc<jsonschema::Validator>;

struct Inner {
    store: Arc<dyn Store>,
    tools: Arc<ToolRegistry>,
    config: EngineConfig,
    wake: Notify,
    models: models::Models,
    metrics: Arc<metrics::EngineMetrics>,
    /// Lease token → cancellation of each running step of this process.
    running: Mutex<HashMap<String, (String, CancellationToken)>>,
    /// Compiled parameter schemas by (tool, action); `None`: nothing to check.
    schemas: Mutex<HashMap<(String, String), Option<ParameterSchema>>>,
    /// Executions finished by this process.
    finished: tokio::sync::broadcast::Sender<(String, orchestrator_core::flow::ExecutionStatus)>,
    /// Ids of executions that have new events, as this process writes them.
    events: tokio::sync::broadcast::Sender<String>,
    /// New events may have webhook deliveries to send.
    webhook_wake: Notify,
    /// Step results waiting to be written together.
    finisher: Finisher,
    /// Worker slots: one is held while a step runs (not while its result
    /// is written, so short steps need few slots).
    slots: Arc<tokio::sync::Semaphore>,
    /// Bounds the results waiting to be written (a step holds its slot
    /// until it gets one of these).
    finishing: Arc<tokio::sync::Semaphore>,
    /// The worker pool runs and takes new steps (not stopping).
    taking: std::sync::atomic::AtomicBool,
    /// Steps this process leased as it submitted their executions, each
    /// with its slot, for the dispatch loop to run. Pushed only while
    /// `taking` (checked under this lock, which the loop holds as it stops).
    taken: Mutex<
        Vec<(
            orchestrator_store::ClaimedStep,
            tokio::sync::OwnedSemaphorePermit,
        )>,
    >,
    /// Executions in the resolving phase may be waiting.
    resolve_wake: Notify,
    /// Execution id → cancellation of each execution this process resolves.
    resolving: Mutex<HashMap<String, CancellationToken>>,
}

impl Inner {
    /// A finishing step may take on a step it makes ready while the pool
    /// runs (not while it drains for shutdown).
    fn handoff(&self) -> Option<orchestrator_store::Handoff> {
        self.taking
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(orchestrator_store::Handoff {
                lease_ms: self.config.lease_ms,
            })
    }

    /// Tools let go of what they keep for an execution that ended.
    fn ended(self: &Arc<Self>, execution_id: &str) {
        let inner = Arc::clone(self);
        let id = execution_id.to_string();
        tokio::spawn(async move { inner.tools.execution_ended(&id).await });
    }

    fn touched(&self, execution_id: &str) {
        // Nobody listening is fine.
        let _ = self.events.send(execution_id.to_string());
        self.webhook_wake.notify_one();
    }
}

/// The engine of one process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, tools: Arc<ToolRegistry>, config: EngineConfig) -> Self {
        let metrics = Arc::new(metrics::EngineMetrics::default());
        let models = models::Models::new(
            Arc::clone(&store),
            tools.http_client().clone(),
            config.models.clone(),
        )
        .with_metrics(Arc::clone(&metrics));
        let slots = config.max_concurrent.max(1);
        Engine {
            inner: Arc::new(Inner {
                store,
                tools,
                config,
                wake: Notify::new(),
                models,
                metrics,
                running: Mutex::new(HashMap::new()),
                schemas: Mutex::new(HashMap::new()),
                finished: tokio::sync::broadcast::channel(1024).0,
                events: tokio::sync::broadcast::channel(4096).0,
                webhook_wake: Notify::new(),
                finisher: Finisher::default(),
                slots: Arc::new(tokio::sync::Semaphore::new(slots)),
                finishing: Arc::new(tokio::sync::Semaphore::new(
                    (slots * 4).max(2 * finisher::MAX_FINISH_BATCH),
                )),
                taking: std::sync::atomic::AtomicBool::new(false),
                taken: Mutex::new(Vec::new()),
                resolve_wake: Notify::new(),
                resolving: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn tools(&self) -> &Arc<ToolRegistry> {
        &self.inner.tools
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The model registry and model calls.
    pub fn models(&self) -> &models::Models {
        &self.inner.models
    }

    /// What this process's engine has counted.
    pub fn metrics(&self) -> &metrics::EngineMetrics {
        &self.inner.metrics
    }

    /// Waits until an execution is finished (polling the store), up to `timeout`.
    /// Cancels an execution: steps not started are cancelled in the store,
    /// steps running in this process are told to stop. Idempotent.
    pub async fn cancel(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let record = self.inner.store.cancel_execution(id).await?;
        if record.is_some() {
            self.inner.touched(id);
            for (execution, token) in lock(&self.inner.running).values() {
                if execution == id {
                    token.cancel();
                }
            }
            if let Some(token) = lock(&self.inner.resolving).get(id) {
                token.cancel();
            }
            info!(execution.id = %id, "execution {id} cancelled");
            self.inner.ended(id);
            self.cancel_children(id).await?;
        }
        Ok(record)
    }

    /// Cancels the unfinished executions that steps of `id` started, and
    /// theirs (each in its own transaction: a child is locked before its
    /// parent everywhere, never after).
    pub(crate) async fn cancel_children(&self, id: &str) -> Result<(), StoreError> {
        let mut pending = vec![id.to_string()];
        while let Some(parent) = pending.pop() {
            let children = self
                .inner
                .store
                .list_executions(&orchestrator_store::ExecutionFilter {
                    parent: Some(parent),
                    limit: 1000,
                    ..Default::default()
                })
                .await?;
            for child in children.into_iter().filter(|c| !c.status.is_terminal()) {
                if self
                    .inner
                    .store
                    .cancel_execution(&child.id)
                    .await?
                    .is_some()
                {
                    self.inner.touched(&child.id);
                    for (execution, token) in lock(&self.inner.running).values() {
                        if *execution == child.id {
                            token.cancel();
                        }
                    }
                    info!(execution.id = %child.id, "execution {} cancelled with its parent", child.id);
                }
                pending.push(child.id);
            }
        }
        Ok(())
    }

    /// Runs a finished execution again from its checkpoints (see
    /// [`Store::recover_execution`]); returns the steps that will run again.
    pub async fn recover(
        &self,
        id: &str,
        from: Option<&str>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let reset = self.inner.store.recover_execution(id, from).await?;
        if let Some(steps) = &reset {
            self.inner.touched(id);
            info!(execution.id = %id, steps = steps.len(), "execution {id} recovering");
            self.inner.wake.notify_one();
            self.inner.resolve_wake.notify_one();
        }
        Ok(reset)
    }

    /// Ids of executions with new events written by this process. Events
    /// written by other processes are only seen in the store.
    pub fn subscribe_events(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.events.subscribe()
    }

    /// Executions that workers of this process finish, as they finish.
    pub fn subscribe_finished(
        &self,
    ) -> tokio::sync::broadcast::Receiver<(String, orchestrator_core::flow::ExecutionStatus)> {
        self.inner.finished.subscribe()
    }

    /// Waits until an execution is finished, up to `timeout`: woken at once
    /// when this process finishes it, else by polling the store (another
    /// process may be running it).
    pub async fn wait_finished(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        use tokio::sync::broadcast::error::RecvError;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut finished = self.subscribe_finished();
        loop {
            let record = self.inner.store.get_execution(id).await?;
            match &record {
                Some(r) if r.status.is_terminal() => return Ok(record),
                None => return Ok(None),
                _ => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(record);
            }
            let poll = (deadline - now).min(Duration::from_millis(200));
            let _ = tokio::time::timeout(poll, async {
                loop {
                    match finished.recv().await {
                        Ok((done, _)) if done == id => return,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
