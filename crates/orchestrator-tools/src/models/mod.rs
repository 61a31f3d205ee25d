//! Models: their definitions, requirement-based selection (UCB1, cheapest,
//! fastest, fixed) and the providers' wire formats ([`providers`]).
//!
//! Nothing here stores anything: the registry and the call statistics live in
//! the store, and the engine passes them in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub mod providers;

/// Who serves a model, and so which wire format it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI chat completions, and every server that speaks it (vLLM,
    /// llama.cpp server, Ollama, LM Studio) through `base_url`.
    #[serde(
        alias = "openai-compatible",
        alias = "ollama",
        alias = "vllm",
        alias = "lmstudio"
    )]
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    #[serde(alias = "gemini")]
    Google,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Google => "google",
        }
    }

    /// The variable the key is read from unless the model names another.
    pub fn default_key_env(self) -> &'static str {
        match self {
            Provider::Openai => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
            Provider::Google => "GOOGLE_API_KEY",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Openai => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Google => "https://generativelanguage.googleapis.com",
        }
    }
}

/// Price in US dollars per 1,000 tokens. A single number means the same
/// price for input and output.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct Cost {
    pub input: f64,
    pub output: f64,
}

impl<'de> Deserialize<'de> for Cost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(f64),
            Both {
                #[serde(default)]
                input: f64,
                #[serde(default)]
                output: f64,
            },
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(c) => Cost {
                input: c,
                output: c,
            },
            Raw::Both { input, output } => Cost { input, output },
        })
    }
}

impl Cost {
    /// The price selection compares with `max_cost_per_1k`: the mean of the
    /// input and output prices.
    pub fn blended(&self) -> f64 {
        (self.input + self.output) / 2.0
    }

    /// Dollars for a call.
    pub fn of(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input + output_tokens as f64 * self.output) / 1000.0
    }
}

fn default_context_window() -> u64 {
    8192
}

/// A model as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The id pipelines and requirements use.
    pub id: String,
    pub provider: Provider,
    /// The provider's name for it (`gpt-4o-mini`, `claude-sonnet-4-5`, `llama3.1:8b`).
    pub model: String,
    /// Another endpoint than the provider's public one (local servers, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The variable holding the API key (default: the provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// What it is good for: `generate`, `summarization`, `reasoning`, `code`, `structured`…
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default = "default_context_window")]
    pub context_window: u64,
    #[serde(default)]
    pub cost_per_1k_tokens: Cost,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

impl ModelSpec {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        {
            return Err(format!(
                "model id '{}' must be letters, digits and - _ . : /",
                self.id
            ));
        }
        if self.model.trim().is_empty() {
            return Err(format!(
                "model '{}' has an empty provider model name",
                self.id
            ));
        }
        if let Some(url) = &self.base_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(format!(
                        "model '{}': base_url '{url}' is not an http(s) URL",
                        self.id
                    ));
                }
            }
        }
        let c = self.cost_per_1k_tokens;
        if !(c.input.is_finite() && c.output.is_finite() && c.input >= 0.0 && c.output >= 0.0) {
            return Err(format!("model '{}': costs must be zero or more", self.id));
        }
        if self.context_window == 0 {
            return Err(format!(
                "model '{}': context_window must be at least 1",
                self.id
            ));
        }
        Ok(())
    }

    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(self.provider.default_base_url())
            .trim_end_matches('/')
    }

    /// The API key, from `env`. A model on the provider's public endpoint
    /// needs one; a model on another endpoint (a local server) only when it
    /// names `api_key_env`.
    pub fn api_key(&self, env: &HashMap<String, String>) -> Result<Option<String>, String> {
        let var = self
            .api_key_env
            .as_deref()
            .unwrap_or(self.provider.default_key_env());
        match env.get(var).filter(|v| !v.is_empty()) {
            Some(key) => Ok(Some(key.clone())),
            None if self.api_key_env.is_none() && self.base_url.is_some() => Ok(None),
            None => Err(format!("its API key variable {var} is not set")),
        }
    }

    pub fn has_capability(&self, wanted: &str) -> bool {
        let wanted = normalize(wanted);
        self.capabilities.iter().any(|c| normalize(c) == wanted)
    }
}

fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// What a step or a selection request asks of a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    /// Tasks the model must support (the seed's name for capabilities).
    pub tasks: Vec<String>,
    pub capabilities: Vec<String>,
    /// The smallest context window acceptable.
    pub context_window: Option<u64>,
    /// The most it may cost per 1,000 tokens (mean of input and output prices).
    pub max_cost_per_1k: Option<f64>,
    /// Only models of this provider.
    pub provider: Option<String>,
    /// This model and no other.
    pub model: Option<String>,
}

