//! The environment layer.
//!
//! Every key of the file has a variable whose name is generated from the
//! key's path: `ORCHESTRATOR_` and the path in capitals with `__` between its
//! parts (`server.bind` → `ORCHESTRATOR_SERVER__BIND`,
//! `tools.http.allowed_hosts` → `ORCHESTRATOR_TOOLS__HTTP__ALLOWED_HOSTS`).
//! Values are read as YAML-like scalars: `8`, `true`, `[a, b]`, or text. A
//! generated name that matches no key is an error, as an unknown key in the
//! file is.
//!
//! The short names documented before (`ORCHESTRATOR_BIND`,
//! `ORCHESTRATOR_MAX_CONCURRENT`, …) stay, each an alias of one key with the
//! type it expects; `DATABASE_URL` sets `database.url` under both. Other
//! `ORCHESTRATOR_*` variables (secrets such as the auth pepper, test
//! settings) are not configuration keys and are left alone.

use std::collections::{BTreeMap, HashMap};

use figment::value::{Dict, Map};
use figment::{Error, Metadata, Profile, Provider};
use serde_json::Value;

use super::ConfigError;

/// How an alias's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Number,
    Bool,
    /// Comma-separated.
    List,
}

/// The documented short names: variable, key, kind.
const ALIASES: &[(&str, &str, Kind)] = &[
    ("DATABASE_URL", "database.url", Kind::Text),
    ("ORCHESTRATOR_BIND", "server.bind", Kind::Text),
    ("ORCHESTRATOR_DATABASE_URL", "database.url", Kind::Text),
    ("ORCHESTRATOR_WORKSPACE_ROOT", "workspace.root", Kind::Text),
    (
        "ORCHESTRATOR_MAX_CONCURRENT",
        "orchestrator.max_concurrent_tasks",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_LOG_LEVEL",
        "orchestrator.log_level",
        Kind::Text,
    ),
    (
        "ORCHESTRATOR_LEASE_MS",
        "orchestrator.lease_ms",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_HEARTBEAT_MS",
        "orchestrator.heartbeat_ms",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_MAX_BODY_BYTES",
        "limits.max_body_bytes",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_MAX_QUEUED_STEPS",
        "limits.max_queued_steps",
        Kind::Number,
    ),
    ("ORCHESTRATOR_MAX_STEPS", "limits.max_steps", Kind::Number),
    (
        "ORCHESTRATOR_SHUTDOWN_GRACE_SECONDS",
        "server.shutdown_grace_seconds",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_HEADER_READ_TIMEOUT_SECONDS",
        "server.header_read_timeout_seconds",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_IDLE_TIMEOUT_SECONDS",
        "server.idle_timeout_seconds",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_MAX_CONNECTIONS",
        "server.max_connections",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_ENABLE_TERMINAL",
        "tools.enable_terminal",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_ENABLE_PYTHON",
        "tools.enable_python",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_MCP_ALLOW_COMMANDS",
        "tools.mcp.allow_commands",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_ENABLE_WEB_SEARCH",
        "tools.enable_web_search",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_HTTP_ALLOWED_HOSTS",
        "tools.http.allowed_hosts",
        Kind::List,
    ),
    (
        "ORCHESTRATOR_HTTP_ALLOW_PRIVATE_NETWORKS",
        "tools.http.allow_private_networks",
        Kind::Bool,
    ),
    ("ORCHESTRATOR_AUTH_ENABLED", "auth.enabled", Kind::Bool),
    (
        "ORCHESTRATOR_PUBLIC_METRICS",
        "auth.public_metrics",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_ALLOW_UNAUTHENTICATED",
        "auth.allow_unauthenticated",
        Kind::Bool,
    ),
    (
        "ORCHESTRATOR_MAX_ACTIVE_EXECUTIONS_PER_TOKEN",
        "auth.max_active_executions_per_token",
        Kind::Number,
    ),
    (
        "ORCHESTRATOR_ROUTING_STRATEGY",
        "models.routing_strategy",
        Kind::Text,
    ),
    (
        "ORCHESTRATOR_DEFAULT_MODEL",
        "models.default_model",
        Kind::Text,
    ),
    ("ORCHESTRATOR_MODELS_FILE", "models.file", Kind::Text),
    (
        "ORCHESTRATOR_MODELS_ALLOW_PRIVATE_NETWORKS",
        "models.allow_private_networks",
        Kind::Bool,
    ),
];

