//! `pipeline-executor` steps: a step that runs another pipeline as a child
//! execution (its own id, steps and checkpoints, linked to the step).
//!
//! The first run creates the child and, in the same commit, makes the step
//! `waiting` (no lease, no worker). When the child ends, the store records
//! how as the step's answer and queues the step again; its next run turns
//! that into its result (`error_handling` decides about failures). Recovering
//! the parent recovers a failed child instead of starting a new one.

use std::sync::Arc;

use orchestrator_core::limits;
use orchestrator_store::{ChildWait, ClaimedStep, ExecutionFilter, ParentLink, StoreError};
use orchestrator_tools::{ErrorKind, ToolContext};
use serde_json::{Map, Value, json};

use crate::step::Attempt;
use crate::{Engine, ExecutionOptions, Inner, PipelineSource, Submission, SubmitError};

/// How deep executions may nest (a pipeline that runs itself stops here).
pub const MAX_DEPTH: i64 = 10;

/// The longest wait before a retried child starts (one hour).
const MAX_RETRY_DELAY_MS: i64 = 3_600_000;

/// What a step's parameters ask for.
struct Call {
    pipeline: Value,
    inputs: Map<String, Value>,
    inherit_context: bool,
    wait: bool,
    timeout_secs: Option<u64>,
    output_mapping: Map<String, Value>,
    error_handling: String,
    retry_count: u64,
    /// Seconds before the second try; doubled for each one after (the seed's
    /// backoff).
    retry_delay: f64,
}

fn read(parameters: &Map<String, Value>) -> Result<Call, String> {
    let pipeline = parameters
        .get("pipeline")
        .cloned()
        .filter(|p| !p.is_null())
        .ok_or("missing parameter 'pipeline'")?;
    let obj = |key: &str| match parameters.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(format!("parameter '{key}' must be an object, got {other}")),
    };
    let flag = |key: &str, default: bool| match parameters.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!(
            "parameter '{key}' must be true or false, got {other}"
        )),
    };
    let error_handling = match parameters.get("error_handling") {
        None | Some(Value::Null) => "fail".to_string(),
        Some(Value::String(s)) if ["fail", "continue", "retry"].contains(&s.as_str()) => s.clone(),
        Some(other) => {
            return Err(format!(
                "error_handling must be fail, continue or retry; got {other}"
            ));
        }
    };
    let timeout_secs = match parameters.get("timeout").and_then(Value::as_f64) {
        Some(t) if t > 0.0 => Some(t.ceil() as u64),
        _ => None,
    };
    Ok(Call {
        pipeline,
        inputs: obj("inputs")?,
        inherit_context: flag("inherit_context", true)?,
        wait: flag("wait_for_completion", true)?,
        timeout_secs,
        output_mapping: obj("output_mapping")?,
        error_handling,
        retry_count: parameters
            .get("retry_count")
            .and_then(Value::as_u64)
            .unwrap_or(3)
            .min(100),
        retry_delay: match parameters.get("retry_delay") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .ok_or_else(|| format!("retry_delay must be a number of seconds, got {v}"))?,
        },
    })
}

/// The names a pipeline declares as inputs (`parameters` and `inputs`).
fn declared_inputs(source: &PipelineSource) -> Vec<String> {
    let root = crate::submit::source_root(source);
    let mut names = Vec::new();
    for block in ["parameters", "inputs"] {
        if let Some(orchestrator_core::yaml::NodeValue::Map(entries)) =
            root.as_ref().and_then(|r| r.get(block)).map(|n| &n.value)
        {
            names.extend(entries.iter().map(|(k, _)| k.name.clone()));
        }
    }
    names
}

