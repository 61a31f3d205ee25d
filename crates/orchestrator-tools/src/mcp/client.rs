//! The `mcp-server` tool: its actions, parameters and results, and the
//! configured servers' tools (`mcp:<server>:<tool>`); the connections are
//! kept by [`super::pool`].

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::pool::*;
use super::{McpSettings, ServerSpec};
use crate::ErrorKind;
use crate::memory::Reach;
use crate::net::OutboundPolicy;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, type_name};

/// The `mcp-server` tool.
#[derive(Debug, Clone)]
pub struct McpServer {
    pub(super) settings: Arc<McpSettings>,
    pub(super) policy: Arc<OutboundPolicy>,
    pub(super) pool: Arc<Pool>,
}

impl Default for McpServer {
    fn default() -> Self {
        McpServer::new(McpSettings::default())
    }
}

fn name_param(p: &Map<String, Value>) -> Result<String, ToolError> {
    match p.get("server_name") {
        None | Some(Value::Null) => Ok("default".to_string()),
        Some(Value::String(s)) if s.is_empty() => Err(ToolError::invalid(
            "parameter 'server_name' must not be empty",
        )),
        Some(Value::String(s)) if s.chars().count() > 256 => Err(ToolError::invalid(
            "parameter 'server_name' is longer than 256 characters",
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(ToolError::invalid(format!(
            "parameter 'server_name' must be a string, got {}",
            type_name(other)
        ))),
    }
}

fn object_param(
    p: &Map<String, Value>,
    name: &str,
) -> Result<Option<Map<String, Value>>, ToolError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            _ => Err(ToolError::invalid(format!(
                "parameter '{name}' must be an object, got a string"
            ))),
        },
        Some(other) => Err(ToolError::invalid(format!(
            "parameter '{name}' must be an object, got {}",
            type_name(other)
        ))),
    }
}

/// A required string parameter that is not empty.
fn text_param<'a>(p: &'a Map<String, Value>, name: &str) -> Result<&'a str, ToolError> {
    let s = crate::required_str(p, name)?;
    if s.is_empty() {
        return Err(ToolError::invalid(format!(
            "parameter '{name}' must not be empty"
        )));
    }
    Ok(s)
}

impl McpServer {
    async fn connect(&self, p: &Map<String, Value>, ctx: &ToolContext) -> Result<Value, ToolError> {
        let server = name_param(p)?;
        let given = match p.get("server_config") {
            None | Some(Value::Null) => None,
            Some(v) => Some(ServerSpec::from_param(v)?),
        };
        let conn = match given {
            None => {
                if self.record(ctx, &server).await?.is_none()
                    && !self.settings.servers.contains_key(&server)
                {
                    return Err(ToolError::invalid(format!(
                        "parameter 'server_config' is required to connect to '{server}'{}",
                        self.configured_names()
                    )));
                }
                self.connection(ctx, &server).await?
            }
            Some(spec) => {
                let memory = ctx.memory("mcp-server")?;
                if let Some((id, old)) = self.record(ctx, &server).await? {
                    let key = format!("tree:{id}");
                    if old == spec {
                        if let Some(c) = self.pool.conns.lock().await.get(&key).cloned() {
                            return Ok(self.connected(&server, &c));
                        }
                    } else {
                        // The tree connects the name elsewhere: close the old one.
                        let old = self.pool.conns.lock().await.remove(&key);
                        if let Some(old) = old {
                            old.close().await;
                        }
                    }
                }
                let conn = self.open(&server, &spec, false, ctx).await?;
                let id = format!("{}:{}:{}", ctx.execution_id, ctx.step_id, ctx.attempt);
                let record = json!({"id": id, "config": serde_json::to_value(SpecOut(&spec)).unwrap_or(Value::Null)});
                if let Err(e) = memory
                    .put(Reach::Tree, NAMESPACE, &server, &record, None)
                    .await
                {
                    conn.close().await;
                    return Err(e);
                }
                self.admit(format!("tree:{id}"), conn).await?
            }
        };
        Ok(self.connected(&server, &conn))
    }

    fn connected(&self, server: &str, conn: &Conn) -> Value {
        json!({
            "server_name": server,
            "connected": true,
            "capabilities": conn.server_info.get("capabilities").cloned().unwrap_or(json!({})),
            "server_info": conn.server_info.get("serverInfo").cloned().unwrap_or(Value::Null),
            "protocol_version": conn.server_info.get("protocolVersion").cloned().unwrap_or(Value::Null),
        })
    }

