//! Loops: a `for_each` step expands into its iterations at run time, a
//! `while` step one iteration at a time; the loop step joins their results.

use crate::scope::{build_scope, step_value};
use crate::step::Attempt;
use crate::{ExecutionOptions, Inner};
use orchestrator_core::flow::StepStatus;
use orchestrator_core::model::LoopItems;
use orchestrator_core::plan::{PlannedStep, StepKind};
use orchestrator_core::template::Scope;
use orchestrator_core::{LoopSpec, plan, template};
use orchestrator_store::{ClaimedStep, NewStep, StoreError};
use orchestrator_tools::ErrorKind;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{debug, info};

/// A loop's result: one object per iteration, `{body_step_id: result}`
/// (`null` for a body step that did not succeed).
pub(crate) fn join_result(
    planned: &PlannedStep,
    results: &[(String, StepStatus, Option<Value>)],
) -> Value {
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
pub(crate) fn previous_iteration_aliases(planned: &PlannedStep) -> BTreeMap<String, String> {
    let Some(spec) = &planned.step.loop_spec else {
        return BTreeMap::new();
    };
    let last = planned.iterations.saturating_sub(1);
    spec.body()
        .iter()
        .map(|b| (b.id.clone(), format!("{}_{last}_{}", planned.id, b.id)))
        .collect()
}

pub(crate) fn new_steps(expansion: &plan::Expansion, options: &ExecutionOptions) -> Vec<NewStep> {
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
pub(crate) async fn expand(
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
        Err(StoreError::LimitExceeded(message)) => Ok(Some(Attempt::failed(
            ErrorKind::LimitExceededError,
            message,
            None,
        ))),
        Err(e) => Err(e),
    }
}

/// Renders a `for_each` loop's items and inserts its iterations; `None` when
/// the loop now waits for them.
pub(crate) async fn expand_for_each(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    scope: &Scope,
    options: &ExecutionOptions,
) -> Result<Option<Attempt>, StoreError> {
    let Some(LoopSpec::ForEach { items, .. }) = &planned.step.loop_spec else {
        return Ok(Some(Attempt::failed(
            ErrorKind::ExecutionError,
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
                ErrorKind::TemplateError,
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
            ErrorKind::LimitExceededError,
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
        Err(e) => return Ok(Some(Attempt::failed(ErrorKind::ExecutionError, e, None))),
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
pub(crate) async fn expand_while(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    planned: &PlannedStep,
    ctx: &orchestrator_store::StepContext,
    options: &ExecutionOptions,
) -> Result<Option<Attempt>, StoreError> {
    let Some(LoopSpec::While {
        condition,
        until,
        max_iterations,
        steps: body,
    }) = &planned.step.loop_spec
    else {
        return Ok(Some(Attempt::failed(
            ErrorKind::ExecutionError,
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
        match found.and_then(|(status, env)| step_value(status, env.as_ref())) {
            Some(value) => {
                scope.set_step(b.id.clone(), value);
            }
            // Not run yet (before the first iteration).
            None => {
                scope.set_none(b.id.clone());
            }
        }
    }
    let cancel = tokio_util::sync::CancellationToken::new();
    let eval = |key: &'static str, condition: &str| {
        let (inner, scope, cancel) = (inner, &scope, &cancel);
        let condition = condition.to_string();
        async move {
            crate::step_tags::eval_condition(
                inner,
                &claimed.execution_id,
                &claimed.step_id,
                &condition,
                scope,
                cancel,
            )
            .await
            .map_err(|e| {
                Attempt::failed(
                    ErrorKind::ConditionError,
                    format!("{key} condition cannot be evaluated at iteration {n}: {e}"),
                    None,
                )
            })
        }
    };
    // `until` is looked at after each iteration, `while` before each.
    let go_on = if n >= *max_iterations {
        false
    } else {
        let done = match (until, n) {
            (Some(until), 1..) => match eval("until", until).await {
                Ok(b) => b,
                Err(failed) => return Ok(Some(failed)),
            },
            _ => false,
        };
        !done
            && match eval("while", condition).await {
                Ok(b) => b,
                Err(failed) => return Ok(Some(failed)),
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
        Err(e) => return Ok(Some(Attempt::failed(ErrorKind::ExecutionError, e, None))),
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
