//! Configuration layers: defaults < `orchestrator.yaml` (current folder, else
//! `~/.orchestrator/orchestrator.yaml`, or `--config FILE`) < `ORCHESTRATOR_*`
//! environment variables < command-line flags. Unknown keys are errors.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    pub default_provider: Option<String>,
    pub routing_strategy: Option<String>,
    pub cost_optimization: Option<bool>,
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
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub bind: Option<String>,
    /// Seconds running steps get to finish on shutdown.
    pub shutdown_grace_seconds: Option<u64>,
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
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: String,
    pub workspace_root: PathBuf,
    pub max_concurrent: usize,
    pub log_level: String,
    pub max_body_bytes: usize,
    pub shutdown_grace_seconds: u64,
    pub enable_terminal: bool,
    pub terminal_allowed_programs: Option<Vec<String>>,
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
            enable_terminal: false,
            terminal_allowed_programs: None,
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

fn default_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("orchestrator.yaml")];
    if let Some(home) = std::env::var_os("HOME") {
        files.push(
            Path::new(&home)
                .join(".orchestrator")
                .join("orchestrator.yaml"),
        );
    }
    files
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

/// Resolves settings from all layers. `env` is the process environment.
pub fn load(overrides: &Overrides, env: &HashMap<String, String>) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();

    let file = match &overrides.config {
        Some(p) => Some(p.clone()),
        None => default_files().into_iter().find(|p| p.is_file()),
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
        if let Some(l) = f.orchestrator.log_level {
            s.log_level = log_level(&l);
        }
        if let Some(b) = f.server.bind {
            s.bind = parse_bind(&b, &shown)?;
        }
        if let Some(g) = f.server.shutdown_grace_seconds {
            s.shutdown_grace_seconds = g;
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
        if let Some(p) = f.tools.terminal_allowed_programs {
            s.terminal_allowed_programs = Some(p);
        }
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
            "ORCHESTRATOR_ENABLE_TERMINAL" => {
                s.enable_terminal = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" | "" => false,
                    _ => {
                        return Err(ConfigError::Env {
                            name: name.clone(),
                            value: value.clone(),
                            message: "not true or false".to_string(),
                        });
                    }
                }
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
    if s.heartbeat_ms == 0 || s.heartbeat_ms >= s.lease_ms {
        return Err(ConfigError::Invalid {
            path: "settings".into(),
            message: format!(
                "heartbeat_ms ({}) must be shorter than lease_ms ({})",
                s.heartbeat_ms, s.lease_ms
            ),
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
