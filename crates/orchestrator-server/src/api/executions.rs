//! `/executions`: submitting, listing, reading, cancelling and recovering
//! executions.

use super::*;

/// The longest execution-wide timeout: ten years.
const MAX_TIMEOUT_SECONDS: u64 = 315_360_000;

pub(super) fn engine_options(dto: &OptionsDto) -> Result<ExecutionOptions, ApiError> {
    let workspace = match dto.workspace.as_deref() {
        None | Some("shared") => WorkspaceMode::Shared,
        Some("isolated") => WorkspaceMode::Isolated,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "options.workspace '{other}' is not 'shared' or 'isolated'"
            )));
        }
    };
    if dto
        .timeout_seconds
        .is_some_and(|t| !(1..=MAX_TIMEOUT_SECONDS).contains(&t))
    {
        return Err(ApiError::Unprocessable(format!(
            "options.timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS} (ten years)"
        )));
    }
    if dto.max_retries.is_some_and(|n| !(1..=100).contains(&n)) {
        return Err(ApiError::Unprocessable(
            "options.max_retries (attempts in all) must be between 1 and 100".to_string(),
        ));
    }
    if let Some(c) = dto.max_cost
        && !(c.is_finite() && c >= 0.0)
    {
        return Err(ApiError::Unprocessable(
            "options.max_cost must be zero or more (US dollars)".to_string(),
        ));
    }
    Ok(ExecutionOptions {
        checkpoint_enabled: dto.checkpoint_enabled.unwrap_or(true),
        max_retries: dto.max_retries,
        workspace,
        timeout_seconds: dto.timeout_seconds,
        max_cost: dto.max_cost,
    })
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".to_string()))?
        .trim()
        .to_string();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must have 1 to 255 characters".to_string(),
        ));
    }
    Ok(Some(key))
}

pub(crate) fn parse_execution_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::BadRequest(format!("'{id}' is not a valid execution id (a UUID)")))
}

pub(super) async fn load_view(state: &AppState, id: &str) -> Result<ExecutionView, ApiError> {
    let store = state.engine().store();
    let record = store
        .get_execution_view(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("execution '{id}' does not exist")))?;
    let steps = store.list_step_summaries(id).await?;
    let usage = store.execution_usage(id).await?;
    let waits = if steps
        .iter()
        .any(|s| s.status == orchestrator_core::flow::StepStatus::Waiting)
    {
        store.list_waits(Some(id), 1000).await?
    } else {
        Vec::new()
    };
    Ok(ExecutionView::new(record, steps)
        .with_usage(&usage)
        .with_waits(&waits))
}

