//! Configuration layers: defaults < `orchestrator.yaml` (current folder, else
//! `~/.orchestrator/orchestrator.yaml`, or `--config FILE`) < `ORCHESTRATOR_*`
//! environment variables < command-line flags. Unknown keys are errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use orchestrator_engine::models::ModelSettings;
use orchestrator_tools::http::HttpSettings;
use orchestrator_tools::models::{ModelSpec, Strategy};
use orchestrator_tools::net::OutboundPolicy;
use orchestrator_tools::remote::RemoteTool;
use orchestrator_tools::search::{self, SearchBackend};
use serde::Deserialize;

/// The seed framework's file, plus what the server needs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub orchestrator: OrchestratorSection,
    pub models: ModelsSection,
    pub tools: ToolsSection,
    pub server: ServerSection,
    pub database: DatabaseSection,
    pub workspace: WorkspaceSection,
    pub limits: LimitsSection,
    pub auth: AuthSection,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Require API tokens (= `ORCHESTRATOR_AUTH_ENABLED`).
    pub enabled: Option<bool>,
    /// The variable holding the token pepper (default `ORCHESTRATOR_AUTH_PEPPER`).
    pub pepper_env: Option<String>,
    /// `/metrics` and `/metrics/summary` without a token (= `ORCHESTRATOR_PUBLIC_METRICS`).
    pub public_metrics: Option<bool>,
    /// Listen beyond loopback with authentication off (= `ORCHESTRATOR_ALLOW_UNAUTHENTICATED`).
    pub allow_unauthenticated: Option<bool>,
    /// Queued or running executions per token, 0 for no limit (default 100).
    pub max_active_executions_per_token: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorSection {
    /// Worker slots per process (= `ORCHESTRATOR_MAX_CONCURRENT`).
    pub max_concurrent_tasks: Option<usize>,
    /// Checkpoints are always written; accepted for compatibility.
    pub enable_checkpointing: Option<bool>,
    pub log_level: Option<String>,
    /// How long a claimed step stays leased without a heartbeat (= `ORCHESTRATOR_LEASE_MS`).
    pub lease_ms: Option<u64>,
    /// How often running steps' leases are extended (= `ORCHESTRATOR_HEARTBEAT_MS`).
    pub heartbeat_ms: Option<u64>,
    /// How often a step may lose its worker before it fails.
    pub max_lost_workers: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Its models are preferred when several are equally good.
    pub default_provider: Option<String>,
    /// `ucb`, `cheapest`, `fastest` or `fixed` (= `ORCHESTRATOR_ROUTING_STRATEGY`).
    pub routing_strategy: Option<String>,
    /// Accepted for compatibility: cost always counts in selection.
    pub cost_optimization: Option<bool>,
    /// The model definitions file (= `ORCHESTRATOR_MODELS_FILE`; default
    /// `models.yaml` in the current folder, else `~/.orchestrator/models.yaml`).
    pub file: Option<PathBuf>,
    /// The model of steps that name none (= `ORCHESTRATOR_DEFAULT_MODEL`).
    pub default_model: Option<String>,
    /// Seconds one request to a provider may take.
    pub request_timeout_seconds: Option<f64>,
    /// Variables a model's `api_key_env` may name: names or `*` patterns
    /// (default `*_API_KEY`). Those named in the models file are added.
    pub api_key_env_allowed: Option<Vec<String>>,
    /// Hosts model endpoints may be on (as `tools.http.allowed_hosts`; empty:
    /// any public host). Endpoints written in the models file are always
    /// reached.
    pub allowed_hosts: Option<Vec<String>>,
    /// Let registered models reach loopback and private addresses.
    pub allow_private_networks: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsSection {
    pub enable_web_search: Option<bool>,
    pub enable_filesystem: Option<bool>,
    pub sandbox_mode: Option<bool>,
    /// The `terminal` tool runs commands on the server: off unless enabled.
    pub enable_terminal: Option<bool>,
    /// When set, the only programs `terminal` may run.
    pub terminal_allowed_programs: Option<Vec<String>>,
    pub http: HttpSection,
    pub web_search: WebSearchSection,
    /// Tools over HTTP.
    pub remote: Vec<RemoteToolSection>,
}

/// The `http` tool.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Host names, `*.domain`, IP addresses or CIDR networks requests may
    /// reach. Empty: every public host. Non-public addresses (loopback,
    /// private, link-local) only when listed here.
    pub allowed_hosts: Option<Vec<String>>,
    /// Reach non-public addresses without listing them (trusted networks only).
    pub allow_private_networks: Option<bool>,
    pub max_response_bytes: Option<usize>,
    pub timeout_seconds: Option<f64>,
}