    async fn disconnect(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let server = name_param(p)?;
        if let Some((id, _)) = self.record(ctx, &server).await? {
            if let Some(memory) = ctx.memory.as_deref() {
                memory.clear(Reach::Tree, NAMESPACE, Some(&server)).await?;
            }
            let conn = self.pool.conns.lock().await.remove(&format!("tree:{id}"));
            if let Some(conn) = conn {
                conn.close().await;
            }
            return Ok(json!({
                "server_name": server,
                "disconnected": true,
                "message": format!("Disconnected from server '{server}'"),
            }));
        }
        if self.settings.servers.contains_key(&server) {
            return Ok(json!({
                "server_name": server,
                "disconnected": false,
                "message": format!("'{server}' is configured on this server and stays connected for every execution"),
            }));
        }
        // As the seed: disconnecting what is not connected is not an error.
        Ok(json!({
            "server_name": server,
            "disconnected": false,
            "message": format!("'{server}' was not connected"),
        }))
    }

    /// Calls a tool; a result the server marks as an error fails the step.
    pub(crate) async fn call(
        &self,
        ctx: &ToolContext,
        server: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<Value, ToolError> {
        let params: rmcp::model::CallToolRequestParams =
            serde_json::from_value(json!({"name": tool, "arguments": arguments}))
                .map_err(|e| ToolError::invalid(format!("parameter 'tool_params': {e}")))?;
        let result = self
            .request(
                ctx,
                server,
                &format!("calling tool '{tool}'"),
                |peer| async move { peer.call_tool(params).await },
            )
            .await?;
        let raw = serde_json::to_value(&result).unwrap_or(Value::Null);
        self.check_size(server, "tool", &raw)?;
        let text = content_text(raw.get("content"));
        if result.is_error == Some(true) {
            return Err(ToolError::new(
                ErrorKind::ToolError,
                format!(
                    "MCP server '{server}': tool '{tool}' reported an error: {}",
                    crate::net::excerpt(if text.is_empty() {
                        "(no message)"
                    } else {
                        &text
                    })
                ),
            ));
        }
        Ok(json!({"raw": raw, "text": text}))
    }
}

/// The text blocks of a result's content, joined by newlines.
fn content_text(content: Option<&Value>) -> String {
    content
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A spec as JSON (for the tree's record).
struct SpecOut<'a>(&'a ServerSpec);

impl serde::Serialize for SpecOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let spec = self.0;
        let mut out = Map::new();
        if let Some(c) = &spec.command {
            out.insert("command".into(), json!(c));
            out.insert("args".into(), json!(spec.args));
            out.insert("env".into(), json!(spec.env));
        }
        if let Some(u) = &spec.url {
            out.insert("url".into(), json!(u));
            out.insert("headers".into(), json!(spec.headers));
        }
        Value::Object(out).serialize(s)
    }
}

fn with_server(required: &[&str], extra: Value) -> Value {
    crate::object_schema(
        required,
        json!({"server_name": {"type": "string", "description": "the connection's name (default `default`)"}}),
        extra,
    )
}

#[async_trait]
impl Tool for McpServer {
    fn id(&self) -> &str {
        "mcp-server"
    }

    async fn execution_ended(&self, execution_id: &str) {
        self.close_tree(execution_id).await;
    }