/// Submit a pipeline for execution.
///
/// The body is JSON (`{pipeline, context, options}`, where `pipeline` is YAML
/// text or an object) or raw YAML (`Content-Type: application/yaml`, inputs as
/// query parameters). With an `Idempotency-Key` header, repeating the same
/// request returns the original execution.
#[utoipa::path(
    post,
    path = "/executions",
    tag = TAG_EXECUTIONS,
    operation_id = "create_execution",
    request_body(content(
        (SubmitRequest = "application/json"),
        (String = "application/yaml", example = "name: hello\nsteps:\n  - id: say\n    tool: echo\n    parameters: {text: hi}\n")
    )),
    params(("Idempotency-Key" = Option<String>, Header, description = "De-duplicates retried submissions")),
    responses(
        (status = 201, description = "Execution accepted: `queued` (already `running` when this server's workers took its first steps), or `resolving` while its `<AUTO>` tags are answered", body = ExecutionView,
            headers(("Location" = String, description = "URL of the new execution"))),
        (status = 200, description = "Idempotent replay: the original execution", body = ExecutionView,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported Content-Type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Pipeline invalid (every error with line, column and step), or idempotency key reused with another request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many steps queued; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn create_execution(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let token_id = admit(&state, caller.as_ref().map(|c| &c.0)).await?;
    let parsed = parse_body(&state, &headers, query, body)?;
    let options = engine_options(&parsed.options)?;
    let submission = Submission {
        source: parsed.source,
        context: parsed.context.unwrap_or_default(),
        options,
        idempotency_key: key,
        token_id,
    };
    submitted(&state, submission).await
}

/// Refuses a submission while the queue is full or the caller's token has
/// too many executions active (429); returns the caller's token id.
pub(super) async fn admit(
    state: &AppState,
    caller: Option<&crate::auth::Caller>,
) -> Result<Option<String>, ApiError> {
    let depth = state.engine().store().queue_depth().await?;
    let limit = state.settings().max_queued_steps;
    if u64::try_from(depth).unwrap_or(0) >= limit {
        return Err(ApiError::TooManyRequests(
            format!("{depth} steps are queued (the limit is {limit}); try again shortly"),
            5,
        ));
    }
    let token_id = caller.map(|c| c.token_id.clone());
    let per_token = state.settings().auth.max_active_executions_per_token;
    if let Some(id) = &token_id
        && per_token > 0
    {
        let active = state
            .engine()
            .store()
            .active_executions_of_token(id)
            .await?;
        if u64::try_from(active).unwrap_or(0) >= per_token {
            return Err(ApiError::TooManyRequests(
                format!(
                    "this token has {active} executions queued or running \
                     (the limit is {per_token}: auth.max_active_executions_per_token); try again when one finishes"
                ),
                5,
            ));
        }
    }
    Ok(token_id)
}

/// Submits and answers as `POST /executions` does: 201 with `Location`, or
/// 200 for an idempotent replay.
pub(super) async fn submitted(
    state: &AppState,
    submission: Submission,
) -> Result<Response, ApiError> {
    let (record, created) = state.engine().submit(submission).await?;
    let view = load_view(state, &record.id).await?;
    let location = format!("/executions/{}", record.id);
    let mut response = if created {
        (StatusCode::CREATED, axum::Json(view)).into_response()
    } else {
        let mut r = (StatusCode::OK, axum::Json(view)).into_response();
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        r
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// List executions, newest first.
#[utoipa::path(
    get,
    path = "/executions",
    tag = TAG_EXECUTIONS,
    operation_id = "list_executions",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionPage),
        (status = 400, description = "Unknown filter or bad value", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_executions(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<ExecutionPage>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|s| {
            ExecutionStatus::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status '{s}' is not one of resolving, queued, running, succeeded, failed, cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} is not between 1 and 200"
        )));
    }
    let before = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.split_once('.')
                .and_then(|(ms, id)| {
                    Some((
                        ms.parse::<i64>().ok()?,
                        uuid::Uuid::parse_str(id).ok()?.to_string(),
                    ))
                })
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("cursor '{c}' is not one this server issued"))
                })
        })
        .transpose()?;
    let filter = ExecutionFilter {
        status,
        pipeline: query.pipeline,
        limit: limit + 1,
        before,
        parent: query.parent,
        parent_step: None,
    };
    let mut records = state.engine().store().list_executions(&filter).await?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| format!("{}.{}", r.created_at, r.id))
    } else {
        None
    };
    Ok(ApiJson(ExecutionPage {
        items: records.iter().map(ExecutionSummary::from).collect(),
        next_cursor,
    }))
}

/// Get an execution: status, progress, each step's result, levels and outputs.
#[utoipa::path(
    get,
    path = "/executions/{id}",
    tag = TAG_EXECUTIONS,
    operation_id = "get_execution",
    params(("id" = uuid::Uuid, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionView),
        (status = 400, description = "Not a valid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_execution_id(&id)?;
    // A view of a large execution may be kept from a moment ago
    // (`crate::views`); its status is read fresh every time.
    let Some((status, seq)) = state.engine().store().execution_version(&id).await? else {
        state.views().forget(&id);
        return Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        )));
    };
    let body = match state.views().get(&id, status, seq) {
        Some(body) => body,
        None => {
            let started = std::time::Instant::now();
            let view = load_view(&state, &id).await?;
            let body = axum::body::Bytes::from(serde_json::to_vec(&view).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!(
                    "the view of execution '{id}' cannot be written: {e}"
                ))
            })?);
            // Kept under the status and event it was read at: the view's
            // own status is at least as new as the one read before.
            if view.status == status.as_str() {
                state
                    .views()
                    .put(&id, status, seq, body.clone(), started.elapsed());
            }
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// List an execution's checkpoints (every recorded step attempt), oldest first.
#[utoipa::path(
    get,
    path = "/executions/{id}/checkpoints",
    tag = TAG_EXECUTIONS,
    operation_id = "list_checkpoints",
    params(("id" = uuid::Uuid, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The checkpoints", body = CheckpointList),
        (status = 400, description = "Not a valid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_checkpoints(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<CheckpointList>, ApiError> {
    let id = parse_execution_id(&id)?;
    let store = state.engine().store();
    if store.get_execution(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        )));
    }
    let items = store
        .list_checkpoints(&id)
        .await?
        .iter()
        .map(CheckpointView::from)
        .collect();
    Ok(ApiJson(CheckpointList {
        execution_id: id,
        items,
    }))
}

