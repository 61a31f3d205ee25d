//! The engine: accepts pipelines and runs their steps.
//!
//! [`Engine::submit`] compiles a pipeline and stores the execution with all its
//! steps. [`Engine::start`] runs the worker pool of this process: it claims up
//! to `max_concurrent` ready steps at a time from the store (a lease each),
//! renders their templates against the inputs and finished steps, runs the
//! tool with its timeout, and records the result — which readies dependents —
//! in one transaction. Retries wait in the store (`run_after`), not in a task.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_core::flow::StepStatus;
use orchestrator_core::model::LoopItems;
use orchestrator_core::plan::{self, PlannedStep, StepKind};
use orchestrator_core::template::{self, Scope, StepEnvelope};
use orchestrator_core::{CompileError, CompileOptions, Compiled, ExecutionPlan, LoopSpec, catalog};
use orchestrator_store::{
    ClaimedStep, ExecutionRecord, NewExecution, NewStep, StepRecord, StepResult, Store, StoreError,
    now_ms,
};
use orchestrator_tools::{ToolContext, ToolError, ToolRegistry};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub mod metrics;
pub mod models;
pub mod webhooks;

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
    /// The worker pool runs and takes new steps (not stopping).
    taking: std::sync::atomic::AtomicBool,
}

/// Group commit of step results. A finished step joins the queue; if no
/// flush is under way, a task takes the queue (up to [`MAX_FINISH_BATCH`] at
/// a time) and writes it in one transaction, again and again until it is
/// empty. Under load, steps that finish while one batch is written go
/// together in the next: one write turn and one commit for many steps. On
/// SQLite that saves write turns; on PostgreSQL, turns on the execution's
/// row (a batch locks it once for all its steps). Batches take rows in
/// (execution, step) order, as heartbeats and claims do, so they cannot
/// deadlock with them.
#[derive(Default)]
struct Finisher {
    waiting: Mutex<Vec<PendingFinish>>,
    flushing: Arc<tokio::sync::Mutex<()>>,
}

struct PendingFinish {
    claimed: ClaimedStep,
    result: StepResult,
    reply: tokio::sync::oneshot::Sender<Result<orchestrator_store::FinishOutcome, StoreError>>,
}

const MAX_FINISH_BATCH: usize = 64;

/// Records a step's final result with those of other steps finishing now.
async fn finish_grouped(
    inner: &Arc<Inner>,
    claimed: ClaimedStep,
    result: StepResult,
) -> Result<orchestrator_store::FinishOutcome, StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    lock(&inner.finisher.waiting).push(PendingFinish {
        claimed,
        result,
        reply,
    });
    if let Ok(guard) = Arc::clone(&inner.finisher.flushing).try_lock_owned() {
        tokio::spawn(flush_finishes(Arc::clone(inner), guard));
    }
    // Otherwise the task flushing now takes this one too: it looks at the
    // queue again after letting go of the lock.
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Corrupt(
            "the step result writer stopped".to_string(),
        ))
    })
}

/// Records a step's final result in a transaction of its own (conflicts
/// tried again).
async fn finish_alone(
    inner: &Inner,
    claimed: &ClaimedStep,
    result: StepResult,
) -> Result<orchestrator_store::FinishOutcome, StoreError> {
    persist(|| {
        inner
            .store
            .finish_step(claimed, result.clone(), &render_outputs, inner.handoff())
    })
    .await
}