/// The `web-search` tool.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebSearchSection {
    /// Tried in order; the next one answers when one fails.
    pub backends: Vec<SearchBackendSection>,
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchBackendSection {
    /// `searxng`, `brave` or `tavily`.
    pub kind: String,
    /// SearXNG: the instance's base URL (required). Others: an API endpoint
    /// to use instead of the public one.
    pub url: Option<String>,
    /// The variable holding the API key (default `BRAVE_API_KEY` / `TAVILY_API_KEY`).
    pub api_key_env: Option<String>,
}

/// A tool over HTTP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteToolSection {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    pub actions: Vec<RemoteActionSection>,
    /// Sent with every request.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A variable whose value is sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
}

/// An action name, or the action with its description and parameter schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RemoteActionSection {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        parameters: Option<serde_json::Value>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub bind: Option<String>,
    /// Seconds running steps get to finish on shutdown.
    pub shutdown_grace_seconds: Option<u64>,
    /// Seconds a client has to send a request head (and, on a kept-alive
    /// connection, to start the next one).
    pub header_read_timeout_seconds: Option<f64>,
    /// Seconds a connection may pass without a byte either way.
    pub idle_timeout_seconds: Option<f64>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspaceSection {
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    pub max_body_bytes: Option<usize>,
    /// Above this many queued steps, `POST /executions` answers 429.
    pub max_queued_steps: Option<u64>,
    /// How long an `Idempotency-Key` is remembered, in hours.
    pub idempotency_ttl_hours: Option<u64>,
    /// Steps of a pipeline, loops expanded (= `ORCHESTRATOR_MAX_STEPS`).
    pub max_steps: Option<usize>,
    pub max_yaml_depth: Option<usize>,
    /// YAML nodes with aliases expanded.
    pub max_yaml_nodes: Option<usize>,
    /// Bytes aliases may add to a YAML document once expanded.
    pub max_yaml_alias_bytes: Option<usize>,
    /// Template evaluation steps.
    pub template_fuel: Option<u64>,
    pub template_output_bytes: Option<usize>,
    /// Matches one `regex_replace` may replace.
    pub regex_matches: Option<usize>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: String,
    pub workspace_root: PathBuf,
    pub max_concurrent: usize,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_seconds: u64,
    /// Timeouts and the cap of HTTP connections.
    pub connections: crate::listener::ConnectionLimits,
    pub enable_terminal: bool,
    pub terminal_allowed_programs: Option<Vec<String>>,
    /// The `http` tool's policy and limits.
    pub http: HttpSettings,
    /// `web-search` is offered when this is not empty.
    pub search_backends: Vec<SearchBackend>,
    pub search_timeout_seconds: f64,
    pub remote_tools: Vec<RemoteTool>,
    /// How models are chosen and called (keys included, never printed).
    pub models: ModelSettings,
    pub auth: crate::auth::AuthSettings,
    /// Limits of the pipeline language (steps, YAML, templates).
    pub core_limits: orchestrator_core::limits::Limits,
    /// Definitions read from the models file, registered at start-up.
    pub model_specs: Vec<ModelSpec>,
    pub models_file: Option<PathBuf>,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    pub max_lost_workers: u64,
    pub max_queued_steps: u64,
    pub idempotency_ttl_hours: u64,
    /// Where the file layer came from, if any.
    pub config_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://orchestrator.db".to_string(),
            workspace_root: PathBuf::from("workspace"),
            max_concurrent: 10,
            log_level: "info".to_string(),
            max_body_bytes: 2 * 1024 * 1024,
            shutdown_grace_seconds: 30,
            connections: crate::listener::ConnectionLimits::default(),
            enable_terminal: false,
            terminal_allowed_programs: None,
            http: HttpSettings::default(),
            search_backends: Vec::new(),
            search_timeout_seconds: 15.0,
            remote_tools: Vec::new(),
            models: ModelSettings::default(),
            auth: crate::auth::AuthSettings::default(),
            core_limits: orchestrator_core::limits::Limits::default(),
            model_specs: Vec::new(),
            models_file: None,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            max_lost_workers: 3,
            max_queued_steps: 100_000,
            idempotency_ttl_hours: 24,
            config_file: None,
        }
    }
}

/// Command-line overrides (the last layer).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub workspace_root: Option<PathBuf>,
    pub log_level: Option<String>,
    pub max_concurrent: Option<usize>,
    pub allow_unauthenticated: bool,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{name}={value}: {message}")]
    Env {
        name: String,
        value: String,
        message: String,
    },
}

