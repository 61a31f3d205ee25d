//! Models: their definitions, requirement-based selection (UCB1, cheapest,
//! fastest, fixed) and the providers' wire formats ([`providers`]).
//!
//! Nothing here stores anything: the registry and the call statistics live in
//! the store, and the engine passes them in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

mod select;
#[cfg(test)]
mod tests;

pub use select::{
    Candidate, ModelStats, NoEligibleModel, Requirements, Selection, Strategy, reward, select,
    shortfalls,
};

pub mod gateway;
pub mod providers;

pub use gateway::{ChatReply, ModelGateway};

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
    /// Price in US dollars of one generated image (image-generation models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_image: Option<f64>,
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
        if self
            .cost_per_image
            .is_some_and(|c| !c.is_finite() || c < 0.0)
        {
            return Err(format!(
                "model '{}': cost_per_image must be zero or more",
                self.id
            ));
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

/// The JSON in a model's answer: the whole text, or a fenced block in it.
pub fn extract_json(text: &str) -> Option<serde_json::Value> {
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

fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['-', ' '], "_")
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
