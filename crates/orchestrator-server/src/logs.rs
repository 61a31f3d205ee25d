//! `GET /executions/{id}/steps/{step}/logs`: a step's log lines, as a page
//! of JSON or (`?follow=true`) as Server-Sent Events until the step ends,
//! resumable with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use orchestrator_store::LogLine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::TAG_EXECUTIONS;
use crate::app::AppState;
use crate::dto::time;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};

/// Query of `GET /executions/{id}/steps/{step}/logs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines numbered after this one (as `Last-Event-ID` does when following;
    /// the header wins).
    #[param(minimum = 0, maximum = 1_000_000_000_000i64)]
    pub after: Option<i64>,
    /// At most this many lines in a page (1–10000, default 1000).
    pub limit: Option<u32>,
    /// Stream the lines as Server-Sent Events, new ones as they are
    /// written, until the step has ended.
    pub follow: Option<bool>,
}

/// One line of a step's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLineView {
    /// Numbered from 1 per step, across its attempts.
    pub seq: i64,
    pub attempt: i64,
    /// `stdout`, `stderr`, or `log` (the tool's own line, and the marker
    /// where lines were dropped to keep the log within its bound).
    #[schema(example = "stdout")]
    pub stream: String,
    pub at: String,
    pub line: String,
}

impl From<&LogLine> for LogLineView {
    fn from(l: &LogLine) -> Self {
        LogLineView {
            seq: l.seq,
            attempt: l.attempt,
            stream: l.stream.clone(),
            at: time(l.at),
            line: l.line.clone(),
        }
    }
}

/// A page of a step's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogPage {
    pub items: Vec<LogLineView>,
    /// Ask again with `after` set to this for what follows.
    pub next_after: i64,
    /// The step's status; once it has ended, no more lines come.
    #[schema(example = "failed")]
    pub step_status: String,
}

/// Longest wait before looking for new lines again (a running step's lines
/// are written every 200 ms).
const POLL: Duration = Duration::from_millis(250);

/// A step's log: its command's stdout and stderr and its tool's own lines.
///
/// Lines of every attempt, numbered from 1 per step. Each attempt keeps at
/// most `limits.step_log_bytes` (its first and its last half; a marker line
/// says how many lines between were dropped). A page by default;
/// `?follow=true` streams them as Server-Sent Events (`event: log`, `id` the
/// line's number, `data` the line as JSON) as they are written, and ends when
/// the step has ended and every line was sent. Reconnect with
/// `Last-Event-ID` (or `?after=`) to resume.
#[utoipa::path(
    get,
    path = "/executions/{id}/steps/{step}/logs",
    tag = TAG_EXECUTIONS,
    operation_id = "get_step_logs",
    params(
        ("id" = uuid::Uuid, Path, description = "Execution id"),
        ("step" = String, Path, description = "Step id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this line (when following)", minimum = 0, maximum = 1_000_000_000_000i64),
        LogsQuery
    ),
    responses(
        (status = 200, description = "The step's log lines", content(
            (LogPage = "application/json"),
            (crate::events::SseEvent = "text/event-stream", example = "id: 1\nevent: log\ndata: {\"seq\":1,\"attempt\":1,\"stream\":\"stdout\",\"at\":\"2026-11-29T08:30:00.123Z\",\"line\":\"compiling\"}\n\n"),
        )),
        (status = 400, description = "Not a valid id, query or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such execution or step", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn step_logs(
    State(state): State<AppState>,
    ApiPath((id, step)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = crate::api::parse_execution_id(&id)?;
    let limit = query.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 10000, got {limit}"
        )));
    }
    let after = crate::events::resume_after(&headers, query.after, "a line number")?;
    let store = state.engine().store();
    let Some(status) = store.step_status(&id, &step).await? else {
        return Err(if store.get_execution(&id).await?.is_none() {
            ApiError::NotFound(format!("execution '{id}' does not exist"))
        } else {
            ApiError::NotFound(format!("execution '{id}' has no step '{step}'"))
        });
    };
    if query.follow != Some(true) {
        let lines = store.step_log(&id, &step, after, i64::from(limit)).await?;
        return Ok(ApiJson(LogPage {
            next_after: lines.last().map_or(after, |l| l.seq),
            items: lines.iter().map(LogLineView::from).collect(),
            step_status: status.as_str().to_string(),
        })
        .into_response());
    }
    let follower = Follower {
        state,
        id,
        step,
        last: after,
        buffer: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|e| (Ok::<_, Infallible>(e), f))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Follower {
    state: AppState,
    id: String,
    step: String,
    last: i64,
    buffer: VecDeque<LogLine>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(l) = self.buffer.pop_front() {
                self.last = l.seq;
                let data = serde_json::to_string(&LogLineView::from(&l)).unwrap_or_default();
                return Some(
                    Event::default()
                        .id(l.seq.to_string())
                        .event("log")
                        .data(data),
                );
            }
            if self.done {
                return None;
            }
            let store = self.state.engine().store();
            // The status first: lines written before it ended are then
            // certainly in the read that follows.
            let status = store.step_status(&self.id, &self.step).await;
            match store.step_log(&self.id, &self.step, self.last, 500).await {
                Ok(lines) if !lines.is_empty() => {
                    self.buffer.extend(lines);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(execution.id = %self.id, step.id = %self.step, error = ?e, "reading a step's log failed");
                }
            }
            match status {
                Ok(Some(s)) if s.is_terminal() => {
                    self.done = true;
                    return None;
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
}