async fn flush_finishes(inner: Arc<Inner>, mut guard: tokio::sync::OwnedMutexGuard<()>) {
    loop {
        let mut batch: Vec<PendingFinish> = {
            let mut waiting = lock(&inner.finisher.waiting);
            let n = waiting.len().min(MAX_FINISH_BATCH);
            waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            drop(guard);
            if lock(&inner.finisher.waiting).is_empty() {
                return;
            }
            match Arc::clone(&inner.finisher.flushing).try_lock_owned() {
                Ok(g) => guard = g,
                // Another task flushes now and will see what is waiting.
                Err(_) => return,
            }
            continue;
        }
        // Executions' rows are locked in one order by every writer.
        batch.sort_by(|a, b| {
            (&a.claimed.execution_id, &a.claimed.step_id)
                .cmp(&(&b.claimed.execution_id, &b.claimed.step_id))
        });
        if batch.len() > 1 {
            let items: Vec<(ClaimedStep, StepResult)> = batch
                .iter()
                .map(|p| (p.claimed.clone(), p.result.clone()))
                .collect();
            let handoff = inner.handoff();
            match persist(|| {
                inner
                    .store
                    .finish_steps(items.clone(), &render_outputs, handoff)
            })
            .await
            {
                Ok(results) if results.len() == batch.len() => {
                    for (p, r) in batch.into_iter().zip(results) {
                        let _ = p.reply.send(r);
                    }
                    continue;
                }
                Ok(_) => error!("a batch of step results came back with the wrong length"),
                Err(e) => {
                    debug!(error = ?e, size = batch.len(), "writing a batch of step results failed; writing them one by one")
                }
            }
        }
        // One step, or a batch that failed as a whole: each on its own, so
        // each gets its own answer.
        for p in batch {
            let _ = p
                .reply
                .send(finish_alone(&inner, &p.claimed, p.result).await);
        }
    }
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
                taking: std::sync::atomic::AtomicBool::new(false),
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

    /// Compiles a pipeline against this engine's tools. `context: None` only validates.
    pub fn compile(
        &self,
        source: &PipelineSource,
        context: Option<&Map<String, Value>>,
    ) -> Result<Compiled, CompileError> {
        self.compile_with(source, context, None)
    }

    fn compile_with(
        &self,
        source: &PipelineSource,
        context: Option<&Map<String, Value>>,
        auto_resolver: Option<&dyn orchestrator_core::AutoResolver>,
    ) -> Result<Compiled, CompileError> {
        let options = CompileOptions {
            catalog: self.inner.tools.as_ref(),
            context,
            auto_resolver,
        };
        match source {
            PipelineSource::Yaml(text) => orchestrator_core::compile_yaml(text, options),
            PipelineSource::Json(value) => orchestrator_core::compile_json(value, options),
        }
    }

    /// Compiles and stores a new execution. Returns it and whether it is new
    /// (`false`: an idempotent replay of an earlier submission).
    pub async fn submit(
        &self,
        submission: Submission,
    ) -> Result<(ExecutionRecord, bool), SubmitError> {
        if submission.options.max_retries == Some(0) {
            return Err(SubmitError::InvalidOption(
                "max_retries is the total number of attempts, at least 1".into(),
            ));
        }
        let execution_id = uuid::Uuid::now_v7().to_string();
        let (answers, answered) = self
            .answer_auto_tags(&submission.source, &execution_id)
            .await;
        let compiled = self.compile_with(
            &submission.source,
            Some(&submission.context),
            Some(&answers),
        )?;
        let mut plan = compiled.plan;
        // A model step that names neither a model nor requirements runs on
        // the pipeline's model, when it has one.
        if let Some(model) = plan.pipeline.model.clone() {
            for s in plan.steps.iter_mut() {
                if s.step.is_model_action()
                    && s.step.model.is_none()
                    && s.step.requires_model.is_none()
                {
                    s.step.model = Some(model.clone());
                }
            }
        }
        let source_text = match &submission.source {
            PipelineSource::Yaml(t) => t.clone(),
            PipelineSource::Json(v) => v.to_string(),
        };
        let request_hash = submission.idempotency_key.as_ref().map(|_| {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(source_text.as_bytes());
            h.update(
                Value::Object(submission.context.clone())
                    .to_string()
                    .as_bytes(),
            );
            h.update(
                serde_json::to_string(&submission.options)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hex::encode(h.finalize())
        });
        let steps = plan
            .steps
            .iter()
            .map(|s| NewStep {
                max_attempts: match (s.step.retry_explicit, submission.options.max_retries) {
                    (false, Some(n)) => n,
                    _ => s.step.retry.max_attempts,
                },
                planned: s.clone(),
            })
            .collect();
        let new = NewExecution {
            id: execution_id,
            pipeline_id: plan.pipeline.id.clone(),
            pipeline_name: plan.pipeline.name.clone(),
            source: source_text,
            inputs: Value::Object(plan.inputs.clone()),
            options: serde_json::to_value(&submission.options).unwrap_or_default(),
            idempotency_key: submission.idempotency_key,
            token_id: submission.token_id,
            request_hash,
            steps,
            plan: {
                let mut value =
                    serde_json::to_value(&plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                // What the models answered, kept with the execution: a
                // recovery runs the stored plan and never asks again.
                if !answered.is_empty()
                    && let Some(obj) = value.as_object_mut()
                {
                    obj.insert("auto_answers".into(), Value::Array(answered));
                }
                value
            },
            timeout_ms: submission
                .options
                .timeout_seconds
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let (record, created) = self.inner.store.create_execution(new).await?;
        if created {
            self.inner.touched(&record.id);
            info!(execution.id = %record.id, pipeline = %record.pipeline_name, "execution {} queued", record.id);
            self.inner.wake.notify_one();
        }
        Ok((record, created))
    }

    /// Asks models for the pipeline's `<AUTO>` tags. Failures are kept as
    /// answers too, so the compiler reports them at the tag's line.
    async fn answer_auto_tags(
        &self,
        source: &PipelineSource,
        execution_id: &str,
    ) -> (orchestrator_core::auto::Answers, Vec<Value>) {
        let mut answers = orchestrator_core::auto::Answers::default();
        let mut record = Vec::new();
        let root = match source {
            PipelineSource::Yaml(text) => match orchestrator_core::yaml::parse(text) {
                Ok(node) => node,
                Err(_) => return (answers, record),
            },
            PipelineSource::Json(value) => orchestrator_core::yaml::Node::from_json(value),
        };
        for tag in orchestrator_core::find_auto_tags(&root) {
            if answers.contains(&tag) {
                continue;
            }
            match models::answer_tag(&self.inner.models, &tag, execution_id).await {
                Ok((answer, model)) => {
                    record.push(json!({
                        "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                        "answer": answer, "model": model,
                    }));
                    answers.insert(&tag, Ok(Value::String(answer)));
                }
                Err(e) => answers.insert(&tag, Err(e)),
            }
        }
        (answers, record)
    }

    /// Runs the worker pool until `shutdown` is cancelled, then lets running
    /// steps finish (up to `drain`) before returning.
    pub fn start(
        &self,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.dispatch(shutdown, drain).await })
    }

    async fn dispatch(&self, shutdown: CancellationToken, drain: Duration) {
        let inner = &self.inner;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let heartbeat = tokio::spawn(heartbeat_loop(self.inner.clone(), shutdown.clone()));
        let reaper = tokio::spawn(reap_loop(self.inner.clone(), shutdown.clone()));
        let deliveries = tokio::spawn(webhooks::deliver_loop(self.inner.clone(), shutdown.clone()));
        let waker = self.inner.clone();
        let on_work: Arc<dyn Fn() + Send + Sync> = Arc::new(move || waker.wake.notify_one());
        match inner.store.listen_for_work(on_work, shutdown.clone()).await {
            Ok(true) => debug!("listening for work from other processes"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = ?e, "cannot listen for work from other processes; polling instead")
            }
        }
        info!(worker = %inner.config.worker_id, slots = inner.config.max_concurrent, "worker pool started");
        inner.metrics.slots.store(
            i64::try_from(inner.config.max_concurrent).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut failures = 0u32;
        inner
            .taking
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Claim in batches: while most slots are busy, let a few more free
            // up (briefly) so one claim serves several slots.
            let batch = (inner.config.max_concurrent / 4).max(1);
            if !tasks.is_empty()
                && inner.config.max_concurrent - tasks.len().min(inner.config.max_concurrent)
                    < batch
            {
                let until = tokio::time::Instant::now() + Duration::from_millis(2);
                while inner.config.max_concurrent.saturating_sub(tasks.len()) < batch {
                    match tokio::time::timeout_at(until, tasks.join_next()).await {
                        Ok(Some(_)) => {}
                        _ => break,
                    }
                }
            }
            let free = inner.config.max_concurrent.saturating_sub(tasks.len());
            let mut claimed_count = 0usize;
            if free > 0 {
                match inner
                    .store
                    .claim_steps(&inner.config.worker_id, free as u32, inner.config.lease_ms)
                    .await
                {
                    Ok(claimed) => {
                        failures = 0;
                        claimed_count = claimed.len();
                        for step in claimed {
                            inner.touched(&step.execution_id);
                            let inner = inner.clone();
                            inner
                                .metrics
                                .busy
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tasks.spawn(async move {
                                // A slot runs its step, then each step handed
                                // to it as the last one finished.
                                let mut step = Some(step);
                                while let Some(now) = step {
                                    let token = now.lease_token.clone();
                                    let cancel = CancellationToken::new();
                                    lock(&inner.running).insert(
                                        token.clone(),
                                        (now.execution_id.clone(), cancel.clone()),
                                    );
                                    step = run_step(&inner, now, cancel).await;
                                    lock(&inner.running).remove(&token);
                                }
                                inner
                                    .metrics
                                    .busy
                                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            });
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        error!(error = ?e, "claiming steps failed");
                    }
                }
            }
            if claimed_count > 0 && claimed_count == free {
                // Slots are full; wait for one to free below.
            } else if claimed_count > 0 {
                continue;
            }
            let idle = Duration::from_millis(inner.config.idle_poll_ms);
            let wait = if failures > 0 {
                Duration::from_millis((100u64 << failures.min(6)).min(5_000))
            } else if free == 0 || claimed_count == free {
                idle
            } else {
                match inner.store.next_run_in_ms().await {
                    Ok(Some(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(idle),
                    _ => idle,
                }
            };
            tokio::select! {
                _ = inner.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        inner
            .taking
            .store(false, std::sync::atomic::Ordering::Relaxed);
        info!(running = tasks.len(), "worker pool stopping");
        let deadline = tokio::time::sleep(drain);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut deadline => {
                    warn!(running = tasks.len(), "drain deadline passed; handing running steps back");
                    let tokens: Vec<String> = lock(&inner.running).keys().cloned().collect();
                    tasks.shutdown().await;
                    match inner.store.release_leases(&tokens).await {
                        Ok(n) => info!(steps = n, "handed back {n} steps for another worker"),
                        Err(e) => warn!(error = ?e, "handing back steps failed; their leases will expire"),
                    }
                    break;
                }
            }
        }
        heartbeat.abort();
        reaper.abort();
        deliveries.abort();
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
            info!(execution.id = %id, "execution {id} cancelled");
        }
        Ok(record)
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

async fn heartbeat_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(inner.config.heartbeat_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => {}
        }
        let tokens: Vec<String> = lock(&inner.running).keys().cloned().collect();
        if !tokens.is_empty() {
            match inner.store.heartbeat(&tokens, inner.config.lease_ms).await {
                Ok(beat) => {
                    let running = lock(&inner.running);
                    for token in &tokens {
                        let lost = !beat.held.contains(token);
                        if (lost || beat.cancelled.contains(token))
                            && let Some((execution, cancel)) = running.get(token)
                        {
                            if lost {
                                warn!(execution.id = %execution, "a lease was lost; stopping its step");
                            }
                            cancel.cancel();
                        }
                    }
                }
                Err(e) => warn!(error = ?e, "heartbeat failed"),
            }
        }
        if shutdown.is_cancelled() && lock(&inner.running).is_empty() {
            return;
        }
    }
}

/// Hands back steps whose worker was lost (in every process; the store makes
/// that safe).
async fn reap_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    // Execution deadlines are looked at every 250 ms (an indexed query that
    // finds nothing most of the time), so an execution's `timeout_seconds`
    // holds to within a quarter second; the rest every `reap_ms`.
    let deadline_ms = inner.config.reap_ms.clamp(50, 250);
    let every = (inner.config.reap_ms.max(50) / deadline_ms).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(deadline_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match inner.store.expire_deadlines().await {
            Ok(ids) => {
                for id in ids {
                    warn!(execution.id = %id, "execution {id} timed out");
                    for (execution, cancel) in lock(&inner.running).values() {
                        if *execution == id {
                            cancel.cancel();
                        }
                    }
                }
            }
            Err(e) => warn!(error = ?e, "looking for timed-out executions failed"),
        }
        ticks += 1;
        if ticks % every != 1 % every {
            continue;
        }
        match inner.store.reap_expired_leases().await {
            Ok(0) => {}
            Ok(n) => {
                inner.metrics.lease_expiries.add(&[], n as f64);
                warn!(steps = n, "{n} steps lost their worker; they run again");
                inner.wake.notify_one();
            }
            Err(e) => warn!(error = ?e, "looking for lost workers failed"),
        }
        if let Err(e) = inner.store.maintain().await {
            warn!(error = ?e, "database upkeep failed");
        }
        let cutoff = orchestrator_store::now_ms() - inner.config.idempotency_ttl_ms;
        if let Err(e) = inner.store.expire_idempotency_keys(cutoff).await {
            warn!(error = ?e, "forgetting old idempotency keys failed");
        }
    }
}

/// The result of running one attempt.
struct Attempt {
    status: StepStatus,
    parameters: Option<Value>,
    result: Value,
    error: Option<String>,
    error_type: Option<String>,
    reason: Option<String>,
    timed_out: bool,
    jump_to: Option<String>,
}

impl Attempt {
    fn failed(error_type: &str, message: impl Into<String>, parameters: Option<Value>) -> Attempt {
        Attempt {
            status: StepStatus::Failed,
            parameters,
            result: Value::Null,
            error: Some(message.into()),
            error_type: Some(error_type.to_string()),
            reason: None,
            timed_out: false,
            jump_to: None,
        }
    }

    fn succeeded(result: Value, parameters: Option<Value>, jump_to: Option<String>) -> Attempt {
        Attempt {
            status: StepStatus::Succeeded,
            parameters,
            result,
            error: None,
            error_type: None,
            reason: None,
            timed_out: false,
            jump_to,
        }
    }

    fn skipped(reason: String, jump_to: Option<String>) -> Attempt {
        Attempt {
            status: StepStatus::Skipped,
            parameters: None,
            result: Value::Null,
            error: None,
            error_type: None,
            reason: Some(reason),
            timed_out: false,
            jump_to,
        }
    }
}

/// Runs one claimed step to its recorded end; returns the step handed to
/// this slot as it finished, if any (see [`orchestrator_store::Handoff`]).
async fn run_step(
    inner: &Arc<Inner>,
    claimed: ClaimedStep,
    cancel: CancellationToken,
) -> Option<ClaimedStep> {
    let started_at = now_ms();
    let planned = claimed.definition.clone();
    let tool_label = metric_label(&planned.step);
    inner.metrics.queue_wait.observe(
        &[tool_label],
        (claimed.claimed_at - claimed.ready_at).max(0) as f64 / 1000.0,
    );
    debug!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, attempt = claimed.attempt, "step {} started", claimed.step_id);
    let attempt = match attempt_step(inner, &claimed, &planned, cancel).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            // A loop expanded its iterations and now waits for them.
            inner.touched(&claimed.execution_id);
            inner.wake.notify_one();
            return None;
        }
        Err(StoreError::LeaseLost { .. }) => {
            warn!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, "lease on step {} was lost", claimed.step_id);
            return None;
        }
        Err(e) => {
            error!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, error = ?e, "step {} could not run", claimed.step_id);
            Attempt::failed(
                "InternalError",
                "the step could not be run; see the server log",
                None,
            )
        }
    };
    let finished_at = now_ms();
    let envelope = (attempt.status != StepStatus::Skipped).then(|| {
        json!({"result": attempt.result, "success": attempt.status == StepStatus::Succeeded, "error": attempt.error})
    });
    let result = StepResult {
        status: attempt.status,
        parameters: attempt.parameters,
        envelope,
        error: attempt.error,
        error_type: attempt.error_type,
        reason: attempt.reason,
        timed_out: attempt.timed_out,
        jump_to: attempt.jump_to,
        started_at,
        finished_at,
    };
    let retry = result.status == StepStatus::Failed
        && claimed.attempt < claimed.max_attempts
        && result.error_type.as_deref().is_none_or(is_retryable);
    inner
        .metrics
        .steps_finished
        .inc(&[tool_label, result.status.as_str()]);
    inner.metrics.step_duration.observe(
        &[tool_label],
        (finished_at - started_at).max(0) as f64 / 1000.0,
    );
    let outcome = if retry {
        inner.metrics.retries.inc(&[tool_label]);
        let next = u32::try_from(claimed.attempt + 1).unwrap_or(u32::MAX);
        let delay = planned.step.retry.delay_ms(next, rand::random::<f64>());
        info!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, attempt = claimed.attempt, delay_ms = delay, "step {} failed, retrying", claimed.step_id);
        let delay = i64::try_from(delay).unwrap_or(i64::MAX);
        persist(|| inner.store.retry_step(&claimed, result.clone(), delay))
            .await
            .map(|()| None)
    } else {
        finish_grouped(inner, claimed.clone(), result)
            .await
            .map(Some)
    };
    inner.touched(&claimed.execution_id);
    match outcome {
        Ok(Some(done)) => {
            if let Some(status) = done.execution_finished {
                let _ = inner.finished.send((claimed.execution_id.clone(), status));
                info!(execution.id = %claimed.execution_id, status = status.as_str(), "execution {} {}", claimed.execution_id, status.as_str());
            }
            if !done.ready.is_empty() {
                inner.wake.notify_one();
            }
            done.next
        }
        Ok(None) => {
            inner.wake.notify_one();
            None
        }
        Err(StoreError::LeaseLost { .. }) => {
            warn!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, "lease on step {} was lost; its result is discarded", claimed.step_id);
            None
        }
        Err(e) => {
            error!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, error = ?e, "recording step {} failed", claimed.step_id);
            None
        }
    }
}

