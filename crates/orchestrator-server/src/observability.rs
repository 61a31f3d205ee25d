//! `/metrics` (Prometheus text), `/metrics/summary` (JSON, the seed's
//! performance metrics) and `/health/components` (the seed's health check).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchestrator_engine::metrics::{
    DURATION_BUCKETS, Family, Histogram, header as metric_header, number,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::TAG_SYSTEM;
use crate::app::AppState;
use crate::error::{ApiError, ApiJson};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(metrics_summary))
        .routes(routes!(health_components))
}

/// HTTP requests this process served.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family,
    duration: Histogram,
    /// CPU seconds and wall time at the last `/metrics/summary`, for CPU %.
    cpu_sample: Mutex<Option<(f64, Instant)>>,
    started: Instant,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::counter(
                "orchestrator_http_requests_total",
                "HTTP requests served, by method, route and status",
                &["method", "route", "status"],
            ),
            duration: Histogram::new(
                "orchestrator_http_request_duration_seconds",
                "HTTP request latency, by route",
                &["route"],
                DURATION_BUCKETS,
            ),
            cpu_sample: Mutex::new(None),
            started: Instant::now(),
        }
    }
}

/// Counts every request under its route template (`/executions/{id}`), so
/// ids do not explode the label set; unmatched paths count as `unmatched`.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = state.http_metrics();
    m.requests
        .inc(&[&method, &route, response.status().as_str()]);
    m.duration
        .observe(&[&route], started.elapsed().as_secs_f64());
    response
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(String, f64)]) {
    metric_header(out, name, "gauge", help);
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {}", number(*v));
    }
}

/// Prometheus metrics: the database's view (executions, queue, pool) and
/// this process's counters (steps, retries, leases, models, HTTP).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = TAG_SYSTEM,
    operation_id = "get_metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let overview = state.engine().store().overview().await?;
    let mut out = String::with_capacity(8192);
    let by_status = |rows: &[(String, i64)], all: &[&str]| -> Vec<(String, f64)> {
        all.iter()
            .map(|s| {
                let n = rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                (format!("{{status=\"{s}\"}}"), n as f64)
            })
            .collect()
    };
    gauge(
        &mut out,
        "orchestrator_executions",
        "Executions in the database, by status",
        &by_status(
            &overview.executions_by_status,
            &[
                "resolving",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
            ],
        ),
    );
    gauge(
        &mut out,
        "orchestrator_active_steps",
        "Steps of queued and running executions, by status",
        &by_status(
            &overview.active_steps_by_status,
            &[
                "pending",
                "ready",
                "running",
                "retrying",
                "waiting",
                "succeeded",
                "failed",
                "skipped",
                "cancelled",
            ],
        ),
    );
    gauge(
        &mut out,
        "orchestrator_queue_ready_steps",
        "Runnable steps no worker holds yet",
        &[(String::new(), overview.ready_steps as f64)],
    );
    gauge(
        &mut out,
        "orchestrator_queue_leased_steps",
        "Steps a worker holds a lease on",
        &[(String::new(), overview.leased_steps as f64)],
    );
    gauge(
        &mut out,
        "orchestrator_queue_oldest_ready_age_seconds",
        "How long the oldest runnable step has waited (0 when none waits)",
        &[(
            String::new(),
            overview.oldest_ready_age_ms.unwrap_or(0) as f64 / 1000.0,
        )],
    );
    gauge(
        &mut out,
        "orchestrator_db_pool_connections",
        "Open database connections of this process, by state",
        &[
            ("{state=\"idle\"}".into(), f64::from(overview.pool_idle)),
            (
                "{state=\"busy\"}".into(),
                f64::from(overview.pool_connections.saturating_sub(overview.pool_idle)),
            ),
        ],
    );
    state.engine().metrics().render(&mut out);
    let m = state.http_metrics();
    m.requests.render(&mut out);
    m.duration.render(&mut out);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// The seed's performance metrics, plus this process's resource use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricsSummary {
    pub total_executions: i64,
    pub successful_executions: i64,
    pub failed_executions: i64,
    pub cancelled_executions: i64,
    pub running_executions: i64,
    pub queued_executions: i64,
    /// Succeeded over finished, 0 to 1 (0 when nothing has finished).
    pub success_rate: f64,
    /// Mean run time of finished executions, in seconds.
    pub average_execution_time: f64,
    pub resource_utilization: ResourceUtilization,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResourceUtilization {
    /// CPU this process used since the previous summary (or since it
    /// started), in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Resident memory of this process.
    pub memory_mb: Option<f64>,
    pub worker_slots_busy: i64,
    pub worker_slots_total: i64,
    pub uptime_seconds: f64,
}

