//! Running one claimed step: its condition, its rendered parameters checked
//! against the action's schema, the tool (or model) with its timeout, and the
//! retry decision; then the result is recorded.

use crate::expand::{expand_for_each, expand_while, join_result};
use crate::finisher::finish_grouped;
use crate::pool::Slot;
use crate::scope::{build_scope, check_parameters, referenced_ids};
use crate::{ExecutionOptions, Inner, WorkspaceMode, models, step_tags};
use orchestrator_core::flow::StepStatus;
use orchestrator_core::plan::{PlannedStep, StepKind};
use orchestrator_core::template::Scope;
use orchestrator_core::{catalog, template};
use orchestrator_store::{ClaimedStep, StepResult, StoreError, now_ms};
use orchestrator_tools::{ErrorKind, ToolContext, ToolError};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The result of running one attempt.
pub(crate) struct Attempt {
    status: StepStatus,
    parameters: Option<Value>,
    result: Value,
    error: Option<String>,
    error_type: Option<ErrorKind>,
    reason: Option<String>,
    timed_out: bool,
    jump_to: Option<String>,
}

impl Attempt {
    pub(crate) fn failed(
        error_type: ErrorKind,
        message: impl Into<String>,
        parameters: Option<Value>,
    ) -> Attempt {
        Attempt {
            status: StepStatus::Failed,
            parameters,
            result: Value::Null,
            error: Some(message.into()),
            error_type: Some(error_type),
            reason: None,
            timed_out: false,
            jump_to: None,
        }
    }