/// Errors that another attempt cannot fix are not retried: the input or the
/// pipeline is wrong, not the world.
pub fn is_retryable(error_type: &str) -> bool {
    !matches!(
        error_type,
        "ValidationError"
            | "PermissionError"
            | "TemplateError"
            | "ToolNotFoundError"
            | "ModelUnavailableError"
            | "ConditionError"
            | "IsADirectoryError"
            | "FileTooLargeError"
            | "UnicodeDecodeError"
            | "WorkerLostError"
            | "CancelledError"
            | "HttpClientError"
            | "ResponseTooLargeError"
            | "ToolProtocolError"
            | "SearchRejectedError"
            | "BudgetExceeded"
            | "ModelRequestError"
            | "ModelAuthenticationError"
            | "LimitExceededError"
            | "NoSearchBackendError"
    )
}

/// Ids of the steps whose results a step's templates can read.
fn referenced_ids(planned: &PlannedStep) -> Vec<String> {
    let mut names: Vec<String> = plan::step_references(&planned.step).into_iter().collect();
    if let Some(b) = &planned.binding {
        names.extend(b.aliases.keys().cloned());
    }
    if planned.step.loop_spec.is_some() {
        names.extend(planned.iteration_step_ids());
        if planned.kind == StepKind::While && planned.iterations > 0 {
            names.extend(previous_iteration_aliases(planned).into_values());
        }
    }
    let mut ids: Vec<String> = names
        .iter()
        .map(|n| planned.resolve_id(n).to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Checks rendered parameters against the action's JSON Schema before the
/// tool runs, naming every parameter that does not fit.
fn check_parameters(
    inner: &Inner,
    tool: &dyn orchestrator_tools::Tool,
    action: &str,
    parameters: &Value,
) -> Result<(), String> {
    let key = (tool.id().to_string(), action.to_string());
    let cached = lock(&inner.schemas).get(&key).cloned();
    let validator = match cached {
        Some(v) => v,
        None => {
            let Some(spec) = tool.actions().into_iter().find(|a| a.name == action) else {
                return Err(format!("tool '{}' has no action '{action}'", tool.id()));
            };
            let compiled = match jsonschema::validator_for(&spec.parameters) {
                Ok(v) => Some(Arc::new(v)),
                // A tool's own schema is code, not input: log it and let the tool decide.
                Err(e) => {
                    warn!(tool = tool.id(), action, error = %e, "action schema does not compile");
                    None
                }
            };
            lock(&inner.schemas).insert(key, compiled.clone());
            compiled
        }
    };
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(parameters)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                format!("parameters: {e}")
            } else {
                format!("parameter '{}': {e}", path.trim_start_matches('/'))
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A stored envelope `{result, success, error}` as templates see it.
fn envelope_of(env: &Value) -> StepEnvelope {
    StepEnvelope {
        result: env.get("result").cloned().unwrap_or(Value::Null),
        success: env.get("success").and_then(Value::as_bool).unwrap_or(false),
        error: env.get("error").and_then(Value::as_str).map(str::to_string),
    }
}

/// Builds the names a step's templates see.
fn build_scope(
    inputs: &Value,
    execution_id: &str,
    created_at: i64,
    pipeline_id: &str,
    planned: Option<&PlannedStep>,
    results: &[(String, StepStatus, Option<Value>)],
) -> Scope {
    let mut scope = Scope::new();
    if let Value::Object(m) = inputs {
        scope.set_inputs(m);
    }
    let when = chrono::DateTime::from_timestamp_millis(created_at).unwrap_or_default();
    scope.set(
        "execution",
        &json!({
            "id": execution_id,
            "started_at": when.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "date": when.format("%Y-%m-%d").to_string(),
            "time": when.format("%H:%M:%S").to_string(),
            "timestamp": created_at,
        }),
    );
    scope.set("pipeline_id", &Value::String(pipeline_id.to_string()));
    let by_id: HashMap<&str, (&StepStatus, &Option<Value>)> = results
        .iter()
        .map(|(id, status, env)| (id.as_str(), (status, env)))
        .collect();
    let bind = |name: &str, id: &str, scope: &mut Scope| {
        if let Some((status, env)) = by_id.get(id) {
            match (status, env) {
                (StepStatus::Succeeded | StepStatus::Failed, Some(env)) => {
                    scope.set_step(name, envelope_of(env));
                }
                (StepStatus::Skipped | StepStatus::Cancelled, _) => {
                    scope.set_none(name);
                }
                _ => {}
            }
        }
    };
    for (id, _, _) in results {
        bind(id, id, &mut scope);
    }
    if let Some(binding) = planned.and_then(|p| p.binding.as_ref()) {
        for (k, v) in &binding.values {
            scope.set(k.clone(), v);
        }
        for (body_id, real_id) in &binding.aliases {
            bind(body_id, real_id, &mut scope);
        }
    }
    scope
}

async fn attempt_step(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    cancel: CancellationToken,
) -> Result<Option<Attempt>, StoreError> {
    let ids = referenced_ids(planned);
    let Some(ctx) = inner
        .store
        .step_context(&claimed.execution_id, &ids)
        .await?
    else {
        return Ok(Some(Attempt::failed(
            "ExecutionError",
            "the execution no longer exists",
            None,
        )));
    };
    if ctx.status == orchestrator_core::flow::ExecutionStatus::Cancelled {
        return Ok(Some(Attempt {
            status: StepStatus::Cancelled,
            reason: Some("execution_cancelled".into()),
            ..Attempt::failed("CancelledError", "the execution was cancelled", None)
        }));
    }
    if claimed.lost > inner.config.max_lost {
        return Ok(Some(Attempt::failed(
            "WorkerLostError",
            format!(
                "the worker running this step was lost {} times (its lease expired); giving up",
                claimed.lost
            ),
            None,
        )));
    }
    let scope = build_scope(
        &ctx.inputs,
        &claimed.execution_id,
        ctx.created_at,
        &ctx.pipeline_id,
        Some(planned),
        &ctx.results,
    );
    let options: ExecutionOptions = serde_json::from_value(ctx.options.clone()).unwrap_or_default();
    Ok(match planned.kind {
        StepKind::Task => Some(run_task(inner, claimed, planned, &scope, &options, cancel).await),
        StepKind::Join => Some(Attempt::succeeded(
            join_result(planned, &ctx.results),
            None,
            None,
        )),
        StepKind::ForEach => expand_for_each(inner, claimed, planned, &scope, &options).await?,
        StepKind::While => expand_while(inner, claimed, planned, &ctx, &options).await?,
    })
}

/// Runs a tool or runtime action: condition, rendering, the tool with its timeout.
async fn run_task(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    scope: &Scope,
    options: &ExecutionOptions,
    cancel: CancellationToken,
) -> Attempt {
    let scope = scope.clone();
    let step = &planned.step;

    let is_gate = step.action == catalog::EVALUATE_CONDITION && step.tool.is_none();
    if let Some(condition) = &step.condition
        && !is_gate
    {
        match template::eval_condition(condition, &scope) {
            Ok(true) => {}
            Ok(false) => {
                let jump = step
                    .on_false
                    .as_deref()
                    .map(|t| planned.resolve_id(t).to_string());
                return Attempt::skipped("condition_false".into(), jump);
            }
            Err(e) => {
                return Attempt::skipped(format!("condition_error: {}", e.message), None);
            }
        }
    }
    if is_gate {
        let condition = step.condition.as_deref().unwrap_or("false");
        return match template::eval_condition(condition, &scope) {
            Ok(value) => {
                let jump = if value {
                    None
                } else {
                    step.on_false
                        .as_deref()
                        .map(|t| planned.resolve_id(t).to_string())
                };
                Attempt::succeeded(Value::Bool(value), None, jump)
            }
            Err(e) => Attempt::failed(
                "ConditionError",
                format!("condition cannot be evaluated: {}", e.message),
                None,
            ),
        };
    }

    let parameters = match template::render_value(&Value::Object(step.parameters.clone()), &scope) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => {
            return Attempt::failed(
                "TemplateError",
                format!("parameters cannot be rendered: {}", e.message),
                None,
            );
        }
    };
    let rendered = Value::Object(parameters.clone());

    if step.is_model_action() {
        let run = Box::pin(run_model(
            inner,
            claimed,
            step,
            &parameters,
            options,
            cancel.clone(),
        ));
        return finish_run(run, step, planned, &cancel, Some(rendered)).await;
    }
    let Some(tool_id) = step.tool.as_deref() else {
        return Attempt::failed(
            "ValidationError",
            format!("action '{}' needs a tool", step.action),
            Some(rendered.clone()),
        );
    };
    let Some(tool) = inner.tools.get(tool_id) else {
        return Attempt::failed(
            "ToolNotFoundError",
            format!("tool '{tool_id}' is not available on this server"),
            Some(rendered.clone()),
        );
    };
    if let Err(message) = check_parameters(inner, tool.as_ref(), &step.action, &rendered) {
        return Attempt::failed("ValidationError", message, Some(rendered));
    }
    let shown = Some(rendered);
    let workspace = match options.workspace {
        WorkspaceMode::Shared => inner.config.workspace_root.clone(),
        WorkspaceMode::Isolated => inner.config.workspace_root.join(&claimed.execution_id),
    };
    let tool_ctx = ToolContext {
        workspace,
        cancel: cancel.clone(),
        execution_id: claimed.execution_id.clone(),
        step_id: claimed.step_id.clone(),
        attempt: claimed.attempt,
        http: inner.tools.http_client().clone(),
    };
    let run = Box::pin(tool.execute(&step.action, &parameters, &tool_ctx));
    finish_run(run, step, planned, &cancel, shown).await
}

/// Waits for a tool or model call under the step's timeout and the
/// execution's cancellation, and turns what happened into an attempt.
async fn finish_run(
    run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ToolError>> + Send + '_>>,
    step: &orchestrator_core::Step,
    planned: &PlannedStep,
    cancel: &CancellationToken,
    shown: Option<Value>,
) -> Attempt {
    let limit = step.timeout.map_or(Duration::MAX, Duration::from_secs);
    let outcome = tokio::select! {
        r = tokio::time::timeout(limit, run) => match r {
            Ok(r) => Some(r),
            Err(_) => {
                cancel.cancel();
                None
            }
        },
        _ = cancel.cancelled() => {
            return Attempt {
                status: StepStatus::Cancelled,
                reason: Some("execution_cancelled".into()),
                ..Attempt::failed("CancelledError", "the step was cancelled", shown)
            };
        }
    };
    match outcome {
        None => {
            let mut a = Attempt::failed(
                "TimeoutError",
                format!("step timed out after {}s", step.timeout.unwrap_or(0)),
                shown,
            );
            a.timed_out = true;
            a
        }
        Some(Ok(result)) => {
            let jump = step
                .on_success
                .as_deref()
                .map(|t| planned.resolve_id(t).to_string());
            Attempt::succeeded(result, shown, jump)
        }
        // The tool noticed the cancellation first: still a cancelled step.
        Some(Err(e)) if cancel.is_cancelled() && e.kind == "CancelledError" => Attempt {
            status: StepStatus::Cancelled,
            reason: Some("execution_cancelled".into()),
            ..Attempt::failed(&e.kind, e.message, shown)
        },
        Some(Err(e)) => Attempt::failed(&e.kind, e.message, shown),
    }
}

/// A loop's result: one object per iteration, `{body_step_id: result}`
/// (`null` for a body step that did not succeed).
fn join_result(planned: &PlannedStep, results: &[(String, StepStatus, Option<Value>)]) -> Value {
    let Some(spec) = &planned.step.loop_spec else {
        return Value::Array(vec![]);
    };
    let by_id: HashMap<&str, &Option<Value>> = results
        .iter()
        .map(|(id, _, env)| (id.as_str(), env))
        .collect();
    let iterations = (0..planned.iterations)
        .map(|i| {
            let mut m = Map::new();
            for body in spec.body() {
                let id = format!("{}_{i}_{}", planned.id, body.id);
                let value = by_id
                    .get(id.as_str())
                    .and_then(|e| e.as_ref())
                    .and_then(|e| e.get("result"))
                    .cloned();
                m.insert(body.id.clone(), value.unwrap_or(Value::Null));
            }
            Value::Object(m)
        })
        .collect();
    Value::Array(iterations)
}

/// Body step id → id in the last expanded iteration of a `while` loop.
fn previous_iteration_aliases(planned: &PlannedStep) -> BTreeMap<String, String> {
    let Some(spec) = &planned.step.loop_spec else {
        return BTreeMap::new();
    };
    let last = planned.iterations.saturating_sub(1);
    spec.body()
        .iter()
        .map(|b| (b.id.clone(), format!("{}_{last}_{}", planned.id, b.id)))
        .collect()
}

fn new_steps(expansion: &plan::Expansion, options: &ExecutionOptions) -> Vec<NewStep> {
    expansion
        .steps
        .iter()
        .map(|s| NewStep {
            max_attempts: match (s.step.retry_explicit, options.max_retries) {
                (false, Some(n)) => n,
                _ => s.step.retry.max_attempts,
            },
            planned: s.clone(),
        })
        .collect()
}

/// Inserts a loop's new steps; a failed attempt when they would take the
/// execution past `limits.max_steps`.
async fn expand(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    container: &PlannedStep,
    steps: Vec<NewStep>,
    wait_for: &[String],
) -> Result<Option<Attempt>, StoreError> {
    match inner
        .store
        .expand_step(claimed, container, steps, wait_for)
        .await
    {
        Ok(_) => Ok(None),
        Err(StoreError::LimitExceeded(message)) => {
            Ok(Some(Attempt::failed("LimitExceededError", message, None)))
        }
        Err(e) => Err(e),
    }
}

/// Renders a `for_each` loop's items and inserts its iterations; `None` when
/// the loop now waits for them.
async fn expand_for_each(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    scope: &Scope,
    options: &ExecutionOptions,
) -> Result<Option<Attempt>, StoreError> {
    let Some(LoopSpec::ForEach { items, .. }) = &planned.step.loop_spec else {
        return Ok(Some(Attempt::failed(
            "ExecutionError",
            "step is not a for_each loop",
            None,
        )));
    };
    let rendered = match items {
        LoopItems::Template(t) => template::render_string_value(t, scope),
        LoopItems::Literal(list) => template::render_value(&Value::Array(list.clone()), scope),
    };
    let items = match rendered
        .map_err(|e| e.message)
        .and_then(plan::items_from_value)
    {
        Ok(items) => items,
        Err(e) => {
            return Ok(Some(Attempt::failed(
                "TemplateError",
                format!("for_each items cannot be rendered: {e}"),
                None,
            )));
        }
    };
    if items.is_empty() {
        return Ok(Some(Attempt::succeeded(Value::Array(vec![]), None, None)));
    }
    let body = match &planned.step.loop_spec {
        Some(LoopSpec::ForEach { steps, .. }) => plan::body_size(steps).max(1),
        _ => 1,
    };
    if items.len().saturating_mul(body) > orchestrator_core::limits::get().max_steps {
        return Ok(Some(Attempt::failed(
            "LimitExceededError",
            format!(
                "for_each over {} items would add {} steps; a loop may add at most {} (limits.max_steps)",
                items.len(),
                items.len().saturating_mul(body),
                orchestrator_core::limits::get().max_steps
            ),
            None,
        )));
    }
    let expansion = match plan::expand_for_each(planned, &items, &Default::default()) {
        Ok(x) => x,
        Err(e) => return Ok(Some(Attempt::failed("ExecutionError", e, None))),
    };
    let mut container = planned.clone();
    container.kind = StepKind::Join;
    container.iterations = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let steps = new_steps(&expansion, options);
    if let Some(refused) = expand(inner, claimed, &container, steps, &expansion.join_deps).await? {
        return Ok(Some(refused));
    }
    info!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, iterations = items.len(), "loop {} expanded", claimed.step_id);
    Ok(None)
}

/// Evaluates a `while` loop's condition and inserts its next iteration
/// (`None`), or finishes the loop with every iteration's results.
async fn expand_while(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    ctx: &orchestrator_store::StepContext,
    options: &ExecutionOptions,
) -> Result<Option<Attempt>, StoreError> {
    let Some(LoopSpec::While {
        condition,
        max_iterations,
        steps: body,
    }) = &planned.step.loop_spec
    else {
        return Ok(Some(Attempt::failed(
            "ExecutionError",
            "step is not a while loop",
            None,
        )));
    };
    let n = planned.iterations;
    let mut scope = build_scope(
        &ctx.inputs,
        &claimed.execution_id,
        ctx.created_at,
        &ctx.pipeline_id,
        Some(planned),
        &ctx.results,
    );
    scope.set("iteration", &Value::from(n));
    // The condition sees the previous iteration's body results (none before the first).
    let by_id: HashMap<&str, (StepStatus, &Option<Value>)> = ctx
        .results
        .iter()
        .map(|(id, st, env)| (id.as_str(), (*st, env)))
        .collect();
    let previous = previous_iteration_aliases(planned);
    for b in body {
        let found = if n == 0 {
            None
        } else {
            previous
                .get(&b.id)
                .and_then(|real| by_id.get(real.as_str()))
        };
        match found {
            Some((StepStatus::Succeeded | StepStatus::Failed, Some(env))) => {
                scope.set_step(b.id.clone(), envelope_of(env));
            }
            _ => {
                scope.set_none(b.id.clone());
            }
        }
    }
    let go_on = if n >= *max_iterations {
        false
    } else {
        match template::eval_condition(condition, &scope) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Some(Attempt::failed(
                    "ConditionError",
                    format!(
                        "while condition cannot be evaluated at iteration {n}: {}",
                        e.message
                    ),
                    None,
                )));
            }
        }
    };
    if !go_on {
        return Ok(Some(Attempt::succeeded(
            join_result(planned, &ctx.results),
            None,
            None,
        )));
    }
    let expansion = match plan::expand_while(planned, n, &Default::default()) {
        Ok(x) => x,
        Err(e) => return Ok(Some(Attempt::failed("ExecutionError", e, None))),
    };
    let mut container = planned.clone();
    container.iterations = n + 1;
    let steps = new_steps(&expansion, options);
    if let Some(refused) = expand(inner, claimed, &container, steps, &expansion.join_deps).await? {
        return Ok(Some(refused));
    }
    debug!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, iteration = n, "loop {} iteration {n}", claimed.step_id);
    Ok(None)
}

