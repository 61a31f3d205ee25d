//! The seed's model-routing tools on the server's registry and statistics:
//! `task-delegation` (which registered model suits a task, and why),
//! `multi-model-routing` (one request, many tasks or a batch routed across
//! models by a strategy) and `prompt-optimization` (the seed's rewriting
//! rules for a prompt and its target model).
//!
//! Nothing here keeps its own view of the models: candidates, prices,
//! success rates and latencies come from the registry and the recorded
//! calls every process shares, and calls go through the step's models.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::models::{ModelGateway, ModelSpec, ModelStats};
use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, as_text, required_str};

mod multi;
mod prompt;

pub use multi::MultiModelRouting;
pub use prompt::PromptOptimization;

/// What a task needs, read from its words (the seed's rules) and the
/// step's explicit requirements.
#[derive(Debug, Clone, PartialEq)]
struct TaskAnalysis {
    task_type: String,
    complexity: String,
    required_capabilities: Vec<String>,
    /// Capabilities the step asked for (the others are guessed from words).
    explicit: Vec<String>,
    response_format: Option<String>,
    max_tokens: Option<u64>,
    domain: Option<String>,
}

impl TaskAnalysis {
    fn to_json(&self) -> Value {
        json!({
            "task_type": self.task_type,
            "complexity": self.complexity,
            "required_capabilities": self.required_capabilities,
            "response_format": self.response_format,
            "max_tokens": self.max_tokens,
            "domain": self.domain,
        })
    }

    /// Output tokens a model is expected to write for it.
    fn expected_output(&self) -> u64 {
        self.max_tokens.unwrap_or(match self.complexity.as_str() {
            "simple" => 256,
            "moderate" => 1024,
            _ => 2048,
        })
    }
}

/// Task types by the words that give them away, in the seed's order.
const TASK_TYPES: &[(&str, &[&str])] = &[
    (
        "code_generation",
        &[
            "write code",
            "implement",
            "create function",
            "generate code",
        ],
    ),
    (
        "code_analysis",
        &["analyze code", "review code", "debug", "find bugs"],
    ),
    (
        "creative_writing",
        &["write story", "creative", "poem", "narrative"],
    ),
    (
        "analysis",
        &["analyze", "examine", "investigate", "evaluate"],
    ),
    ("summarization", &["summarize", "tldr", "brief", "overview"]),
    (
        "question_answering",
        &["what", "why", "how", "when", "where", "who"],
    ),
    (
        "translation",
        &["translate", "convert to", "in spanish", "in french"],
    ),
    (
        "data_processing",
        &["process data", "transform", "extract", "parse"],
    ),
];

/// The model capabilities that serve a task type.
fn serving_capabilities(task_type: &str) -> &'static [&'static str] {
    match task_type {
        "code_generation" => &["code", "code_generation", "coding"],
        "code_analysis" => &["code", "code_analysis", "reasoning"],
        "creative_writing" => &["creative", "creative_writing", "writing"],
        "analysis" => &["analysis", "reasoning", "analyze"],
        "summarization" => &["summarization", "summarize", "summary"],
        "question_answering" => &["question_answering", "qa", "reasoning"],
        "translation" => &["translation", "translate", "multilingual"],
        "data_processing" => &["structured", "data_processing", "extraction", "json"],
        _ => &[],
    }
}

const GENERAL: &[&str] = &["general", "generate", "chat", "text"];