/// User plus system CPU seconds of this process (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks per second: 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// Totals over all executions, success rate, mean run time, resources.
#[utoipa::path(
    get,
    path = "/metrics/summary",
    tag = TAG_SYSTEM,
    operation_id = "get_metrics_summary",
    responses((status = 200, description = "Summary", body = MetricsSummary))
)]
pub async fn metrics_summary(
    State(state): State<AppState>,
) -> Result<ApiJson<MetricsSummary>, ApiError> {
    let o = state.engine().store().overview().await?;
    let count = |s: &str| {
        o.executions_by_status
            .iter()
            .find(|(k, _)| k == s)
            .map_or(0, |(_, n)| *n)
    };
    let (succeeded, failed, cancelled) = (count("succeeded"), count("failed"), count("cancelled"));
    let finished = succeeded + failed + cancelled;
    let m = state.http_metrics();
    let cpu_percent = cpu_seconds().map(|now_cpu| {
        let mut last = m.cpu_sample.lock().unwrap_or_else(|e| e.into_inner());
        let (then_cpu, then) = last.unwrap_or((0.0, m.started));
        *last = Some((now_cpu, Instant::now()));
        let wall = then.elapsed().as_secs_f64();
        if wall > 0.0 {
            ((now_cpu - then_cpu) / wall * 1000.0).round() / 10.0
        } else {
            0.0
        }
    });
    let engine = state.engine().metrics();
    Ok(ApiJson(MetricsSummary {
        total_executions: o.executions_by_status.iter().map(|(_, n)| n).sum(),
        successful_executions: succeeded,
        failed_executions: failed,
        cancelled_executions: cancelled,
        running_executions: count("running"),
        queued_executions: count("queued"),
        success_rate: if finished > 0 {
            succeeded as f64 / finished as f64
        } else {
            0.0
        },
        average_execution_time: o.mean_execution_ms.unwrap_or(0.0) / 1000.0,
        resource_utilization: ResourceUtilization {
            cpu_percent,
            memory_mb: resident_mb(),
            worker_slots_busy: engine.busy.load(Ordering::Relaxed),
            worker_slots_total: engine.slots.load(Ordering::Relaxed),
            uptime_seconds: m.started.elapsed().as_secs_f64(),
        },
    }))
}

/// One component's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentHealth {
    /// `healthy`, `warning` or `unhealthy`.
    #[schema(example = "healthy")]
    pub status: String,
    pub detail: String,
}

/// The seed's `health_check()`: each component and the worst of them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentsHealth {
    #[schema(example = "healthy")]
    pub overall: String,
    pub store: ComponentHealth,
    pub worker_pool: ComponentHealth,
    pub model_registry: ComponentHealth,
    pub tools: ComponentHealth,
}

fn component(status: &str, detail: String) -> ComponentHealth {
    ComponentHealth {
        status: status.to_string(),
        detail,
    }
}

/// Runnable steps waiting longer than this make the worker pool a warning.
const STALE_QUEUE_MS: i64 = 60_000;