impl Requirements {
    fn wanted(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .chain(&self.capabilities)
            .map(String::as_str)
            .collect()
    }
}

/// What is known about a model's past calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelStats {
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars.
    pub cost: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Sum of the rewards of its calls (see [`reward`]).
    #[serde(skip)]
    pub reward_sum: f64,
}

/// How good one call was, from 0 to 1: nothing for a failure; for a success
/// 0.5, plus up to 0.25 for speed and up to 0.25 for low cost.
pub fn reward(success: bool, latency_ms: f64, cost: f64) -> f64 {
    if !success {
        return 0.0;
    }
    0.5 + 0.25 / (1.0 + latency_ms.max(0.0) / 2000.0) + 0.25 / (1.0 + cost.max(0.0) * 1000.0)
}

/// How a model is chosen among the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// UCB1 on observed reward: untried models first, then the best mean
    /// reward plus an exploration bonus that shrinks with use.
    #[default]
    Ucb,
    Cheapest,
    /// Lowest observed median latency; untried models first.
    Fastest,
    /// The default model when eligible, else the first eligible one.
    Fixed,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ucb" | "ucb1" => Ok(Strategy::Ucb),
            "cheapest" | "cost" => Ok(Strategy::Cheapest),
            "fastest" | "latency" => Ok(Strategy::Fastest),
            "fixed" => Ok(Strategy::Fixed),
            other => Err(format!(
                "routing strategy '{other}' is not ucb, cheapest, fastest or fixed"
            )),
        }
    }
}

/// One model as the selection saw it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub id: String,
    pub eligible: bool,
    /// Why it is not eligible.
    pub lacks: Vec<String>,
    /// Its score under the strategy, when eligible and scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// The chosen model and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub model: ModelSpec,
    pub strategy: Strategy,
    pub reason: String,
    pub candidates: Vec<Candidate>,
}

/// No model met the requirements; what each one lacked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", describe_none(.0))]
pub struct NoEligibleModel(pub Vec<Candidate>);

fn describe_none(candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "no model is registered (add one with POST /models or models.yaml)".into();
    }
    let parts: Vec<String> = candidates
        .iter()
        .map(|c| format!("'{}' {}", c.id, c.lacks.join(", ")))
        .collect();
    format!("no model meets the requirements: {}", parts.join("; "))
}

/// Why `model` does not meet `req`, empty when it does.
pub fn shortfalls(
    model: &ModelSpec,
    req: &Requirements,
    env: &HashMap<String, String>,
) -> Vec<String> {
    let mut lacks = Vec::new();
    if let Some(id) = &req.model
        && *id != model.id
    {
        lacks.push(format!("is not the requested model '{id}'"));
    }
    if let Some(p) = &req.provider
        && !p.eq_ignore_ascii_case(model.provider.as_str())
    {
        lacks.push(format!("is not from provider '{p}'"));
    }
    for cap in req.wanted() {
        if !model.has_capability(cap) {
            lacks.push(format!("lacks capability '{cap}'"));
        }
    }
    if let Some(w) = req.context_window
        && model.context_window < w
    {
        lacks.push(format!(
            "has a context window of {} < {w}",
            model.context_window
        ));
    }
    if let Some(max) = req.max_cost_per_1k
        && model.cost_per_1k_tokens.blended() > max
    {
        lacks.push(format!(
            "costs {} per 1k tokens > {max}",
            model.cost_per_1k_tokens.blended()
        ));
    }
    if let Err(e) = model.api_key(env) {
        lacks.push(e);
    }
    lacks
}