fn analyze(task: &str, requirements: Option<&Map<String, Value>>) -> TaskAnalysis {
    let lower = task.to_lowercase();
    let task_type = TASK_TYPES
        .iter()
        .find(|(_, words)| words.iter().any(|w| lower.contains(w)))
        .map_or("general", |(t, _)| t)
        .to_string();
    let count = |words: &[&str]| words.iter().filter(|w| lower.contains(*w)).count();
    let complex = count(&[
        "complex",
        "advanced",
        "detailed",
        "comprehensive",
        "sophisticated",
        "distributed",
        "microservices",
        "architecture",
        "infrastructure",
        "multi-tier",
        "enterprise",
        "large-scale",
        "production-grade",
        "high-performance",
        "scalable",
        "orchestrat",
        "kubernetes",
    ]);
    let moderate = count(&[
        "analyze",
        "implement",
        "design",
        "develop",
        "create",
        "build",
        "integrate",
        "optimize",
        "refactor",
        "migrate",
        "deploy",
    ]);
    let chars = task.chars().count();
    let complexity = if complex >= 2 || chars > 300 || lower.contains("complex") {
        "complex"
    } else if moderate >= 1 || chars > 100 {
        "moderate"
    } else {
        "simple"
    };
    let mut analysis = TaskAnalysis {
        task_type,
        complexity: complexity.to_string(),
        required_capabilities: Vec::new(),
        explicit: Vec::new(),
        response_format: None,
        max_tokens: None,
        domain: None,
    };
    if lower.contains("json") || lower.contains("structured") {
        analysis.response_format = Some("json".into());
        analysis.required_capabilities.push("structured".into());
    }
    if ["image", "picture", "visual"]
        .iter()
        .any(|w| lower.contains(w))
    {
        analysis.required_capabilities.push("vision".into());
    }
    if let Some(r) = requirements {
        if let Some(t) = r.get("task_type").and_then(Value::as_str) {
            analysis.task_type = t.to_string();
        }
        if let Some(c) = r.get("complexity").and_then(Value::as_str) {
            analysis.complexity = c.to_string();
        }
        for key in ["capabilities", "tasks"] {
            if let Some(list) = r.get(key).and_then(Value::as_array) {
                for c in list.iter().map(as_text) {
                    if !analysis.required_capabilities.contains(&c) {
                        analysis.required_capabilities.push(c.clone());
                    }
                    analysis.explicit.push(c);
                }
            }
        }
        analysis.max_tokens = r.get("max_tokens").and_then(Value::as_u64);
        analysis.domain = r.get("domain").and_then(Value::as_str).map(str::to_string);
    }
    analysis
}

/// One model scored for a task.
#[derive(Debug, Clone)]
struct Scored {
    spec: ModelSpec,
    score: f64,
    reasons: Vec<String>,
    estimated_cost: f64,
    /// Observed median latency, in seconds.
    estimated_latency: Option<f64>,
    /// Every capability the step asked for explicitly is there.
    fits: bool,
}

/// Scores `spec` for `task`: quality (task type served, capabilities,
/// success so far), cost (the expected call at its prices) and latency
/// (observed median), weighted as asked.
fn score(
    spec: &ModelSpec,
    stats: Option<&ModelStats>,
    task: &str,
    analysis: &TaskAnalysis,
    cost_weight: f64,
    quality_weight: f64,
) -> Scored {
    let mut quality = 0.0;
    let mut reasons = Vec::new();
    if serving_capabilities(&analysis.task_type)
        .iter()
        .any(|c| spec.has_capability(c))
    {
        quality += 0.5;
        reasons.push(format!("Good at {}", analysis.task_type));
    } else if spec.capabilities.is_empty() || GENERAL.iter().any(|c| spec.has_capability(c)) {
        quality += 0.25;
        reasons.push("General purpose model".to_string());
    }
    let mut fits = true;
    for cap in &analysis.required_capabilities {
        if spec.has_capability(cap) {
            quality += 0.15;
            reasons.push(format!("Supports {cap}"));
        } else if analysis.explicit.contains(cap) {
            quality -= 0.5;
            fits = false;
            reasons.push(format!("Missing required {cap}"));
        } else {
            quality -= 0.15;
            reasons.push(format!("May lack {cap}"));
        }
    }
    let input_tokens = (task.chars().count() as u64).div_ceil(4);
    if input_tokens + analysis.expected_output() > spec.context_window {
        quality -= 0.5;
        reasons.push(format!(
            "Context window of {} tokens is too small",
            spec.context_window
        ));
    }
    if let Some(s) = stats.filter(|s| s.calls > 0) {
        let rate = s.successes as f64 / s.calls as f64;
        quality += 0.3 * rate;
        if rate >= 0.9 {
            reasons.push(format!("High success rate: {:.0}%", rate * 100.0));
        } else if rate < 0.7 {
            reasons.push(format!("Low success rate: {:.0}%", rate * 100.0));
        }
    }
    let estimated_cost = spec
        .cost_per_1k_tokens
        .of(input_tokens, analysis.expected_output());
    let cost_score = 1.0 / (1.0 + estimated_cost * 100.0);
    if estimated_cost == 0.0 {
        reasons.push("No cost".to_string());
    }
    let estimated_latency = stats
        .filter(|s| s.calls > 0)
        .and_then(|s| s.latency_p50_ms)
        .map(|ms| ms / 1000.0);
    let latency_score = estimated_latency.map_or(0.5, |s| 1.0 / (1.0 + s));
    let latency_weight = (1.0 - cost_weight - quality_weight).max(0.0);
    let score =
        quality_weight * quality + cost_weight * cost_score + latency_weight * latency_score;
    Scored {
        spec: spec.clone(),
        score: (score * 1000.0).round() / 1000.0,
        reasons,
        estimated_cost,
        estimated_latency,
        fits,
    }
}

