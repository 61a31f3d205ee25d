//! `mcp-server`: a Model Context Protocol client (the official Rust SDK),
//! with the seed's actions and result shapes: `connect`, `list_tools`,
//! `execute_tool`, `disconnect`, and the resources and prompts of a server
//! (`list_resources`, `read_resource`, `list_prompts`, `get_prompt`).
//!
//! A step connects to a server by name with a `server_config`:
//! `{command, args, env}` starts a local program speaking MCP over stdio
//! (only where the operator allows commands, in its own process group, in
//! the workspace, with none of the server's variables), and `{url, headers}`
//! reaches a streamable HTTP server through the `http` tool's outbound
//! policy. The operator can also declare servers in the configuration; those
//! are shared by every execution and their tools are offered as tools of
//! their own, `mcp:<server>:<tool>`.
//!
//! A connection a step opens belongs to its execution tree: the name and the
//! configuration are kept in the tree's durable memory, so a later step, in
//! this process or another one, reaches the same server (reconnecting when
//! this process has no open connection). Connections nobody used for
//! `idle_timeout` are closed; the least recently used idle one makes room
//! when `max_connections` are open.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::http::HttpSettings;

#[cfg(feature = "mcp")]
mod client;
mod pool;
#[cfg(feature = "mcp")]
pub use client::{McpServer, McpTool};

/// How a server is reached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// A program speaking MCP on stdin/stdout.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables the program gets (text; other values as JSON).
    #[serde(default)]
    pub env: BTreeMap<String, Value>,
    /// A streamable HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl ServerSpec {
    /// One transport, named properly.
    pub fn check(&self) -> Result<(), String> {
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => Err("give either 'command' or 'url', not both".into()),
            (None, None) => Err("give 'command' (stdio) or 'url' (streamable HTTP)".into()),
            (Some(c), None) if c.trim().is_empty() => Err("'command' is empty".into()),
            (Some(_), None) if !self.headers.is_empty() => {
                Err("'headers' apply to a 'url' server only".into())
            }
            (None, Some(_)) if !self.args.is_empty() || !self.env.is_empty() => {
                Err("'args' and 'env' apply to a 'command' server only".into())
            }
            (None, Some(u)) => match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
                Ok(_) => Err(format!("'url' must be http:// or https://, not '{u}'")),
                Err(e) => Err(format!("'url' is not a URL ({e}): '{u}'")),
            },
            _ => Ok(()),
        }
    }
}

/// What the operator allows and bounds.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// Steps may start local programs (`server_config.command`).
    pub allow_commands: bool,
    /// Servers declared in the configuration, shared by every execution.
    pub servers: BTreeMap<String, ServerSpec>,
    /// One request (connect, list, call) at most this long.
    pub request_timeout: Duration,
    /// A connection unused this long is closed.
    pub idle_timeout: Duration,
    /// Open connections in this process at most.
    pub max_connections: usize,
    /// The `http` tool's settings: its policy for URLs steps give, its cap
    /// on a result's size.
    pub http: HttpSettings,
}

impl Default for McpSettings {
    fn default() -> Self {
        McpSettings {
            allow_commands: false,
            servers: BTreeMap::new(),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 32,
            http: HttpSettings::default(),
        }
    }
}