const PREFIX: &str = "ORCHESTRATOR_";

/// The variable generated for a key path (`server.bind` →
/// `ORCHESTRATOR_SERVER__BIND`).
pub fn variable_for(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// The key a generated variable names, if it has the generated form.
fn key_for(name: &str) -> Option<String> {
    let rest = name.strip_prefix(PREFIX)?;
    rest.contains("__")
        .then(|| rest.to_ascii_lowercase().replace("__", "."))
}

/// The configuration the environment sets: key paths and values, and which
/// variable set each key (for messages).
#[derive(Debug, Default)]
pub(super) struct EnvLayer {
    values: BTreeMap<String, Value>,
    sources: BTreeMap<String, String>,
    /// Variables another variable for the same key overrode with a
    /// different value (the image's `ORCHESTRATOR_DATABASE_URL` hiding a
    /// `DATABASE_URL` given at `docker run`), said at start-up.
    pub(super) shadowed: Vec<String>,
}

impl EnvLayer {
    /// Reads the variables that are configuration. Of the aliases of one key,
    /// the one later in [`ALIASES`] wins (`ORCHESTRATOR_DATABASE_URL` over
    /// `DATABASE_URL`); a generated name wins over both.
    pub(super) fn read(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut layer = EnvLayer::default();
        for (name, key, kind) in ALIASES {
            if let Some(text) = env.get(*name) {
                layer.set(key, name, alias_value(name, text, *kind)?);
            }
        }
        let mut generated: Vec<(&String, &String)> = env
            .iter()
            .filter(|(name, _)| key_for(name).is_some())
            .collect();
        generated.sort();
        for (name, text) in generated {
            let key = key_for(name).unwrap_or_default();
            layer.set(&key, name, scalar(text));
        }
        Ok(layer)
    }

    fn set(&mut self, key: &str, name: &str, value: Value) {
        if let (Some(before), Some(by)) = (self.values.get(key), self.sources.get(key))
            && *before != value
        {
            self.shadowed.push(format!(
                "{by} is ignored: {name} also sets {key}, to another value, and wins"
            ));
        }
        self.values.insert(key.to_string(), value);
        self.sources.insert(key.to_string(), name.to_string());
    }
}

/// An alias's text as the value its key expects.
fn alias_value(name: &str, text: &str, kind: Kind) -> Result<Value, ConfigError> {
    let bad = |message: &str| ConfigError::Env {
        name: name.to_string(),
        value: text.to_string(),
        message: message.to_string(),
    };
    Ok(match kind {
        Kind::Text => Value::String(text.to_string()),
        Kind::Number => match scalar(text.trim()) {
            Value::Number(n) => Value::Number(n),
            _ => return Err(bad("not a number")),
        },
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" | "" => Value::Bool(false),
            _ => return Err(bad("not true or false")),
        },
        Kind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    })
}

/// A generated variable's text: a number, `true`/`false`, a `[…]` list or
/// `{…}` mapping in YAML flow style, else the text itself.
fn scalar(text: &str) -> Value {
    let looks_structured = matches!(text.trim().chars().next(), Some('[' | '{'));
    if let Ok(node) = orchestrator_core::yaml::parse_with(text, &Default::default()) {
        let value = node.to_json();
        match value {
            Value::Number(_) | Value::Bool(_) => return value,
            Value::Array(_) | Value::Object(_) if looks_structured => return value,
            _ => {}
        }
    }
    Value::String(text.to_string())
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        let sources = self.sources.clone();
        Metadata::named("environment variable").interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            sources
                .get(&key)
                .cloned()
                .unwrap_or_else(|| variable_for(&key))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut tree = serde_json::Map::new();
        for (key, value) in &self.values {
            insert(&mut tree, key, value.clone());
        }
        figment::providers::Serialized::defaults(Value::Object(tree)).data()
    }
}

/// Sets `key` (a dotted path) in `tree`, making the mappings on the way.
pub(super) fn insert(tree: &mut serde_json::Map<String, Value>, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            tree.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let child = tree
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if !child.is_object() {
                *child = Value::Object(Default::default());
            }
            if let Value::Object(map) = child {
                insert(map, rest, value);
            }
        }
    }
}
