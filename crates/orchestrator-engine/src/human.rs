//! Steps that ask a person (`user-prompt`, `approval-gate`,
//! `feedback-collection`): the first run stores the question and leaves the
//! step `waiting` (no lease, no worker, no task); an answer or the deadline
//! queues it again, and the next run turns the answer into its result.

use std::sync::Arc;

use orchestrator_store::{ClaimedStep, StoreError, WaitRecord, now_ms};
use orchestrator_tools::human::{Answered, Asking, Human};
use orchestrator_tools::{ErrorKind, ToolContext};
use serde_json::{Map, Value};

use crate::step::Attempt;
use crate::{Engine, Inner};

/// Runs a step of a tool that asks a person.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    claimed: &ClaimedStep,
    tool_id: &str,
    human: &dyn Human,
    parameters: &Map<String, Value>,
    ctx: &ToolContext,
) -> Attempt {
    let shown = Some(Value::Object(parameters.clone()));
    let wait = match inner
        .store
        .get_wait(&claimed.execution_id, &claimed.step_id)
        .await
    {
        Ok(wait) => wait,
        Err(e) => return Attempt::failed(ErrorKind::StoreError, e.to_string(), shown),
    };
    if let Some(wait) = wait.filter(|w| w.answered_at.is_some()) {
        let answered = Answered {
            answer: if wait.expired {
                None
            } else {
                wait.answer.clone()
            },
            by: wait.answered_by.clone(),
            response_secs: (wait.answered_at.unwrap_or(wait.created_at) - wait.created_at).max(0)
                as f64
                / 1000.0,
        };
        return match human
            .result(parameters, &wait.request, &answered, ctx)
            .await
        {
            Ok(result) => Attempt::succeeded(result, shown, None),
            Err(e) => Attempt::failed(e.kind, e.message, shown),
        };
    }
    match human.ask(parameters) {
        Err(e) => Attempt::failed(e.kind, e.message, shown),
        Ok(Asking::Now(result)) => Attempt::succeeded(result, shown, None),
        Ok(Asking::Question {
            request,
            timeout_secs,
        }) => {
            let deadline = timeout_secs.map(|t| now_ms().saturating_add((t * 1000.0) as i64));
            match inner
                .store
                .wait_step(claimed, tool_id, &request, shown.as_ref(), deadline)
                .await
            {
                // A lost lease: another worker has the step now.
                Ok(()) | Err(StoreError::LeaseLost { .. }) => Attempt::waiting(),
                Err(e) => Attempt::failed(ErrorKind::StoreError, e.to_string(), shown),
            }
        }
    }
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No such execution or step, or the step never asked.
    #[error("{0}")]
    NotFound(String),
    /// The step is not waiting (answered already, timed out, ended).
    #[error("{0}")]
    NotWaiting(String),
    /// The answer does not fit the question.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Records a person's answer to a waiting step, checked against its
    /// question, and lets the step go on.
    pub async fn answer(
        &self,
        execution_id: &str,
        step_id: &str,
        answer: &Value,
        answered_by: Option<&str>,
    ) -> Result<WaitRecord, AnswerError> {
        let store = &self.inner.store;
        let Some(wait) = store.get_wait(execution_id, step_id).await? else {
            return Err(match store.get_execution(execution_id).await? {
                None => AnswerError::NotFound(format!("execution '{execution_id}' does not exist")),
                Some(_) => AnswerError::NotFound(format!(
                    "step '{step_id}' of execution '{execution_id}' is not waiting for an answer"
                )),
            });
        };
        // A repeated answer is a conflict, whatever it says.
        if wait.expired {
            return Err(AnswerError::NotWaiting(format!(
                "step '{step_id}' stopped waiting: its deadline passed"
            )));
        }
        if wait.answered_at.is_some() {
            return Err(AnswerError::NotWaiting(format!(
                "step '{step_id}' was answered already{}",
                wait.answered_by
                    .map(|by| format!(" (by '{by}')"))
                    .unwrap_or_default()
            )));
        }
        let Some(human) = self.inner.tools.get(&wait.kind).and_then(|t| t.human()) else {
            return Err(AnswerError::NotWaiting(format!(
                "'{}' is not available on this server",
                wait.kind
            )));
        };
        let checked = human
            .check(&wait.request, answer)
            .map_err(AnswerError::Invalid)?;
        match store
            .answer_step(execution_id, step_id, &checked, answered_by)
            .await
        {
            Ok(Some(done)) => {
                self.inner.touched(execution_id);
                self.inner.wake.notify_one();
                tracing::info!(execution.id = %execution_id, step.id = %step_id, "step {step_id} answered");
                Ok(done)
            }
            Ok(None) => Err(AnswerError::NotFound(format!(
                "execution '{execution_id}' has no step '{step_id}'"
            ))),
            Err(StoreError::Conflict(m)) => Err(AnswerError::NotWaiting(m)),
            Err(e) => Err(e.into()),
        }
    }

    /// Open questions (of one execution, or all), oldest first.
    pub async fn waiting(
        &self,
        execution_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WaitRecord>, StoreError> {
        self.inner.store.list_waits(execution_id, limit).await
    }
}
