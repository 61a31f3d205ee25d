//! The `mcp-server` tool and the connections it keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;

use super::{McpSettings, ServerSpec};
use crate::ErrorKind;
use crate::log::{LineSplitter, LogSink, Stream};
use crate::memory::Reach;
use crate::net::OutboundPolicy;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, type_name};

/// The memory namespace a tree's connections are recorded in.
const NAMESPACE: &str = "mcp-server";
const STDERR_TAIL_BYTES: usize = 4096;

impl ServerSpec {
    pub(crate) fn describe(&self) -> String {
        match (&self.command, &self.url) {
            (Some(c), _) => format!("command '{c}'"),
            (None, Some(u)) => u.clone(),
            (None, None) => "nothing".to_string(),
        }
    }

    /// Reads a step's `server_config` (an object, or the text of one).
    pub(crate) fn from_param(value: &Value) -> Result<ServerSpec, ToolError> {
        let value = match value {
            Value::String(s) => serde_json::from_str::<Value>(s).map_err(|_| {
                ToolError::invalid(
                    "parameter 'server_config' must be an object ({command, args, env} or {url, headers})",
                )
            })?,
            other => other.clone(),
        };
        if !value.is_object() {
            return Err(ToolError::invalid(format!(
                "parameter 'server_config' must be an object, got {}",
                type_name(&value)
            )));
        }
        let spec: ServerSpec = serde_json::from_value(value)
            .map_err(|e| ToolError::invalid(format!("parameter 'server_config': {e}")))?;
        spec.check()
            .map_err(|e| ToolError::invalid(format!("parameter 'server_config': {e}")))?;
        Ok(spec)
    }
}

/// An open connection.
struct Conn {
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    peer: rmcp::Peer<RoleClient>,
    server_info: Value,
    /// The end of what a stdio server wrote on stderr.
    stderr_tail: Arc<Mutex<String>>,
    /// The log of the step using the connection (its stderr goes there).
    sink: Arc<Mutex<Option<Arc<dyn LogSink>>>>,
    last_used: Mutex<Instant>,
    busy: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server_info", &self.server_info)
            .finish_non_exhaustive()
    }
}

impl Conn {
    async fn close(&self) {
        if let Some(service) = self.service.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), service.cancel()).await;
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }
}

/// Marks a connection in use by one step; its stderr goes to that step's log.
struct Use {
    conn: Arc<Conn>,
}

impl Use {
    fn new(conn: Arc<Conn>, ctx: &ToolContext) -> Use {
        conn.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut s) = conn.sink.lock() {
            *s = ctx.log.clone();
        }
        Use { conn }
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        self.conn
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut t) = self.conn.last_used.lock() {
            *t = Instant::now();
        }
    }
}

/// The open connections of this process, by key: `tree:<id>` for one a
/// step opened (the id is in the tree's memory), `config:<name>` for a
/// configured server.
#[derive(Debug, Default)]
struct Pool {
    conns: tokio::sync::Mutex<HashMap<String, Arc<Conn>>>,
    reaper: std::sync::OnceLock<()>,
}

/// The `mcp-server` tool.
#[derive(Debug, Clone)]
pub struct McpServer {
    settings: Arc<McpSettings>,
    policy: Arc<OutboundPolicy>,
    pool: Arc<Pool>,
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

fn protocol_error(
    server: &str,
    what: &str,
    e: impl std::fmt::Display,
    conn: Option<&Conn>,
) -> ToolError {
    let tail = conn.map(|c| c.stderr_tail()).unwrap_or_default();
    let mut message = format!("MCP server '{server}': {what} failed: {e}");
    if !tail.is_empty() {
        message.push_str(&format!(" (its stderr: {tail})"));
    }
    ToolError::new(ErrorKind::ToolProtocolError, message)
}

/// Keeps the last `STDERR_TAIL_BYTES` of a server's stderr, and sends each
/// line to the log of the step using the connection.
async fn read_stderr(
    mut stderr: tokio::process::ChildStderr,
    tail: Arc<Mutex<String>>,
    sink: Arc<Mutex<Option<Arc<dyn LogSink>>>>,
) {
    let mut buf = [0u8; 4096];
    let mut lines = LineSplitter::default();
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Ok(mut t) = tail.lock() {
                    t.push_str(&text);
                    if t.len() > STDERR_TAIL_BYTES {
                        let mut cut = t.len() - STDERR_TAIL_BYTES;
                        while !t.is_char_boundary(cut) {
                            cut += 1;
                        }
                        t.drain(..cut);
                    }
                }
                let current = sink.lock().ok().and_then(|s| s.clone());
                if let Some(current) = current {
                    lines.feed(&buf[..n], |l| current.line(Stream::Stderr, l));
                }
            }
        }
    }
}

