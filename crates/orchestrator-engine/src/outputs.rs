//! The outputs of an execution, rendered when it finishes.

use crate::scope::build_scope;
use orchestrator_core::flow::StepStatus;
use orchestrator_core::{ExecutionPlan, template};
use orchestrator_store::{ExecutionRecord, StepRecord};
use serde_json::{Map, Value};

/// Renders `outputs` when an execution finishes (called inside the store's
/// finishing transaction).
pub(crate) fn render_outputs(
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
