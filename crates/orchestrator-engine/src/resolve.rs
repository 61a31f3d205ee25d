//! The resolving phase: answering an execution's `<AUTO>` tags after its
//! submission was answered (201, status `resolving`).
//!
//! Each process leases resolving executions from the store (at most
//! [`SLOTS`] at once), asks the models with every question rendered over the
//! execution's inputs, compiles the answered pipeline and stores its steps,
//! or fails the execution naming the tag's line. The lease is renewed while
//! the models are asked; cancelling the execution (here or in another
//! process) stops the questions, and a process that dies leaves a lease
//! that expires, after which another process asks again.

use std::time::Duration;

use orchestrator_core::ErrorKind;
use orchestrator_store::{ResolveJob, Resolved};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::submit::{auto_tags_of, planned_execution};
use crate::{Engine, ExecutionOptions, PipelineSource, lock};

/// Executions one process resolves at once.
const SLOTS: usize = 4;

/// Claims and resolves executions until `shutdown`; their leases are handed
/// back when it comes.
pub(crate) async fn resolve_loop(engine: Engine, shutdown: CancellationToken) {
    let inner = &engine.inner;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let free = SLOTS.saturating_sub(tasks.len());
        if free > 0 {
            match inner
                .store
                .claim_resolving(&inner.config.worker_id, free as u32, inner.config.lease_ms)
                .await
            {
                Ok(jobs) => {
                    failures = 0;
                    for job in jobs {
                        tasks.spawn(resolve_one(engine.clone(), job, shutdown.clone()));
                    }
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = ?e, "claiming executions to resolve failed");
                }
            }
        }
        let wait = if failures > 0 {
            Duration::from_millis((100u64 << failures.min(6)).min(5_000))
        } else {
            Duration::from_millis(inner.config.idle_poll_ms)
        };
        tokio::select! {
            _ = inner.resolve_wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    // Each task sees the shutdown and hands its lease back.
    while tasks.join_next().await.is_some() {}
}

async fn resolve_one(engine: Engine, job: ResolveJob, shutdown: CancellationToken) {
    let inner = &engine.inner;
    let id = job.execution.id.clone();
    let cancel = CancellationToken::new();
    lock(&inner.resolving).insert(id.clone(), cancel.clone());
    let renewal = tokio::spawn(renew(engine.clone(), job.clone(), cancel.clone()));
    let outcome = tokio::select! {
        outcome = engine.resolve_execution(&job, &cancel) => Some(outcome),
        _ = cancel.cancelled() => None,
        _ = shutdown.cancelled() => None,
    };
    renewal.abort();
    lock(&inner.resolving).remove(&id);
    let Some(outcome) = outcome else {
        if shutdown.is_cancelled()
            && !cancel.is_cancelled()
            && let Err(e) = inner.store.release_resolving(&id, &job.lease_token).await
        {
            warn!(execution.id = %id, error = ?e, "handing back an execution being resolved failed; its lease will expire");
        }
        return;
    };
    let failed = matches!(outcome, Resolved::Failed(_));
    let mut tries = 0;
    loop {
        match inner
            .store
            .finish_resolving(&id, &job.lease_token, outcome.clone())
            .await
        {
            Ok(true) => {
                inner.touched(&id);
                if failed {
                    info!(execution.id = %id, "execution {id} failed while resolving its <AUTO> tags");
                } else {
                    info!(execution.id = %id, "execution {id} queued (its <AUTO> tags answered)");
                    inner.wake.notify_one();
                }
                return;
            }
            // Cancelled, timed out, or taken over meanwhile.
            Ok(false) => return,
            Err(e) if e.is_transient() && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50 << tries)).await;
            }
            Err(e) => {
                // The lease expires and another process asks again.
                warn!(execution.id = %id, error = ?e, "storing the answered pipeline failed");
                return;
            }
        }
    }
}

/// Renews the lease while the models are asked; cancels when it is lost
/// (the execution was cancelled, timed out, or taken over).
async fn renew(engine: Engine, job: ResolveJob, cancel: CancellationToken) {
    let inner = &engine.inner;
    let mut tick = tokio::time::interval(Duration::from_millis(inner.config.heartbeat_ms.max(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner
            .store
            .renew_resolving(&job.execution.id, &job.lease_token, inner.config.lease_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                cancel.cancel();
                return;
            }
            Err(e) => warn!(error = ?e, "renewing a resolving lease failed"),
        }
    }
}

impl Engine {
    /// Answers the tags of a leased execution and compiles the result.
    async fn resolve_execution(&self, job: &ResolveJob, cancel: &CancellationToken) -> Resolved {
        let execution = &job.execution;
        let lost = job.attempts - 1;
        if lost > self.inner.config.max_lost {
            return Resolved::Failed(format!(
                "answering the <AUTO> tags was interrupted {lost} times (the processes doing it were lost)"
            ));
        }
        let source = match execution.plan["resolving"]["format"].as_str() {
            Some("json") => match serde_json::from_str(&execution.source) {
                Ok(value) => PipelineSource::Json(value),
                Err(e) => return Resolved::Failed(format!("the stored pipeline is corrupt: {e}")),
            },
            _ => PipelineSource::Yaml(execution.source.clone()),
        };
        let context = match &execution.inputs {
            Value::Object(m) => m.clone(),
            _ => Default::default(),
        };
        let options: ExecutionOptions =
            serde_json::from_value(execution.options.clone()).unwrap_or_default();
        let tags = auto_tags_of(&source);
        let scope = crate::scope::build_scope(
            &execution.inputs,
            &execution.id,
            execution.created_at,
            &execution.pipeline_id,
            None,
            &[],
        );
        let (answers, answered) = self
            .answer_auto_tags(
                &tags,
                Some(&scope),
                &step_ids(&source),
                &execution.id,
                cancel,
            )
            .await;
        match self
            .compile_blocking(source, Some(context), Some(answers))
            .await
        {
            Ok(compiled) => match planned_execution(compiled, answered, &options) {
                Ok(p) => Resolved::Planned {
                    pipeline_id: p.pipeline_id,
                    pipeline_name: p.pipeline_name,
                    plan: p.plan,
                    inputs: p.inputs,
                    steps: p.steps,
                },
                Err(e) => Resolved::Failed(e.to_string()),
            },
            Err(e) => {
                let first = e.errors.first();
                match first {
                    Some(d) if d.kind == ErrorKind::AutoTag => Resolved::Failed(d.to_string()),
                    Some(d) => Resolved::Failed(format!(
                        "the pipeline with its <AUTO> tags answered is invalid: {d}{}",
                        match e.errors.len() {
                            1 => String::new(),
                            n => format!(" (and {} more)", n - 1),
                        }
                    )),
                    None => Resolved::Failed("the answered pipeline is invalid".into()),
                }
            }
        }
    }
}

/// The ids of a pipeline's steps (a tag that reads one waits for it).
fn step_ids(source: &PipelineSource) -> std::collections::BTreeSet<String> {
    let root = crate::submit::source_root(source);
    let mut ids = std::collections::BTreeSet::new();
    if let Some(orchestrator_core::yaml::NodeValue::Seq(steps)) =
        root.as_ref().and_then(|r| r.get("steps")).map(|s| &s.value)
    {
        ids.extend(
            steps
                .iter()
                .filter_map(|s| s.get("id").and_then(orchestrator_core::yaml::Node::as_str))
                .map(str::to_string),
        );
    }
    ids
}
