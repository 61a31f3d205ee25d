//! Model steps: which model runs a step, the call itself, what it cost.
//!
//! The registry and every call's statistics live in the store, so all
//! processes sharing a database see the same models and learn from the same
//! history.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_store::{ModelCall, Store, now_ms};
use orchestrator_tools::ToolError;
use orchestrator_tools::models::providers::{
    self, ChatRequest, ChatResponse, Message, RetryPolicy,
};
use orchestrator_tools::models::{
    ModelSpec, ModelStats, NoEligibleModel, Requirements, Selection, Strategy, reward,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How models are chosen and called.
#[derive(Clone)]
pub struct ModelSettings {
    pub strategy: Strategy,
    /// Used when a step names no model and no requirements.
    pub default_model: Option<String>,
    /// Its models come first when several are equally good.
    pub default_provider: Option<String>,
    /// Where API keys are read from (the process environment, captured at start).
    pub env: HashMap<String, String>,
    /// The variables a model's `api_key_env` may name: names, or patterns
    /// with `*` (`*_API_KEY`). Any other variable (the auth pepper, database
    /// passwords) is never sent to a model endpoint.
    pub key_env_allowed: Vec<String>,
    /// Where model endpoints may be reached (`models.allowed_hosts`,
    /// `models.allow_private_networks`); `None` reaches anything.
    pub egress: Option<Arc<orchestrator_tools::net::OutboundPolicy>>,
    /// Endpoints the operator wrote in the models file: reached without
    /// the policy (a local model server on loopback, say).
    pub trusted_base_urls: std::collections::HashSet<String>,
    /// Per request to a provider.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Keys stay out of debug output.
impl std::fmt::Debug for ModelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSettings")
            .field("strategy", &self.strategy)
            .field("default_model", &self.default_model)
            .field("default_provider", &self.default_provider)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            strategy: Strategy::Ucb,
            default_model: None,
            default_provider: None,
            env: HashMap::new(),
            key_env_allowed: vec!["*_API_KEY".to_string()],
            egress: None,
            trusted_base_urls: Default::default(),
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

impl ModelSettings {
    /// Whether a model's key may come from `var`.
    pub fn allows_key_env(&self, var: &str) -> bool {
        self.key_env_allowed
            .iter()
            .any(|pattern| glob_matches(pattern, var))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a model could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    NoEligible(#[from] NoEligibleModel),
    #[error("model '{0}' is not registered")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the model registry cannot be read: {0}")]
    Store(String),
}

/// Who a call is for.
#[derive(Debug, Clone, Default)]
pub struct CallSite {
    pub execution_id: Option<String>,
    pub step_id: Option<String>,
    pub attempt: i64,
}

/// A finished call: the answer and what it cost.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: ChatResponse,
    pub model: ModelSpec,
    pub cost: f64,
}

/// The model service.
#[derive(Debug, Clone)]
pub struct Models {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    /// `http` under the egress policy, when there is one.
    guarded: Option<reqwest::Client>,
    settings: ModelSettings,
    metrics: Arc<crate::metrics::EngineMetrics>,
}

fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64)
}

impl Models {
    pub fn new(store: Arc<dyn Store>, http: reqwest::Client, settings: ModelSettings) -> Self {
        Models {
            store,
            guarded: settings.egress.as_ref().map(|p| p.client(5)),
            http,
            settings,
            metrics: Arc::default(),
        }
    }

    /// Counts calls, tokens and cost in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::EngineMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// Refuses a model whose key would come from a variable models may not
    /// read (`models.api_key_env_allowed`).
    pub fn check_key_env(&self, spec: &ModelSpec) -> Result<(), String> {
        match &spec.api_key_env {
            Some(var) if !self.settings.allows_key_env(var) => Err(format!(
                "model '{}': api_key_env '{var}' is not a variable models may read; allowed: {} (models.api_key_env_allowed)",
                spec.id,
                self.settings.key_env_allowed.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// Refuses an endpoint the egress policy does not let models reach.
    pub async fn check_endpoint(&self, spec: &ModelSpec) -> Result<(), String> {
        let Some(policy) = &self.settings.egress else {
            return Ok(());
        };
        if self.settings.trusted_base_urls.contains(spec.base_url()) {
            return Ok(());
        }
        let url = reqwest::Url::parse(spec.base_url())
            .map_err(|e| format!("model '{}': base_url is not valid: {e}", spec.id))?;
        policy.check_resolved(&url).await.map_err(|e| {
            format!(
                "model '{}': base_url {} is refused: {e} (models.allowed_hosts, models.allow_private_networks)",
                spec.id,
                spec.base_url()
            )
        })
    }

    /// The client for a model's endpoint: the operator's own endpoints
    /// directly, any other through the egress policy.
    fn client_for(&self, spec: &ModelSpec) -> &reqwest::Client {
        match &self.guarded {
            Some(guarded) if !self.settings.trusted_base_urls.contains(spec.base_url()) => guarded,
            _ => &self.http,
        }
    }

    /// The registered models, in registry order (the default provider's
    /// first). A definition that no longer reads is skipped with a warning.
    pub async fn registry(&self) -> Result<Vec<ModelSpec>, SelectError> {
        let records = self
            .store
            .list_models()
            .await
            .map_err(|e| SelectError::Store(e.to_string()))?;
        let mut models: Vec<ModelSpec> = records
            .into_iter()
            .filter_map(|r| match serde_json::from_value::<ModelSpec>(r.spec) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(model = %r.id, error = %e, "stored model definition does not read; skipped");
                    None
                }
            })
            .collect();
        if let Some(p) = &self.settings.default_provider {
            models.sort_by_key(|m| !m.provider.as_str().eq_ignore_ascii_case(p));
        }
        Ok(models)
    }

    /// Every model's call statistics.
    pub async fn stats(&self) -> Result<HashMap<String, ModelStats>, SelectError> {
        let rows = self
            .store
            .model_call_stats()
            .await
            .map_err(|e| SelectError::Store(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut lat = r.recent_latencies_ms.clone();
                lat.sort_unstable();
                let calls = u64::try_from(r.calls).unwrap_or(0);
                let successes = u64::try_from(r.successes).unwrap_or(0);
                (
                    r.model_id,
                    ModelStats {
                        calls,
                        successes,
                        failures: calls.saturating_sub(successes),
                        input_tokens: u64::try_from(r.input_tokens).unwrap_or(0),
                        output_tokens: u64::try_from(r.output_tokens).unwrap_or(0),
                        cost: r.cost,
                        latency_p50_ms: percentile(&lat, 0.5),
                        latency_p95_ms: percentile(&lat, 0.95),
                        reward_sum: r.reward_sum,
                    },
                )
            })
            .collect())
    }

    /// Chooses a model for `req` with the configured strategy.
    pub async fn select(&self, req: &Requirements) -> Result<Selection, SelectError> {
        let models = self.registry().await?;
        let stats = self.stats().await?;
        Ok(orchestrator_tools::models::select(
            &models,
            &stats,
            req,
            self.settings.strategy,
            self.settings.default_model.as_deref(),
            &self.settings.env,
        )?)
    }

    /// The model a step runs on: the one it names (`id`, `provider:model`
    /// or the provider's model name), else one meeting its requirements,
    /// else the default model, else the strategy's choice among all.
    pub async fn resolve(
        &self,
        named: Option<&str>,
        requirements: Option<&Requirements>,
    ) -> Result<(ModelSpec, String), SelectError> {
        if let Some(name) = named {
            let models = self.registry().await?;
            let (provider, bare) = match name.split_once(':') {
                Some((p, m)) if ["openai", "anthropic", "google", "gemini"].contains(&p) => {
                    (Some(p), m)
                }
                _ => (None, name),
            };
            let found = models
                .iter()
                .find(|m| m.id == name)
                .or_else(|| {
                    models.iter().find(|m| {
                        (m.id == bare || m.model == bare)
                            && provider.is_none_or(|p| {
                                m.provider.as_str() == p
                                    || (p == "gemini" && m.provider.as_str() == "google")
                            })
                    })
                })
                .cloned()
                .ok_or_else(|| SelectError::Unknown(name.to_string()))?;
            self.check_key_env(&found).map_err(SelectError::Invalid)?;
            found.api_key(&self.settings.env).map_err(|e| {
                SelectError::Invalid(format!("model '{}' cannot be used: {e}", found.id))
            })?;
            return Ok((found, "named by the step or pipeline".into()));
        }
        let req = match requirements {
            Some(r) => r.clone(),
            None => match &self.settings.default_model {
                Some(d) => {
                    return Box::pin(self.resolve(Some(d.as_str()), None))
                        .await
                        .map(|(m, _)| (m, "the default model".into()));
                }
                None => Requirements::default(),
            },
        };
        let selection = self.select(&req).await?;
        Ok((selection.model, selection.reason))
    }

    /// Dollars already spent by an execution.
    pub async fn spent(&self, execution_id: &str) -> Result<f64, ToolError> {
        let usage = self
            .store
            .execution_usage(execution_id)
            .await
            .map_err(|e| ToolError::new("StoreError", e.to_string()))?;
        Ok(usage.iter().map(|u| u.cost).sum())
    }

    /// Calls `spec` and records the call, success or not.
    pub async fn call(
        &self,
        spec: &ModelSpec,
        request: &ChatRequest,
        site: &CallSite,
        cancel: &CancellationToken,
    ) -> Result<Answer, ToolError> {
        self.check_key_env(spec)
            .map_err(|e| ToolError::new("ModelUnavailableError", e))?;
        let key = spec.api_key(&self.settings.env).map_err(|e| {
            ToolError::new("ModelUnavailableError", format!("model '{}': {e}", spec.id))
        })?;
        // Names are checked address by address as they resolve; a literal
        // address never resolves, so it is checked here.
        if let Some(policy) = &self.settings.egress
            && !self.settings.trusted_base_urls.contains(spec.base_url())
        {
            let refused = match reqwest::Url::parse(spec.base_url()) {
                Ok(url) => policy.check_url(&url).err(),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = refused {
                return Err(ToolError::new(
                    "ModelUnavailableError",
                    format!(
                        "model '{}': base_url {} is refused: {e} (models.allowed_hosts, models.allow_private_networks)",
                        spec.id,
                        spec.base_url()
                    ),
                ));
            }
        }
        let started_at = now_ms();
        let clock = Instant::now();
        let outcome = providers::chat(
            self.client_for(spec),
            spec,
            key.as_deref(),
            request,
            cancel,
            self.settings.request_timeout,
            self.settings.retry,
        )
        .await;
        let latency_ms = clock.elapsed().as_secs_f64() * 1000.0;
        let (success, input, output, error_type) = match &outcome {
            Ok(r) => (true, r.input_tokens, r.output_tokens, None),
            Err(e) => (false, 0, 0, Some(e.kind.clone())),
        };
        let cost = spec.cost_per_1k_tokens.of(input, output);
        let m = &self.metrics;
        m.model_calls
            .inc(&[&spec.id, if success { "success" } else { "failure" }]);
        m.model_tokens.add(&[&spec.id, "input"], input as f64);
        m.model_tokens.add(&[&spec.id, "output"], output as f64);
        m.model_cost.add(&[&spec.id], cost);
        if error_type.as_deref() != Some("CancelledError") {
            let call = ModelCall {
                model_id: spec.id.clone(),
                execution_id: site.execution_id.clone(),
                step_id: site.step_id.clone(),
                attempt: site.attempt,
                started_at,
                latency_ms: latency_ms as i64,
                success,
                input_tokens: i64::try_from(input).unwrap_or(i64::MAX),
                output_tokens: i64::try_from(output).unwrap_or(i64::MAX),
                cost,
                reward: reward(success, latency_ms, cost),
                error_type,
            };
            if let Err(e) = self.store.record_model_call(&call).await {
                warn!(model = %spec.id, error = %e, "model call not recorded");
            }
        }
        let response = outcome?;
        info!(model = %spec.id, input_tokens = input, output_tokens = output, cost, latency_ms = latency_ms as u64, "model call");
        Ok(Answer {
            response,
            model: spec.clone(),
            cost,
        })
    }
}

/// What a model step asks for, read from its rendered parameters.
#[derive(Debug, Clone)]
pub struct ModelStepRequest {
    pub chat: ChatRequest,
    /// `generate_structured`: the schema the answer must meet.
    pub schema: Option<Value>,
    /// A model named in the parameters.
    pub model: Option<String>,
    pub requirements: Option<Requirements>,
}

fn text_param(params: &Map<String, Value>, name: &str) -> Result<Option<String>, ToolError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Ok(Some(other.to_string())),
    }
}

/// Reads requirements given as a step's `requires_model` or a parameter.
pub fn requirements_from(value: &Value) -> Result<Requirements, ToolError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ToolError::invalid(format!("requires_model is not valid: {e}")))
}