/// Every candidate scored, best first: those with every capability asked
/// for before the others, then by score, then in registry order.
fn rank(
    candidates: &[ModelSpec],
    stats: &HashMap<String, ModelStats>,
    task: &str,
    analysis: &TaskAnalysis,
    cost_weight: f64,
    quality_weight: f64,
) -> Vec<Scored> {
    let mut scored: Vec<Scored> = candidates
        .iter()
        .map(|m| {
            score(
                m,
                stats.get(&m.id),
                task,
                analysis,
                cost_weight,
                quality_weight,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.fits.cmp(&a.fits).then(b.score.total_cmp(&a.score)));
    scored
}

/// A number given as a number or as its text (templates render text),
/// within `range`; `what` names it in the error.
fn number(
    v: Option<&Value>,
    what: &str,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64, ToolError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| n.is_finite() && range.contains(n))
            .ok_or_else(|| {
                ToolError::invalid(if range.end().is_finite() {
                    format!(
                        "{what} must be a number from {} to {}",
                        range.start(),
                        range.end()
                    )
                } else {
                    format!("{what} must be a number of at least {}", range.start())
                })
            }),
    }
}

fn weight(params: &Map<String, Value>, name: &str, default: f64) -> Result<f64, ToolError> {
    number(
        params.get(name),
        &format!("parameter '{name}'"),
        default,
        0.0..=1.0,
    )
}

/// Registered models, or a clear error when there are none.
async fn registered(models: &dyn ModelGateway) -> Result<Vec<ModelSpec>, ToolError> {
    let all = models.registry().await?;
    if all.is_empty() {
        return Err(ToolError::new(
            ErrorKind::ModelUnavailableError,
            "no model is registered (add one with POST /models or models.yaml)",
        ));
    }
    Ok(all)
}

/// The delegation result for `task` among `candidates`.
fn delegation(scored: &[Scored], analysis: &TaskAnalysis, fallback: bool) -> Value {
    let best = &scored[0];
    let fallbacks: Vec<&str> = if fallback {
        scored
            .iter()
            .skip(1)
            .take(3)
            .map(|s| s.spec.id.as_str())
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "selected_model": best.spec.id,
        "score": best.score,
        "reasons": best.reasons,
        "estimated_cost": best.estimated_cost,
        "estimated_latency": best.estimated_latency,
        "task_analysis": analysis.to_json(),
        "fallback_models": fallbacks,
        "all_scores": scored.iter().take(5).map(|s| json!({
            "model": s.spec.id, "score": s.score, "reasons": s.reasons,
            "estimated_cost": s.estimated_cost,
        })).collect::<Vec<_>>(),
    })
}

fn requirements_param(
    params: &Map<String, Value>,
) -> Result<Option<&Map<String, Value>>, ToolError> {
    match params.get("requirements") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(ToolError::invalid(
            "parameter 'requirements' must be an object",
        )),
    }
}