/// `name` in the current folder, else in `~/.orchestrator/`, if it exists.
fn find_default(name: &str) -> Option<PathBuf> {
    let mut files = vec![PathBuf::from(name)];
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".orchestrator").join(name));
    }
    files.into_iter().find(|p| p.is_file())
}

/// Parses a config file's text.
pub fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    let node = orchestrator_core::yaml::parse(text).map_err(|e| ConfigError::Invalid {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let json = match node.to_json() {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    };
    serde_json::from_value(json).map_err(|e| ConfigError::Invalid {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn log_level(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "critical" | "fatal" => "error".to_string(),
        other => other.to_string(),
    }
}

fn parse_bind(value: &str, origin: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        path: origin.to_string(),
        message: format!("bind address '{value}' is not HOST:PORT (for example 127.0.0.1:8080)"),
    })
}

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
    let node = orchestrator_core::yaml::parse(text).map_err(|e| invalid(e.to_string()))?;
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

fn resolve_models(
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

fn tools_error(message: String) -> ConfigError {
    ConfigError::Invalid {
        path: "tools".into(),
        message,
    }
}

/// A positive, finite number of seconds.
fn seconds(value: f64, key: &str) -> Result<std::time::Duration, ConfigError> {
    if value > 0.0 && value.is_finite() && value < 1e9 {
        Ok(std::time::Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::Invalid {
            path: key.into(),
            message: format!("must be a positive number of seconds, not {value}"),
        })
    }
}

fn float(name: &str, value: &str) -> Result<f64, ConfigError> {
    value.parse().map_err(|_| ConfigError::Env {
        name: name.to_string(),
        value: value.to_string(),
        message: "not a number".to_string(),
    })
}

fn positive_seconds(value: Option<f64>, default: f64, key: &str) -> Result<f64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v > 0.0 && v.is_finite() => Ok(v),
        Some(v) => Err(tools_error(format!(
            "{key} must be a positive number of seconds, not {v}"
        ))),
    }
}

