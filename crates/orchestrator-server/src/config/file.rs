//! The configuration file's shape: the seed framework's `orchestrator.yaml`
//! plus what the server needs. Every key is optional; unknown keys are
//! errors. The same keys come from the environment (`env.rs`).

use std::path::PathBuf;

use figment::value::{Dict, Map};
use figment::{Error, Metadata, Profile, Provider};
use serde::Deserialize;

use super::ConfigError;

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
    pub retention: RetentionSection,
}

/// Which finished executions are deleted (none unless configured).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// How often retention looks (default 300 s).
    pub every_seconds: Option<u64>,
    pub succeeded: Option<RetentionRuleSection>,
    pub failed: Option<RetentionRuleSection>,
    pub cancelled: Option<RetentionRuleSection>,
}

/// One status's rule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionRuleSection {
    /// Deleted this many hours after they finished.
    pub max_age_hours: Option<u64>,
    /// The newest this many are kept whatever their age.
    pub keep: Option<u64>,
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
    /// The `python-executor` tool runs code on the server: off unless enabled.
    pub enable_python: Option<bool>,
    /// Its interpreter (default `python3` on `PATH`).
    pub python_interpreter: Option<String>,
    pub http: HttpSection,
    pub web_search: WebSearchSection,
    /// Tools over HTTP.
    pub remote: Vec<RemoteToolSection>,
    /// Model Context Protocol servers.
    pub mcp: McpSection,
}

/// `mcp-server` and the servers whose tools are offered as `mcp:<server>:<tool>`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpSection {
    /// Steps may start local programs as MCP servers over stdio
    /// (`server_config.command`): off unless enabled.
    pub allow_commands: Option<bool>,
    /// One request to a server (handshake, list, call) at most this long.
    pub request_timeout_seconds: Option<f64>,
    /// A connection nobody used this long is closed.
    pub idle_timeout_seconds: Option<f64>,
    /// Open connections per process at most.
    pub max_connections: Option<usize>,
    /// Servers every execution reaches by name, their tools offered as tools.
    pub servers: std::collections::BTreeMap<String, McpServerSection>,
}

/// A configured MCP server: `command` (stdio) or `url` (streamable HTTP).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpServerSection {
    pub command: Option<String>,
    pub args: Vec<String>,
    /// Added to the server's own environment, which the program inherits.
    pub env: std::collections::BTreeMap<String, String>,
    pub url: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    /// A variable whose value is sent as `Authorization: Bearer …`.
    pub bearer_token_env: Option<String>,
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
    /// SQLite: the write-ahead log is checkpointed back under this size.
    pub sqlite_wal_max_bytes: Option<u64>,
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
    /// How deep `pipeline-executor` children may nest.
    pub max_pipeline_depth: Option<usize>,
    /// Bytes of log lines kept per step attempt.
    pub step_log_bytes: Option<usize>,
}

/// Parses a config file's text.
pub fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    let layer = FileLayer::parse(text, path)?;
    serde_json::from_value(layer.tree).map_err(|e| ConfigError::Invalid {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// The file as a layer: its text read with the pipeline reader (the same
/// limits on depth, size and aliases), checked against [`FileConfig`] at
/// once so its own mistakes are reported with its path.
pub(super) struct FileLayer {
    path: String,
    tree: serde_json::Value,
}

impl FileLayer {
    pub(super) fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_string(),
            message,
        };
        let node = orchestrator_core::yaml::parse_with(text, &Default::default())
            .map_err(|e| invalid(e.to_string()))?;
        let tree = match node.to_json() {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            v @ serde_json::Value::Object(_) => v,
            other => {
                return Err(invalid(format!(
                    "expected a mapping of sections, found {}",
                    crate::config::json_kind(&other)
                )));
            }
        };
        serde_json::from_value::<FileConfig>(tree.clone()).map_err(|e| invalid(e.to_string()))?;
        Ok(FileLayer {
            path: path.to_string(),
            tree,
        })
    }
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config file {}", self.path))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        figment::providers::Serialized::defaults(&self.tree).data()
    }
}
