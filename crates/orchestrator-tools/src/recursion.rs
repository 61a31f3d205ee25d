//! `recursion-control`: state and stop conditions for pipelines that call
//! themselves through `pipeline-executor`, as the seed's tool has them.
//!
//! A context (`context_id`, default `default`) is a JSON object of state
//! plus the time it was first used. Contexts are durable and belong to the
//! execution tree (the root execution and every child it starts), so a
//! recursive pipeline's levels share them, other executions do not see
//! them, and a restart loses nothing.

use async_trait::async_trait;
use orchestrator_core::template::{self, Scope};
use serde_json::{Map, Value, json};

use crate::memory::{Memory, Reach, Tree};
use crate::{ActionSpec, Tool, ToolContext, ToolError, action};

/// The memory namespace contexts live in.
const NAMESPACE: &str = "recursion-control";

#[derive(Debug, Clone, Copy, Default)]
pub struct RecursionControl;

#[async_trait]
impl Tool for RecursionControl {
    fn id(&self) -> &str {
        "recursion-control"
    }

    fn description(&self) -> &str {
        "State and stop conditions for recursive pipelines, shared by the execution tree"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let context =
            json!({"type": "string", "description": "the context's name (default `default`)"});
        vec![
            action(
                "check_condition",
                "Whether to stop: a limit (max_iterations, depth_limit, time_limit) is reached or the condition over state, depth, iterations, executions and call_stack holds",
                json!({"type": "object", "required": ["condition"], "properties": {
                    "context_id": context,
                    "condition": {"type": ["string", "boolean"], "description": "an expression, e.g. `state.get('count', 0) >= 3` or `depth >= 2`"},
                    "max_iterations": {"type": "integer", "minimum": 0, "description": "child executions the tree may start (default 1000)"},
                    "depth_limit": {"type": "integer", "minimum": 0, "description": "default 10"},
                    "time_limit": {"type": "number", "minimum": 0, "description": "seconds since the context was first used (0: none)"}
                }}),
            ),
            action(
                "update_state",
                "Set a state key to state_value, or add increment to it (atomic across processes)",
                json!({"type": "object", "required": ["state_key"], "properties": {
                    "context_id": context,
                    "state_key": {"type": "string", "minLength": 1},
                    "state_value": {},
                    "increment": {"type": "number"}
                }}),
            ),
            action(
                "get_state",
                "One state key (with state_key) or the whole context",
                json!({"type": "object", "properties": {
                    "context_id": context,
                    "state_key": {"type": "string"}
                }}),
            ),
            action(
                "reset",
                "Forget a context",
                json!({"type": "object", "properties": {"context_id": context}}),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let memory = ctx.memory("recursion-control")?;
        let context_id = match p.get("context_id") {
            None | Some(Value::Null) => "default".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        match action {
            "check_condition" => check_condition(memory, &context_id, p).await,
            "update_state" => update_state(memory, &context_id, p).await,
            "get_state" => get_state(memory, &context_id, p).await,
            "reset" => {
                memory
                    .clear(Reach::Tree, NAMESPACE, Some(&context_id))
                    .await?;
                Ok(json!({
                    "message": format!("Recursion context '{context_id}' reset"),
                    "context_id": context_id,
                }))
            }
            other => Err(ToolError::invalid(format!(
                "unknown action '{other}': use check_condition, update_state, get_state or reset"
            ))),
        }
    }
}

/// A context as stored: `{state: {…}, started_at: ms}`.
fn fresh() -> Value {
    json!({"state": {}, "started_at": now_ms()})
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn state_of(context: &Value) -> Map<String, Value> {
    context
        .get("state")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The context, created (and its clock started) on first use.
async fn open(memory: &dyn Memory, id: &str) -> Result<Value, ToolError> {
    let change = |v: Option<&Value>| Ok(v.cloned().unwrap_or_else(fresh));
    memory
        .update(Reach::Tree, NAMESPACE, id, &change)
        .await?
        .map_err(ToolError::invalid)
}

fn number(p: &Map<String, Value>, name: &str, default: f64) -> Result<f64, ToolError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(default)),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| ToolError::invalid(format!("'{name}' must be a number, got '{s}'"))),
        Some(other) => Err(ToolError::invalid(format!(
            "'{name}' must be a number, got {other}"
        ))),
    }
}

fn iterations(tree: &Tree) -> i64 {
    tree.executions.values().sum()
}

async fn check_condition(
    memory: &dyn Memory,
    id: &str,
    p: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let condition = match p.get("condition") {
        Some(Value::String(s)) if !s.trim().is_empty() => Value::String(s.clone()),
        Some(Value::Bool(b)) => Value::Bool(*b),
        _ => {
            return Err(ToolError::invalid(
                "'condition' is required for check_condition",
            ));
        }
    };
    let max_iterations = number(p, "max_iterations", 1000.0)?;
    let depth_limit = number(p, "depth_limit", 10.0)?;
    let time_limit = number(p, "time_limit", 0.0)?;
    let context = open(memory, id).await?;
    let state = state_of(&context);
    let tree = memory.tree().await?;
    let iterations = iterations(&tree);
    let started = context
        .get("started_at")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let elapsed = (now_ms() - started).max(0) as f64 / 1000.0;
    let exceeded = if iterations as f64 >= max_iterations {
        Some(("max_iterations", json!(iterations), json!(max_iterations)))
    } else if tree.depth as f64 >= depth_limit {
        Some(("depth_limit", json!(tree.depth), json!(depth_limit)))
    } else if time_limit > 0.0 && elapsed >= time_limit {
        Some(("time_limit", json!(elapsed), json!(time_limit)))
    } else {
        None
    };
    if let Some((reason, value, limit)) = exceeded {
        return Ok(json!({
            "should_terminate": true,
            "reason": format!("{reason} exceeded"),
            "details": {"limit_exceeded": true, "reason": reason, "value": value, "limit": limit},
            "state": state,
            "iterations": iterations,
            "depth": tree.depth,
        }));
    }
    let should_terminate = match &condition {
        Value::Bool(b) => *b,
        Value::String(text) => {
            let mut scope = Scope::new();
            scope
                .set("state", &Value::Object(state.clone()))
                .set("depth", &json!(tree.depth))
                .set("iterations", &json!(iterations))
                .set("executions", &json!(tree.executions))
                .set("call_stack", &json!(tree.call_stack))
                .set("call_stack_size", &json!(tree.call_stack.len()));
            template::eval_condition(text, &scope).map_err(|e| {
                ToolError::invalid(format!(
                    "condition '{text}' cannot be evaluated: {}",
                    e.message
                ))
            })?
        }
        _ => false,
    };
    Ok(json!({
        "should_terminate": should_terminate,
        "condition": condition,
        "state": state,
        "iterations": iterations,
        "depth": tree.depth,
        "execution_counts": tree.executions,
    }))
}

async fn update_state(
    memory: &dyn Memory,
    id: &str,
    p: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let key = match p.get("state_key") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => {
            return Err(ToolError::invalid(
                "'state_key' is required for update_state",
            ));
        }
    };
    let set = p.get("state_value").cloned();
    let increment = match p.get("increment") {
        None | Some(Value::Null) => None,
        Some(_) => Some(number(p, "increment", 0.0)?),
    };
    if set.is_none() && increment.is_none() {
        return Err(ToolError::invalid(
            "update_state needs 'state_value' or 'increment'",
        ));
    }
    let change = |current: Option<&Value>| -> Result<Value, String> {
        let mut context = current.cloned().unwrap_or_else(fresh);
        let mut state = state_of(&context);
        let new = match (&set, increment) {
            (Some(v), _) => v.clone(),
            (None, Some(by)) => add(state.get(&key), by)?,
            (None, None) => Value::Null,
        };
        state.insert(key.clone(), new);
        context["state"] = Value::Object(state);
        Ok(context)
    };
    let context = memory
        .update(Reach::Tree, NAMESPACE, id, &change)
        .await?
        .map_err(ToolError::invalid)?;
    let state = state_of(&context);
    Ok(json!({
        "state_key": key,
        "new_value": state.get(&key).cloned().unwrap_or(Value::Null),
        "full_state": state,
    }))
}