impl McpServer {
    pub fn new(settings: McpSettings) -> Self {
        let policy = Arc::new(settings.http.policy.clone());
        McpServer {
            settings: Arc::new(settings),
            policy,
            pool: Arc::new(Pool::default()),
        }
    }

    /// Closes every connection of this process.
    pub async fn close_all(&self) {
        let conns: Vec<Arc<Conn>> = self
            .pool
            .conns
            .lock()
            .await
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in conns {
            c.close().await;
        }
    }

    fn start_reaper(&self) {
        let pool = Arc::downgrade(&self.pool);
        let idle = self.settings.idle_timeout;
        self.pool.reaper.get_or_init(|| {
            let every = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = pool.upgrade() else { return };
                    let stale: Vec<Arc<Conn>> = {
                        let mut conns = pool.conns.lock().await;
                        let keys: Vec<String> = conns
                            .iter()
                            .filter(|(_, c)| {
                                c.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
                                    && c.last_used
                                        .lock()
                                        .map(|t| t.elapsed() >= idle)
                                        .unwrap_or(true)
                            })
                            .map(|(k, _)| k.clone())
                            .collect();
                        keys.iter().filter_map(|k| conns.remove(k)).collect()
                    };
                    for c in stale {
                        c.close().await;
                    }
                }
            });
        });
    }

    /// Opens a connection (the policy was checked by the caller).
    async fn open(
        &self,
        server: &str,
        spec: &ServerSpec,
        configured: bool,
        ctx: &ToolContext,
    ) -> Result<Arc<Conn>, ToolError> {
        let stderr_tail = Arc::new(Mutex::new(String::new()));
        let sink: Arc<Mutex<Option<Arc<dyn LogSink>>>> = Arc::new(Mutex::new(ctx.log.clone()));
        let started = if let Some(command) = &spec.command {
            let transport =
                self.spawn(server, command, spec, configured, ctx, &stderr_tail, &sink)?;
            self.handshake(server, ().serve(transport), ctx).await
        } else {
            let url = spec.url.as_deref().unwrap_or_default();
            let transport = self.http_transport(server, url, spec, configured).await?;
            self.handshake(server, ().serve(transport), ctx).await
        };
        let service = match started {
            Ok(s) => s,
            Err(e) => {
                let tail = stderr_tail
                    .lock()
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default();
                return Err(if tail.is_empty() {
                    e
                } else {
                    ToolError::new(e.kind, format!("{} (its stderr: {tail})", e.message))
                });
            }
        };
        let server_info = service
            .peer_info()
            .and_then(|i| serde_json::to_value(&*i).ok())
            .unwrap_or(Value::Null);
        let peer = service.peer().clone();
        ctx.log(
            Stream::Log,
            &format!("connected to MCP server '{server}' ({})", spec.describe()),
        );
        Ok(Arc::new(Conn {
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
            server_info,
            stderr_tail,
            sink,
            last_used: Mutex::new(Instant::now()),
            busy: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    async fn handshake<F, E>(
        &self,
        server: &str,
        serve: F,
        ctx: &ToolContext,
    ) -> Result<RunningService<RoleClient, ()>, ToolError>
    where
        F: std::future::Future<Output = Result<RunningService<RoleClient, ()>, E>>,
        E: std::fmt::Display,
    {
        tokio::select! {
            r = tokio::time::timeout(self.settings.request_timeout, serve) => match r {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(protocol_error(server, "connecting", e, None)),
                Err(_) => Err(ToolError::new(
                    ErrorKind::TimeoutError,
                    format!(
                        "MCP server '{server}' did not complete the handshake within {:.0}s",
                        self.settings.request_timeout.as_secs_f64()
                    ),
                )),
            },
            _ = ctx.cancel.cancelled() => Err(ToolError::new(ErrorKind::CancelledError, "cancelled while connecting")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        server: &str,
        command: &str,
        spec: &ServerSpec,
        configured: bool,
        ctx: &ToolContext,
        tail: &Arc<Mutex<String>>,
        sink: &Arc<Mutex<Option<Arc<dyn LogSink>>>>,
    ) -> Result<rmcp::transport::TokioChildProcess, ToolError> {
        use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
        if !configured && !self.settings.allow_commands {
            return Err(ToolError::new(
                ErrorKind::PermissionError,
                format!(
                    "MCP server '{server}': starting a local command is disabled on this server \
                     (enable it with tools.mcp.allow_commands or ORCHESTRATOR_MCP_ALLOW_COMMANDS=true, \
                     or declare the server under tools.mcp.servers)"
                ),
            ));
        }
        let mut cmd = tokio::process::Command::new(command);
        cmd.args(&spec.args);
        if configured {
            // The operator's own server: the server's environment, from its
            // working folder.
        } else {
            cmd.current_dir(&ctx.workspace).env_clear();
            for keep in ["PATH", "LANG", "LC_ALL", "TZ"] {
                if let Some(v) = std::env::var_os(keep) {
                    cmd.env(keep, v);
                }
            }
            cmd.env("HOME", &ctx.workspace);
        }
        for (k, v) in &spec.env {
            if !configured && (k == "PATH" || k.starts_with("LD_") || k.starts_with("DYLD_")) {
                return Err(ToolError::new(
                    ErrorKind::PermissionError,
                    format!("parameter 'server_config': a step cannot set '{k}'"),
                ));
            }
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ToolError::invalid(format!(
                    "parameter 'server_config': '{k}' is not a variable name"
                )));
            }
            cmd.env(k, crate::as_text(v));
        }
        let mut wrap = CommandWrap::from(cmd);
        #[cfg(unix)]
        wrap.wrap(ProcessGroup::leader());
        wrap.wrap(KillOnDrop);
        let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(wrap)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ToolError::new(
                    ErrorKind::FileNotFoundError,
                    format!("MCP server '{server}': program '{command}' not found"),
                ),
                _ => ToolError::new(
                    ErrorKind::OSError,
                    format!("MCP server '{server}': cannot start '{command}': {e}"),
                ),
            })?;
        if let Some(stderr) = stderr {
            tokio::spawn(read_stderr(stderr, tail.clone(), sink.clone()));
        }
        Ok(transport)
    }

    async fn http_transport(
        &self,
        server: &str,
        url: &str,
        spec: &ServerSpec,
        configured: bool,
    ) -> Result<rmcp::transport::StreamableHttpClientTransport<reqwest::Client>, ToolError> {
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            ToolError::invalid(format!(
                "parameter 'server_config': 'url' is not a URL ({e})"
            ))
        })?;
        let client = if configured {
            crate::net::default_client()
        } else {
            let refuse = |e: String| {
                ToolError::new(
                    ErrorKind::PermissionError,
                    format!("parameter 'server_config': {e}"),
                )
            };
            self.policy.check_url(&parsed).map_err(refuse)?;
            self.policy.check_resolved(&parsed).await.map_err(refuse)?;
            self.policy.client(self.settings.http.max_redirects)
        };
        let mut headers = HashMap::new();
        for (k, v) in &spec.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ToolError::invalid(format!(
                    "parameter 'server_config': '{k}' is not a header name"
                ))
            })?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                ToolError::invalid(format!(
                    "parameter 'server_config': header '{k}' has a value that cannot be sent"
                ))
            })?;
            headers.insert(name, value);
        }
        let _ = server;
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.to_string()).custom_headers(headers);
        Ok(rmcp::transport::StreamableHttpClientTransport::with_client(
            client, config,
        ))
    }

    /// Adds a connection to the pool, closing the least recently used idle
    /// one when the pool is full.
    async fn admit(&self, key: String, conn: Arc<Conn>) -> Result<Arc<Conn>, ToolError> {
        self.start_reaper();
        let evicted = {
            let mut conns = self.pool.conns.lock().await;
            if let Some(existing) = conns.get(&key) {
                // Another step of the tree connected meanwhile: keep theirs.
                let existing = existing.clone();
                drop(conns);
                conn.close().await;
                return Ok(existing);
            }
            let mut evicted = None;
            if conns.len() >= self.settings.max_connections {
                let victim = conns
                    .iter()
                    .filter(|(_, c)| c.busy.load(std::sync::atomic::Ordering::SeqCst) == 0)
                    .min_by_key(|(_, c)| {
                        c.last_used
                            .lock()
                            .map(|t| *t)
                            .unwrap_or_else(|_| Instant::now())
                    })
                    .map(|(k, _)| k.clone());
                match victim {
                    Some(v) => evicted = conns.remove(&v),
                    None => {
                        drop(conns);
                        conn.close().await;
                        return Err(ToolError::new(
                            ErrorKind::LimitExceededError,
                            format!(
                                "{} MCP connections are open and in use (tools.mcp.max_connections)",
                                self.settings.max_connections
                            ),
                        ));
                    }
                }
            }
            conns.insert(key, conn.clone());
            evicted
        };
        if let Some(e) = evicted {
            e.close().await;
        }
        Ok(conn)
    }

    /// The tree's record of a server it connected to.
    async fn record(
        &self,
        ctx: &ToolContext,
        server: &str,
    ) -> Result<Option<(String, ServerSpec)>, ToolError> {
        let Some(memory) = ctx.memory.as_deref() else {
            return Ok(None);
        };
        let Some(entry) = memory.get(Reach::Tree, NAMESPACE, server).await? else {
            return Ok(None);
        };
        let id = entry
            .value
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let spec = entry
            .value
            .get("config")
            .cloned()
            .and_then(|c| serde_json::from_value::<ServerSpec>(c).ok());
        Ok(spec.map(|s| (id, s)))
    }

    /// The connection `server` names for this step: the tree's own (opened
    /// again if this process has none), else a configured server.
    async fn connection(&self, ctx: &ToolContext, server: &str) -> Result<Arc<Conn>, ToolError> {
        if let Some((id, spec)) = self.record(ctx, server).await? {
            let key = format!("tree:{id}");
            if let Some(c) = self.pool.conns.lock().await.get(&key).cloned() {
                return Ok(c);
            }
            let conn = self.open(server, &spec, false, ctx).await?;
            return self.admit(key, conn).await;
        }
        if let Some(spec) = self.settings.servers.get(server) {
            return self.configured(server, spec, ctx).await;
        }
        Err(ToolError::new(
            ErrorKind::ValidationError,
            format!(
                "MCP server '{server}' is not connected: connect to it first (action 'connect' with a server_config){}",
                self.configured_names()
            ),
        ))
    }

    fn configured_names(&self) -> String {
        if self.settings.servers.is_empty() {
            String::new()
        } else {
            format!(
                "; servers configured on this server: {}",
                self.settings
                    .servers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    async fn configured(
        &self,
        server: &str,
        spec: &ServerSpec,
        ctx: &ToolContext,
    ) -> Result<Arc<Conn>, ToolError> {
        let key = format!("config:{server}");
        if let Some(c) = self.pool.conns.lock().await.get(&key).cloned() {
            return Ok(c);
        }
        let conn = self.open(server, spec, true, ctx).await?;
        self.admit(key, conn).await
    }

    /// Runs one request on a connection, bounded by the request timeout and
    /// the step's cancellation; a connection that broke is dropped from the
    /// pool so the next step opens it again.
    async fn request<T, F, Fut>(
        &self,
        ctx: &ToolContext,
        server: &str,
        what: &str,
        f: F,
    ) -> Result<T, ToolError>
    where
        F: FnOnce(rmcp::Peer<RoleClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let conn = self.connection(ctx, server).await?;
        let _use = Use::new(conn.clone(), ctx);
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.settings.request_timeout, f(conn.peer.clone())) => r,
            _ = ctx.cancel.cancelled() => return Err(ToolError::new(ErrorKind::CancelledError, format!("cancelled during {what}"))),
        };
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if matches!(
                    e,
                    rmcp::ServiceError::TransportClosed | rmcp::ServiceError::TransportSend(_)
                ) {
                    self.forget(&conn).await;
                }
                Err(protocol_error(server, what, e, Some(&conn)))
            }
            Err(_) => Err(ToolError::new(
                ErrorKind::TimeoutError,
                format!(
                    "MCP server '{server}': {what} took longer than {:.0}s (tools.mcp.request_timeout_seconds)",
                    self.settings.request_timeout.as_secs_f64()
                ),
            )),
        }
    }

    async fn forget(&self, conn: &Arc<Conn>) {
        let removed = {
            let mut conns = self.pool.conns.lock().await;
            let key = conns
                .iter()
                .find(|(_, c)| Arc::ptr_eq(c, conn))
                .map(|(k, _)| k.clone());
            key.and_then(|k| conns.remove(&k))
        };
        if let Some(c) = removed {
            c.close().await;
        }
    }

    fn check_size(&self, server: &str, what: &str, v: &Value) -> Result<(), ToolError> {
        let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
        let cap = self.settings.http.max_response_bytes;
        if size > cap {
            return Err(ToolError::new(
                ErrorKind::ResponseTooLargeError,
                format!(
                    "MCP server '{server}': the {what} result is {size} bytes, more than the {cap} allowed (tools.http.max_response_bytes)"
                ),
            ));
        }
        Ok(())
    }

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