/// `task-delegation`: which registered model suits a task.
#[derive(Debug, Clone, Default)]
pub struct TaskDelegation;

#[async_trait]
impl Tool for TaskDelegation {
    fn id(&self) -> &str {
        "task-delegation"
    }

    fn description(&self) -> &str {
        "Reads what a task needs and scores every registered model for it (quality, cost, observed latency): {selected_model, score, reasons, estimated_cost, estimated_latency, task_analysis, fallback_models, all_scores}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Choose the model for a task; no model is called",
            json!({"type": "object", "required": ["task"], "properties": {
                "task": {"type": "string", "minLength": 1},
                "requirements": {"type": "object", "description": "task_type, complexity (simple, moderate, complex), capabilities (models lacking one rank last), max_tokens, domain"},
                "fallback_enabled": {"type": "boolean", "description": "list up to 3 alternatives (default true)"},
                "cost_weight": {"type": "number", "minimum": 0, "maximum": 1, "description": "default 0.3"},
                "quality_weight": {"type": "number", "minimum": 0, "maximum": 1, "description": "default 0.7; what both leave goes to latency"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let models = ctx.models(self.id())?;
        let task = required_str(params, "task")?;
        let analysis = analyze(task, requirements_param(params)?);
        let fallback = crate::optional_bool(params, "fallback_enabled")?.unwrap_or(true);
        let cost_weight = weight(params, "cost_weight", 0.3)?;
        let quality_weight = weight(params, "quality_weight", 0.7)?;
        let candidates = registered(models).await?;
        let stats = models.stats().await?;
        let scored = rank(
            &candidates,
            &stats,
            task,
            &analysis,
            cost_weight,
            quality_weight,
        );
        Ok(delegation(&scored, &analysis, fallback))
    }
}

/// Reads a list of model names: a list, JSON or Python-style list text,
/// comma-separated text, or one name.
fn name_list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(as_text)
            .filter(|s| !s.is_empty())
            .collect(),
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('[') {
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(t) {
                    return name_list(&Value::Array(items));
                }
                return t
                    .trim_matches(['[', ']'])
                    .split(',')
                    .map(|p| p.trim().trim_matches(['\'', '"']).to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
            }
            t.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        }
        Value::Null => Vec::new(),
        other => vec![as_text(other)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_read_as_the_seed_reads_them() {
        let a = analyze(
            "Write a comprehensive analysis of renewable energy trends",
            None,
        );
        assert_eq!(a.task_type, "general");
        assert_eq!(a.complexity, "simple");
        assert_eq!(analyze("Analyze sales", None).task_type, "analysis");
        let a = analyze("Implement a function", None);
        assert_eq!(
            (a.task_type.as_str(), a.complexity.as_str()),
            ("code_generation", "moderate")
        );
        let a = analyze(
            "Design a complex distributed architecture for the image pipeline, as JSON",
            Some(
                json!({"capabilities": ["data-analysis"], "max_tokens": 99})
                    .as_object()
                    .unwrap_or(&Map::new()),
            ),
        );
        assert_eq!(a.complexity, "complex");
        assert_eq!(a.response_format.as_deref(), Some("json"));
        assert_eq!(
            a.required_capabilities,
            ["structured", "vision", "data-analysis"]
        );
        assert_eq!(a.explicit, ["data-analysis"]);
        assert_eq!(a.expected_output(), 99);
    }

    #[test]
    fn model_lists_are_read_in_every_form() {
        assert_eq!(name_list(&json!(["a", "b"])), ["a", "b"]);
        assert_eq!(name_list(&json!("[\"a\", \"b\"]")), ["a", "b"]);
        assert_eq!(name_list(&json!("['a', 'b']")), ["a", "b"]);
        assert_eq!(name_list(&json!("a, b")), ["a", "b"]);
        assert_eq!(name_list(&json!("a")), ["a"]);
        assert!(name_list(&json!("")).is_empty());
    }
}
