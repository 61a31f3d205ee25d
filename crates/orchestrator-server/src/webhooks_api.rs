//! `/webhooks`: subscriptions to execution and step events, and their
//! delivery log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use orchestrator_store::{DeliveryRecord, WebhookRecord, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};

pub const TAG_WEBHOOKS: &str = "webhooks";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
}

/// Event kinds a webhook may name.
pub const EVENT_KINDS: &[&str] = &[
    "execution.resolving",
    "execution.queued",
    "execution.started",
    "execution.succeeded",
    "execution.failed",
    "execution.cancelled",
    "execution.recovered",
    "step.ready",
    "step.started",
    "step.succeeded",
    "step.failed",
    "step.retrying",
    "step.skipped",
    "step.cancelled",
    "step.expanded",
    "step.waiting",
    "step.answered",
    "step.wait_expired",
];

/// The stored kinds for what a subscriber wrote: aliases expanded,
/// wildcards kept, unknown kinds refused.
pub fn expand_kinds(events: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let e = e.trim();
        let kinds: Vec<&str> = match e {
            "execution.finished" => vec![
                "execution.succeeded",
                "execution.failed",
                "execution.cancelled",
            ],
            "*" | "execution.*" | "step.*" => vec![e],
            k if EVENT_KINDS.contains(&k) => vec![k],
            other => {
                return Err(format!(
                    "'{other}' is not an event kind (use one of {}, execution.finished, execution.*, step.* or *)",
                    EVENT_KINDS.join(", ")
                ));
            }
        };
        for k in kinds {
            if !out.iter().any(|o| o == k) {
                out.push(k.to_string());
            }
        }
    }
    if out.is_empty() {
        return Err("'events' must name at least one event kind".into());
    }
    Ok(out)
}

/// A new subscription.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where deliveries are POSTed (the `http` tool's outbound policy applies).
    #[schema(example = "https://hooks.example.com/orchestrator")]
    pub url: String,
    /// Event kinds: `execution.started`, `execution.finished` (succeeded,
    /// failed or cancelled), `step.failed`, …, or `execution.*`, `step.*`, `*`.
    #[schema(example = json!(["execution.finished", "step.failed"]))]
    pub events: Vec<String>,
    /// Signs every delivery (HMAC-SHA256); one is generated when left out.
    pub secret: Option<String>,
}

/// A subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Only in the answer to `POST /webhooks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

