//! Retention: finished executions older than their status's age, beyond the
//! newest it keeps, are deleted with their trees, by one process at a time
//! (a lease in the store), in small batches.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::flow::ExecutionStatus;
use orchestrator_store::PurgeRule;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Inner;

/// How long one status's finished executions are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRule {
    pub status: ExecutionStatus,
    /// Older than this (since they finished) they go.
    pub max_age_ms: Option<i64>,
    /// The newest this many are kept whatever their age; with no age, only
    /// this many are kept.
    pub keep: Option<i64>,
}

/// Retention as configured; no rules, no deleting.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    pub rules: Vec<RetentionRule>,
    pub every: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            rules: Vec::new(),
            every: Duration::from_secs(300),
        }
    }
}

impl RetentionRule {
    /// The store's rule as of `now`.
    pub fn at(&self, now: i64) -> PurgeRule {
        PurgeRule {
            status: self.status,
            finished_before: self.max_age_ms.map(|age| now.saturating_sub(age)),
            keep_newest: self.keep,
        }
    }
}

/// Roots deleted per batch (each with its tree, in its own transaction).
const BATCH: i64 = 200;

/// Applies every rule once, now; how many executions went (also the
/// `purge` command).
pub async fn apply(
    store: &dyn orchestrator_store::Store,
    rules: &[RetentionRule],
) -> orchestrator_store::Result<u64> {
    let mut total = 0;
    for rule in rules {
        loop {
            let purge = rule.at(orchestrator_store::now_ms());
            let n = store.purge_executions(&purge, BATCH).await?;
            total += n;
            if n == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(total)
}

pub(crate) async fn retention_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let settings = inner.config.retention.clone();
    if settings.rules.is_empty() {
        return;
    }
    let every = settings.every.max(Duration::from_secs(1));
    let lease_ms = i64::try_from(every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let until = orchestrator_store::now_ms().saturating_add(lease_ms);
        match inner
            .store
            .take_lease("retention", &inner.config.worker_id, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                warn!(error = ?e, "retention: taking its lease failed");
                continue;
            }
        }
        match apply(inner.store.as_ref(), &settings.rules).await {
            Ok(0) => {}
            Ok(n) => info!(executions = n, "retention deleted {n} finished executions"),
            Err(e) => warn!(error = ?e, "retention failed"),
        }
    }
}

impl crate::Engine {
    /// Deletes a finished execution with the executions it started.
    pub async fn delete_execution(
        &self,
        id: &str,
    ) -> orchestrator_store::Result<orchestrator_store::Deleted> {
        self.inner.store.delete_execution(id).await
    }
}
