//! `/pipelines/validate`: compiling without running.

use super::*;

/// Compile a pipeline without running it: its execution levels, or every error.
///
/// An invalid pipeline answers 422 with every error. With
/// `Prefer: handling=lenient` (RFC 7240) it answers 200 with `valid: false`
/// and the errors in the body instead, for clients (such as the web console)
/// that treat "this pipeline has errors" as a normal answer; the response then
/// carries `Preference-Applied: handling=lenient`.
#[utoipa::path(
    post,
    path = "/pipelines/validate",
    tag = TAG_PIPELINES,
    operation_id = "validate_pipeline",
    params(
        ("Prefer" = Option<String>, Header, description = "`handling=lenient`: compile errors come as a 200 with `valid: false`")
    ),
    request_body(content(
        (SubmitRequest = "application/json"),
        (String = "application/yaml")
    )),
    responses(
        (status = 200, description = "The pipeline compiles (or, with `Prefer: handling=lenient`, the errors)", body = ValidationResult),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Pipeline invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn validate_pipeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let lenient = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"));
    let parsed = parse_body(&state, &headers, query, body)?;
    // The options are checked as a submission checks them.
    super::executions::engine_options(&parsed.options)?;
    let compiled = match state
        .engine()
        .compile_blocking(parsed.source.clone(), parsed.context.clone(), None)
        .await
    {
        Ok(compiled) => compiled,
        Err(e) if lenient => {
            return Ok((
                [("preference-applied", "handling=lenient")],
                ApiJson(ValidationResult {
                    valid: false,
                    pipeline_id: String::new(),
                    name: String::new(),
                    steps: 0,
                    levels: Vec::new(),
                    errors: e.errors.iter().map(ProblemItem::from).collect(),
                    warnings: e.warnings.iter().map(ProblemItem::from).collect(),
                }),
            )
                .into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let plan = compiled.plan;
    Ok(ApiJson(ValidationResult {
        valid: true,
        pipeline_id: plan.pipeline.id.clone(),
        name: plan.pipeline.name.clone(),
        steps: plan.steps.len(),
        levels: plan.levels,
        errors: Vec::new(),
        warnings: compiled.warnings.iter().map(ProblemItem::from).collect(),
    })
    .into_response())
}

/// A stored pipeline's name: a letter, then letters, digits, `-` and `_`.
fn check_name(name: &str) -> Result<(), ApiError> {
    // `validate` is `POST /pipelines/validate`.
    let ok = name != "validate"
        && name.len() <= 100
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "pipeline name '{name}' must match ^[A-Za-z][A-Za-z0-9_-]*$ (at most 100 characters, not 'validate')"
        )))
    }
}

