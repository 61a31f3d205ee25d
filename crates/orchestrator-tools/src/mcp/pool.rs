//! The connections `mcp-server` keeps: opening them (a program over stdio
//! in its own process group, or streamable HTTP through the outbound
//! policy), the pool with its limits and idle reaper, the durable record
//! that lets any process reconnect, and requests under timeouts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::service::{RoleClient, RunningService, ServiceExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::client::McpServer;
use super::{McpSettings, ServerSpec};
use crate::ErrorKind;
use crate::log::{LineSplitter, LogSink, Stream};
use crate::memory::Reach;
use crate::{ToolContext, ToolError, type_name};

/// The memory namespace a tree's connections are recorded in.
pub(super) const NAMESPACE: &str = "mcp-server";
pub(super) const STDERR_TAIL_BYTES: usize = 4096;

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
pub(super) struct Conn {
    pub(super) service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    pub(super) peer: rmcp::Peer<RoleClient>,
    pub(super) server_info: Value,
    /// The end of what a stdio server wrote on stderr.
    pub(super) stderr_tail: Arc<Mutex<String>>,
    /// The log of the step using the connection (its stderr goes there).
    pub(super) sink: Arc<Mutex<Option<Arc<dyn LogSink>>>>,
    pub(super) last_used: Mutex<Instant>,
    pub(super) busy: std::sync::atomic::AtomicUsize,
    /// The root execution of the tree that opened it (none for a
    /// configured server's), closed when that execution ends.
    pub(super) tree: Option<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("server_info", &self.server_info)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(super) async fn close(&self) {
        if let Some(service) = self.service.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), service.cancel()).await;
        }
    }

    pub(super) fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }
}

/// Marks a connection in use by one step; its stderr goes to that step's log.
pub(super) struct Use {
    pub(super) conn: Arc<Conn>,
}

impl Use {
    pub(super) fn new(conn: Arc<Conn>, ctx: &ToolContext) -> Use {
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
pub(super) struct Pool {
    pub(super) conns: tokio::sync::Mutex<HashMap<String, Arc<Conn>>>,
    pub(super) reaper: std::sync::OnceLock<()>,
}

pub(super) fn protocol_error(
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
pub(super) async fn read_stderr(
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

    /// Closes the idle connections of the tree whose root is `root` (one
    /// still in use is left to the idle reaper).
    pub(super) async fn close_tree(&self, root: &str) {
        let closing: Vec<Arc<Conn>> = {
            let mut conns = self.pool.conns.lock().await;
            let keys: Vec<String> = conns
                .iter()
                .filter(|(_, c)| {
                    c.tree.as_deref() == Some(root)
                        && c.busy.load(std::sync::atomic::Ordering::SeqCst) == 0
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| conns.remove(k)).collect()
        };
        for c in closing {
            c.close().await;
        }
    }

    pub(super) fn start_reaper(&self) {
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
    pub(super) async fn open(
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
        let tree = match (configured, ctx.memory.as_deref()) {
            (false, Some(memory)) => memory.tree().await.ok().map(|t| t.root_execution_id),
            _ => None,
        };
        Ok(Arc::new(Conn {
            tree,
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
            server_info,
            stderr_tail,
            sink,
            last_used: Mutex::new(Instant::now()),
            busy: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    pub(super) async fn handshake<F, E>(
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
    pub(super) fn spawn(
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

    pub(super) async fn http_transport(
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
    pub(super) async fn admit(&self, key: String, conn: Arc<Conn>) -> Result<Arc<Conn>, ToolError> {
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
    pub(super) async fn record(
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
    pub(super) async fn connection(
        &self,
        ctx: &ToolContext,
        server: &str,
    ) -> Result<Arc<Conn>, ToolError> {
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

    pub(super) fn configured_names(&self) -> String {
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

    pub(super) async fn configured(
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
    pub(super) async fn request<T, F, Fut>(
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

    pub(super) async fn forget(&self, conn: &Arc<Conn>) {
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

    pub(super) fn check_size(&self, server: &str, what: &str, v: &Value) -> Result<(), ToolError> {
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
}