impl ModelStepRequest {
    /// Builds the request for `action` from its parameters.
    pub fn from_parameters(action: &str, params: &Map<String, Value>) -> Result<Self, ToolError> {
        let system = text_param(params, "system")?;
        let mut messages = Vec::new();
        if let Some(Value::Array(items)) = params.get("messages") {
            for (i, m) in items.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or("user");
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Null => {
                        return Err(ToolError::invalid(format!("messages[{i}] has no content")));
                    }
                    other => other.to_string(),
                };
                match role {
                    "system" => {}
                    "user" | "assistant" => messages.push(Message {
                        role: role.to_string(),
                        content,
                    }),
                    other => {
                        return Err(ToolError::invalid(format!(
                            "messages[{i}] has role '{other}' (user, assistant or system)"
                        )));
                    }
                }
            }
        }
        let system = system.or_else(|| {
            params
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .find(|m| m["role"] == "system")
                        .and_then(|m| m["content"].as_str().map(str::to_string))
                })
        });
        let prompt = match action {
            "analyze_text" => {
                let text = text_param(params, "text")?
                    .or(text_param(params, "prompt")?)
                    .ok_or_else(|| ToolError::invalid("analyze_text needs 'text'"))?;
                let kind = text_param(params, "analysis_type")?.unwrap_or_else(|| "general".into());
                let instructions = text_param(params, "instructions")?
                    .unwrap_or_else(|| format!("Give a {kind} analysis of the text below."));
                Some(format!("{instructions}\n\nText:\n{text}"))
            }
            _ => text_param(params, "prompt")?,
        };
        if let Some(p) = prompt {
            messages.push(Message {
                role: "user".into(),
                content: p,
            });
        }
        if messages.is_empty() {
            return Err(ToolError::invalid("give 'prompt' or 'messages'"));
        }
        let number = |name: &str| -> Result<Option<f64>, ToolError> {
            match params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| ToolError::invalid(format!("'{name}' must be a number"))),
            }
        };
        let max_tokens = match number("max_tokens")? {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Some(n as u64),
            Some(_) => {
                return Err(ToolError::invalid(
                    "'max_tokens' must be a whole number, at least 1",
                ));
            }
            None => None,
        };
        let schema = match action {
            "generate_structured" => Some(
                params
                    .get("schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .ok_or_else(|| {
                        ToolError::invalid("generate_structured needs a JSON Schema in 'schema'")
                    })?,
            ),
            _ => None,
        };
        let requirements = match params
            .get("requires_model")
            .or_else(|| params.get("requirements"))
        {
            Some(v) if !v.is_null() => Some(requirements_from(v)?),
            _ => None,
        };
        Ok(ModelStepRequest {
            chat: ChatRequest {
                system,
                messages,
                temperature: number("temperature")?,
                max_tokens,
                json: schema.is_some(),
            },
            schema,
            model: text_param(params, "model")?,
            requirements,
        })
    }
}

