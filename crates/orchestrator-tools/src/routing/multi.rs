//! `multi-model-routing`: one request, a list of tasks within a budget, or
//! a batch run on one model, routed by strategy over the registry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::*;
use crate::models::providers::{ChatRequest, Message};
use crate::models::{Requirements, Strategy};
use crate::{optional_count, optional_str};

/// `multi-model-routing`: requests and tasks routed across models.
#[derive(Debug, Default)]
pub struct MultiModelRouting {
    next: AtomicUsize,
}

const ROUTING_STRATEGIES: &[&str] = &[
    "capability_based",
    "cost_optimized",
    "least_loaded",
    "round_robin",
    "ucb",
    "cheapest",
    "fastest",
    "fixed",
];

#[async_trait]
impl Tool for MultiModelRouting {
    fn id(&self) -> &str {
        "multi-model-routing"
    }

    fn description(&self) -> &str {
        "Routes a request, a list of tasks or a batch across registered models by strategy, with live load and recorded prices and latencies"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let tasks = json!({"type": "array", "minItems": 1, "items": {"anyOf": [
            {"type": "string"},
            {"type": "object", "required": ["task"], "properties": {"task": {"type": "string"}, "context": {"type": "string"}}}
        ]}});
        vec![
            action(
                "execute",
                "Choose the model for one request: {selected_model, routing_reason, strategy, current_load, average_latency, all_loads}; no model is called",
                json!({"type": "object", "properties": {
                    "request": {"type": "string", "description": "the request (or the first of tasks)"},
                    "tasks": tasks,
                    "models": {"description": "registered models to choose among (a list, or text listing them); default all", "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
                    "strategy": {"enum": ROUTING_STRATEGIES, "description": "default capability_based"},
                    "max_concurrent": {"type": "integer", "minimum": 1, "description": "skip models with this many calls in flight in this process (default 5)"},
                    "timeout": {"type": "number", "description": "accepted for the seed's pipelines; the step's timeout applies"}
                }}),
            ),
            action(
                "route",
                "Choose a model for each task within a budget: {recommendations: [{task_index, model, estimated_cost, estimated_latency, reasons}], total_estimated_cost, models_selected, routing_strategy, tasks_count}; no model is called",
                json!({"type": "object", "required": ["tasks"], "properties": {
                    "tasks": tasks,
                    "routing_strategy": {"enum": ["balanced", "cost", "speed", "quality", "cost_optimized", "quality_optimized"], "description": "default balanced"},
                    "constraints": {"type": "object", "description": "total_budget (US dollars, default 100), max_latency (seconds; models observed slower rank last)"}
                }}),
            ),
            action(
                "optimize_batch",
                "Run every task on the model that meets the goal within the per-task budget: {results, total_cost, average_cost, models_used, strategy, task_count}",
                json!({"type": "object", "required": ["tasks"], "properties": {
                    "tasks": tasks,
                    "optimization_goal": {"enum": ["minimize_cost", "balanced", "maximize_quality"], "description": "default minimize_cost"},
                    "constraints": {"type": "object", "description": "max_budget_per_task (US dollars, default 0.05)"},
                    "max_tokens": {"type": "integer", "minimum": 1, "description": "per task (default 512)"}
                }}),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let models = ctx.models(self.id())?;
        match action {
            "route" => route_tasks(models, params).await,
            "optimize_batch" => optimize_batch(models, params, ctx).await,
            _ => self.route_one(models, params).await,
        }
    }
}

/// The text of each task: `task`, with its `context` after it.
fn task_texts(params: &Map<String, Value>) -> Result<Vec<String>, ToolError> {
    let Some(Value::Array(items)) = params.get("tasks") else {
        return Err(ToolError::invalid(
            "parameter 'tasks' must be a list of tasks",
        ));
    };
    if items.is_empty() {
        return Err(ToolError::invalid("parameter 'tasks' is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Value::Object(o) => {
                let task = o.get("task").map(as_text).unwrap_or_default();
                if task.trim().is_empty() {
                    return Err(ToolError::invalid(format!("tasks[{i}] has no 'task'")));
                }
                Ok(
                    match o
                        .get("context")
                        .map(as_text)
                        .filter(|c| !c.trim().is_empty())
                    {
                        Some(c) => format!("{task}\n\nContext: {c}"),
                        None => task,
                    },
                )
            }
            other => Ok(as_text(other)),
        })
        .collect()
}

fn number_in(obj: Option<&Value>, name: &str, default: f64) -> Result<f64, ToolError> {
    number(
        obj.and_then(|c| c.get(name)),
        &format!("constraints.{name}"),
        default,
        0.0..=f64::INFINITY,
    )
}

impl MultiModelRouting {
    async fn route_one(
        &self,
        models: &dyn ModelGateway,
        params: &Map<String, Value>,
    ) -> Result<Value, ToolError> {
        let request = match optional_str(params, "request")?.filter(|r| !r.trim().is_empty()) {
            Some(r) => r.to_string(),
            None => task_texts(params)
                .map_err(|_| ToolError::invalid("give 'request' (or 'tasks')"))?
                .remove(0),
        };
        let strategy = optional_str(params, "strategy")?.unwrap_or("capability_based");
        if !ROUTING_STRATEGIES.contains(&strategy) {
            return Err(ToolError::invalid(format!(
                "parameter 'strategy' is '{strategy}'; one of {}",
                ROUTING_STRATEGIES.join(", ")
            )));
        }
        let max_concurrent =
            optional_count(params, "max_concurrent", 1..=u64::MAX)?.unwrap_or(5) as usize;
        let registry = registered(models).await?;
        let named = params.get("models").map(name_list).unwrap_or_default();
        let candidates: Vec<ModelSpec> = if named.is_empty() {
            registry
        } else {
            let mut found = Vec::new();
            for name in &named {
                let spec = models.named(name).await.map_err(|e| {
                    ToolError::new(e.kind, format!("parameter 'models': {}", e.message))
                })?;
                if !found.iter().any(|m: &ModelSpec| m.id == spec.id) {
                    found.push(spec);
                }
            }
            found
        };
        let loads = models.in_flight();
        let load = |id: &str| loads.get(id).copied().unwrap_or(0);
        let open: Vec<ModelSpec> = candidates
            .iter()
            .filter(|m| load(&m.id) < max_concurrent)
            .cloned()
            .collect();
        let all_loads: BTreeMap<&str, usize> = candidates
            .iter()
            .map(|m| (m.id.as_str(), load(&m.id)))
            .collect();
        if open.is_empty() {
            return Err(ToolError::new(
                ErrorKind::LimitExceededError,
                format!(
                    "every model is at capacity ({max_concurrent} calls in flight): {}",
                    serde_json::to_string(&all_loads).unwrap_or_default()
                ),
            ));
        }
        let stats = models.stats().await?;
        let (chosen, reason) = match strategy {
            "round_robin" => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % open.len();
                (
                    open[i].clone(),
                    format!("Round-robin selection ({} of {})", i + 1, open.len()),
                )
            }
            "least_loaded" => {
                let best = open
                    .iter()
                    .min_by_key(|m| load(&m.id))
                    .cloned()
                    .unwrap_or_else(|| open[0].clone());
                let n = load(&best.id);
                (best, format!("Least loaded (current load: {n})"))
            }
            "capability_based" => {
                let analysis = analyze(&request, None);
                let scored = rank(&open, &stats, &request, &analysis, 0.3, 0.7);
                let best = &scored[0];
                let why: Vec<&str> = best.reasons.iter().take(2).map(String::as_str).collect();
                (
                    best.spec.clone(),
                    format!("Best for task: {}", why.join(", ")),
                )
            }
            other => {
                let strategy = match other {
                    "cost_optimized" => Strategy::Cheapest,
                    named => named.parse().map_err(ToolError::invalid)?,
                };
                let selection = models
                    .select(Some(&open), &Requirements::default(), Some(strategy))
                    .await?;
                let reason = if other == "cost_optimized" {
                    format!(
                        "Lowest cost (${:.3}/1k tokens)",
                        selection.model.cost_per_1k_tokens.blended()
                    )
                } else {
                    selection.reason.clone()
                };
                (selection.model, reason)
            }
        };
        let average_latency = stats
            .get(&chosen.id)
            .filter(|s| s.calls > 0)
            .and_then(|s| s.latency_p50_ms)
            .map(|ms| ms / 1000.0);
        Ok(json!({
            "selected_model": chosen.id,
            "routing_reason": reason,
            "strategy": strategy,
            "current_load": load(&chosen.id),
            "average_latency": average_latency,
            "all_loads": all_loads,
        }))
    }
}

/// Weights for a `route` strategy: (cost, quality).
fn route_weights(strategy: &str) -> Result<(f64, f64), ToolError> {
    match strategy {
        "cost" | "cost_optimized" => Ok((0.9, 0.1)),
        "quality" | "quality_optimized" => Ok((0.1, 0.9)),
        "speed" => Ok((0.1, 0.2)),
        "balanced" => Ok((0.4, 0.4)),
        other => Err(ToolError::invalid(format!(
            "parameter 'routing_strategy' is '{other}'; one of balanced, cost, speed, quality, cost_optimized, quality_optimized"
        ))),
    }
}

async fn route_tasks(
    models: &dyn ModelGateway,
    params: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let tasks = task_texts(params)?;
    let strategy = optional_str(params, "routing_strategy")?.unwrap_or("balanced");
    let (cost_weight, quality_weight) = route_weights(strategy)?;
    let constraints = params.get("constraints");
    let budget = number_in(constraints, "total_budget", 100.0)?;
    let max_latency = number_in(constraints, "max_latency", f64::INFINITY)?;
    let candidates = registered(models).await?;
    let stats = models.stats().await?;
    let mut spent = 0.0;
    let mut recommendations = Vec::new();
    let mut chosen: Vec<String> = Vec::new();
    let mut unrouted = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let analysis = analyze(task, None);
        let mut scored = rank(
            &candidates,
            &stats,
            task,
            &analysis,
            cost_weight,
            quality_weight,
        );
        // Models observed slower than the limit go last.
        scored.sort_by_key(|s| s.estimated_latency.is_some_and(|l| l > max_latency));
        let pick = scored.iter().find(|s| spent + s.estimated_cost <= budget);
        match pick {
            Some(s) => {
                spent += s.estimated_cost;
                let mut reasons = s.reasons.clone();
                if s.spec.id != scored[0].spec.id {
                    reasons.insert(0, "Budget-constrained selection".to_string());
                }
                recommendations.push(json!({
                    "task_index": i,
                    "model": s.spec.id,
                    "estimated_cost": s.estimated_cost,
                    "estimated_latency": s.estimated_latency,
                    "reasons": reasons,
                }));
                if !chosen.contains(&s.spec.id) {
                    chosen.push(s.spec.id.clone());
                }
            }
            None => unrouted.push(json!({
                "task_index": i,
                "reason": format!("no model fits the ${budget} budget (${spent:.6} already allotted)"),
            })),
        }
    }
    Ok(json!({
        "recommendations": recommendations,
        "unrouted": unrouted,
        "total_estimated_cost": spent,
        "models_selected": chosen,
        "routing_strategy": strategy,
        "tasks_count": tasks.len(),
    }))
}

async fn optimize_batch(
    models: &dyn ModelGateway,
    params: &Map<String, Value>,
    ctx: &ToolContext,
) -> Result<Value, ToolError> {
    let tasks = task_texts(params)?;
    let goal = optional_str(params, "optimization_goal")?.unwrap_or("minimize_cost");
    let (cost_weight, quality_weight) = match goal {
        "minimize_cost" => (0.9, 0.1),
        "balanced" => (0.4, 0.4),
        "maximize_quality" => (0.1, 0.9),
        other => {
            return Err(ToolError::invalid(format!(
                "parameter 'optimization_goal' is '{other}'; one of minimize_cost, balanced, maximize_quality"
            )));
        }
    };
    let per_task = number_in(params.get("constraints"), "max_budget_per_task", 0.05)?;
    let max_tokens = optional_count(params, "max_tokens", 1..=u64::MAX)?.unwrap_or(512);
    let candidates = registered(models).await?;
    let stats = models.stats().await?;
    // One model for the batch, chosen on its longest task.
    let longest = tasks
        .iter()
        .max_by_key(|t| t.len())
        .cloned()
        .unwrap_or_default();
    let mut analysis = analyze(&longest, None);
    analysis.max_tokens = Some(max_tokens);
    let scored = rank(
        &candidates,
        &stats,
        &longest,
        &analysis,
        cost_weight,
        quality_weight,
    );
    let worst = |m: &ModelSpec, task: &str| {
        m.cost_per_1k_tokens
            .of((task.chars().count() as u64).div_ceil(4) + 16, max_tokens)
    };
    let model = scored
        .iter()
        .find(|s| worst(&s.spec, &longest) <= per_task)
        .map(|s| s.spec.clone())
        .ok_or_else(|| {
            ToolError::new(
                ErrorKind::BudgetExceeded,
                format!(
                    "no registered model can answer a task of this batch within max_budget_per_task ${per_task} at {max_tokens} tokens"
                ),
            )
        })?;
    ctx.log(
        crate::log::Stream::Log,
        &format!("batch of {} on model '{}' ({goal})", tasks.len(), model.id),
    );
    let mut results = Vec::new();
    let mut total = 0.0;
    for task in &tasks {
        let reply = models
            .chat(
                &model,
                &ChatRequest {
                    messages: vec![Message::text("user", task.clone())],
                    max_tokens: Some(max_tokens),
                    ..ChatRequest::default()
                },
            )
            .await?;
        total += reply.cost;
        results.push(Value::String(reply.text));
    }
    Ok(json!({
        "results": results,
        "total_cost": total,
        "average_cost": total / tasks.len() as f64,
        "models_used": [model.id],
        "strategy": goal,
        "optimization_goal": goal,
        "task_count": tasks.len(),
    }))
}
