//! Configuration layers: defaults < `orchestrator.yaml` (current folder, else
//! `~/.orchestrator/orchestrator.yaml`, or `--config FILE`) < `ORCHESTRATOR_*`
//! environment variables < command-line flags. Unknown keys are errors.
//!
//! The layers are merged by `figment` into one [`FileConfig`] (`file.rs`:
//! every key, typed); each variable's name is generated from its key
//! (`env.rs`), and the short names documented before stay as aliases.
//! [`Settings`] are then built from the merged keys, with the `tools` and
//! `models` sections resolved in `tools.rs` and `models.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use orchestrator_engine::models::ModelSettings;
use orchestrator_tools::http::HttpSettings;
use orchestrator_tools::models::ModelSpec;
use orchestrator_tools::remote::RemoteTool;
use orchestrator_tools::search::SearchBackend;

mod env;
mod file;
mod models;
#[cfg(test)]
mod tests;
mod tools;

use env::EnvLayer;
pub use env::variable_for;
use file::FileLayer;
pub use file::{
    AuthSection, DatabaseSection, FileConfig, HttpSection, LimitsSection, ModelsSection,
    OrchestratorSection, RemoteActionSection, RemoteToolSection, SearchBackendSection,
    ServerSection, ToolsSection, WebSearchSection, WorkspaceSection, parse_file,
};
use models::resolve_models;
pub use models::{default_models, parse_models_file};
use tools::resolve_tools;

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
    /// `python-executor` is offered, with this interpreter.
    pub python: Option<String>,
    pub terminal_allowed_programs: Option<Vec<String>>,
    /// The `http` tool's policy and limits.
    pub http: HttpSettings,
    /// `web-search` is offered when this is not empty.
    pub search_backends: Vec<SearchBackend>,
    pub search_timeout_seconds: f64,
    pub remote_tools: Vec<RemoteTool>,
    /// `mcp-server` and the configured MCP servers.
    pub mcp: orchestrator_tools::mcp::McpSettings,
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
    /// Which finished executions are deleted.
    pub retention: orchestrator_engine::retention::RetentionSettings,
    /// SQLite: the bound its write-ahead log is checkpointed back under.
    pub sqlite_wal_max_bytes: i64,
    /// Where the file layer came from, if any.
    pub config_file: Option<PathBuf>,
    /// What an operator should hear at start-up about the configuration
    /// (variables that another variable overrode).
    pub notices: Vec<String>,
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
            python: None,
            terminal_allowed_programs: None,
            http: HttpSettings::default(),
            search_backends: Vec::new(),
            search_timeout_seconds: 15.0,
            remote_tools: Vec::new(),
            mcp: orchestrator_tools::mcp::McpSettings::default(),
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
            retention: orchestrator_engine::retention::RetentionSettings::default(),
            sqlite_wal_max_bytes: orchestrator_store::DEFAULT_WAL_MAX_BYTES,
            config_file: None,
            notices: Vec::new(),
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