    fn description(&self) -> &str {
        "Model Context Protocol client: connect to a server over stdio or streamable HTTP, list and call its tools, read its resources and prompts"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            action(
                "connect",
                "Connect to a server under a name (a configured server needs no server_config)",
                with_server(
                    &[],
                    json!({"server_config": {
                        "type": ["object", "string"],
                        "description": "{command, args, env}: a local program over stdio (if the operator allows commands); {url, headers}: a streamable HTTP server (the http tool's outbound policy applies)",
                        "properties": {
                            "command": {"type": "string"},
                            "args": {"type": "array", "items": {"type": "string"}},
                            "env": {"type": "object"},
                            "url": {"type": "string"},
                            "headers": {"type": "object", "additionalProperties": {"type": "string"}}
                        }
                    }}),
                ),
            ),
            action(
                "list_tools",
                "The server's tools: name, description, input_schema",
                with_server(&[], json!({})),
            ),
            action(
                "execute_tool",
                "Call one of the server's tools; `result` is the MCP result (content, structuredContent, isError), `text` its text",
                with_server(
                    &["tool_name"],
                    json!({
                        "tool_name": {"type": "string"},
                        "tool_params": {"type": "object", "description": "the tool's arguments"}
                    }),
                ),
            ),
            action(
                "list_resources",
                "The server's resources: uri, name, description, mime_type",
                with_server(&[], json!({})),
            ),
            action(
                "read_resource",
                "Read one resource: its contents (text or base64 blob)",
                with_server(&["uri"], json!({"uri": {"type": "string"}})),
            ),
            action(
                "list_prompts",
                "The server's prompts: name, description, arguments",
                with_server(&[], json!({})),
            ),
            action(
                "get_prompt",
                "One prompt with its arguments filled in: description and messages",
                with_server(
                    &["prompt_name"],
                    json!({
                        "prompt_name": {"type": "string"},
                        "prompt_arguments": {"type": "object", "additionalProperties": {"type": "string"}}
                    }),
                ),
            ),
            action(
                "disconnect",
                "Close the connection the execution opened under this name",
                with_server(&[], json!({})),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        match action {
            "connect" => self.connect(p, ctx).await,
            "disconnect" => self.disconnect(p, ctx).await,
            "list_tools" => {
                let server = name_param(p)?;
                let tools = self
                    .request(ctx, &server, "listing tools", |peer| async move {
                        peer.list_all_tools().await
                    })
                    .await?;
                let tools: Vec<Value> = tools
                    .iter()
                    .map(|t| {
                        let v = serde_json::to_value(t).unwrap_or(Value::Null);
                        json!({
                            "name": v.get("name").cloned().unwrap_or(Value::Null),
                            "description": v.get("description").cloned().unwrap_or(json!("")),
                            "input_schema": v.get("inputSchema").cloned().unwrap_or(json!({})),
                        })
                    })
                    .collect();
                let out = json!({"server_name": server, "count": tools.len(), "tools": tools});
                self.check_size(&server, "list_tools", &out)?;
                Ok(out)
            }
            "execute_tool" => {
                let server = name_param(p)?;
                let tool = text_param(p, "tool_name")?.to_string();
                let arguments = object_param(p, "tool_params")?.unwrap_or_default();
                let called = self.call(ctx, &server, &tool, arguments).await?;
                Ok(json!({
                    "server_name": server,
                    "tool_name": tool,
                    "result": called["raw"],
                    "text": called["text"],
                }))
            }
            "list_resources" => {
                let server = name_param(p)?;
                let resources = self
                    .request(ctx, &server, "listing resources", |peer| async move {
                        peer.list_all_resources().await
                    })
                    .await?;
                let resources: Vec<Value> = resources
                    .iter()
                    .map(|r| {
                        let v = serde_json::to_value(r).unwrap_or(Value::Null);
                        json!({
                            "uri": v.get("uri").cloned().unwrap_or(Value::Null),
                            "name": v.get("name").cloned().unwrap_or(Value::Null),
                            "description": v.get("description").cloned().unwrap_or(json!("")),
                            "mime_type": v.get("mimeType").cloned().unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                let out = json!({"server_name": server, "count": resources.len(), "resources": resources});
                self.check_size(&server, "list_resources", &out)?;
                Ok(out)
            }
            "read_resource" => {
                let server = name_param(p)?;
                let uri = text_param(p, "uri")?.to_string();
                let params: rmcp::model::ReadResourceRequestParams =
                    serde_json::from_value(json!({"uri": uri}))
                        .map_err(|e| ToolError::invalid(format!("parameter 'uri': {e}")))?;
                let result = self
                    .request(
                        ctx,
                        &server,
                        &format!("reading '{uri}'"),
                        |peer| async move { peer.read_resource(params).await },
                    )
                    .await?;
                let raw = serde_json::to_value(&result).unwrap_or(Value::Null);
                self.check_size(&server, "read_resource", &raw)?;
                let contents = raw.get("contents").cloned().unwrap_or(json!([]));
                Ok(json!({
                    "server_name": server,
                    "uri": uri,
                    "text": content_text(Some(&contents)),
                    "contents": contents,
                }))
            }
            "list_prompts" => {
                let server = name_param(p)?;
                let prompts = self
                    .request(ctx, &server, "listing prompts", |peer| async move {
                        peer.list_all_prompts().await
                    })
                    .await?;
                let prompts: Vec<Value> = prompts
                    .iter()
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                    .collect();
                let out =
                    json!({"server_name": server, "count": prompts.len(), "prompts": prompts});
                self.check_size(&server, "list_prompts", &out)?;
                Ok(out)
            }
            "get_prompt" => {
                let server = name_param(p)?;
                let name = text_param(p, "prompt_name")?.to_string();
                let mut arguments = Map::new();
                for (k, v) in object_param(p, "prompt_arguments")?.unwrap_or_default() {
                    arguments.insert(k, Value::String(crate::as_text(&v)));
                }
                let params: rmcp::model::GetPromptRequestParams = serde_json::from_value(
                    json!({"name": name, "arguments": arguments}),
                )
                .map_err(|e| ToolError::invalid(format!("parameter 'prompt_arguments': {e}")))?;
                let result = self
                    .request(
                        ctx,
                        &server,
                        &format!("getting prompt '{name}'"),
                        |peer| async move { peer.get_prompt(params).await },
                    )
                    .await?;
                let raw = serde_json::to_value(&result).unwrap_or(Value::Null);
                self.check_size(&server, "get_prompt", &raw)?;
                Ok(json!({
                    "server_name": server,
                    "prompt_name": name,
                    "description": raw.get("description").cloned().unwrap_or(Value::Null),
                    "messages": raw.get("messages").cloned().unwrap_or(json!([])),
                }))
            }
            other => Err(ToolError::invalid(format!(
                "unknown action '{other}': use connect, list_tools, execute_tool, list_resources, read_resource, list_prompts, get_prompt or disconnect"
            ))),
        }
    }
}

/// A tool of a configured server, offered as a tool of its own:
/// `mcp:<server>:<tool>`, one action `execute` whose parameters are the
/// tool's arguments.
#[derive(Debug, Clone)]
pub struct McpTool {
    id: String,
    server: String,
    tool: String,
    description: String,
    schema: Value,
    client: McpServer,
}

#[async_trait]
impl Tool for McpTool {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            &format!("Call '{}' on the MCP server '{}'", self.tool, self.server),
            self.schema.clone(),
        )]
    }

    async fn execute(
        &self,
        _action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let called = self
            .client
            .call(ctx, &self.server, &self.tool, p.clone())
            .await?;
        let raw = &called["raw"];
        Ok(json!({
            "text": called["text"],
            "content": raw.get("content").cloned().unwrap_or(json!([])),
            "structured_content": raw.get("structuredContent").cloned().unwrap_or(Value::Null),
        }))
    }
}

impl McpServer {
    /// Connects to every configured server and lists its tools, as tools of
    /// their own; a server that cannot be reached is reported, not fatal.
    pub async fn discover(&self) -> Vec<(String, Result<Vec<McpTool>, String>)> {
        let ctx = ToolContext {
            workspace: std::env::temp_dir(),
            cancel: tokio_util::sync::CancellationToken::new(),
            execution_id: String::new(),
            step_id: String::new(),
            attempt: 1,
            http: crate::net::default_client(),
            memory: None,
            log: None,
            models: None,
        };
        let mut out = Vec::new();
        for server in self.settings.servers.keys() {
            let listed = self
                .request(&ctx, server, "listing tools", |peer| async move {
                    peer.list_all_tools().await
                })
                .await;
            out.push((
                server.clone(),
                listed.map_err(|e| e.message).map(|tools| {
                    tools
                        .iter()
                        .map(|t| {
                            let v = serde_json::to_value(t).unwrap_or(Value::Null);
                            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                            let mut schema = v
                                .get("inputSchema")
                                .cloned()
                                .unwrap_or(json!({"type": "object"}));
                            if !schema.is_object() {
                                schema = json!({"type": "object"});
                            }
                            McpTool {
                                id: format!("mcp:{server}:{name}"),
                                server: server.clone(),
                                tool: name.to_string(),
                                description: v
                                    .get("description")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                                    .unwrap_or_else(|| {
                                        format!("'{name}' on the MCP server '{server}'")
                                    }),
                                schema,
                                client: self.clone(),
                            }
                        })
                        .collect()
                }),
            ));
        }
        out
    }
}
