//! Group commit of step results and the hand-off of the next step to the
//! slot that frees.

use crate::outputs::render_outputs;
use crate::step::persist;
use crate::{Inner, lock};
use orchestrator_store::{ClaimedStep, StepResult, StoreError};
use std::sync::{Arc, Mutex};
use tracing::{debug, error};

/// Group commit of step results. A finished step joins the queue; if no
/// flush is under way, a task takes the queue (up to [`MAX_FINISH_BATCH`] at
/// a time) and writes it in one transaction, again and again until it is
/// empty. Under load, steps that finish while one batch is written go
/// together in the next: one write turn and one commit for many steps. On
/// SQLite that saves write turns; on PostgreSQL, turns on the execution's
/// row (a batch locks it once for all its steps). Batches take rows in
/// (execution, step) order, as heartbeats and claims do, so they cannot
/// deadlock with them.
#[derive(Default)]
pub(crate) struct Finisher {
    waiting: Mutex<Vec<PendingFinish>>,
    flushing: Arc<tokio::sync::Mutex<()>>,
}

pub(crate) struct PendingFinish {
    claimed: ClaimedStep,
    result: StepResult,
    reply: tokio::sync::oneshot::Sender<Result<orchestrator_store::FinishOutcome, StoreError>>,
}

pub(crate) const MAX_FINISH_BATCH: usize = 64;

/// Records a step's final result with those of other steps finishing now.
pub(crate) async fn finish_grouped(
    inner: &Arc<Inner>,
    claimed: ClaimedStep,
    result: StepResult,
) -> Result<orchestrator_store::FinishOutcome, StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    lock(&inner.finisher.waiting).push(PendingFinish {
        claimed,
        result,
        reply,
    });
    if let Ok(guard) = Arc::clone(&inner.finisher.flushing).try_lock_owned() {
        tokio::spawn(flush_finishes(Arc::clone(inner), guard));
    }
    // Otherwise the task flushing now takes this one too: it looks at the
    // queue again after letting go of the lock.
    answer.await.unwrap_or_else(|_| {
        Err(StoreError::Corrupt(
            "the step result writer stopped".to_string(),
        ))
    })
}

/// Records a step's final result in a transaction of its own (conflicts
/// tried again).
pub(crate) async fn finish_alone(
    inner: &Inner,
    claimed: &ClaimedStep,
    result: StepResult,
) -> Result<orchestrator_store::FinishOutcome, StoreError> {
    persist(|| {
        inner
            .store
            .finish_step(claimed, result.clone(), &render_outputs, inner.handoff())
    })
    .await
}

pub(crate) async fn flush_finishes(inner: Arc<Inner>, mut guard: tokio::sync::OwnedMutexGuard<()>) {
    loop {
        let mut batch: Vec<PendingFinish> = {
            let mut waiting = lock(&inner.finisher.waiting);
            let n = waiting.len().min(MAX_FINISH_BATCH);
            waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            drop(guard);
            if lock(&inner.finisher.waiting).is_empty() {
                return;
            }
            match Arc::clone(&inner.finisher.flushing).try_lock_owned() {
                Ok(g) => guard = g,
                // Another task flushes now and will see what is waiting.
                Err(_) => return,
            }
            continue;
        }
        // Executions' rows are locked in one order by every writer.
        batch.sort_by(|a, b| {
            (&a.claimed.execution_id, &a.claimed.step_id)
                .cmp(&(&b.claimed.execution_id, &b.claimed.step_id))
        });
        if batch.len() > 1 {
            let items: Vec<(ClaimedStep, StepResult)> = batch
                .iter()
                .map(|p| (p.claimed.clone(), p.result.clone()))
                .collect();
            let handoff = inner.handoff();
            match persist(|| {
                inner
                    .store
                    .finish_steps(items.clone(), &render_outputs, handoff)
            })
            .await
            {
                Ok(results) if results.len() == batch.len() => {
                    for (p, r) in batch.into_iter().zip(results) {
                        let _ = p.reply.send(r);
                    }
                    continue;
                }
                Ok(_) => error!("a batch of step results came back with the wrong length"),
                Err(e) => {
                    debug!(error = ?e, size = batch.len(), "writing a batch of step results failed; writing them one by one")
                }
            }
        }
        // One step, or a batch that failed as a whole: each on its own, so
        // each gets its own answer.
        for p in batch {
            let _ = p
                .reply
                .send(finish_alone(&inner, &p.claimed, p.result).await);
        }
    }
}