/// Renders `outputs` when an execution finishes (called inside the store's
/// finishing transaction).
fn render_outputs(
    execution: &ExecutionRecord,
    steps: &[StepRecord],
) -> (Option<Value>, Option<String>) {
    let plan: ExecutionPlan = match serde_json::from_value(execution.plan.clone()) {
        Ok(p) => p,
        Err(e) => return (None, Some(format!("stored plan cannot be read: {e}"))),
    };
    if plan.pipeline.outputs.is_empty() {
        return (None, None);
    }
    let results: Vec<(String, StepStatus, Option<Value>)> = steps
        .iter()
        .map(|s| (s.step_id.clone(), s.status, s.result.clone()))
        .collect();
    let scope = build_scope(
        &execution.inputs,
        &execution.id,
        execution.created_at,
        &execution.pipeline_id,
        None,
        &results,
    );
    let mut out = Map::new();
    let mut errors = Vec::new();
    for (name, text) in &plan.pipeline.outputs {
        match template::render_string_value(text, &scope) {
            Ok(Value::String(s)) => {
                out.insert(name.clone(), template::parse_literal(&s));
            }
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(e) => {
                out.insert(name.clone(), Value::Null);
                errors.push(format!("output '{name}' cannot be rendered: {}", e.message));
            }
        }
    }
    (
        Some(Value::Object(out)),
        (!errors.is_empty()).then(|| errors.join("; ")),
    )
}