/// The child's text: inline YAML or an object, a stored pipeline
/// (`name`, `name@version`), or a YAML file in the workspace (as the seed
/// looks for it: the path, then under `examples/` and `pipelines/`).
async fn resolve_source(
    inner: &Arc<Inner>,
    pipeline: &Value,
    ctx: &ToolContext,
) -> Result<PipelineSource, (ErrorKind, String)> {
    let text = match pipeline {
        Value::Object(_) => return Ok(PipelineSource::Json(pipeline.clone())),
        Value::String(s) => s.trim(),
        other => {
            return Err((
                ErrorKind::ValidationError,
                format!("parameter 'pipeline' must be YAML text, a name or an object; got {other}"),
            ));
        }
    };
    if text.contains('\n') || text.starts_with("id:") || text.starts_with("name:") {
        return Ok(PipelineSource::Yaml(text.to_string()));
    }
    let file = |path: &str| -> Option<String> {
        let found = orchestrator_tools::filesystem::resolve(&ctx.workspace, path).ok()?;
        std::fs::read_to_string(found.full).ok()
    };
    let is_file = text.ends_with(".yaml") || text.ends_with(".yml");
    if !is_file {
        let (name, version) = match text.split_once('@') {
            Some((n, v)) => match v.parse::<i64>() {
                Ok(v) => (n, Some(v)),
                Err(_) => {
                    return Err((
                        ErrorKind::ValidationError,
                        format!("'{text}': the version after '@' must be a number"),
                    ));
                }
            },
            None => (text, None),
        };
        match inner.store.get_pipeline(name, version).await {
            Ok(Some(stored)) => {
                return Ok(match stored.format.as_str() {
                    "json" => PipelineSource::Json(
                        serde_json::from_str(&stored.source).unwrap_or(Value::Null),
                    ),
                    _ => PipelineSource::Yaml(stored.source),
                });
            }
            Ok(None) if version.is_some() => {
                return Err((
                    ErrorKind::ValidationError,
                    format!("pipeline '{name}' has no version {}", version.unwrap_or(0)),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err((ErrorKind::StoreError, e.to_string())),
        }
        for candidate in [
            format!("{text}.yaml"),
            format!("{text}.yml"),
            format!("pipelines/{text}.yaml"),
            format!("examples/{text}.yaml"),
        ] {
            if let Some(t) = file(&candidate) {
                return Ok(PipelineSource::Yaml(t));
            }
        }
        return Err((
            ErrorKind::ValidationError,
            format!(
                "no pipeline is stored as '{text}' (PUT /pipelines/{text}), and no workspace file {text}.yaml"
            ),
        ));
    }
    for candidate in [
        text.to_string(),
        format!("examples/{text}"),
        format!("pipelines/{text}"),
    ] {
        if let Some(t) = file(&candidate) {
            return Ok(PipelineSource::Yaml(t));
        }
    }
    Err((
        ErrorKind::FileNotFoundError,
        format!("pipeline file '{text}' is not in the workspace"),
    ))
}

/// Runs a `pipeline-executor` step.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    parameters: &Map<String, Value>,
    ctx: &ToolContext,
) -> Attempt {
    let shown = Some(Value::Object(parameters.clone()));
    let failed = |kind: ErrorKind, message: String| Attempt::failed(kind, message, shown.clone());
    let call = match read(parameters) {
        Ok(call) => call,
        Err(message) => return failed(ErrorKind::ValidationError, message),
    };
    let store = &inner.store;
    let wait = match store
        .get_wait(&claimed.execution_id, &claimed.step_id)
        .await
    {
        Ok(w) => w,
        Err(e) => return failed(ErrorKind::StoreError, e.to_string()),
    };
    // The child ended: its outcome is the step's.
    if let Some(wait) = wait.filter(|w| w.answered_at.is_some() && w.kind == "pipeline-executor") {
        let answer = wait.answer.unwrap_or_default();
        let tries = wait.request["tries"].as_u64().unwrap_or(1);
        let child = answer["execution_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if answer["status"] == "succeeded" {
            let outputs = answer["outputs"].as_object().cloned().unwrap_or_default();
            let mapped = if call.output_mapping.is_empty() {
                outputs
            } else {
                call.output_mapping
                    .iter()
                    .filter_map(|(from, to)| {
                        Some((to.as_str()?.to_string(), outputs.get(from)?.clone()))
                    })
                    .collect()
            };
            return Attempt::succeeded(
                json!({
                    "success": true,
                    "execution_id": child,
                    "status": "succeeded",
                    "outputs": mapped,
                    "tries": tries,
                }),
                shown,
                None,
            );
        }
        let error = format!(
            "sub-pipeline execution {child} {}: {}",
            answer["status"].as_str().unwrap_or("failed"),
            answer["error"].as_str().unwrap_or("no error given")
        );
        match call.error_handling.as_str() {
            "continue" => {
                return Attempt::succeeded(
                    json!({
                        "success": false,
                        "execution_id": child,
                        "status": answer["status"],
                        "error": error,
                        "continued": true,
                        "tries": tries,
                    }),
                    shown,
                    None,
                );
            }
            "retry" if tries <= call.retry_count => {
                // Another child, below.
                return start(inner, claimed, &call, parameters, ctx, tries + 1).await;
            }
            _ => return failed(ErrorKind::ChildExecutionError, error),
        }
    }
    // Run again after a recovery: a child that failed is recovered, not
    // started anew; one still running is waited for.
    let previous = match store
        .list_executions(&ExecutionFilter {
            parent: Some(claimed.execution_id.clone()),
            parent_step: Some(claimed.step_id.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
    {
        Ok(mut found) => found.pop(),
        Err(e) => return failed(ErrorKind::StoreError, e.to_string()),
    };
    if call.wait
        && let Some(child) =
            previous.filter(|c| c.status != orchestrator_core::flow::ExecutionStatus::Succeeded)
    {
        // Recovered first, then waited for: a child that ends before the
        // wait is stored is answered by the reconciler (never the reverse,
        // which could answer with the child's old failure).
        if child.status.is_terminal() {
            let engine = Engine {
                inner: Arc::clone(inner),
            };
            // Nothing to recover (or it cannot be): the reconciler answers
            // with how the child ended.
            if let Err(e) = engine.recover(&child.id, None).await {
                tracing::warn!(execution.id = %child.id, error = %e, "recovering a child execution failed");
            }
        }
        let request = json!({"execution_id": child.id, "pipeline_id": child.pipeline_id, "tries": 1, "recovered": true});
        if let Err(e) = store
            .wait_step(claimed, "pipeline-executor", &request, shown.as_ref(), None)
            .await
        {
            return match e {
                StoreError::LeaseLost { .. } => Attempt::waiting(),
                e => failed(ErrorKind::StoreError, e.to_string()),
            };
        }
        return Attempt::waiting();
    }
    start(inner, claimed, &call, parameters, ctx, 1).await
}

/// Creates a child execution (the `tries`th) and, when the step waits for
/// it, makes the step wait in the same commit.
async fn start(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    call: &Call,
    parameters: &Map<String, Value>,
    ctx: &ToolContext,
    tries: u64,
) -> Attempt {
    let shown = Some(Value::Object(parameters.clone()));
    let failed = |kind: ErrorKind, message: String| Attempt::failed(kind, message, shown.clone());
    let parent = match inner.store.get_execution(&claimed.execution_id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return failed(
                ErrorKind::ExecutionError,
                "the execution no longer exists".into(),
            );
        }
        Err(e) => return failed(ErrorKind::StoreError, e.to_string()),
    };
    let depth = parent.depth + 1;
    let max_depth = i64::try_from(limits::get().max_pipeline_depth).unwrap_or(MAX_DEPTH);
    if depth > max_depth {
        return failed(
            ErrorKind::LimitExceededError,
            format!(
                "pipelines may nest {max_depth} deep (limits.max_pipeline_depth); this child would be at depth {depth}"
            ),
        );
    }
    let source = match resolve_source(inner, &call.pipeline, ctx).await {
        Ok(s) => s,
        Err((kind, message)) => return failed(kind, message),
    };
    let mut context = Map::new();
    if call.inherit_context
        && let Value::Object(inherited) = &parent.inputs
    {
        // Only what the child declares: it refuses inputs it does not know.
        for name in declared_inputs(&source) {
            if let Some(v) = inherited.get(&name) {
                context.insert(name, v.clone());
            }
        }
    }
    context.extend(call.inputs.clone());
    let mut options: ExecutionOptions =
        serde_json::from_value(parent.options.clone()).unwrap_or_default();
    options.timeout_seconds = call.timeout_secs;
    // The `tries`th try waits retry_delay · 2^(tries - 2) first.
    let start_after = (tries > 1).then(|| {
        let factor = 2f64.powi(i32::try_from(tries - 2).unwrap_or(30).min(30));
        let delay_ms = (call.retry_delay * factor * 1000.0).min(MAX_RETRY_DELAY_MS as f64);
        orchestrator_store::now_ms() + delay_ms as i64
    });
    let link = ParentLink {
        start_after,
        execution_id: parent.id.clone(),
        step_id: claimed.step_id.clone(),
        root_execution_id: parent
            .root_execution_id
            .clone()
            .unwrap_or(parent.id.clone()),
        depth,
        wait: call.wait.then(|| ChildWait {
            lease_token: claimed.lease_token.clone(),
            request: json!({"tries": tries, "pipeline": match &call.pipeline {
                Value::String(s) if !s.contains('\n') => Value::String(s.clone()),
                _ => Value::String("(inline)".into()),
            }}),
            parameters: shown.clone(),
        }),
    };
    let engine = Engine {
        inner: Arc::clone(inner),
    };
    let submission = Submission {
        source,
        context,
        options,
        idempotency_key: None,
        token_id: None,
    };
    match engine.submit_linked(submission, Some(link)).await {
        Ok((child, _)) if call.wait => {
            tracing::info!(execution.id = %parent.id, step.id = %claimed.step_id, child = %child.id, "step {} waits for execution {}", claimed.step_id, child.id);
            Attempt::waiting()
        }
        Ok((child, _)) => Attempt::succeeded(
            json!({"success": true, "execution_id": child.id, "status": child.status.as_str(), "waited": false}),
            shown,
            None,
        ),
        Err(SubmitError::Store(StoreError::LeaseLost { .. })) => Attempt::waiting(),
        Err(SubmitError::Store(StoreError::LimitExceeded(m))) => {
            failed(ErrorKind::LimitExceededError, m)
        }
        Err(SubmitError::Compile(e)) => failed(
            ErrorKind::ValidationError,
            format!(
                "the sub-pipeline is invalid: {}",
                e.errors
                    .iter()
                    .take(3)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Err(e) => failed(ErrorKind::ExecutionError, e.to_string()),
    }
}
