//! `/models`: the model registry, selection and call metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use orchestrator_engine::models::SelectError;
use orchestrator_tools::models::{Candidate, ModelSpec, Requirements, Strategy};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};

pub const TAG_MODELS: &str = "models";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models, register_model))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(select_model))
        .routes(routes!(model_metrics))
}

/// A registered model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelView {
    /// The definition, as registered.
    pub spec: ModelSpec,
    /// `api` (registered with `POST /models`) or `file` (from models.yaml).
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelView>,
}

/// Query of `GET /models`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModelQuery {
    /// Only models of this provider (`openai`, `anthropic`, `google`).
    pub provider: Option<String>,
    /// Only models with this capability.
    pub capability: Option<String>,
}

/// The chosen model, and how every model fared.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SelectionView {
    pub model: ModelSpec,
    pub strategy: Strategy,
    pub reason: String,
    pub candidates: Vec<Candidate>,
}

/// One model's calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelMetrics {
    pub model_id: String,
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars.
    pub cost: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelMetricsList {
    pub items: Vec<ModelMetrics>,
}

fn registry_error(e: SelectError) -> ApiError {
    match e {
        SelectError::Store(m) => ApiError::Unavailable(m),
        other => ApiError::Unprocessable(other.to_string()),
    }
}

async fn views(state: &AppState) -> Result<Vec<ModelView>, ApiError> {
    let records = state.engine().store().list_models().await?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            Some(ModelView {
                spec: serde_json::from_value(r.spec).ok()?,
                source: r.source,
                created_at: crate::dto::time(r.created_at),
                updated_at: crate::dto::time(r.updated_at),
            })
        })
        .collect())
}

/// List the registered models, optionally by provider or capability.
#[utoipa::path(
    get,
    path = "/models",
    tag = TAG_MODELS,
    operation_id = "list_models",
    params(ModelQuery),
    responses(
        (status = 200, description = "The models, oldest first", body = ModelList),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_models(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ModelQuery>,
) -> Result<ApiJson<ModelList>, ApiError> {
    let items = views(&state)
        .await?
        .into_iter()
        .filter(|m| {
            query
                .provider
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(m.spec.provider.as_str()))
        })
        .filter(|m| {
            query
                .capability
                .as_deref()
                .is_none_or(|c| m.spec.has_capability(c))
        })
        .collect();
    Ok(ApiJson(ModelList { items }))
}

/// Register a model.
#[utoipa::path(
    post,
    path = "/models",
    tag = TAG_MODELS,
    operation_id = "register_model",
    request_body = ModelSpec,
    responses(
        (status = 201, description = "Registered", body = ModelView, headers(("Location" = String, description = "The model's URL"))),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Body is not valid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a valid model definition", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register_model(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<ModelSpec>,
) -> Result<Response, ApiError> {
    spec.check().map_err(ApiError::Unprocessable)?;
    state
        .engine()
        .models()
        .check_key_env(&spec)
        .map_err(ApiError::Unprocessable)?;
    state
        .engine()
        .models()
        .check_endpoint(&spec)
        .await
        .map_err(ApiError::Unprocessable)?;
    let json = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let store = state.engine().store();
    if !store.insert_model(&spec.id, &json, "api").await? {
        return Err(ApiError::Conflict(format!(
            "a model with id '{}' is already registered",
            spec.id
        )));
    }
    let view = views(&state)
        .await?
        .into_iter()
        .find(|m| m.spec.id == spec.id)
        .ok_or_else(|| ApiError::NotFound(format!("model '{}' disappeared", spec.id)))?;
    Ok(crate::error::created(&format!("/models/{}", spec.id), view))
}

/// Get a registered model.
#[utoipa::path(
    get,
    path = "/models/{id}",
    tag = TAG_MODELS,
    operation_id = "get_model",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_model(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<ModelView>, ApiError> {
    views(&state)
        .await?
        .into_iter()
        .find(|m| m.spec.id == id)
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("model '{id}' is not registered")))
}

/// Remove a model. Its call history stays in the metrics.
#[utoipa::path(
    delete,
    path = "/models/{id}",
    tag = TAG_MODELS,
    operation_id = "delete_model",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_model(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state.engine().store().delete_model(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "model '{id}' is not registered"
        )))
    }
}

/// Choose a model for requirements, with the configured routing strategy,
/// and say why; every model is listed with what it lacks.
#[utoipa::path(
    post,
    path = "/models/select",
    tag = TAG_MODELS,
    operation_id = "select_model",
    request_body = Requirements,
    responses(
        (status = 200, description = "The chosen model", body = SelectionView),
        (status = 400, description = "Body is not valid JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No model meets the requirements (each model's shortfalls in the detail)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn select_model(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<Requirements>,
) -> Result<ApiJson<SelectionView>, ApiError> {
    let selection = state
        .engine()
        .models()
        .select(&req)
        .await
        .map_err(registry_error)?;
    Ok(ApiJson(SelectionView {
        model: selection.model,
        strategy: selection.strategy,
        reason: selection.reason,
        candidates: selection.candidates,
    }))
}

/// Calls, successes, failures, tokens, cost and latency per model.
#[utoipa::path(
    get,
    path = "/models/metrics",
    tag = TAG_MODELS,
    operation_id = "model_metrics",
    responses((status = 200, description = "Per model", body = ModelMetricsList))
)]
pub async fn model_metrics(
    State(state): State<AppState>,
) -> Result<ApiJson<ModelMetricsList>, ApiError> {
    let stats = state
        .engine()
        .models()
        .stats()
        .await
        .map_err(registry_error)?;
    let mut items: Vec<ModelMetrics> = stats
        .into_iter()
        .map(|(model_id, s)| ModelMetrics {
            model_id,
            calls: s.calls,
            successes: s.successes,
            failures: s.failures,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cost: s.cost,
            latency_p50_ms: s.latency_p50_ms,
            latency_p95_ms: s.latency_p95_ms,
        })
        .collect();
    items.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    Ok(ApiJson(ModelMetricsList { items }))
}