/// Resolves settings from all layers. `env` is the process environment.
pub fn load(overrides: &Overrides, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let path = match &overrides.config {
        Some(p) => Some(p.clone()),
        None => find_default("orchestrator.yaml"),
    };
    let mut layers = Figment::new();
    if let Some(path) = &path {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        layers = layers.merge(FileLayer::parse(&text, &shown)?);
    }
    let env_layer = EnvLayer::read(env)?;
    let notices = env_layer.shadowed.clone();
    let f: FileConfig = layers
        .merge(env_layer)
        .merge(flags(overrides))
        .extract()
        .map_err(|e| ConfigError::Invalid {
            // The message names the layer: the file or the variable.
            path: "configuration".into(),
            message: layer_error(e),
        })?;
    let mut s = settings(&f)?;
    s.config_file = path;
    s.notices = notices;
    let (tools, models, auth) = (f.tools, f.models, f.auth);
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

/// The command-line flags as the last layer.
fn flags(o: &Overrides) -> figment::providers::Serialized<serde_json::Value> {
    let mut tree = serde_json::Map::new();
    let mut set = |key: &str, value: serde_json::Value| env::insert(&mut tree, key, value);
    if let Some(b) = &o.bind {
        set("server.bind", b.clone().into());
    }
    if let Some(u) = &o.database_url {
        set("database.url", u.clone().into());
    }
    if let Some(r) = &o.workspace_root {
        set("workspace.root", r.display().to_string().into());
    }
    if let Some(l) = &o.log_level {
        set("orchestrator.log_level", l.clone().into());
    }
    if let Some(n) = o.max_concurrent {
        set("orchestrator.max_concurrent_tasks", n.into());
    }
    if o.allow_unauthenticated {
        set("auth.allow_unauthenticated", true.into());
    }
    figment::providers::Serialized::defaults(serde_json::Value::Object(tree))
}

/// A layering error in one line: what is wrong, at which key, from where.
fn layer_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The merged keys onto the defaults.
fn settings(f: &FileConfig) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    let o = &f.orchestrator;
    s.max_concurrent = o.max_concurrent_tasks.unwrap_or(s.max_concurrent);
    s.lease_ms = o.lease_ms.unwrap_or(s.lease_ms);
    s.heartbeat_ms = o.heartbeat_ms.unwrap_or(s.heartbeat_ms);
    s.max_lost_workers = o.max_lost_workers.unwrap_or(s.max_lost_workers);
    if let Some(l) = &o.log_level {
        s.log_level = log_level(l);
    }
    let l = &f.limits;
    s.max_queued_steps = l.max_queued_steps.unwrap_or(s.max_queued_steps);
    s.idempotency_ttl_hours = l.idempotency_ttl_hours.unwrap_or(s.idempotency_ttl_hours);
    s.max_body_bytes = l.max_body_bytes.unwrap_or(s.max_body_bytes);
    let c = &mut s.core_limits;
    c.max_steps = l.max_steps.unwrap_or(c.max_steps);
    c.max_yaml_depth = l.max_yaml_depth.unwrap_or(c.max_yaml_depth);
    c.max_yaml_nodes = l.max_yaml_nodes.unwrap_or(c.max_yaml_nodes);
    c.max_yaml_alias_bytes = l.max_yaml_alias_bytes.unwrap_or(c.max_yaml_alias_bytes);
    c.template_fuel = l.template_fuel.unwrap_or(c.template_fuel);
    c.template_output_bytes = l.template_output_bytes.unwrap_or(c.template_output_bytes);
    c.regex_matches = l.regex_matches.unwrap_or(c.regex_matches);
    c.max_pipeline_depth = l.max_pipeline_depth.unwrap_or(c.max_pipeline_depth);
    c.step_log_bytes = l.step_log_bytes.unwrap_or(c.step_log_bytes).max(1024);
    s.retention = retention(&f.retention);
    if let Some(b) = f.database.sqlite_wal_max_bytes {
        s.sqlite_wal_max_bytes = i64::try_from(b).unwrap_or(i64::MAX);
    }
    let v = &f.server;
    if let Some(b) = &v.bind {
        s.bind = parse_bind(b, "server.bind")?;
    }
    s.shutdown_grace_seconds = v.shutdown_grace_seconds.unwrap_or(s.shutdown_grace_seconds);
    if let Some(t) = v.header_read_timeout_seconds {
        s.connections.header_read_timeout = seconds(t, "server.header_read_timeout_seconds")?;
    }
    if let Some(t) = v.idle_timeout_seconds {
        s.connections.idle_timeout = seconds(t, "server.idle_timeout_seconds")?;
    }
    s.connections.max_connections = v.max_connections.unwrap_or(s.connections.max_connections);
    if let Some(u) = &f.database.url {
        s.database_url = u.clone();
    }
    if let Some(r) = &f.workspace.root {
        s.workspace_root = r.clone();
    }
    s.enable_terminal = f.tools.enable_terminal.unwrap_or(s.enable_terminal);
    if f.tools.enable_python == Some(true) {
        s.python = Some(
            f.tools
                .python_interpreter
                .clone()
                .unwrap_or_else(|| "python3".to_string()),
        );
    }
    s.terminal_allowed_programs = f.tools.terminal_allowed_programs.clone();
    Ok(s)
}

/// `mapping`, `list`, … for messages.
pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "text",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// The retention rules a `retention:` section gives (none without one).
pub fn retention(r: &file::RetentionSection) -> orchestrator_engine::retention::RetentionSettings {
    use orchestrator_core::flow::ExecutionStatus;
    use orchestrator_engine::retention::{RetentionRule, RetentionSettings};
    let mut rules = Vec::new();
    for (status, rule) in [
        (ExecutionStatus::Succeeded, &r.succeeded),
        (ExecutionStatus::Failed, &r.failed),
        (ExecutionStatus::Cancelled, &r.cancelled),
    ] {
        let Some(rule) = rule else { continue };
        if rule.max_age_hours.is_none() && rule.keep.is_none() {
            continue;
        }
        rules.push(RetentionRule {
            status,
            max_age_ms: rule
                .max_age_hours
                .map(|h| i64::try_from(h.saturating_mul(3_600_000)).unwrap_or(i64::MAX)),
            keep: rule.keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX)),
        });
    }
    RetentionSettings {
        rules,
        every: std::time::Duration::from_secs(r.every_seconds.unwrap_or(300).max(1)),
    }
}