/// Query of `GET /executions/{id}/graph`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// `mermaid` (default) or `dot`.
    pub format: Option<String>,
}

/// The execution's DAG with each step's status, as Mermaid or Graphviz text.
#[utoipa::path(
    get,
    path = "/executions/{id}/graph",
    tag = TAG_EXECUTIONS,
    operation_id = "get_execution_graph",
    params(("id" = uuid::Uuid, Path, description = "Execution id"), GraphQuery),
    responses(
        (status = 200, description = "The graph", content(
            (String = "text/vnd.mermaid", example = "flowchart TD\n  n0[\"read<br/><i>succeeded</i>\"]:::succeeded\n  n1[\"save<br/><i>running</i>\"]:::running\n  n0 --> n1\n"),
            (String = "text/vnd.graphviz")
        )),
        (status = 400, description = "Not a valid id or format", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_execution_graph(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<GraphQuery>,
) -> Result<Response, ApiError> {
    let id = parse_execution_id(&id)?;
    let store = state.engine().store();
    let record = store
        .get_execution(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("execution '{id}' does not exist")))?;
    let steps = store.list_steps(&id).await?;
    let (text, content_type) = match query.format.as_deref().unwrap_or("mermaid") {
        "mermaid" => (
            crate::graph::mermaid(&steps),
            "text/vnd.mermaid; charset=utf-8",
        ),
        "dot" | "graphviz" => (
            crate::graph::dot(&record.pipeline_name, &steps),
            "text/vnd.graphviz; charset=utf-8",
        ),
        other => {
            return Err(ApiError::BadRequest(format!(
                "format '{other}' is not mermaid or dot"
            )));
        }
    };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// What `DELETE /executions/{id}` removed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeletedView {
    /// The execution, then the executions it started (at any depth).
    pub deleted: Vec<String>,
}

/// Delete a finished execution, with the executions its steps started and
/// everything they own (steps, checkpoints, events, webhook deliveries,
/// logs, questions, memory). Scope `admin`. Refused (`409`) while any of
/// them has not ended: cancel it first. Retention (`retention:` in the
/// configuration) does the same by age and count.
#[utoipa::path(
    delete,
    path = "/executions/{id}",
    tag = TAG_EXECUTIONS,
    operation_id = "delete_execution",
    params(("id" = uuid::Uuid, Path, description = "Execution id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedView),
        (status = 400, description = "Not a valid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It, or an execution it started, has not ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<DeletedView>, ApiError> {
    let id = parse_execution_id(&id)?;
    match state.engine().delete_execution(&id).await? {
        orchestrator_store::Deleted::Done(deleted) => {
            for gone in &deleted {
                state.views().forget(gone);
            }
            Ok(ApiJson(DeletedView { deleted }))
        }
        orchestrator_store::Deleted::NotFound => Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        ))),
        orchestrator_store::Deleted::Unfinished(open) => {
            let list: Vec<String> = open
                .iter()
                .map(|(e, st)| format!("{e} ({})", st.as_str()))
                .collect();
            Err(ApiError::Conflict(format!(
                "cannot delete execution '{id}': not ended yet: {}; cancel it first",
                list.join(", ")
            )))
        }
    }
}

/// Cancel an execution: steps not started are cancelled, running steps are stopped.
///
/// Idempotent: cancelling a finished execution changes nothing and returns it.
#[utoipa::path(
    post,
    path = "/executions/{id}/cancel",
    tag = TAG_EXECUTIONS,
    operation_id = "cancel_execution",
    params(("id" = uuid::Uuid, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution after cancelling", body = ExecutionView),
        (status = 400, description = "Not a valid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<ExecutionView>, ApiError> {
    let id = parse_execution_id(&id)?;
    if state.engine().cancel(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        )));
    }
    Ok(ApiJson(load_view(&state, &id).await?))
}