/// Chooses a model for `req` among `models` (in registry order, which
/// breaks ties).
pub fn select(
    models: &[ModelSpec],
    stats: &HashMap<String, ModelStats>,
    req: &Requirements,
    strategy: Strategy,
    default_model: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<Selection, NoEligibleModel> {
    let mut candidates: Vec<Candidate> = models
        .iter()
        .map(|m| {
            let lacks = shortfalls(m, req, env);
            Candidate {
                id: m.id.clone(),
                eligible: lacks.is_empty(),
                lacks,
                score: None,
            }
        })
        .collect();
    let eligible: Vec<usize> = (0..models.len())
        .filter(|&i| candidates[i].eligible)
        .collect();
    if eligible.is_empty() {
        return Err(NoEligibleModel(candidates));
    }
    let none = ModelStats::default();
    let stat = |i: usize| stats.get(&models[i].id).unwrap_or(&none);
    let (pick, reason) = match strategy {
        Strategy::Fixed => {
            match default_model.and_then(|d| eligible.iter().find(|&&i| models[i].id == d)) {
                Some(&i) => (i, "the configured default model".to_string()),
                None => (
                    eligible[0],
                    "the first eligible model (fixed strategy)".to_string(),
                ),
            }
        }
        Strategy::Cheapest => {
            for &i in &eligible {
                candidates[i].score = Some(models[i].cost_per_1k_tokens.blended());
            }
            let i = min_by(&eligible, |i| models[i].cost_per_1k_tokens.blended());
            (
                i,
                format!(
                    "the cheapest eligible model ({} per 1k tokens)",
                    models[i].cost_per_1k_tokens.blended()
                ),
            )
        }
        Strategy::Fastest => {
            if let Some(&i) = eligible.iter().find(|&&i| stat(i).latency_p50_ms.is_none()) {
                (
                    i,
                    "not measured yet: tried before the measured ones".to_string(),
                )
            } else {
                for &i in &eligible {
                    candidates[i].score = stat(i).latency_p50_ms;
                }
                let i = min_by(&eligible, |i| stat(i).latency_p50_ms.unwrap_or(f64::MAX));
                (
                    i,
                    format!(
                        "the fastest eligible model (median {:.0} ms)",
                        stat(i).latency_p50_ms.unwrap_or(0.0)
                    ),
                )
            }
        }
        Strategy::Ucb => {
            if let Some(&i) = eligible.iter().find(|&&i| stat(i).calls == 0) {
                (
                    i,
                    "untried: UCB explores every eligible model once".to_string(),
                )
            } else {
                let total: u64 = eligible.iter().map(|&i| stat(i).calls).sum();
                let ln = (total.max(1) as f64).ln();
                for &i in &eligible {
                    let s = stat(i);
                    let n = s.calls as f64;
                    candidates[i].score = Some(s.reward_sum / n + (2.0 * ln / n).sqrt());
                }
                let i = min_by(&eligible, |i| -candidates[i].score.unwrap_or(0.0));
                let s = stat(i);
                (
                    i,
                    format!(
                        "highest UCB score {:.3} (mean reward {:.3} over {} calls)",
                        candidates[i].score.unwrap_or(0.0),
                        s.reward_sum / s.calls as f64,
                        s.calls
                    ),
                )
            }
        }
    };
    Ok(Selection {
        model: models[pick].clone(),
        strategy,
        reason,
        candidates,
    })
}

/// The first index with the smallest key (so registry order breaks ties).
fn min_by(indices: &[usize], key: impl Fn(usize) -> f64) -> usize {
    let mut best = indices[0];
    for &i in &indices[1..] {
        if key(i) < key(best) {
            best = i;
        }
    }
    best
}

/// The model actions as `llm-generate` offers them, with their parameters.
pub fn action_specs() -> Vec<crate::ActionSpec> {
    let common = serde_json::json!({
        "system": {"type": "string", "description": "Instructions for the model"},
        "temperature": {"type": "number", "minimum": 0},
        "max_tokens": {"type": "integer", "minimum": 1},
        "model": {"type": "string", "description": "A registered model id, or provider:model"},
        "requires_model": {"type": "object", "description": "Requirements: tasks, capabilities, context_window, max_cost_per_1k, provider"}
    });
    let with = |extra: serde_json::Value| {
        let mut props = common.as_object().cloned().unwrap_or_default();
        if let Some(e) = extra.as_object() {
            props.extend(e.clone());
        }
        serde_json::Value::Object(props)
    };
    let messages = serde_json::json!({"type": "array", "items": {"type": "object", "required": ["role", "content"],
        "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}}}});
    let prompt_or_messages = |extra: serde_json::Value| {
        serde_json::json!({"type": "object", "properties": with(extra),
            "anyOf": [{"required": ["prompt"]}, {"required": ["messages"]}]})
    };
    let text = serde_json::json!({"prompt": {"type": "string"}, "messages": messages});
    vec![
        crate::action(
            "generate",
            "Generate text; the result is the text",
            prompt_or_messages(text.clone()),
        ),
        crate::action(
            "complete",
            "Same as generate",
            prompt_or_messages(text.clone()),
        ),
        crate::action(
            "chat",
            "Same as generate, usually with messages",
            prompt_or_messages(text.clone()),
        ),
        crate::action(
            "generate_structured",
            "Generate JSON that meets `schema`; the result is the JSON value (asked again once when the answer does not fit)",
            {
                let mut props = text.clone();
                props["schema"] = serde_json::json!({"type": "object", "description": "JSON Schema of the answer"});
                let mut s = prompt_or_messages(props);
                s["required"] = serde_json::json!(["schema"]);
                s
            },
        ),
        crate::action(
            "analyze_text",
            "Analyse `text`; the result is the analysis",
            serde_json::json!({"type": "object", "required": ["text"], "properties": with(serde_json::json!({
                "text": {"type": "string"},
                "analysis_type": {"type": "string", "description": "sentiment, summary, entities, … (default general)"},
                "instructions": {"type": "string"}
            }))}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, caps: &[&str], cost: f64, ctx: u64) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            provider: Provider::Openai,
            model: id.into(),
            base_url: Some("http://127.0.0.1:1/v1".into()),
            api_key_env: None,
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            context_window: ctx,
            cost_per_1k_tokens: Cost {
                input: cost,
                output: cost,
            },
            max_output_tokens: None,
        }
    }

    #[test]
    fn costs_read_as_a_number_or_a_pair() {
        let one: ModelSpec = serde_json::from_value(serde_json::json!({"id": "a", "provider": "openai", "model": "m", "cost_per_1k_tokens": 0.01})).expect("one");
        assert_eq!(
            one.cost_per_1k_tokens,
            Cost {
                input: 0.01,
                output: 0.01
            }
        );
        let two: ModelSpec = serde_json::from_value(serde_json::json!({"id": "a", "provider": "gemini", "model": "m", "cost_per_1k_tokens": {"input": 0.001, "output": 0.004}})).expect("two");
        assert_eq!(two.provider, Provider::Google);
        assert!((two.cost_per_1k_tokens.blended() - 0.0025).abs() < 1e-12);
        assert!((two.cost_per_1k_tokens.of(2000, 500) - 0.004).abs() < 1e-12);
    }

    #[test]
    fn ineligible_models_say_what_they_lack() {
        let models = vec![
            spec("small", &["generate"], 0.001, 4096),
            spec("big", &["generate", "reasoning"], 0.03, 128_000),
        ];
        let req = Requirements {
            tasks: vec!["reasoning".into()],
            max_cost_per_1k: Some(0.01),
            ..Default::default()
        };
        let err = select(
            &models,
            &HashMap::new(),
            &req,
            Strategy::Ucb,
            None,
            &HashMap::new(),
        )
        .expect_err("none");
        let text = err.to_string();
        assert!(
            text.contains("'small' lacks capability 'reasoning'"),
            "{text}"
        );
        assert!(
            text.contains("'big' costs 0.03 per 1k tokens > 0.01"),
            "{text}"
        );

        let keyed = ModelSpec {
            base_url: None,
            ..spec("official", &[], 0.0, 8192)
        };
        let err = select(
            std::slice::from_ref(&keyed),
            &HashMap::new(),
            &Requirements::default(),
            Strategy::Ucb,
            None,
            &HashMap::new(),
        )
        .expect_err("no key");
        assert!(
            err.to_string().contains("OPENAI_API_KEY is not set"),
            "{err}"
        );
        let env = HashMap::from([("OPENAI_API_KEY".to_string(), "k".to_string())]);
        assert!(
            select(
                &[keyed],
                &HashMap::new(),
                &Requirements::default(),
                Strategy::Ucb,
                None,
                &env
            )
            .is_ok()
        );
    }

    #[test]
    fn cheapest_fastest_and_fixed_choose_as_named() {
        let models = vec![
            spec("a", &[], 0.02, 8192),
            spec("b", &[], 0.001, 8192),
            spec("c", &[], 0.001, 8192),
        ];
        let env = HashMap::new();
        let req = Requirements::default();
        let none = HashMap::new();
        assert_eq!(
            select(&models, &none, &req, Strategy::Cheapest, None, &env)
                .expect("pick")
                .model
                .id,
            "b"
        );
        assert_eq!(
            select(&models, &none, &req, Strategy::Fixed, Some("c"), &env)
                .expect("pick")
                .model
                .id,
            "c"
        );
        assert_eq!(
            select(&models, &none, &req, Strategy::Fixed, Some("zzz"), &env)
                .expect("pick")
                .model
                .id,
            "a"
        );
        let measured = |ms: f64| ModelStats {
            calls: 3,
            latency_p50_ms: Some(ms),
            ..Default::default()
        };
        let stats = HashMap::from([
            ("a".to_string(), measured(900.0)),
            ("b".to_string(), measured(120.0)),
            ("c".to_string(), measured(400.0)),
        ]);
        assert_eq!(
            select(&models, &stats, &req, Strategy::Fastest, None, &env)
                .expect("pick")
                .model
                .id,
            "b"
        );
    }
}
