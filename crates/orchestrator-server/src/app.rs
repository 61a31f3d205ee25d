//! Application state, the router, and start-up that returns the bound address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use orchestrator_engine::{Engine, EngineConfig};
use orchestrator_tools::ToolRegistry;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Every request gets one (or keeps the caller's), and every response and
/// log line of the request carries it.
const REQUEST_ID: &str = "x-request-id";
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Settings;
use crate::error::{method_not_allowed, not_found};

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<AppInner>,
}

#[derive(Debug)]
struct AppInner {
    engine: Engine,
    settings: Settings,
    http_metrics: crate::observability::HttpMetrics,
    token_use: crate::auth::TokenUse,
    views: crate::views::ViewCache,
}

impl AppState {
    pub fn new(engine: Engine, settings: Settings) -> Self {
        AppState {
            inner: Arc::new(AppInner {
                engine,
                settings,
                http_metrics: crate::observability::HttpMetrics::default(),
                token_use: crate::auth::TokenUse::default(),
                views: crate::views::ViewCache::default(),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn http_metrics(&self) -> &crate::observability::HttpMetrics {
        &self.inner.http_metrics
    }

    pub fn token_use(&self) -> &crate::auth::TokenUse {
        &self.inner.token_use
    }

    /// Views of large executions, kept for clients that poll them.
    pub fn views(&self) -> &crate::views::ViewCache {
        &self.inner.views
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orchestrator",
        description = "Pipeline orchestration server: submit YAML pipelines, watch their executions, recover them from checkpoints.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "executions", description = "Run pipelines and follow their executions"),
        (name = "pipelines", description = "Compile pipelines"),
        (name = "tools", description = "The tools steps can use"),
        (name = "models", description = "The model registry, model selection and call metrics"),
        (name = "webhooks", description = "Event subscriptions over HTTP, signed and retried"),
        (name = "tokens", description = "API tokens (when authentication is on)"),
        (name = "system", description = "Health and readiness")
    ),
    modifiers(&BearerAuth),
    // Tokens are needed only when authentication is on.
    security((), ("bearer" = []))
)]
struct ApiDoc;

/// The `bearer` security scheme: `Authorization: Bearer orc_…` API tokens.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("orc_<id>_<secret>")
                    .description(Some(
                        "An API token (orchestrator token create). Needed when authentication is on; /health, /ready and this document are always open.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every route module of the API, each route with its OpenAPI entry: the
/// one list the router and the document are both built from.
fn api_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::api::routes())
        .merge(crate::models_api::routes())
        .merge(crate::observability::routes())
        .merge(crate::webhooks_api::routes())
        .merge(crate::auth::routes())
}

/// The OpenAPI document, generated from the handlers.
pub fn openapi() -> serde_json::Value {
    let mut documented = ToolRegistry::builtin();
    documented.enable_models();
    documented.register(Arc::new(orchestrator_tools::terminal::Terminal::default()));
    documented.register(Arc::new(
        orchestrator_tools::python::PythonExecutor::default(),
    ));
    documented.register(Arc::new(orchestrator_tools::search::WebSearch::new(
        Vec::new(),
        Duration::from_secs(15),
    )));
    openapi_with_tools(&documented)
}

/// The OpenAPI document with the parameter schema of every action of
/// `tools` as a component, `tool.{tool}.{action}` (JSON Schema 2020-12, as
/// OpenAPI 3.1 allows). They are JSON, not utoipa types: tool schemas use
/// keywords utoipa's schema model does not hold.
pub fn openapi_with_tools(tools: &ToolRegistry) -> serde_json::Value {
    let (_, api) = api_routes().split_for_parts();
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return doc;
    };
    for (id, _, actions) in tools.describe() {
        for action in actions {
            let mut schema = action.parameters;
            if let Some(obj) = schema.as_object_mut() {
                obj.entry("description").or_insert_with(|| {
                    serde_json::Value::String(format!(
                        "Parameters of `{}` `{}`: {}",
                        id, action.name, action.description
                    ))
                });
            }
            schemas.insert(format!("tool.{id}.{}", action.name), schema);
        }
    }
    doc
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let doc = openapi_with_tools(state.engine().tools());
    let limit = state.settings().max_body_bytes;
    api.merge(SwaggerUi::new("/swagger-ui").external_url_unchecked("/openapi.json", doc))
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::observability::track,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(REQUEST_ID)))
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static(REQUEST_ID),
            MakeRequestUuid,
        ))
        .with_state(state)
}

