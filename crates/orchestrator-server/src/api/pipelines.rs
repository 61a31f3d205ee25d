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
