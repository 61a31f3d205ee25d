//! The pipeline model: what a validated pipeline is, independent of YAML.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validated pipeline definition, as written (loops not yet expanded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// `id`, else `name`.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
    /// Declared inputs (`inputs` and `parameters` merged, in order).
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Output templates, rendered after the run.
    #[serde(default)]
    pub outputs: IndexMap<String, String>,
    /// Default model for model steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub steps: Vec<Step>,
}

/// Declared type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn parse(name: &str) -> Option<InputType> {
        Some(match name {
            "string" | "str" => InputType::String,
            "integer" | "int" => InputType::Integer,
            "number" | "float" => InputType::Number,
            "boolean" | "bool" => InputType::Boolean,
            "array" | "list" => InputType::Array,
            "object" | "dict" | "map" => InputType::Object,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    /// Whether a JSON value is of this type (an integral float is an integer).
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            InputType::String => value.is_string(),
            InputType::Integer => {
                value.is_i64()
                    || value.is_u64()
                    || value
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
            }
            InputType::Number => value.is_number(),
            InputType::Boolean => value.is_boolean(),
            InputType::Array => value.is_array(),
            InputType::Object => value.is_object(),
        }
    }
}

/// One declared input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<InputType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
}

/// One of a step's `on_error` handlers (the seed's error handlers): which
/// failures it takes, and what it makes of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorHandler {
    /// `handler_action` (or the string form): what to do, in words; kept
    /// in the step's `reason`. The execution goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `handler_task_id`: a later step to go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `fallback_value`: the step succeeds with this result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Value>,
    /// `error_types`: error kinds it takes (`*` or `Exception`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_types: Vec<String>,
    /// `error_patterns`: regular expressions, one of which the error
    /// message must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_patterns: Vec<String>,
    /// `error_codes`: codes (HTTP statuses, exit codes) the error message
    /// must name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
    /// Lower first; equal ones in written order.
    #[serde(default)]
    pub priority: i64,
    /// `propagate_error: true`: the step still fails the execution.
    #[serde(default)]
    pub propagate: bool,
}

impl ErrorHandler {
    /// Whether it takes a failure of this kind with this message.
    pub fn takes(&self, error_type: &str, message: &str) -> bool {
        let kind = |wanted: &str| {
            let wanted = wanted.trim();
            wanted == "*"
                || wanted.eq_ignore_ascii_case("Exception")
                || wanted.eq_ignore_ascii_case(error_type)
                // The seed's families: `HTTPError` takes `HttpClientError`,
                // `ModelError` every `Model…Error`.
                || (wanted.len() > 5
                    && wanted.to_ascii_lowercase().ends_with("error")
                    && error_type
                        .to_ascii_lowercase()
                        .starts_with(&wanted.to_ascii_lowercase()[..wanted.len() - 5]))
        };
        (self.error_types.is_empty() || self.error_types.iter().any(|t| kind(t)))
            && (self.error_patterns.is_empty()
                || self
                    .error_patterns
                    .iter()
                    .any(|p| regex::Regex::new(p).is_ok_and(|re| re.is_match(message))))
            && (self.error_codes.is_empty()
                || self.error_codes.iter().any(|c| {
                    message
                        .split(|ch: char| !ch.is_ascii_alphanumeric())
                        .any(|word| word == c)
                }))
    }
}

/// What happens when a step fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "mode", content = "target")]
pub enum OnFailure {
    /// No new steps start; the execution fails.
    #[default]
    Fail,
    /// Dependents still run; the execution ends failed.
    Continue,
    /// Dependents are skipped.
    Skip,
    /// Retry (the step's retry policy applies; at least 2 attempts).
    Retry,
    /// Jump forward to this step.
    Goto(String),
    /// Set by an `on_error` handler that took the failure: dependents run
    /// (or the flow goes to the handler's step) and the failure does not
    /// fail the execution.
    Handled(Option<String>),
}

/// Backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    Fixed,
    #[default]
    Exponential,
}

/// How often, and how patiently, a step is attempted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub delay_ms: u64,
    pub max_delay_ms: u64,
    /// Randomise each delay by up to ±this fraction (0 = none).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            delay_ms: 1000,
            max_delay_ms: 60_000,
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next_attempt` (2 = the first retry), without jitter.
    pub fn base_delay_ms(&self, next_attempt: u32) -> u64 {
        let retry_index = next_attempt.saturating_sub(2);
        let delay = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Exponential => self
                .delay_ms
                .saturating_mul(2u64.saturating_pow(retry_index.min(62))),
        };
        delay.min(self.max_delay_ms.max(self.delay_ms))
    }

    /// Delay with jitter applied; `unit` is a random number in `[0, 1)`.
    pub fn delay_ms(&self, next_attempt: u32, unit: f64) -> u64 {
        let base = self.base_delay_ms(next_attempt) as f64;
        let spread = base * self.jitter.clamp(0.0, 1.0);
        let value = base - spread + 2.0 * spread * unit.clamp(0.0, 1.0);
        value.max(0.0).round() as u64
    }
}

/// The source of a `for_each` loop's items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopItems {
    /// A literal list in the YAML.
    Literal(Vec<Value>),
    /// A template that renders to a list (or a JSON/YAML list, or a comma-separated string).
    Template(String),
}

/// A loop on a step: the step is a container for its body steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoopSpec {
    ForEach {
        items: LoopItems,
        max_parallel: u32,
        steps: Vec<Step>,
    },
    While {
        condition: String,
        /// The seed's `until`: the loop also ends once this holds, looked
        /// at after each iteration (so the body runs at least once).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        max_iterations: u32,
        steps: Vec<Step>,
    },
}

impl LoopSpec {
    pub fn body(&self) -> &[Step] {
        match self {
            LoopSpec::ForEach { steps, .. } | LoopSpec::While { steps, .. } => steps,
        }
    }
}

/// One step as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    /// `None` for runtime actions (`generate`, `evaluate_condition` …) and loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The resolved action (aliases normalised: `generate_text` → `generate`).
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
    /// Explicit dependencies only; see [`crate::plan::PlannedStep::depends_on`] for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_false: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The seed's `on_error` handlers, in the order they are tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_error: Vec<ErrorHandler>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Whether `max_retries`/`retry` was written on the step (else execution options apply).
    #[serde(default)]
    pub retry_explicit: bool,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "loop")]
    pub loop_spec: Option<LoopSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_model: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produces: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Line of the step in the YAML (0 when unknown).
    #[serde(default)]
    pub line: u32,
    /// Where each `depends_on` entry is written, in the same order (empty
    /// when unknown), so an error about one points at it.
    #[serde(default, skip)]
    pub depends_on_pos: Vec<crate::yaml::Pos>,
}

impl Step {
    /// Whether this step is a runtime model action (needs a model, not a tool).
    pub fn is_model_action(&self) -> bool {
        (crate::catalog::MODEL_ACTIONS.contains(&self.action.as_str())
            && self
                .tool
                .as_deref()
                .is_none_or(|t| t == crate::catalog::LLM_TOOL))
            || (self.tool.as_deref() == Some("validation")
                && self.action == crate::catalog::EXTRACT_STRUCTURED)
    }
}