/// Turns the `tools` section into the tools' settings: the outbound policy,
/// the search backends with their keys, the tools over HTTP.
fn resolve_tools(
    t: &ToolsSection,
    env: &HashMap<String, String>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let allowed = t.http.allowed_hosts.clone().unwrap_or_default();
    s.http = HttpSettings {
        policy: OutboundPolicy::new(&allowed, t.http.allow_private_networks.unwrap_or(false))
            .map_err(|e| tools_error(format!("http.allowed_hosts: {e}")))?,
        max_response_bytes: t
            .http
            .max_response_bytes
            .unwrap_or(HttpSettings::default().max_response_bytes),
        default_timeout_seconds: positive_seconds(
            t.http.timeout_seconds,
            30.0,
            "http.timeout_seconds",
        )?,
        ..HttpSettings::default()
    };

    let key = |var: &str, kind: &str, i: usize| -> Result<String, ConfigError> {
        env.get(var).filter(|v| !v.is_empty()).cloned().ok_or_else(|| {
            tools_error(format!(
                "web_search.backends[{i}] ({kind}) needs its API key in the environment variable {var}, which is not set"
            ))
        })
    };
    let mut backends = Vec::new();
    for (i, b) in t.web_search.backends.iter().enumerate() {
        let backend = match b.kind.to_ascii_lowercase().as_str() {
            "searxng" => SearchBackend::Searxng {
                url: b.url.clone().ok_or_else(|| {
                    tools_error(format!(
                        "web_search.backends[{i}] (searxng) needs the instance's url"
                    ))
                })?,
            },
            "brave" => SearchBackend::Brave {
                url: b.url.clone().unwrap_or_else(|| search::BRAVE_URL.into()),
                api_key: key(
                    b.api_key_env.as_deref().unwrap_or("BRAVE_API_KEY"),
                    "brave",
                    i,
                )?,
            },
            "tavily" => SearchBackend::Tavily {
                url: b.url.clone().unwrap_or_else(|| search::TAVILY_URL.into()),
                api_key: key(
                    b.api_key_env.as_deref().unwrap_or("TAVILY_API_KEY"),
                    "tavily",
                    i,
                )?,
            },
            other => {
                return Err(tools_error(format!(
                    "web_search.backends[{i}]: kind '{other}' is not searxng, brave or tavily"
                )));
            }
        };
        if let Err(e) = reqwest::Url::parse(backend.url()) {
            return Err(tools_error(format!(
                "web_search.backends[{i}]: '{}' is not a URL: {e}",
                backend.url()
            )));
        }
        backends.push(backend);
    }
    if t.web_search.backends.is_empty() {
        // Nothing configured: use what the environment offers.
        let var = |n: &str| env.get(n).filter(|v| !v.is_empty()).cloned();
        if let Some(url) = var("ORCHESTRATOR_SEARXNG_URL").or_else(|| var("SEARXNG_URL")) {
            backends.push(SearchBackend::Searxng { url });
        }
        if let Some(api_key) = var("BRAVE_API_KEY") {
            backends.push(SearchBackend::Brave {
                url: search::BRAVE_URL.into(),
                api_key,
            });
        }
        if let Some(api_key) = var("TAVILY_API_KEY") {
            backends.push(SearchBackend::Tavily {
                url: search::TAVILY_URL.into(),
                api_key,
            });
        }
    }
    if t.enable_web_search == Some(false) {
        backends.clear();
    }
    s.search_backends = backends;
    s.search_timeout_seconds = positive_seconds(
        t.web_search.timeout_seconds,
        15.0,
        "web_search.timeout_seconds",
    )?;

    let builtin = orchestrator_core::builtin_catalog();
    let mut remote: Vec<RemoteTool> = Vec::new();
    for (i, r) in t.remote.iter().enumerate() {
        let at = format!("remote[{i}] ({})", r.id);
        if r.id.is_empty()
            || !r
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(tools_error(format!(
                "{at}: a tool id is letters, digits, '-' and '_'"
            )));
        }
        if orchestrator_core::ToolCatalog::actions(&builtin, &r.id).is_some()
            || remote.iter().any(|o| o.id == r.id)
        {
            return Err(tools_error(format!(
                "{at}: the tool id '{}' is taken",
                r.id
            )));
        }
        match reqwest::Url::parse(&r.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(tools_error(format!(
                    "{at}: '{}' is not an http(s) URL",
                    r.url
                )));
            }
        }
        if r.actions.is_empty() {
            return Err(tools_error(format!("{at}: declare at least one action")));
        }
        let mut actions = Vec::new();
        for a in &r.actions {
            let (name, description, parameters) = match a {
                RemoteActionSection::Name(n) => (n.clone(), None, None),
                RemoteActionSection::Full {
                    name,
                    description,
                    parameters,
                } => (name.clone(), description.clone(), parameters.clone()),
            };
            let parameters = parameters.unwrap_or_else(|| serde_json::json!({"type": "object"}));
            if let Err(e) = jsonschema::validator_for(&parameters) {
                return Err(tools_error(format!(
                    "{at}: the parameters schema of action '{name}' is not a valid JSON Schema: {e}"
                )));
            }
            actions.push(orchestrator_tools::ActionSpec {
                description: description.unwrap_or_else(|| format!("{name} (tool over HTTP)")),
                name,
                parameters,
            });
        }
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(var) = &r.bearer_token_env {
            let token = env.get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                tools_error(format!(
                    "{at}: the environment variable {var} (bearer_token_env) is not set"
                ))
            })?;
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
        for (k, v) in &headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v).is_err()
            {
                return Err(tools_error(format!(
                    "{at}: header '{k}' is not a valid HTTP header"
                )));
            }
        }
        remote.push(RemoteTool {
            id: r.id.clone(),
            description: r
                .description
                .clone()
                .unwrap_or_else(|| format!("Tool over HTTP at {}", r.url)),
            url: r.url.clone(),
            actions,
            headers,
            timeout: std::time::Duration::from_secs_f64(positive_seconds(
                r.timeout_seconds,
                300.0,
                &format!("remote[{i}].timeout_seconds"),
            )?),
            max_response_bytes: s.http.max_response_bytes,
        });
    }
    s.remote_tools = remote;
    Ok(())
}

fn boolean(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Env {
            name: name.to_string(),
            value: value.to_string(),
            message: "not true or false".to_string(),
        }),
    }
}

