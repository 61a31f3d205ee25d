//! HTTP handlers. Each is a few lines: typed extractors in, one call into the
//! engine or store, a response DTO out.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orchestrator_core::flow::ExecutionStatus;
use orchestrator_engine::{ExecutionOptions, PipelineSource, Submission, WorkspaceMode};
use orchestrator_store::ExecutionFilter;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::dto::*;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem, ProblemItem};

mod executions;
mod pipelines;
mod system;

pub(crate) use executions::parse_execution_id;

pub const TAG_EXECUTIONS: &str = "executions";
pub const TAG_PIPELINES: &str = "pipelines";
pub const TAG_TOOLS: &str = "tools";
pub const TAG_SYSTEM: &str = "system";

/// All documented routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            executions::create_execution,
            executions::list_executions
        ))
        .routes(routes!(
            executions::get_execution,
            executions::delete_execution
        ))
        .routes(routes!(executions::list_checkpoints))
        .routes(routes!(executions::get_execution_graph))
        .routes(routes!(crate::events::execution_events))
        .routes(routes!(crate::logs::step_logs))
        .routes(routes!(executions::cancel_execution))
        .routes(routes!(executions::recover_execution))
        .routes(routes!(executions::answer_step))
        .routes(routes!(executions::list_waiting))
        .routes(routes!(pipelines::validate_pipeline))
        .routes(routes!(pipelines::list_pipelines))
        .routes(routes!(pipelines::put_pipeline, pipelines::get_pipeline))
        .routes(routes!(pipelines::run_pipeline))
        .routes(routes!(system::list_tools))
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
}

/// A request body: a pipeline plus its inputs and options.
struct ParsedBody {
    source: PipelineSource,
    context: Option<Map<String, Value>>,
    options: OptionsDto,
}

fn is_yaml(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "text/plain"
    )
}

fn parse_body(
    state: &AppState,
    headers: &HeaderMap,
    query: BTreeMap<String, String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ParsedBody, ApiError> {
    let body = body.map_err(|r| match ApiError::from(r) {
        ApiError::PayloadTooLarge(_) => ApiError::PayloadTooLarge(state.settings().max_body_bytes),
        other => other,
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let json = match content_type.as_deref() {
        Some(ct) if ct == "application/json" || ct.ends_with("+json") => true,
        Some(ct) if is_yaml(ct) => false,
        Some(ct) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type '{ct}' is not supported; send application/json or application/yaml"
            )));
        }
        None => looks_json,
    };
    if json {
        if !query.is_empty() {
            return Err(ApiError::BadRequest(
                "query parameters are only read with a YAML body; put inputs in 'context'"
                    .to_string(),
            ));
        }
        let request: SubmitRequest = serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                ApiError::Unprocessable(format!("request body does not fit: {e}"))
            } else {
                ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
            }
        })?;
        let source = match request.pipeline {
            Value::String(text) => PipelineSource::Yaml(text),
            obj @ Value::Object(_) => PipelineSource::Json(obj),
            _ => {
                return Err(ApiError::Unprocessable(
                    "'pipeline' must be YAML text or an object".to_string(),
                ));
            }
        };
        Ok(ParsedBody {
            source,
            context: request.context,
            options: request.options.unwrap_or_default(),
        })
    } else {
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("request body is not UTF-8 text".to_string()))?;
        let context = (!query.is_empty()).then(|| inputs_from_query(&query));
        Ok(ParsedBody {
            source: PipelineSource::Yaml(text),
            context,
            options: OptionsDto::default(),
        })
    }
}