/// The JSON in a model's answer: the whole text, or a fenced block in it.
pub fn extract_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    let fenced = trimmed
        .split("```")
        .nth(1)
        .map(|block| block.trim_start_matches("json").trim());
    if let Some(block) = fenced
        && let Ok(v) = serde_json::from_str(block)
    {
        return Some(v);
    }
    let (start, end) = (trimmed.find(['{', '['])?, trimmed.rfind(['}', ']'])?);
    serde_json::from_str(trimmed.get(start..=end)?).ok()
}

/// Asks for JSON meeting `schema`; on prose or a schema violation, asks once
/// more saying what was wrong.
pub async fn structured(
    models: &Models,
    spec: &ModelSpec,
    request: &ChatRequest,
    schema: &Value,
    site: &CallSite,
    cancel: &CancellationToken,
) -> Result<(Value, Vec<Answer>), ToolError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ToolError::invalid(format!("'schema' is not a valid JSON Schema: {e}")))?;
    let mut req = request.clone();
    let instruction =
        format!("Answer with only a JSON value that meets this JSON Schema, no prose:\n{schema}");
    req.system = Some(match &req.system {
        Some(s) => format!("{s}\n\n{instruction}"),
        None => instruction,
    });
    let mut answers = Vec::new();
    for round in 0..2 {
        let answer = models.call(spec, &req, site, cancel).await?;
        let text = answer.response.text.clone();
        answers.push(answer);
        let problem = match extract_json(&text) {
            None => "the answer was not JSON".to_string(),
            Some(value) => {
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| format!("{} at '{}'", e, e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    return Ok((value, answers));
                }
                format!("the JSON does not meet the schema: {}", errors.join("; "))
            }
        };
        if round == 1 {
            return Err(ToolError::new(
                "StructuredOutputError",
                format!(
                    "model '{}' gave no valid JSON after a second try: {problem}",
                    spec.id
                ),
            ));
        }
        req.messages.push(Message {
            role: "assistant".into(),
            content: text,
        });
        req.messages.push(Message {
            role: "user".into(),
            content: format!(
                "That answer cannot be used: {problem}. Answer again with only the JSON."
            ),
        });
    }
    Err(ToolError::new("StructuredOutputError", "no answer"))
}

