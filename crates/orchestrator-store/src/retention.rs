//! Deleting executions: one by id (with the executions it started, at any
//! depth), or by age and count (retention), with everything they own:
//! steps, dependencies, checkpoints, queue rows, questions, events, webhook
//! deliveries, model calls, logs and their tree's memory.

use orchestrator_core::flow::ExecutionStatus;

use crate::dialect::{Dialect, Tx, conn};
use crate::sql::Values;

/// What deleting one execution did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The ids deleted: the execution first, then the ones it started.
    Done(Vec<String>),
    /// Nothing: these executions of the tree have not ended yet.
    Unfinished(Vec<(String, ExecutionStatus)>),
    NotFound,
}

/// Which finished root executions retention deletes (children go with
/// their root).
#[derive(Debug, Clone, PartialEq)]
pub struct PurgeRule {
    pub status: ExecutionStatus,
    /// Finished before this (Unix ms).
    pub finished_before: Option<i64>,
    /// Keep this many of the newest regardless of age.
    pub keep_newest: Option<i64>,
}

const TREE: &str = "WITH RECURSIVE tree(id) AS ( \
    SELECT id FROM executions WHERE id = $1 \
    UNION ALL SELECT e.id FROM executions e JOIN tree t ON e.parent_execution_id = t.id) \
    SELECT e.id, e.status FROM executions e JOIN tree t ON t.id = e.id";

/// Old roots of a status, oldest first, past the newest `$3` kept.
const OLD_ROOTS: &str = "SELECT id FROM executions \
    WHERE parent_execution_id IS NULL AND status = $1 AND finished_at IS NOT NULL \
    AND ($2 IS NULL OR finished_at < $2) \
    AND id NOT IN (SELECT id FROM executions WHERE parent_execution_id IS NULL AND status = $1 \
        ORDER BY finished_at DESC, id DESC LIMIT $3) \
    ORDER BY finished_at, id LIMIT $4";

/// Tables keyed by execution without a cascading foreign key.
const OWNED: &[&str] = &[
    "DELETE FROM step_queue WHERE execution_id IN ",
    "DELETE FROM events WHERE execution_id IN ",
    "DELETE FROM webhook_deliveries WHERE execution_id IN ",
    "DELETE FROM model_calls WHERE execution_id IN ",
    "DELETE FROM step_logs WHERE execution_id IN ",
    "DELETE FROM memory_entries WHERE scope IN ",
    // Steps, dependencies, checkpoints, sources, questions and the resolve
    // queue cascade.
    "DELETE FROM executions WHERE id IN ",
];

async fn delete_ids<D: Dialect>(tx: &mut Tx<'_, D>, ids: &[String]) -> crate::Result<()> {
    for chunk in ids.chunks(500) {
        for prefix in OWNED {
            let mut q = Values::<D::DB>::new(prefix);
            q.push("(");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(", ");
                }
                q.bind(id.as_str());
            }
            q.push(")");
            q.build().execute(tx).await?;
        }
    }
    Ok(())
}

async fn tree<D: Dialect>(
    tx: &mut Tx<'_, D>,
    id: &str,
) -> crate::Result<Vec<(String, ExecutionStatus)>> {
    let rows: Vec<(String, String)> = D::q(TREE).bind(id).fetch_all(tx).await?;
    rows.into_iter()
        .map(|(id, s)| {
            ExecutionStatus::parse(&s)
                .map(|st| (id, st))
                .ok_or_else(|| {
                    crate::StoreError::Corrupt(format!("unknown execution status '{s}'"))
                })
        })
        .collect()
}

pub(crate) async fn delete_execution<D: Dialect>(s: &D, id: &str) -> crate::Result<Deleted> {
    let mut tx = Tx::begin(s).await?;
    let mut members = tree(&mut tx, id).await?;
    if members.is_empty() {
        return Ok(Deleted::NotFound);
    }
    // The execution asked for first.
    members.sort_by_key(|(m, _)| m != id);
    let unfinished: Vec<(String, ExecutionStatus)> = members
        .iter()
        .filter(|(_, st)| !st.is_terminal())
        .cloned()
        .collect();
    if !unfinished.is_empty() {
        return Ok(Deleted::Unfinished(unfinished));
    }
    let ids: Vec<String> = members.into_iter().map(|(m, _)| m).collect();
    delete_ids(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(Deleted::Done(ids))
}

/// Deletes up to `limit` root executions the rule selects (each with its
/// tree); returns how many executions went in all.
pub(crate) async fn purge<D: Dialect>(s: &D, rule: &PurgeRule, limit: i64) -> crate::Result<u64> {
    let roots: Vec<String> = D::q(OLD_ROOTS)
        .bind(rule.status.as_str())
        .bind(rule.finished_before)
        .bind(rule.keep_newest.unwrap_or(0).max(0))
        .bind(limit)
        .scalars(&mut *conn(s).await?)
        .await?;
    let mut deleted = 0;
    for root in roots {
        // One tree per transaction: short write turns, and a tree whose
        // child was recovered meanwhile is left alone.
        if let Deleted::Done(ids) = delete_execution(s, &root).await? {
            deleted += ids.len() as u64;
        }
    }
    Ok(deleted)
}

const TAKE_LEASE: &str = "INSERT INTO process_leases (name, holder, until) VALUES ($1, $2, $3) \
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
    WHERE process_leases.holder = excluded.holder OR process_leases.until < $4";

pub(crate) async fn take_lease<D: Dialect>(
    s: &D,
    name: &str,
    holder: &str,
    until: i64,
) -> crate::Result<bool> {
    let mut tx = Tx::begin(s).await?;
    let n = D::q(TAKE_LEASE)
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(crate::now_ms())
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}
