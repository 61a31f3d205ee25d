//! `GET /executions/{id}/events`: an execution's events as Server-Sent
//! Events, from the store, resumable with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use orchestrator_core::flow::ExecutionStatus;
use orchestrator_store::EventRecord;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::TAG_EXECUTIONS;
use crate::app::AppState;
use crate::error::{ApiError, ApiPath, ApiQuery, Problem};

/// Query of `GET /executions/{id}/events`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Start after this event number (as `Last-Event-ID` does; the header wins).
    #[param(minimum = 0, maximum = 1_000_000_000_000i64)]
    pub after: Option<i64>,
}

/// Longest wait for news before looking in the store again (events written
/// by other processes are only seen there).
const POLL: Duration = Duration::from_millis(500);

struct Cursor {
    id: String,
    state: AppState,
    last: i64,
    buffer: VecDeque<EventRecord>,
    signals: tokio::sync::broadcast::Receiver<String>,
    done: bool,
}

fn sse_event(e: &EventRecord) -> Event {
    let body = serde_json::json!({
        "seq": e.seq,
        "kind": e.kind,
        "step_id": e.step_id,
        "data": e.data,
        "created_at": crate::dto::time(e.created_at),
    });
    Event::default()
        .id(e.seq.to_string())
        .event(e.kind.clone())
        .data(body.to_string())
}

impl Cursor {
    /// The next event, waiting for it; `None` once the execution has ended
    /// and every event was sent.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.last = e.seq;
                return Some(sse_event(&e));
            }
            if self.done {
                return None;
            }
            let store = self.state.engine().store();
            match store.list_events(&self.id, self.last, 500).await {
                Ok(events) if !events.is_empty() => {
                    self.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(execution.id = %self.id, error = ?e, "reading events failed")
                }
            }
            if let Ok(Some(execution)) = store.get_execution(&self.id).await
                && matches!(
                    execution.status,
                    ExecutionStatus::Succeeded
                        | ExecutionStatus::Failed
                        | ExecutionStatus::Cancelled
                )
                && execution.last_event_seq <= self.last
            {
                self.done = true;
                return None;
            }
            // Wait for this process to write one of its events, or poll.
            let deadline = tokio::time::Instant::now() + POLL;
            loop {
                match tokio::time::timeout_at(deadline, self.signals.recv()).await {
                    Ok(Ok(id)) if id == self.id => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
                }
            }
        }
    }
}

/// One Server-Sent Event as a client reads it: `id`, `event` and `data`
/// (JSON text).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SseEvent {
    /// The event's number: resume after it with `Last-Event-ID`.
    #[schema(example = "1")]
    pub id: String,
    #[schema(example = "execution.queued")]
    pub event: String,
    /// The event as JSON text.
    pub data: String,
}

/// Where a resumable stream starts: after `Last-Event-ID` (which wins) or
/// `?after=`, else from the start.
pub(crate) fn resume_after(
    headers: &HeaderMap,
    after: Option<i64>,
    what: &str,
) -> Result<i64, ApiError> {
    const MAX: i64 = 1_000_000_000_000;
    if after.is_some_and(|a| !(0..=MAX).contains(&a)) {
        return Err(ApiError::BadRequest(format!(
            "after must be {what} from 0 to {MAX}"
        )));
    }
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|n| (0..=MAX).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("Last-Event-ID must be {what}"))),
        None => Ok(after.unwrap_or(0).max(0)),
    }
}

/// Stream an execution's events (Server-Sent Events).
///
/// Each event has `id` (its number, from 1, without gaps), `event` (its kind:
/// `execution.resolving`, `execution.queued`, `execution.started`,
/// `execution.succeeded|failed|cancelled`, `execution.recovered`,
/// `step.ready`, `step.started`, `step.succeeded`, `step.failed`,
/// `step.retrying`, `step.skipped`, `step.cancelled`, `step.expanded`,
/// `step.waiting` (with the question), `step.answered`, `step.wait_expired`) and JSON `data` `{seq, kind, step_id, data, created_at}`.
/// Events already written come first; the stream ends after the execution's
/// last event. Reconnect with `Last-Event-ID` (or `?after=`) to resume with no
/// gap and no duplicate; `GET /executions/{id}` gives `last_event_seq` for a
/// snapshot-then-stream client.
#[utoipa::path(
    get,
    path = "/executions/{id}/events",
    tag = TAG_EXECUTIONS,
    operation_id = "stream_execution_events",
    params(
        ("id" = uuid::Uuid, Path, description = "Execution id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event", minimum = 0, maximum = 1_000_000_000_000i64),
        EventsQuery
    ),
    responses(
        (status = 200, description = "The event stream", body = SseEvent, content_type = "text/event-stream",
            example = "id: 1\nevent: execution.queued\ndata: {\"seq\":1,\"kind\":\"execution.queued\",\"step_id\":null,\"data\":{\"pipeline\":\"hello\",\"steps\":2},\"created_at\":\"2026-11-29T08:30:00.123Z\"}\n\n"),
        (status = 400, description = "Not a valid id or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn execution_events(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = crate::api::parse_execution_id(&id)?;
    let after = resume_after(&headers, query.after, "an event number")?;
    // Subscribe before the first read, so nothing written in between is missed.
    let signals = state.engine().subscribe_events();
    if state.engine().store().get_execution(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "execution '{id}' does not exist"
        )));
    }
    let cursor = Cursor {
        id,
        state,
        last: after,
        buffer: VecDeque::new(),
        signals,
        done: false,
    };
    let stream =
        futures_util::stream::unfold(
            cursor,
            |mut c| async move { c.next().await.map(|e| (Ok(e), c)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