/// Recover a finished execution from its checkpoints without redoing finished steps.
#[utoipa::path(
    post,
    path = "/executions/{id}/recover",
    tag = TAG_EXECUTIONS,
    operation_id = "recover_execution",
    params(("id" = uuid::Uuid, Path, description = "Execution id")),
    request_body(content = Option<RecoverRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "The execution runs again", body = RecoverResult),
        (status = 400, description = "Not a valid id or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The execution is still running, or there is nothing to recover", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such step or checkpoint", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recover_execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ApiJson<RecoverResult>, ApiError> {
    let id = parse_execution_id(&id)?;
    let body = body?;
    let request: RecoverRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RecoverRequest::default()
    } else {
        serde_json::from_slice::<Option<RecoverRequest>>(&body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid: {e}")))?
            .unwrap_or_default()
    };
    let store = state.engine().store();
    let from = match request.from_checkpoint {
        None | Some(Value::Null) => None,
        Some(Value::String(step)) => Some(step),
        Some(Value::Number(n)) => {
            let checkpoint = n.as_i64();
            let found = store
                .list_checkpoints(&id)
                .await?
                .into_iter()
                .find(|c| Some(c.id) == checkpoint);
            match found {
                Some(c) => Some(c.step_id),
                None => {
                    return Err(ApiError::Unprocessable(format!(
                        "execution '{id}' has no checkpoint {n}"
                    )));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "from_checkpoint is a step id or a checkpoint id".into(),
            ));
        }
    };
    let Some(rerun) = state.engine().recover(&id, from.as_deref()).await? else {
        return Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        )));
    };
    Ok(ApiJson(RecoverResult {
        rerun,
        execution: load_view(&state, &id).await?,
    }))
}

/// Answer a step that waits for a person.
///
/// The body is the answer, checked against the question's schema
/// (`steps[].waiting.request.schema` in the execution, or `GET /waiting`):
/// `{"value": …}` for `user-prompt`; `{"action": "approve"|"reject"|"modify",
/// "reason": …, "modified_content": …}` for `approval-gate`; `{"responses":
/// {question id: answer}}` for `feedback-collection`. It is recorded with the
/// name of the token that sent it, and the step goes on.
#[utoipa::path(
    post,
    path = "/executions/{id}/steps/{step}/answer",
    tag = TAG_EXECUTIONS,
    operation_id = "answer_step",
    params(
        ("id" = uuid::Uuid, Path, description = "Execution id"),
        ("step" = String, Path, description = "Step id"),
    ),
    request_body(content = Object, content_type = "application/json",
        example = json!({"action": "approve"})),
    responses(
        (status = 200, description = "The answer was recorded; the step goes on", body = WaitView),
        (status = 400, description = "Not a valid id or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution, or the step asks nothing", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The step is not waiting: answered already, past its deadline, or ended", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The answer does not fit the question", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn answer_step(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    ApiJson(answer): ApiJson<Value>,
) -> Result<ApiJson<WaitView>, ApiError> {
    let id = parse_execution_id(&id)?;
    if !answer.is_object() {
        return Err(ApiError::BadRequest(
            "the answer is a JSON object (see the question's schema)".into(),
        ));
    }
    let by = caller.map(|c| c.0.name.clone());
    match state
        .engine()
        .answer(&id, &step, &answer, by.as_deref())
        .await
    {
        Ok(done) => Ok(ApiJson(WaitView::from(&done))),
        Err(orchestrator_engine::AnswerError::NotFound(m)) => Err(ApiError::NotFound(m)),
        Err(orchestrator_engine::AnswerError::NotWaiting(m)) => Err(ApiError::Conflict(m)),
        Err(orchestrator_engine::AnswerError::Invalid(m)) => Err(ApiError::Unprocessable(format!(
            "the answer does not fit the question: {m}"
        ))),
        Err(orchestrator_engine::AnswerError::Store(e)) => Err(e.into()),
    }
}

/// Every step waiting for a person, oldest question first.
#[utoipa::path(
    get,
    path = "/waiting",
    tag = TAG_EXECUTIONS,
    operation_id = "list_waiting",
    params(WaitingQuery),
    responses(
        (status = 200, description = "Open questions", body = WaitPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_waiting(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<WaitingQuery>,
) -> Result<ApiJson<WaitPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 1000, got {limit}"
        )));
    }
    let waits = state.engine().waiting(None, limit).await?;
    Ok(ApiJson(WaitPage {
        items: waits.iter().map(WaitView::from).collect(),
    }))
}
