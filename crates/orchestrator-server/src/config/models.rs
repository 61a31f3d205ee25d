//! The `models` section and the models file.

use std::collections::HashMap;

use orchestrator_engine::models::ModelSettings;
use orchestrator_tools::models::{ModelSpec, Strategy};
use orchestrator_tools::net::OutboundPolicy;

use super::file::ModelsSection;
use super::tools::positive_seconds;
use super::{ConfigError, Settings, find_default};

/// Reads a models file: `models: [...]` (and an optional `default`), or a
/// bare list of model definitions.
pub fn parse_models_file(
    text: &str,
    path: &str,
) -> Result<(Vec<ModelSpec>, Option<String>), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_string(),
        message,
    };
    let node = orchestrator_core::yaml::parse_with(text, &Default::default())
        .map_err(|e| invalid(e.to_string()))?;
    let (list, default) = match node.to_json() {
        serde_json::Value::Null => (serde_json::Value::Array(vec![]), None),
        list @ serde_json::Value::Array(_) => (list, None),
        serde_json::Value::Object(mut map) => {
            let default = match map.remove("default") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(d)) => Some(d),
                Some(_) => return Err(invalid("'default' must be a model id".into())),
            };
            if let Some(key) = map.keys().find(|k| *k != "models") {
                return Err(invalid(format!(
                    "unknown key '{key}' (expected 'models' and 'default')"
                )));
            }
            (
                map.remove("models")
                    .unwrap_or(serde_json::Value::Array(vec![])),
                default,
            )
        }
        _ => return Err(invalid("expected a list of models, or 'models:'".into())),
    };
    let serde_json::Value::Array(items) = list else {
        return Err(invalid("'models' must be a list".into()));
    };
    let mut specs: Vec<ModelSpec> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let spec: ModelSpec =
            serde_json::from_value(item).map_err(|e| invalid(format!("models[{i}]: {e}")))?;
        spec.check()
            .map_err(|e| invalid(format!("models[{i}]: {e}")))?;
        if specs.iter().any(|s| s.id == spec.id) {
            return Err(invalid(format!(
                "models[{i}]: the id '{}' is used twice",
                spec.id
            )));
        }
        specs.push(spec);
    }
    if let Some(d) = &default
        && !specs.iter().any(|s| s.id == *d)
    {
        return Err(invalid(format!(
            "default model '{d}' is not defined in the file"
        )));
    }
    Ok((specs, default))
}

pub(super) fn resolve_models(
    m: &ModelsSection,
    env: &HashMap<String, String>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let strategy = match &m.routing_strategy {
        None => Strategy::Ucb,
        Some(v) => v.parse().map_err(|e: String| ConfigError::Invalid {
            path: "models.routing_strategy".into(),
            message: e,
        })?,
    };
    let file = match &m.file {
        Some(f) => Some(f.clone()),
        None => find_default("models.yaml"),
    };
    let mut default_model = m.default_model.clone();
    if let Some(path) = &file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let (specs, default) = parse_models_file(&text, &shown)?;
        s.model_specs = specs;
        default_model = default_model.or(default);
    } else {
        // No models file: a provider's key in the environment registers its
        // usual models, as the seed framework's `init_models()` does.
        s.model_specs = default_models(env);
        default_model = default_model.or_else(|| s.model_specs.first().map(|m| m.id.clone()));
    }
    s.models_file = file;
    let mut key_env_allowed = m
        .api_key_env_allowed
        .clone()
        .unwrap_or_else(|| vec!["*_API_KEY".to_string()]);
    // The operator wrote the models file: the variables it names are allowed.
    key_env_allowed.extend(s.model_specs.iter().filter_map(|m| m.api_key_env.clone()));
    let egress = OutboundPolicy::new(
        &m.allowed_hosts.clone().unwrap_or_default(),
        m.allow_private_networks.unwrap_or(false),
    )
    .map_err(|e| ConfigError::Invalid {
        path: "models.allowed_hosts".into(),
        message: e,
    })?;
    let mut models = ModelSettings {
        strategy,
        default_model,
        default_provider: m.default_provider.clone(),
        key_env_allowed,
        egress: Some(std::sync::Arc::new(egress)),
        trusted_base_urls: s
            .model_specs
            .iter()
            .filter(|m| m.base_url.is_some())
            .map(|m| m.base_url().to_string())
            .collect(),
        request_timeout: std::time::Duration::from_secs_f64(positive_seconds(
            m.request_timeout_seconds,
            120.0,
            "models.request_timeout_seconds",
        )?),
        ..ModelSettings::default()
    };
    // Only the variables models may read are kept at all.
    models.env = env
        .iter()
        .filter(|(k, _)| models.allows_key_env(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    s.models = models;
    Ok(())
}

/// The models registered without a models file, for each provider whose key
/// is set (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GOOGLE_API_KEY`): its
/// small and its large model. Prices are US dollars per 1,000 tokens.
pub fn default_models(env: &HashMap<String, String>) -> Vec<ModelSpec> {
    let defaults = serde_json::json!([
        {"id": "gpt-4o-mini", "provider": "openai", "model": "gpt-4o-mini",
         "capabilities": ["generate", "summarization", "structured", "vision"], "context_window": 128000,
         "cost_per_1k_tokens": {"input": 0.00015, "output": 0.0006}},
        {"id": "gpt-4o", "provider": "openai", "model": "gpt-4o",
         "capabilities": ["generate", "summarization", "structured", "reasoning", "code", "vision"],
         "context_window": 128000, "cost_per_1k_tokens": {"input": 0.0025, "output": 0.01}},
        {"id": "claude-haiku", "provider": "anthropic", "model": "claude-haiku-4-5",
         "capabilities": ["generate", "summarization", "reasoning", "vision"], "context_window": 200000,
         "cost_per_1k_tokens": {"input": 0.001, "output": 0.005}, "max_output_tokens": 4096},
        {"id": "claude-sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5",
         "capabilities": ["generate", "summarization", "structured", "reasoning", "code", "vision"],
         "context_window": 200000, "cost_per_1k_tokens": {"input": 0.003, "output": 0.015},
         "max_output_tokens": 8192},
        {"id": "gemini-flash", "provider": "google", "model": "gemini-2.5-flash",
         "capabilities": ["generate", "summarization", "structured", "vision"], "context_window": 1000000,
         "cost_per_1k_tokens": {"input": 0.0003, "output": 0.0025}},
        {"id": "gemini-pro", "provider": "google", "model": "gemini-2.5-pro",
         "capabilities": ["generate", "summarization", "structured", "reasoning", "code", "vision"],
         "context_window": 1000000, "cost_per_1k_tokens": {"input": 0.00125, "output": 0.01}},
    ]);
    let specs: Vec<ModelSpec> = serde_json::from_value(defaults).unwrap_or_default();
    specs
        .into_iter()
        .filter(|m| {
            env.get(m.provider.default_key_env())
                .is_some_and(|k| !k.trim().is_empty())
        })
        .collect()
}