/// Each component as `healthy`, `warning` or `unhealthy`, and `overall`.
/// Always 200: read `overall` (load balancers should use `/ready`).
#[utoipa::path(
    get,
    path = "/health/components",
    tag = TAG_SYSTEM,
    operation_id = "get_health_components",
    responses((status = 200, description = "Component health", body = ComponentsHealth))
)]
pub async fn health_components(State(state): State<AppState>) -> ApiJson<ComponentsHealth> {
    let engine = state.engine();
    let started = Instant::now();
    let overview = match engine.store().ping().await {
        Ok(()) => engine.store().overview().await.ok(),
        Err(_) => None,
    };
    let store = match &overview {
        None => component(
            "unhealthy",
            format!("the {} database does not answer", engine.store().backend()),
        ),
        Some(o) => {
            let ms = started.elapsed().as_millis();
            let detail = format!(
                "{} answered in {ms} ms; {} of {} connections idle",
                engine.store().backend(),
                o.pool_idle,
                o.pool_connections
            );
            component(if ms > 1000 { "warning" } else { "healthy" }, detail)
        }
    };
    let m = engine.metrics();
    let (busy, slots) = (
        m.busy.load(Ordering::Relaxed),
        m.slots.load(Ordering::Relaxed),
    );
    let oldest = overview.as_ref().and_then(|o| o.oldest_ready_age_ms);
    let worker_pool = match (slots, oldest) {
        (0, Some(age)) => component(
            "warning",
            format!(
                "this process runs no workers, and a runnable step has waited {} s",
                age / 1000
            ),
        ),
        (0, None) => component("healthy", "this process runs no workers (HTTP only)".into()),
        (_, Some(age)) if age > STALE_QUEUE_MS => component(
            "warning",
            format!(
                "{busy} of {slots} slots busy; a runnable step has waited {} s",
                age / 1000
            ),
        ),
        _ => component("healthy", format!("{busy} of {slots} slots busy")),
    };
    let model_registry = match engine.models().registry().await {
        Err(e) => component("unhealthy", e.to_string()),
        Ok(models) if models.is_empty() => component(
            "warning",
            "no model is registered: model steps and <AUTO> tags cannot run".into(),
        ),
        Ok(models) => {
            let env = &engine.models().settings().env;
            let keyed: Vec<_> = models.iter().filter(|m| m.api_key(env).is_ok()).collect();
            // Endpoints the operator named (local servers, proxies) are
            // tried: a model there that cannot be reached is not usable.
            let unreachable = unreachable_endpoints(&keyed).await;
            let usable = keyed.len() - unreachable.len();
            if !unreachable.is_empty() {
                component(
                    "warning",
                    format!(
                        "{usable} of {} models usable; cannot connect to the endpoint of {}",
                        models.len(),
                        unreachable.join(", ")
                    ),
                )
            } else if usable == 0 {
                component(
                    "warning",
                    format!(
                        "{} models registered, none has its API key set",
                        models.len()
                    ),
                )
            } else {
                component(
                    "healthy",
                    format!("{usable} of {} models usable", models.len()),
                )
            }
        }
    };
    let tools = engine.tools().describe();
    let tools = component(
        "healthy",
        format!(
            "{} tools: {}",
            tools.len(),
            tools
                .iter()
                .map(|t| t.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let rank = |s: &str| match s {
        "unhealthy" => 2,
        "warning" => 1,
        _ => 0,
    };
    let overall = [&store, &worker_pool, &model_registry, &tools]
        .iter()
        .map(|c| c.status.as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("healthy")
        .to_string();
    ApiJson(ComponentsHealth {
        overall,
        store,
        worker_pool,
        model_registry,
        tools,
    })
}

/// Ids of models with their own `base_url` whose host does not accept a
/// connection within a second (tried at once, in parallel).
async fn unreachable_endpoints(models: &[&orchestrator_tools::models::ModelSpec]) -> Vec<String> {
    let probes = models
        .iter()
        .filter(|m| m.base_url.is_some())
        .map(|m| async move {
            let url = url::Url::parse(m.base_url()).ok()?;
            let host = url.host_str()?.to_string();
            let port = url.port_or_known_default()?;
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            match tokio::time::timeout(std::time::Duration::from_secs(1), connect).await {
                Ok(Ok(_)) => None,
                _ => Some(m.id.clone()),
            }
        });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}