    pub(crate) fn succeeded(
        result: Value,
        parameters: Option<Value>,
        jump_to: Option<String>,
    ) -> Attempt {
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

    /// The step asked a person and waits (its question is stored).
    pub(crate) fn waiting() -> Attempt {
        Attempt {
            status: StepStatus::Waiting,
            ..Attempt::succeeded(Value::Null, None, None)
        }
    }

    pub(crate) fn skipped(reason: String, jump_to: Option<String>) -> Attempt {
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
pub(crate) async fn run_step(
    inner: &Arc<Inner>,
    claimed: ClaimedStep,
    cancel: CancellationToken,
    slot: Slot,
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
        Ok(Some(a)) if a.status != StepStatus::Waiting => a,
        // Waiting for its iterations, or for a person.
        Ok(_) => {
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
                ErrorKind::InternalError,
                "the step could not be run; see the server log",
                None,
            )
        }
    };
    let finished_at = now_ms();
    // The step has run: its slot goes to the next one while its result is
    // written (at most `finishing` results wait for that at a time).
    let _finishing = Arc::clone(&inner.finishing)
        .acquire_owned()
        .await
        .expect("never closed");
    drop(slot);
    let envelope = (attempt.status != StepStatus::Skipped).then(|| {
        json!({"result": attempt.result, "success": attempt.status == StepStatus::Succeeded, "error": attempt.error})
    });
    let attempt_kind = attempt.error_type.clone();
    let result = StepResult {
        status: attempt.status,
        parameters: attempt.parameters,
        envelope,
        error: attempt.error,
        error_type: attempt.error_type.as_ref().map(|k| k.as_str().to_string()),
        reason: attempt.reason,
        timed_out: attempt.timed_out,
        jump_to: attempt.jump_to,
        on_failure: None,
        started_at,
        finished_at,
    };
    let retry = result.status == StepStatus::Failed
        && claimed.attempt < claimed.max_attempts
        && attempt_retryable(attempt_kind.as_ref());
    let result = if retry {
        result
    } else {
        handle_error(&planned, result)
    };
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
                inner.ended(&claimed.execution_id);
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

/// A step's last failure meets its `on_error` handlers: the first that
/// takes it decides. `fallback_value`: the step succeeds with it;
/// `handler_task_id`: the flow goes to that step; `handler_action` alone:
/// the step stays failed but its dependents run and the execution does not
/// fail for it (the words are kept in `reason`); with
/// `propagate_error`, the failure still counts. No handler takes it: the
/// step's `on_failure` applies.
fn handle_error(planned: &PlannedStep, mut result: StepResult) -> StepResult {
    let step = &planned.step;
    if result.status != StepStatus::Failed || step.on_error.is_empty() {
        return result;
    }
    let kind = result.error_type.clone().unwrap_or_default();
    let message = result.error.clone().unwrap_or_default();
    let Some(handler) = step.on_error.iter().find(|h| h.takes(&kind, &message)) else {
        result.on_failure = Some(step.on_failure.clone());
        return result;
    };
    let what = handler
        .action
        .as_deref()
        .map(|a| format!(": {a}"))
        .unwrap_or_default();
    result.reason = Some(format!("on_error{what} (after {kind}: {message})"));
    if handler.propagate {
        result.on_failure = Some(orchestrator_core::OnFailure::Fail);
        return result;
    }
    if let Some(fallback) = &handler.fallback {
        result.status = StepStatus::Succeeded;
        result.envelope = Some(json!({"result": fallback, "success": true, "error": message}));
        result.on_failure = None;
        return result;
    }
    result.on_failure = Some(orchestrator_core::OnFailure::Handled(handler.task.clone()));
    result
}

/// Errors that another attempt cannot fix are not retried: the input or the
/// pipeline is wrong, not the world ([`ErrorKind::is_retryable`]).
pub fn is_retryable(error_type: &str) -> bool {
    ErrorKind::parse(error_type).is_retryable()
}

/// A failure without a kind is retried.
fn attempt_retryable(kind: Option<&ErrorKind>) -> bool {
    kind.is_none_or(ErrorKind::is_retryable)
}

pub(crate) async fn attempt_step(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    cancel: CancellationToken,
) -> Result<Option<Attempt>, StoreError> {
    let ids = referenced_ids(planned);
    // A claimed step brings its execution's context; only the results it
    // names are read (nothing at all when it names none).
    let ctx = match &claimed.context {
        Some(context) => {
            let mut ctx = (**context).clone();
            ctx.results = inner
                .store
                .step_results(&claimed.execution_id, &ids)
                .await?;
            Some(ctx)
        }
        None => {
            inner
                .store
                .step_context(&claimed.execution_id, &ids)
                .await?
        }
    };
    let Some(ctx) = ctx else {
        return Ok(Some(Attempt::failed(
            ErrorKind::ExecutionError,
            "the execution no longer exists",
            None,
        )));
    };
    if ctx.status == orchestrator_core::flow::ExecutionStatus::Cancelled {
        return Ok(Some(Attempt {
            status: StepStatus::Cancelled,
            reason: Some("execution_cancelled".into()),
            ..Attempt::failed(
                ErrorKind::CancelledError,
                "the execution was cancelled",
                None,
            )
        }));
    }
    if claimed.lost > inner.config.max_lost {
        return Ok(Some(Attempt::failed(
            ErrorKind::WorkerLostError,
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
pub(crate) async fn run_task(
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
    // Evaluated once (one holding an <AUTO> question asks a model); a gate
    // without a condition is false.
    let condition = match &step.condition {
        Some(condition) => {
            step_tags::eval_condition(
                inner,
                &claimed.execution_id,
                &claimed.step_id,
                condition,
                &scope,
                &cancel,
            )
            .await
        }
        None => Ok(false),
    };
    if step.condition.is_some() && !is_gate {
        match condition {
            Ok(true) => {}
            Ok(false) => {
                let jump = step
                    .on_false
                    .as_deref()
                    .map(|t| planned.resolve_id(t).to_string());
                return Attempt::skipped("condition_false".into(), jump);
            }
            Err(e) => {
                return Attempt::skipped(format!("condition_error: {e}"), None);
            }
        }
    }
    if is_gate {
        return match condition {
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
                ErrorKind::ConditionError,
                format!("condition cannot be evaluated: {e}"),
                None,
            ),
        };
    }

    // A child pipeline's text is its own: not rendered, no tags answered.
    let mut raw = step.parameters.clone();
    let child_text = if step.tool.as_deref() == Some(catalog::PIPELINE_EXECUTOR) {
        raw.remove("pipeline")
    } else {
        None
    };
    let mut parameters = match template::render_value(&Value::Object(raw), &scope) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(e) => {
            return Attempt::failed(
                ErrorKind::TemplateError,
                format!("parameters cannot be rendered: {}", e.message),
                None,
            );
        }
    };
    if let Err(message) = step_tags::answer_in_parameters(
        inner,
        &claimed.execution_id,
        &claimed.step_id,
        &mut parameters,
        &cancel,
    )
    .await
    {
        return Attempt::failed(
            ErrorKind::ModelResponseError,
            message,
            Some(Value::Object(parameters)),
        );
    }
    if let Some(text) = child_text {
        // A stored pipeline's name may come from a template.
        let text = match &text {
            Value::String(s) if !s.contains('\n') && template::is_template(s) => {
                match template::render_string_value(s, &scope) {
                    Ok(v) => v,
                    Err(e) => {
                        return Attempt::failed(
                            ErrorKind::TemplateError,
                            format!("parameter 'pipeline' cannot be rendered: {}", e.message),
                            None,
                        );
                    }
                }
            }
            _ => text,
        };
        parameters.insert("pipeline".into(), text);
    }
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
            ErrorKind::ValidationError,
            format!("action '{}' needs a tool", step.action),
            Some(rendered.clone()),
        );
    };
    let Some(tool) = inner.tools.get(tool_id) else {
        return Attempt::failed(
            ErrorKind::ToolNotFoundError,
            format!("tool '{tool_id}' is not available on this server"),
            Some(rendered.clone()),
        );
    };
    if let Err(message) = check_parameters(inner, tool.as_ref(), &step.action, &rendered) {
        return Attempt::failed(ErrorKind::ValidationError, message, Some(rendered));
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
        memory: Some(Arc::new(crate::memory::TreeMemory::new(
            Arc::clone(&inner.store),
            &claimed.execution_id,
        ))),
        log: None,
        models: None,
    };
    if tool_id == catalog::PIPELINE_EXECUTOR {
        return crate::subpipeline::run(inner, claimed, &parameters, &tool_ctx).await;
    }
    if let Some(human) = tool.human() {
        return crate::human::run(inner, claimed, tool_id, human, &parameters, &tool_ctx).await;
    }
    let log = crate::step_log::StepLog::new(
        Arc::clone(&inner.store),
        &claimed.execution_id,
        &claimed.step_id,
        claimed.attempt,
    );
    let log_sink = Arc::clone(&log) as Arc<dyn orchestrator_tools::log::LogSink>;
    let tool_ctx = ToolContext {
        models: Some(Arc::new(models::StepModels {
            models: inner.models.clone(),
            site: models::CallSite {
                execution_id: Some(claimed.execution_id.clone()),
                step_id: Some(claimed.step_id.clone()),
                attempt: claimed.attempt,
                log: Some(Arc::clone(&log_sink)),
            },
            budget: options.max_cost,
            cancel: cancel.clone(),
        })),
        log: Some(log_sink),
        ..tool_ctx
    };
    let run = Box::pin(tool.execute(&step.action, &parameters, &tool_ctx));
    let attempt = finish_run(run, step, planned, &cancel, shown).await;
    // Stored before the step is finished: a follower who sees it end has
    // every line.
    log.finish().await;
    attempt
}

/// Waits for a tool or model call under the step's timeout and the
/// execution's cancellation, and turns what happened into an attempt.
pub(crate) async fn finish_run(
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
                ..Attempt::failed(ErrorKind::CancelledError, "the step was cancelled", shown)
            };
        }
    };
    match outcome {
        None => {
            let mut a = Attempt::failed(
                ErrorKind::TimeoutError,
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
        Some(Err(e)) if cancel.is_cancelled() && e.kind == ErrorKind::CancelledError => Attempt {
            status: StepStatus::Cancelled,
            reason: Some("execution_cancelled".into()),
            ..Attempt::failed(e.kind, e.message, shown)
        },
        Some(Err(e)) => Attempt::failed(e.kind, e.message, shown),
    }
}

/// A model action: picks the model, keeps to the budget, calls it. The
/// result is the answer's text (the JSON value for `generate_structured`).
pub(crate) async fn run_model(
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
    // `model: <AUTO>` (or `auto`) with nothing to ask: the registry chooses.
    let named = request
        .model
        .as_deref()
        .or(step.model.as_deref())
        .filter(|m| {
            !matches!(
                m.trim().to_ascii_lowercase().as_str(),
                "<auto>" | "auto" | "<auto></auto>"
            )
        });
    let (spec, why) = inner
        .models
        .resolve(named, requirements.as_ref())
        .await
        .map_err(|e| match e {
            models::SelectError::Store(m) => ToolError::new(ErrorKind::StoreError, m),
            other => ToolError::new(ErrorKind::ModelUnavailableError, other.to_string()),
        })?;
    debug!(execution.id = %claimed.execution_id, step.id = %claimed.step_id, model = %spec.id, reason = %why, "model chosen");
    if let Some(budget) = options.max_cost {
        let rounds = if request.schema.is_some() { 2.0 } else { 1.0 };
        let worst = models::worst_case_cost(&spec, &request.chat) * rounds;
        inner
            .models
            .within_budget(&claimed.execution_id, budget, &spec, worst)
            .await?;
    }
    let log = crate::step_log::StepLog::new(
        Arc::clone(&inner.store),
        &claimed.execution_id,
        &claimed.step_id,
        claimed.attempt,
    );
    orchestrator_tools::log::LogSink::line(
        log.as_ref(),
        orchestrator_tools::log::Stream::Log,
        &format!("model '{}' chosen: {why}", spec.id),
    );
    let site = models::CallSite {
        execution_id: Some(claimed.execution_id.clone()),
        step_id: Some(claimed.step_id.clone()),
        attempt: claimed.attempt,
        log: Some(Arc::clone(&log) as Arc<dyn orchestrator_tools::log::LogSink>),
    };
    let outcome = match &request.schema {
        Some(schema) => {
            models::structured(&inner.models, &spec, &request.chat, schema, &site, &cancel)
                .await
                .map(|(value, _)| value)
        }
        None => inner
            .models
            .call(&spec, &request.chat, &site, &cancel)
            .await
            .map(|answer| Value::String(answer.response.text)),
    };
    log.finish().await;
    outcome
}

/// The `tool` label of a step's metrics: its tool, `model` for model
/// actions, else its action (`evaluate_condition`, loops).
pub(crate) fn metric_label(step: &orchestrator_core::Step) -> &str {
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
pub(crate) async fn persist<T, F, Fut>(mut write: F) -> Result<T, StoreError>
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