impl WebhookView {
    fn without_secret(w: WebhookRecord) -> Self {
        WebhookView {
            id: w.id,
            url: w.url,
            events: w.events,
            secret: None,
            created_at: crate::dto::time(w.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// One delivery and its attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub execution_id: String,
    pub event_seq: i64,
    pub event: String,
    /// `pending`, `delivered`, `failed` (out of attempts) or `cancelled`.
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Every attempt: `{attempt, at, status_code, error, duration_ms}`
    /// (`at` in RFC 3339).
    #[schema(value_type = Vec<Object>)]
    pub log: Value,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

/// A delivery's attempts with `at` as RFC 3339 (stored as Unix ms).
fn attempts_with_times(mut log: Value) -> Value {
    for attempt in log.as_array_mut().into_iter().flatten() {
        if let Some(ms) = attempt.get("at").and_then(Value::as_i64) {
            attempt["at"] = Value::String(crate::dto::time(ms));
        }
    }
    log
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            next_attempt_at: (d.status == "pending").then(|| crate::dto::time(d.next_attempt_at)),
            id: d.id,
            execution_id: d.execution_id,
            event_seq: d.event_seq,
            event: d.kind,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            log: attempts_with_times(d.log),
            created_at: crate::dto::time(d.created_at),
            delivered_at: d.delivered_at.map(crate::dto::time),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryView>,
}

/// Query of `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// At most this many, newest first (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

async fn find(state: &AppState, id: &str) -> Result<WebhookRecord, ApiError> {
    state
        .engine()
        .store()
        .list_webhooks()
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("webhook '{id}' does not exist")))
}

/// Subscribe a URL to events.
///
/// Each delivery is a `POST` of the event as JSON (`delivery_id`, `attempt`,
/// `sent_at`, `execution_id`, `seq`, `kind`, `step_id`, `data`,
/// `created_at`) with headers `X-Orchestrator-Event`,
/// `X-Orchestrator-Delivery`, `X-Orchestrator-Timestamp` (Unix seconds) and
/// `X-Orchestrator-Signature: sha256=<hex HMAC-SHA256 of the body with the
/// secret>`. Any 2xx answer delivers it; anything else is retried with
/// exponential backoff (1 s, 2 s, 4 s, … up to 10 min, 10 attempts).
#[utoipa::path(
    post,
    path = "/webhooks",
    tag = TAG_WEBHOOKS,
    operation_id = "create_webhook",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Subscribed; the only answer that shows the secret", body = WebhookView,
            headers(("Location" = String, description = "The webhook's URL"))),
        (status = 400, description = "Body is not valid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad URL, refused host or unknown event kind", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<WebhookRequest>,
) -> Result<Response, ApiError> {
    let url = reqwest::Url::parse(&req.url)
        .map_err(|e| ApiError::Unprocessable(format!("url '{}' is not valid: {e}", req.url)))?;
    state
        .settings()
        .http
        .policy
        .check_resolved(&url)
        .await
        .map_err(|e| ApiError::Unprocessable(format!("url '{}' is refused: {e}", req.url)))?;
    let kinds = expand_kinds(&req.events).map_err(ApiError::Unprocessable)?;
    let secret = match req.secret {
        Some(s) if s.len() < 16 => {
            return Err(ApiError::Unprocessable(
                "secret must have at least 16 characters".into(),
            ));
        }
        Some(s) => s,
        None => format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    };
    let record = WebhookRecord {
        id: uuid::Uuid::now_v7().to_string(),
        url: req.url,
        events: req.events.iter().map(|e| e.trim().to_string()).collect(),
        secret,
        created_at: now_ms(),
    };
    state
        .engine()
        .store()
        .create_webhook(&record, &kinds)
        .await?;
    let location = format!("/webhooks/{}", record.id);
    let view = WebhookView {
        secret: Some(record.secret.clone()),
        ..WebhookView::without_secret(record)
    };
    Ok(crate::error::created(&location, view))
}

/// List the webhooks (without their secrets).
#[utoipa::path(
    get,
    path = "/webhooks",
    tag = TAG_WEBHOOKS,
    operation_id = "list_webhooks",
    responses((status = 200, description = "The webhooks, oldest first", body = WebhookList))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
) -> Result<ApiJson<WebhookList>, ApiError> {
    let items = state
        .engine()
        .store()
        .list_webhooks()
        .await?
        .into_iter()
        .map(WebhookView::without_secret)
        .collect();
    Ok(ApiJson(WebhookList { items }))
}

/// Get a webhook (without its secret).
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    tag = TAG_WEBHOOKS,
    operation_id = "get_webhook",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<WebhookView>, ApiError> {
    Ok(ApiJson(WebhookView::without_secret(
        find(&state, &id).await?,
    )))
}

/// Remove a webhook; its pending deliveries are cancelled.
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    tag = TAG_WEBHOOKS,
    operation_id = "delete_webhook",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.engine().store().delete_webhook(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("webhook '{id}' does not exist")))
    }
}

/// A webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    tag = TAG_WEBHOOKS,
    operation_id = "list_webhook_deliveries",
    params(("id" = String, Path, description = "Webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<ApiJson<DeliveryList>, ApiError> {
    find(&state, &id).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is not between 1 and 500"
        )));
    }
    let items = state
        .engine()
        .store()
        .list_deliveries(&id, limit)
        .await?
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Ok(ApiJson(DeliveryList { items }))
}