/// The SQLite file a database URL names, if it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// A path made absolute, with its longest existing part resolved (symlinks
/// followed) and the rest appended: comparable before the rest exists.
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // `..` taken lexically, so a folder that does not exist yet is passed.
    let absolute = absolute.components().fold(PathBuf::new(), |mut p, c| {
        match c {
            std::path::Component::ParentDir => {
                p.pop();
            }
            std::path::Component::CurDir => {}
            other => p.push(other),
        }
        p
    });
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p: PathBuf, c| p.join(c));
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return absolute,
        }
    }
}

/// Refuses a workspace that holds the SQLite database or its folder: a
/// filesystem step could overwrite or delete the database (or its WAL).
fn check_workspace_apart(settings: &Settings) -> anyhow::Result<()> {
    let Some(db) = sqlite_file(&settings.database_url) else {
        return Ok(());
    };
    let workspace = resolved(&settings.workspace_root);
    let db = resolved(&db);
    let folder = db.parent().unwrap_or(&db);
    if folder.starts_with(&workspace) {
        anyhow::bail!(
            "the workspace {} holds the database {}: filesystem steps could overwrite it; \
             put the database (database.url) or the workspace (workspace.root) elsewhere",
            workspace.display(),
            db.display()
        );
    }
    Ok(())
}

/// Opens the store, builds the engine and its tools.
pub async fn build_engine(settings: &Settings) -> anyhow::Result<Engine> {
    check_workspace_apart(settings)?;
    orchestrator_store::set_sqlite_wal_max_bytes(settings.sqlite_wal_max_bytes);
    let store = orchestrator_store::connect(&settings.database_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open database {}: {e}",
                orchestrator_store::redact_url(&settings.database_url)
            )
        })?;
    std::fs::create_dir_all(&settings.workspace_root).map_err(|e| {
        anyhow::anyhow!(
            "cannot create workspace {}: {e}",
            settings.workspace_root.display()
        )
    })?;
    let config = EngineConfig {
        max_concurrent: settings.max_concurrent,
        workspace_root: settings.workspace_root.clone(),
        lease_ms: i64::try_from(settings.lease_ms).unwrap_or(i64::MAX),
        heartbeat_ms: settings.heartbeat_ms,
        reap_ms: (settings.lease_ms / 2).clamp(50, 5_000),
        max_lost: i64::try_from(settings.max_lost_workers).unwrap_or(i64::MAX),
        idempotency_ttl_ms: i64::try_from(settings.idempotency_ttl_hours.saturating_mul(3_600_000))
            .unwrap_or(i64::MAX),
        models: settings.models.clone(),
        webhooks: orchestrator_engine::webhooks::WebhookSettings {
            // Receivers are user-given URLs: the http tool's policy applies.
            client: Some(Arc::new(settings.http.policy.clone()).client(0)),
            ..Default::default()
        },
        retention: settings.retention.clone(),
        ..EngineConfig::default()
    };
    // From the models file, or (without one) the providers whose keys are set.
    let source = if settings.models_file.is_some() {
        "file"
    } else {
        "environment"
    };
    for spec in &settings.model_specs {
        let json = serde_json::to_value(spec)?;
        store
            .upsert_model(&spec.id, &json, source)
            .await
            .map_err(|e| anyhow::anyhow!("cannot register model '{}' ({source}): {e}", spec.id))?;
    }
    Ok(Engine::new(
        store,
        Arc::new(tool_registry(settings).await),
        config,
    ))
}