/// Resolves settings from all layers. `env` is the process environment.
pub fn load(overrides: &Overrides, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    let mut tools = ToolsSection::default();
    let mut models = ModelsSection::default();
    let mut auth = AuthSection::default();

    let file = match &overrides.config {
        Some(p) => Some(p.clone()),
        None => find_default("orchestrator.yaml"),
    };
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let f = parse_file(&text, &shown)?;
        if let Some(n) = f.orchestrator.max_concurrent_tasks {
            s.max_concurrent = n;
        }
        if let Some(n) = f.orchestrator.lease_ms {
            s.lease_ms = n;
        }
        if let Some(n) = f.orchestrator.heartbeat_ms {
            s.heartbeat_ms = n;
        }
        if let Some(n) = f.orchestrator.max_lost_workers {
            s.max_lost_workers = n;
        }
        if let Some(n) = f.limits.max_queued_steps {
            s.max_queued_steps = n;
        }
        if let Some(n) = f.limits.idempotency_ttl_hours {
            s.idempotency_ttl_hours = n;
        }
        let l = &mut s.core_limits;
        l.max_steps = f.limits.max_steps.unwrap_or(l.max_steps);
        l.max_yaml_depth = f.limits.max_yaml_depth.unwrap_or(l.max_yaml_depth);
        l.max_yaml_nodes = f.limits.max_yaml_nodes.unwrap_or(l.max_yaml_nodes);
        l.max_yaml_alias_bytes = f
            .limits
            .max_yaml_alias_bytes
            .unwrap_or(l.max_yaml_alias_bytes);
        l.template_fuel = f.limits.template_fuel.unwrap_or(l.template_fuel);
        l.template_output_bytes = f
            .limits
            .template_output_bytes
            .unwrap_or(l.template_output_bytes);
        l.regex_matches = f.limits.regex_matches.unwrap_or(l.regex_matches);
        if let Some(l) = f.orchestrator.log_level {
            s.log_level = log_level(&l);
        }
        if let Some(b) = f.server.bind {
            s.bind = parse_bind(&b, &shown)?;
        }
        if let Some(g) = f.server.shutdown_grace_seconds {
            s.shutdown_grace_seconds = g;
        }
        if let Some(t) = f.server.header_read_timeout_seconds {
            s.connections.header_read_timeout = seconds(t, "server.header_read_timeout_seconds")?;
        }
        if let Some(t) = f.server.idle_timeout_seconds {
            s.connections.idle_timeout = seconds(t, "server.idle_timeout_seconds")?;
        }
        if let Some(n) = f.server.max_connections {
            s.connections.max_connections = n;
        }
        if let Some(u) = f.database.url {
            s.database_url = u;
        }
        if let Some(r) = f.workspace.root {
            s.workspace_root = r;
        }
        if let Some(m) = f.limits.max_body_bytes {
            s.max_body_bytes = m;
        }
        if let Some(t) = f.tools.enable_terminal {
            s.enable_terminal = t;
        }
        if let Some(p) = f.tools.terminal_allowed_programs.clone() {
            s.terminal_allowed_programs = Some(p);
        }
        tools = f.tools;
        models = f.models;
        auth = f.auth;
        s.config_file = Some(path);
    }

    let number = |name: &str, value: &str| -> Result<usize, ConfigError> {
        value.parse().map_err(|_| ConfigError::Env {
            name: name.to_string(),
            value: value.to_string(),
            message: "not a whole number".to_string(),
        })
    };
    if let Some(v) = env.get("DATABASE_URL") {
        s.database_url = v.clone();
    }
    for (name, value) in env {
        match name.as_str() {
            "ORCHESTRATOR_BIND" => s.bind = parse_bind(value, name)?,
            "ORCHESTRATOR_DATABASE_URL" => s.database_url = value.clone(),
            "ORCHESTRATOR_WORKSPACE_ROOT" => s.workspace_root = PathBuf::from(value),
            "ORCHESTRATOR_MAX_CONCURRENT" => s.max_concurrent = number(name, value)?,
            "ORCHESTRATOR_LOG_LEVEL" => s.log_level = log_level(value),
            "ORCHESTRATOR_MAX_BODY_BYTES" => s.max_body_bytes = number(name, value)?,
            "ORCHESTRATOR_LEASE_MS" => s.lease_ms = number(name, value)? as u64,
            "ORCHESTRATOR_HEARTBEAT_MS" => s.heartbeat_ms = number(name, value)? as u64,
            "ORCHESTRATOR_MAX_QUEUED_STEPS" => s.max_queued_steps = number(name, value)? as u64,
            "ORCHESTRATOR_SHUTDOWN_GRACE_SECONDS" => {
                s.shutdown_grace_seconds = number(name, value)? as u64
            }
            "ORCHESTRATOR_HEADER_READ_TIMEOUT_SECONDS" => {
                s.connections.header_read_timeout = seconds(float(name, value)?, name)?
            }
            "ORCHESTRATOR_IDLE_TIMEOUT_SECONDS" => {
                s.connections.idle_timeout = seconds(float(name, value)?, name)?
            }
            "ORCHESTRATOR_MAX_CONNECTIONS" => s.connections.max_connections = number(name, value)?,
            "ORCHESTRATOR_ENABLE_TERMINAL" => s.enable_terminal = boolean(name, value)?,
            "ORCHESTRATOR_AUTH_ENABLED" => auth.enabled = Some(boolean(name, value)?),
            "ORCHESTRATOR_MAX_STEPS" => s.core_limits.max_steps = number(name, value)?,
            "ORCHESTRATOR_MAX_ACTIVE_EXECUTIONS_PER_TOKEN" => {
                auth.max_active_executions_per_token = Some(number(name, value)? as u64)
            }
            "ORCHESTRATOR_PUBLIC_METRICS" => auth.public_metrics = Some(boolean(name, value)?),
            "ORCHESTRATOR_ALLOW_UNAUTHENTICATED" => {
                auth.allow_unauthenticated = Some(boolean(name, value)?)
            }
            "ORCHESTRATOR_ROUTING_STRATEGY" => models.routing_strategy = Some(value.clone()),
            "ORCHESTRATOR_DEFAULT_MODEL" => models.default_model = Some(value.clone()),
            "ORCHESTRATOR_MODELS_FILE" => models.file = Some(PathBuf::from(value)),
            "ORCHESTRATOR_ENABLE_WEB_SEARCH" => {
                tools.enable_web_search = Some(boolean(name, value)?)
            }
            "ORCHESTRATOR_HTTP_ALLOWED_HOSTS" => {
                tools.http.allowed_hosts = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            "ORCHESTRATOR_MODELS_ALLOW_PRIVATE_NETWORKS" => {
                models.allow_private_networks = Some(boolean(name, value)?)
            }
            "ORCHESTRATOR_HTTP_ALLOW_PRIVATE_NETWORKS" => {
                tools.http.allow_private_networks = Some(boolean(name, value)?)
            }
            _ => {}
        }
    }

    if let Some(b) = &overrides.bind {
        s.bind = parse_bind(b, "--bind")?;
    }
    if let Some(u) = &overrides.database_url {
        s.database_url = u.clone();
    }
    if let Some(r) = &overrides.workspace_root {
        s.workspace_root = r.clone();
    }
    if let Some(l) = &overrides.log_level {
        s.log_level = log_level(l);
    }
    if let Some(n) = overrides.max_concurrent {
        s.max_concurrent = n;
    }
    resolve_tools(&tools, env, &mut s)?;
    resolve_models(&models, env, &mut s)?;
    let pepper_env = auth
        .pepper_env
        .clone()
        .unwrap_or_else(|| "ORCHESTRATOR_AUTH_PEPPER".to_string());
    s.auth = crate::auth::AuthSettings {
        enabled: auth.enabled.unwrap_or(false),
        pepper: crate::auth::Secret(env.get(&pepper_env).cloned().unwrap_or_default()),
        pepper_env,
        public_metrics: auth.public_metrics.unwrap_or(false),
        allow_unauthenticated: overrides.allow_unauthenticated
            || auth.allow_unauthenticated.unwrap_or(false),
        max_active_executions_per_token: auth.max_active_executions_per_token.unwrap_or(100),
    };
    if s.connections.max_connections == 0 {
        return Err(ConfigError::Invalid {
            path: "server.max_connections".into(),
            message: "must be at least 1".into(),
        });
    }
    if s.auth.enabled && s.auth.pepper.0.is_empty() {
        return Err(ConfigError::Invalid {
            path: "auth".into(),
            message: format!(
                "authentication is on but {} is not set: tokens are checked against hashes made with it; set it to a long random secret (the same in every process)",
                s.auth.pepper_env
            ),
        });
    }
    if s.heartbeat_ms == 0 || s.heartbeat_ms >= s.lease_ms {
        return Err(ConfigError::Invalid {
            path: "settings".into(),
            message: format!(
                "heartbeat_ms ({}) must be shorter than lease_ms ({})",
                s.heartbeat_ms, s.lease_ms
            ),
        });
    }
    let l = s.core_limits;
    if l.max_steps == 0
        || l.max_yaml_depth < 4
        || l.max_yaml_nodes == 0
        || l.max_yaml_alias_bytes == 0
        || l.template_fuel == 0
        || l.template_output_bytes == 0
        || l.regex_matches == 0
    {
        return Err(ConfigError::Invalid {
            path: "limits".into(),
            message: "max_steps, max_yaml_nodes, max_yaml_alias_bytes, template_fuel, template_output_bytes and regex_matches must be at least 1, max_yaml_depth at least 4".into(),
        });
    }
    if s.max_concurrent == 0 {
        return Err(ConfigError::Invalid {
            path: "settings".into(),
            message: "max_concurrent must be at least 1".into(),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_file_loads_as_it_is() {
        let text = "orchestrator:\n  max_concurrent_tasks: 20\n  enable_checkpointing: true\n  log_level: DEBUG\nmodels:\n  default_provider: openai\n  routing_strategy: ucb\n  cost_optimization: true\ntools:\n  enable_web_search: true\n  enable_filesystem: true\n  sandbox_mode: false\n";
        let f = parse_file(text, "orchestrator.yaml").expect("loads");
        assert_eq!(f.orchestrator.max_concurrent_tasks, Some(20));
        assert_eq!(f.models.routing_strategy.as_deref(), Some("ucb"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err =
            parse_file("orchestrator:\n  max_concurent_tasks: 2\n", "x.yaml").expect_err("typo");
        assert!(err.to_string().contains("max_concurent_tasks"), "{err}");
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir =
            std::env::temp_dir().join(format!("orch-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("orchestrator.yaml");
        std::fs::write(&file, text).expect("write");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let loaded = load(
            &Overrides {
                config: Some(file),
                ..Default::default()
            },
            &env,
        );
        std::fs::remove_dir_all(&dir).ok();
        loaded
    }

    #[test]
    fn search_backends_take_their_keys_from_the_environment() {
        let text = "tools:\n  web_search:\n    backends:\n      - kind: searxng\n        url: http://search.internal:8888\n      - kind: brave\n      - kind: tavily\n        api_key_env: MY_TAVILY\n";
        let err = load_text(text, &[]).expect_err("no brave key");
        assert!(err.to_string().contains("BRAVE_API_KEY"), "{err}");
        let s = load_text(text, &[("BRAVE_API_KEY", "b"), ("MY_TAVILY", "t")]).expect("keys");
        let names: Vec<&str> = s.search_backends.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["searxng", "brave", "tavily"]);
        assert!(
            !format!("{s:?}").contains("MY_TAVILY\", \"t"),
            "keys stay out of debug output"
        );

        for (bad, says) in [
            (
                "tools:\n  web_search:\n    backends: [{kind: google}]\n",
                "kind 'google'",
            ),
            (
                "tools:\n  web_search:\n    backends: [{kind: searxng}]\n",
                "needs the instance's url",
            ),
            (
                "tools:\n  web_search:\n    backends: [{kind: searxng, url: 'not a url'}]\n",
                "is not a URL",
            ),
        ] {
            let err = load_text(bad, &[]).expect_err(bad);
            assert!(err.to_string().contains(says), "{err}");
        }

        // Nothing configured: the environment decides, and the switch wins.
        let s = load_text(
            "",
            &[("TAVILY_API_KEY", "t"), ("SEARXNG_URL", "http://s:8080")],
        )
        .expect("env");
        let names: Vec<&str> = s.search_backends.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["searxng", "tavily"]);
        let s = load_text(
            "tools:\n  enable_web_search: false\n",
            &[("TAVILY_API_KEY", "t")],
        )
        .expect("off");
        assert!(s.search_backends.is_empty());
    }

    #[test]
    fn tools_over_http_are_checked_when_loaded() {
        let good = "tools:\n  remote:\n    - id: sentiment\n      url: http://127.0.0.1:9000/run\n      bearer_token_env: SENTIMENT_TOKEN\n      headers: {X-Team: data}\n      actions:\n        - analyze\n        - name: score\n          description: Scores a text\n          parameters: {type: object, required: [text]}\n";
        let err = load_text(good, &[]).expect_err("token missing");
        assert!(err.to_string().contains("SENTIMENT_TOKEN"), "{err}");
        let s = load_text(good, &[("SENTIMENT_TOKEN", "tok")]).expect("loads");
        let tool = &s.remote_tools[0];
        assert_eq!(tool.actions.len(), 2);
        assert_eq!(tool.actions[1].parameters["required"][0], "text");
        assert!(
            tool.headers
                .contains(&("Authorization".into(), "Bearer tok".into()))
        );
        assert!(
            !format!("{tool:?}").contains("tok\""),
            "tokens stay out of debug output"
        );

        for (bad, says) in [
            (
                "tools:\n  remote:\n    - {id: filesystem, url: 'http://x/', actions: [a]}\n",
                "is taken",
            ),
            (
                "tools:\n  remote:\n    - {id: 'a b', url: 'http://x/', actions: [a]}\n",
                "letters, digits",
            ),
            (
                "tools:\n  remote:\n    - {id: t, url: 'ftp://x/', actions: [a]}\n",
                "not an http(s) URL",
            ),
            (
                "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: []}\n",
                "at least one action",
            ),
            (
                "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: [{name: a, parameters: {type: 12}}]}\n",
                "not a valid JSON Schema",
            ),
            (
                "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: [a]}\n    - {id: t, url: 'http://y/', actions: [b]}\n",
                "is taken",
            ),
        ] {
            let err = load_text(bad, &[]).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_http_allow_list_is_parsed_when_loaded() {
        let err =
            load_text("tools:\n  http:\n    allowed_hosts: ['http://x']\n", &[]).expect_err("url");
        assert!(err.to_string().contains("http.allowed_hosts"), "{err}");
        let s = load_text(
            "",
            &[(
                "ORCHESTRATOR_HTTP_ALLOWED_HOSTS",
                "api.example.com, 10.0.0.0/8",
            )],
        )
        .expect("env");
        assert!(
            s.http
                .policy
                .allows("api.example.com", "93.184.216.34".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            s.http
                .policy
                .allows("db", "10.1.1.1".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            s.http
                .policy
                .allows("other.com", "93.184.216.34".parse().expect("ip"))
                .is_err()
        );
    }

    #[test]
    fn models_read_only_allowed_key_variables_and_trust_their_files_endpoints() {
        let path = format!(
            "{}/../../examples/config/models.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = format!("models:\n  file: {path}\n");
        let env = [
            ("OPENAI_API_KEY", "sk-1"),
            ("ORCHESTRATOR_AUTH_PEPPER", "secret"),
            ("DATABASE_URL", "postgres://u:p@h/db"),
        ];
        let s = load_text(&text, &env).expect("loads");
        let mut keys: Vec<&String> = s.models.env.keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            vec!["OPENAI_API_KEY"],
            "only key variables reach models"
        );
        assert!(
            s.models
                .trusted_base_urls
                .contains("http://localhost:11434/v1")
        );
        assert!(s.models.egress.is_some());
        let text = format!(
            "models:\n  file: {path}\n  api_key_env_allowed: [MY_TOKEN]\n  allowed_hosts: ['*.example.com']\n"
        );
        let s = load_text(&text, &[("MY_TOKEN", "t"), ("OPENAI_API_KEY", "sk")]).expect("loads");
        assert!(s.models.allows_key_env("MY_TOKEN"));
        assert!(!s.models.allows_key_env("OPENAI_API_KEY"));
        let err = load_text("models:\n  allowed_hosts: ['http://x']\n", &[]).expect_err("bad host");
        assert!(err.to_string().contains("models.allowed_hosts"), "{err}");
    }

    #[test]
    fn the_example_models_file_loads_and_bad_ones_say_why() {
        let path = format!(
            "{}/../../examples/config/models.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("example");
        let (specs, default) = parse_models_file(&text, &path).expect("loads");
        assert_eq!(specs.len(), 4);
        assert_eq!(default.as_deref(), Some("gpt-4o-mini"));
        for (bad, says) in [
            ("models:\n  - {id: a, provider: openai}\n", "models[0]"),
            (
                "models:\n  - {id: a, provider: cohere, model: m}\n",
                "cohere",
            ),
            (
                "models:\n  - {id: a, provider: openai, model: m}\n  - {id: a, provider: openai, model: n}\n",
                "used twice",
            ),
            (
                "default: b\nmodels:\n  - {id: a, provider: openai, model: m}\n",
                "'b' is not defined",
            ),
            ("modles: []\n", "unknown key 'modles'"),
            (
                "models:\n  - {id: a, provider: openai, model: m, base_url: 'ftp://x'}\n",
                "not an http(s) URL",
            ),
        ] {
            let err = parse_models_file(bad, "models.yaml").expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
        let err = load_text("models:\n  routing_strategy: random\n", &[]).expect_err("strategy");
        assert!(err.to_string().contains("'random'"), "{err}");
    }

    #[test]
    fn layers_apply_in_order() {
        let dir =
            std::env::temp_dir().join(format!("orch-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("orchestrator.yaml");
        std::fs::write(&file, "orchestrator:\n  max_concurrent_tasks: 20\n  log_level: DEBUG\nserver:\n  bind: 127.0.0.1:9000\n").expect("write");
        let overrides = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let s = load(&overrides, &HashMap::new()).expect("load");
        assert_eq!(
            (s.max_concurrent, s.log_level.as_str(), s.bind.port()),
            (20, "debug", 9000)
        );

        let env = HashMap::from([
            ("ORCHESTRATOR_MAX_CONCURRENT".to_string(), "7".to_string()),
            ("DATABASE_URL".to_string(), "postgres://x/y".to_string()),
        ]);
        let s = load(&overrides, &env).expect("load");
        assert_eq!(
            (s.max_concurrent, s.database_url.as_str()),
            (7, "postgres://x/y")
        );

        let flags = Overrides {
            max_concurrent: Some(3),
            bind: Some("127.0.0.1:0".into()),
            ..overrides
        };
        let s = load(&flags, &env).expect("load");
        assert_eq!((s.max_concurrent, s.bind.port()), (3, 0));

        let bad = HashMap::from([(
            "ORCHESTRATOR_MAX_CONCURRENT".to_string(),
            "many".to_string(),
        )]);
        assert!(load(&flags, &bad).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