/// A model step's result: the text (or the JSON of `generate_structured`),
/// and what the calls used.
pub fn usage_of(answers: &[Answer]) -> Value {
    let input: u64 = answers.iter().map(|a| a.response.input_tokens).sum();
    let output: u64 = answers.iter().map(|a| a.response.output_tokens).sum();
    let cost: f64 = answers.iter().map(|a| a.cost).sum();
    json!({
        "model": answers.last().map(|a| a.model.id.clone()),
        "input_tokens": input,
        "output_tokens": output,
        "cost": cost,
    })
}

/// The largest a call to `spec` may cost: its prompt (about four characters
/// a token) and the most it may answer.
pub fn worst_case_cost(spec: &ModelSpec, request: &ChatRequest) -> f64 {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.len())
        .sum::<usize>()
        + request.system.as_ref().map_or(0, String::len);
    let input = (chars as u64).div_ceil(4);
    let output = request
        .max_tokens
        .or(spec.max_output_tokens)
        .unwrap_or(providers::DEFAULT_MAX_TOKENS);
    spec.cost_per_1k_tokens.of(input, output)
}

/// Asks a model for one `<AUTO>` tag: a model with the tag's `task` as a
/// capability when there is one (else any), or the tag's `model`. Returns
/// the answer's text and the model's id.
pub async fn answer_tag(
    models: &Models,
    tag: &orchestrator_core::AutoTag,
    execution_id: &str,
) -> Result<(String, String), String> {
    let named = tag.attributes.get("model").map(String::as_str);
    let wanted = tag.attributes.get("task").map(|t| Requirements {
        tasks: vec![t.clone()],
        ..Requirements::default()
    });
    let (spec, _) = match models.resolve(named, wanted.as_ref()).await {
        Ok(found) => found,
        Err(SelectError::NoEligible(_)) if named.is_none() && wanted.is_some() => models
            .resolve(None, None)
            .await
            .map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    let kind = tag.attributes.get("type").map(String::as_str);
    let mut system = "You fill in one value of a pipeline definition. Answer with the value only: \
        no explanation, no quotes, no code fences."
        .to_string();
    match kind {
        Some("integer" | "int") => system.push_str(" The value is a whole number."),
        Some("number" | "float") => system.push_str(" The value is a number."),
        Some("boolean" | "bool") => system.push_str(" The value is true or false."),
        Some("array" | "list") => system.push_str(" The value is a JSON array."),
        Some("object") => system.push_str(" The value is a JSON object."),
        _ => {}
    }
    let request = ChatRequest {
        system: Some(system),
        messages: vec![Message {
            role: "user".into(),
            content: tag.question.clone(),
        }],
        temperature: Some(0.0),
        max_tokens: Some(512),
        json: false,
    };
    let site = CallSite {
        execution_id: Some(execution_id.to_string()),
        step_id: tag.step.clone(),
        attempt: 0,
    };
    let answer = models
        .call(&spec, &request, &site, &CancellationToken::new())
        .await
        .map_err(|e| e.message)?;
    let mut text = answer.response.text.trim();
    if let Some(inner) = text.strip_prefix("```") {
        text = inner
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_end_matches("```")
            .trim();
    }
    let text = text.trim_matches(|c| c == '"' || c == '`').trim();
    Ok((text.to_string(), spec.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_variables_are_allowed_by_name_or_pattern() {
        let settings = ModelSettings {
            key_env_allowed: vec!["*_API_KEY".into(), "MY_LLM_TOKEN".into(), "A*B*C".into()],
            ..ModelSettings::default()
        };
        for ok in [
            "OPENAI_API_KEY",
            "_API_KEY",
            "MY_LLM_TOKEN",
            "ABC",
            "AxxBxxC",
        ] {
            assert!(settings.allows_key_env(ok), "{ok}");
        }
        for refused in [
            "ORCHESTRATOR_AUTH_PEPPER",
            "OPENAI_API_KEYS",
            "MY_LLM_TOKEN2",
            "AC",
            "API_KEY",
            "",
        ] {
            assert!(!settings.allows_key_env(refused), "{refused}");
        }
    }

    #[test]
    fn json_is_found_in_plain_fenced_and_wrapped_answers() {
        assert_eq!(extract_json("{\"a\": 1}"), Some(json!({"a": 1})));
        assert_eq!(
            extract_json("Here:\n```json\n{\"a\": 2}\n```\nDone."),
            Some(json!({"a": 2}))
        );
        assert_eq!(
            extract_json("The answer is {\"a\": 3}."),
            Some(json!({"a": 3}))
        );
        assert_eq!(extract_json("no json here"), None);
    }

    #[test]
    fn parameters_become_a_chat_request() {
        let params =
            json!({"prompt": "hi", "system": "be brief", "temperature": 0.1, "max_tokens": 50});
        let r = ModelStepRequest::from_parameters("generate", params.as_object().expect("obj"))
            .expect("ok");
        assert_eq!(r.chat.messages.len(), 1);
        assert_eq!(r.chat.system.as_deref(), Some("be brief"));
        assert_eq!(r.chat.max_tokens, Some(50));
        let params = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "again"}]});
        let r = ModelStepRequest::from_parameters("chat", params.as_object().expect("obj"))
            .expect("ok");
        assert_eq!(
            (r.chat.messages.len(), r.chat.system.as_deref()),
            (3, Some("s"))
        );
        for bad in [
            json!({}),
            json!({"prompt": "x", "max_tokens": 0}),
            json!({"messages": [{"role": "tool", "content": "x"}]}),
        ] {
            assert!(
                ModelStepRequest::from_parameters("generate", bad.as_object().expect("obj"))
                    .is_err(),
                "{bad}"
            );
        }
        assert!(
            ModelStepRequest::from_parameters(
                "generate_structured",
                json!({"prompt": "x"}).as_object().expect("obj")
            )
            .is_err()
        );
    }
}