/// The tools the settings enable: the built-ins, `terminal` when enabled,
/// `web-search` when a backend is configured, and the tools over HTTP.
pub async fn tool_registry(settings: &Settings) -> ToolRegistry {
    let mut tools = ToolRegistry::builtin();
    tools.enable_models();
    tools.register(Arc::new(orchestrator_tools::http::HttpTool::new(
        settings.http.clone(),
    )));
    tools.register(Arc::new(orchestrator_tools::http::HttpClient::new(
        settings.http.clone(),
    )));
    if settings.enable_terminal {
        tools.register(Arc::new(orchestrator_tools::terminal::Terminal {
            allowed_programs: settings
                .terminal_allowed_programs
                .as_ref()
                .map(|p| p.iter().cloned().collect()),
            max_output_bytes: None,
        }));
    }
    if let Some(interpreter) = &settings.python {
        tools.register(Arc::new(orchestrator_tools::python::PythonExecutor {
            interpreter: interpreter.clone(),
            ..Default::default()
        }));
    }
    let search: Option<Arc<dyn orchestrator_tools::Tool>> = (!settings.search_backends.is_empty())
        .then(|| {
            Arc::new(orchestrator_tools::search::WebSearch::new(
                settings.search_backends.clone(),
                Duration::from_secs_f64(settings.search_timeout_seconds),
            )) as Arc<dyn orchestrator_tools::Tool>
        });
    if let Some(search) = &search {
        tools.register(search.clone());
    }
    #[cfg(feature = "web-pages")]
    {
        tools.register(Arc::new(orchestrator_tools::web::HeadlessBrowser::new(
            settings.http.clone(),
            search,
        )));
        tools.register(Arc::new(orchestrator_tools::web::WebScraper::new(
            settings.http.clone(),
        )));
    }
    for remote in &settings.remote_tools {
        tools.register(Arc::new(remote.clone()));
    }
    #[cfg(feature = "mcp")]
    {
        let mcp = orchestrator_tools::mcp::McpServer::new(orchestrator_tools::mcp::McpSettings {
            http: settings.http.clone(),
            ..settings.mcp.clone()
        });
        for (server, found) in mcp.discover().await {
            match found {
                Ok(found) => {
                    tracing::info!(server = %server, tools = found.len(), "MCP server connected; its tools are offered as mcp:{server}:<tool>");
                    for tool in found {
                        tools.register(Arc::new(tool));
                    }
                }
                Err(e) => {
                    tracing::warn!(server = %server, error = %e, "MCP server unreachable at start-up: its tools are not offered until the server restarts (mcp-server steps still reach it)")
                }
            }
        }
        tools.register(Arc::new(mcp));
    }
    tools
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting requests, lets running steps finish within the grace
    /// period, and waits for both.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (after `shutdown_token` is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let http = self.http.await;
        if let Some(w) = self.workers {
            let _ = w.await;
        }
        http??;
        Ok(())
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Binds (port 0 picks a free port), starts the workers and the HTTP server.
pub async fn start(settings: Settings, with_workers: bool) -> anyhow::Result<RunningServer> {
    let engine = build_engine(&settings).await?;
    start_with_engine(settings, engine, with_workers).await
}

pub async fn start_with_engine(
    settings: Settings,
    engine: Engine,
    with_workers: bool,
) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let workers = with_workers.then(|| engine.start(shutdown.clone(), grace));
    let state = AppState::new(engine, settings);
    let app = router(state.clone());
    let token = shutdown.clone();
    let limits = state.settings().connections;
    let http = tokio::spawn(crate::listener::serve(listener, app, limits, token));
    tracing::info!(%addr, "listening on http://{addr}");
    Ok(RunningServer {
        addr,
        state,
        shutdown,
        http,
        workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_workspace_holding_the_database_is_refused() {
        let dir = orchestrator_store::testing::TempDir::new("orch-ws-db");
        let base = dir.path();
        let settings = |workspace: PathBuf, db: &str| Settings {
            workspace_root: workspace,
            database_url: db.to_string(),
            ..Settings::default()
        };
        let inside = format!("sqlite://{}/ws/db.sqlite", base.display());
        let nested = format!("sqlite://{}/ws/data/db.sqlite?mode=rwc", base.display());
        for (workspace, db) in [
            (base.join("ws"), inside.as_str()),
            (base.join("ws"), nested.as_str()),
            // Through `..` and a relative spelling of the same folder.
            (base.join("other/../ws"), inside.as_str()),
            (base.to_path_buf(), inside.as_str()),
        ] {
            let err = build_engine(&settings(workspace.clone(), db))
                .await
                .err()
                .unwrap_or_else(|| panic!("{} with {db} started", workspace.display()));
            assert!(err.to_string().contains("holds the database"), "{err}");
        }
        assert!(!base.join("ws/db.sqlite").exists(), "nothing was created");
        let apart = format!("sqlite://{}/data/db.sqlite", base.display());
        std::fs::create_dir_all(base.join("data")).expect("data");
        assert!(
            build_engine(&settings(base.join("ws"), &apart))
                .await
                .is_ok()
        );
        assert!(
            build_engine(&settings(base.join("ws"), "sqlite::memory:"))
                .await
                .is_ok()
        );
    }
}
