//! What a step sees: the scope its templates render against (inputs, the
//! results of the steps it reads, loop values) and the check of its rendered
//! parameters against the action's schema.

use crate::expand::previous_iteration_aliases;
use crate::{Inner, lock};
use orchestrator_core::flow::StepStatus;
use orchestrator_core::plan;
use orchestrator_core::plan::{PlannedStep, StepKind};
use orchestrator_core::template::{Scope, StepEnvelope};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::warn;

/// Ids of the steps whose results a step's templates can read.
pub(crate) fn referenced_ids(planned: &PlannedStep) -> Vec<String> {
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
pub(crate) fn check_parameters(
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
pub(crate) fn envelope_of(env: &Value) -> StepEnvelope {
    StepEnvelope::finished(
        env.get("result").cloned().unwrap_or(Value::Null),
        env.get("success").and_then(Value::as_bool).unwrap_or(false),
        env.get("error").and_then(Value::as_str).map(str::to_string),
    )
}

/// A step as templates see it, by its status: `None` while it has not
/// settled (pending, ready, running).
pub(crate) fn step_value(status: &StepStatus, env: Option<&Value>) -> Option<StepEnvelope> {
    match (status, env) {
        (StepStatus::Succeeded | StepStatus::Failed, Some(env)) => Some(envelope_of(env)),
        (StepStatus::Skipped, _) => Some(StepEnvelope::not_run("skipped", None)),
        (StepStatus::Cancelled, _) => Some(StepEnvelope::not_run("cancelled", None)),
        _ => None,
    }
}

/// Builds the names a step's templates see.
pub(crate) fn build_scope(
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
    // One instant for the whole run, in UTC: `timestamp` is `started_at`
    // under the seed's older name (a date-time string, as `| date` and
    // `| slugify` expect), not a second reading of the clock.
    let started = when.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    scope.set(
        "execution",
        &json!({
            "id": execution_id,
            "started_at": started,
            "timestamp": started,
            "date": when.format("%Y-%m-%d").to_string(),
            "time": when.format("%H:%M:%S").to_string(),
        }),
    );
    scope.set("pipeline_id", &Value::String(pipeline_id.to_string()));
    // The seed's bare names, unless an input takes the name.
    let declared = |name: &str| inputs.get(name).is_some();
    if !declared("execution_id") {
        scope.set("execution_id", &Value::String(execution_id.to_string()));
    }
    if !declared("timestamp") {
        scope.set("timestamp", &Value::String(started.clone()));
    }
    let by_id: HashMap<&str, (&StepStatus, &Option<Value>)> = results
        .iter()
        .map(|(id, status, env)| (id.as_str(), (status, env)))
        .collect();
    let bind = |name: &str, id: &str, scope: &mut Scope| {
        if let Some((status, env)) = by_id.get(id)
            && let Some(value) = step_value(status, env.as_ref())
        {
            scope.set_step(name, value);
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