/// Store a pipeline under a name: each `PUT` is a new version.
///
/// The body is the pipeline as `POST /pipelines/validate` takes it (YAML
/// text, or JSON `{pipeline}`); it is compiled first, and an invalid
/// pipeline is refused with every error. Run it with
/// `POST /pipelines/{name}/executions`, or from a step
/// (`pipeline-executor`, `pipeline: name` or `name@version`).
#[utoipa::path(
    put,
    path = "/pipelines/{name}",
    tag = TAG_PIPELINES,
    operation_id = "put_pipeline",
    params(("name" = String, Path, description = "The pipeline's name")),
    request_body(content(
        (SubmitRequest = "application/json"),
        (String = "application/yaml", example = "name: hello\nsteps:\n  - id: say\n    tool: echo\n    parameters: {text: hi}\n")
    )),
    responses(
        (status = 201, description = "Stored as a new version", body = StoredPipeline,
            headers(("Location" = String, description = "URL of this version"))),
        (status = 400, description = "Malformed request or name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported Content-Type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Pipeline invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_pipeline(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let parsed = parse_body(&state, &headers, BTreeMap::new(), body)?;
    let compiled = state
        .engine()
        .compile_blocking(parsed.source.clone(), None, None)
        .await?;
    let (source, format) = match &parsed.source {
        PipelineSource::Yaml(text) => (text.clone(), "yaml"),
        PipelineSource::Json(value) => (value.to_string(), "json"),
    };
    let by = caller.map(|c| c.0.name.clone());
    let record = state
        .engine()
        .store()
        .put_pipeline(&name, &source, format, by.as_deref())
        .await?;
    let stored = StoredPipeline {
        name: record.name.clone(),
        version: record.version,
        format: record.format.clone(),
        created_at: crate::dto::time(record.created_at),
        created_by: record.created_by.clone(),
        pipeline_id: compiled.plan.pipeline.id.clone(),
        steps: compiled.plan.steps.len(),
        source: None,
        warnings: compiled.warnings.iter().map(ProblemItem::from).collect(),
    };
    let mut response = (StatusCode::CREATED, axum::Json(stored)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/pipelines/{name}?version={}", record.version)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Every stored pipeline, by name, with its newest version.
#[utoipa::path(
    get,
    path = "/pipelines",
    tag = TAG_PIPELINES,
    operation_id = "list_pipelines",
    responses((status = 200, description = "Stored pipelines", body = PipelineList))
)]
pub async fn list_pipelines(
    State(state): State<AppState>,
) -> Result<ApiJson<PipelineList>, ApiError> {
    let items = state.engine().store().list_pipelines().await?;
    Ok(ApiJson(PipelineList {
        items: items
            .into_iter()
            .map(|p| PipelineListItem {
                name: p.name,
                latest_version: p.latest_version,
                created_at: crate::dto::time(p.created_at),
                updated_at: crate::dto::time(p.updated_at),
            })
            .collect(),
    }))
}

/// One stored pipeline with its text: the newest version, or `?version=`.
#[utoipa::path(
    get,
    path = "/pipelines/{name}",
    tag = TAG_PIPELINES,
    operation_id = "get_pipeline",
    params(("name" = String, Path, description = "The pipeline's name"), VersionQuery),
    responses(
        (status = 200, description = "The pipeline", body = StoredPipeline),
        (status = 400, description = "Bad name or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such pipeline or version", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_pipeline(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<VersionQuery>,
) -> Result<ApiJson<StoredPipeline>, ApiError> {
    check_name(&name)?;
    let record = stored(&state, &name, query.version).await?;
    let source = match record.format.as_str() {
        "json" => PipelineSource::Json(serde_json::from_str(&record.source).unwrap_or_default()),
        _ => PipelineSource::Yaml(record.source.clone()),
    };
    let compiled = state.engine().compile_blocking(source, None, None).await;
    let (pipeline_id, steps) = match &compiled {
        Ok(c) => (c.plan.pipeline.id.clone(), c.plan.steps.len()),
        Err(_) => (String::new(), 0),
    };
    Ok(ApiJson(StoredPipeline {
        name: record.name.clone(),
        version: record.version,
        format: record.format.clone(),
        created_at: crate::dto::time(record.created_at),
        created_by: record.created_by.clone(),
        pipeline_id,
        steps,
        source: Some(record.source),
        warnings: Vec::new(),
    }))
}

/// A stored version, or 404 naming what is missing.
async fn stored(
    state: &AppState,
    name: &str,
    version: Option<i64>,
) -> Result<orchestrator_store::PipelineRecord, ApiError> {
    state
        .engine()
        .store()
        .get_pipeline(name, version)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(match version {
                Some(v) => format!("pipeline '{name}' has no version {v}"),
                None => format!("no pipeline is stored as '{name}'"),
            })
        })
}

/// Run a stored pipeline (its newest version, or `version`).
///
/// Takes `{context, options, version}` (each optional) and answers as
/// `POST /executions` does, `Idempotency-Key` included.
#[utoipa::path(
    post,
    path = "/pipelines/{name}/executions",
    tag = TAG_PIPELINES,
    operation_id = "run_pipeline",
    params(("name" = String, Path, description = "The pipeline's name")),
    request_body(content = Option<RunPipelineRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "Execution accepted", body = ExecutionView,
            headers(("Location" = String, description = "URL of the new execution"))),
        (status = 200, description = "Idempotent replay: the original execution", body = ExecutionView),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such pipeline or version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Inputs that do not fit the pipeline", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many steps queued", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn run_pipeline(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let body = body.map_err(ApiError::from)?;
    let request: RunPipelineRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunPipelineRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_data() {
                ApiError::Unprocessable(format!("request body does not fit: {e}"))
            } else {
                ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
            }
        })?
    };
    let key = super::executions::idempotency_key(&headers)?;
    let token_id = super::executions::admit(&state, caller.as_ref().map(|c| &c.0)).await?;
    let record = stored(&state, &name, request.version).await?;
    let source = match record.format.as_str() {
        "json" => PipelineSource::Json(serde_json::from_str(&record.source).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("stored pipeline '{name}' is corrupt: {e}"))
        })?),
        _ => PipelineSource::Yaml(record.source),
    };
    let submission = Submission {
        source,
        context: request.context.unwrap_or_default(),
        options: super::executions::engine_options(&request.options.unwrap_or_default())?,
        idempotency_key: key,
        token_id,
    };
    super::executions::submitted(&state, submission).await
}