/// A model action: picks the model, keeps to the budget, calls it. The
/// result is the answer's text (the JSON value for `generate_structured`).
async fn run_model(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    step: &orchestrator_core::Step,
    params: &Map<String, Value>,
    options: &ExecutionOptions,
    cancel: CancellationToken,
) -> Result<Value, ToolError> {
    let action = catalog::canonical_action(&step.action);
    let request = models::ModelStepRequest::from_parameters(action, params)?;
    let requirements = match (&request.requirements, &step.requires_model) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(v)) => Some(models::requirements_from(v)?),
        (None, None) => None,
    };
    let named = request.model.as_deref().or(step.model.as_deref());
    let (spec, why) = inner
        .models
        .resolve(named, requirements.as_ref())
        .await
        .map_err(|e| match e {
            models::SelectError::Store(m) => ToolError::new("StoreError", m),
            other => ToolError::new("ModelUnavailableError", other.to_string()),
        })?;
    debug!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, model = %spec.id, reason = %why, "model chosen");
    if let Some(budget) = options.max_cost {
        let spent = inner.models.spent(&claimed.execution_id).await?;
        let rounds = if request.schema.is_some() { 2.0 } else { 1.0 };
        let worst = models::worst_case_cost(&spec, &request.chat) * rounds;
        if spent + worst > budget {
            return Err(ToolError::new(
                "BudgetExceeded",
                format!(
                    "the execution has spent ${spent:.6} of its ${budget} budget, and this call to '{}' could cost up to ${worst:.6}",
                    spec.id
                ),
            ));
        }
    }
    let site = models::CallSite {
        execution_id: Some(claimed.execution_id.clone()),
        step_id: Some(claimed.step_id.clone()),
        attempt: claimed.attempt,
    };
    match &request.schema {
        Some(schema) => {
            let (value, _) =
                models::structured(&inner.models, &spec, &request.chat, schema, &site, &cancel)
                    .await?;
            Ok(value)
        }
        None => {
            let answer = inner
                .models
                .call(&spec, &request.chat, &site, &cancel)
                .await?;
            Ok(Value::String(answer.response.text))
        }
    }
}

/// The `tool` label of a step's metrics: its tool, `model` for model
/// actions, else its action (`evaluate_condition`, loops).
fn metric_label(step: &orchestrator_core::Step) -> &str {
    if step.is_model_action() {
        "model"
    } else if let Some(t) = step.tool.as_deref() {
        t
    } else if step.action.is_empty() {
        "loop"
    } else {
        &step.action
    }
}

/// Runs a store write again when it lost to a concurrent transaction
/// (deadlock, serialization failure, busy database), up to five times.
async fn persist<T, F, Fut>(mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0u32;
    loop {
        match write().await {
            Err(e) if e.is_transient() && tries < 5 => {
                tries += 1;
                debug!(error = ?e, tries, "store write conflicted; trying again");
                tokio::time::sleep(Duration::from_millis(5u64 << tries)).await;
            }
            other => return other,
        }
    }
}