/// `current + by`, integers kept integers.
fn add(current: Option<&Value>, by: f64) -> Result<Value, String> {
    let base = match current {
        None | Some(Value::Null) => json!(0),
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(other) => return Err(format!("cannot increment a non-numeric value: {other}")),
    };
    if let Some(i) = base.as_i64()
        && by.fract() == 0.0
        && by.abs() < 9e15
    {
        return Ok(json!(i.saturating_add(by as i64)));
    }
    Ok(json!(base.as_f64().unwrap_or(0.0) + by))
}

async fn get_state(
    memory: &dyn Memory,
    id: &str,
    p: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let context = memory
        .get(Reach::Tree, NAMESPACE, id)
        .await?
        .map(|e| e.value);
    let state = context.as_ref().map(state_of).unwrap_or_default();
    if let Some(Value::String(key)) = p.get("state_key") {
        return Ok(json!({
            "state_key": key,
            "value": state.get(key).cloned().unwrap_or(Value::Null),
            "exists": state.contains_key(key),
        }));
    }
    let tree = memory.tree().await?;
    Ok(json!({
        "state": state,
        "iterations": iterations(&tree),
        "depth": tree.depth,
        "call_stack": tree.call_stack,
        "execution_counts": tree.executions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_keep_integers_and_refuse_text() {
        assert_eq!(add(None, 1.0), Ok(json!(1)));
        assert_eq!(add(Some(&json!(2)), 3.0), Ok(json!(5)));
        assert_eq!(add(Some(&json!(2)), 0.5), Ok(json!(2.5)));
        assert!(add(Some(&json!("x")), 1.0).is_err());
    }
}
