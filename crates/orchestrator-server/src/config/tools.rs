//! The `tools` section: the outbound policy, the search backends with their
//! keys, the tools over HTTP.

use std::collections::HashMap;

use orchestrator_tools::http::HttpSettings;
use orchestrator_tools::net::OutboundPolicy;
use orchestrator_tools::remote::RemoteTool;
use orchestrator_tools::search::{self, SearchBackend};

use orchestrator_tools::mcp::{McpSettings, ServerSpec};

use super::file::{McpSection, RemoteActionSection, ToolsSection};
use super::{ConfigError, Settings};

fn tools_error(message: String) -> ConfigError {
    ConfigError::Invalid {
        path: "tools".into(),
        message,
    }
}

pub(super) fn positive_seconds(
    value: Option<f64>,
    default: f64,
    key: &str,
) -> Result<f64, ConfigError> {
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
pub(super) fn resolve_tools(
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
            "duckduckgo" => SearchBackend::DuckDuckGo {
                url: b
                    .url
                    .clone()
                    .unwrap_or_else(|| search::DUCKDUCKGO_URL.into()),
            },
            other => {
                return Err(tools_error(format!(
                    "web_search.backends[{i}]: kind '{other}' is not searxng, brave, tavily or duckduckgo"
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
        // Last, and alone without keys: DuckDuckGo needs none.
        backends.push(SearchBackend::DuckDuckGo {
            url: search::DUCKDUCKGO_URL.into(),
        });
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
    resolve_mcp(&t.mcp, env, s)
}

/// The `mcp` section: what steps may start, the bounds, the configured servers.
fn resolve_mcp(
    m: &McpSection,
    env: &HashMap<String, String>,
    s: &mut Settings,
) -> Result<(), ConfigError> {
    let defaults = McpSettings::default();
    let mut servers = std::collections::BTreeMap::new();
    for (name, c) in &m.servers {
        let at = format!("mcp.servers.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        {
            return Err(tools_error(format!(
                "{at}: a server name is letters, digits, '-', '_' and '.'"
            )));
        }
        let mut headers = c.headers.clone();
        if let Some(var) = &c.bearer_token_env {
            let token = env.get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                tools_error(format!(
                    "{at}: the environment variable {var} (bearer_token_env) is not set"
                ))
            })?;
            headers.insert("Authorization".into(), format!("Bearer {token}"));
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
        let spec = ServerSpec {
            command: c.command.clone(),
            args: c.args.clone(),
            env: c
                .env
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            url: c.url.clone(),
            headers,
        };
        spec.check()
            .map_err(|e| tools_error(format!("{at}: {e}")))?;
        servers.insert(name.clone(), spec);
    }
    let max_connections = m.max_connections.unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        return Err(tools_error("mcp.max_connections must be at least 1".into()));
    }
    s.mcp = McpSettings {
        allow_commands: m.allow_commands.unwrap_or(false),
        servers,
        request_timeout: std::time::Duration::from_secs_f64(positive_seconds(
            m.request_timeout_seconds,
            defaults.request_timeout.as_secs_f64(),
            "mcp.request_timeout_seconds",
        )?),
        idle_timeout: std::time::Duration::from_secs_f64(positive_seconds(
            m.idle_timeout_seconds,
            defaults.idle_timeout.as_secs_f64(),
            "mcp.idle_timeout_seconds",
        )?),
        max_connections,
        http: s.http.clone(),
    };
    Ok(())
}
