//! Durable state that steps keep between runs, shared by every process:
//! entries of JSON under (scope, namespace, key), with an optional expiry.
//! `recursion-control` keeps its contexts here, scoped to an execution tree.

use serde_json::Value;

use crate::dialect::{Dialect, Tx, conn};

/// One stored entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemoryEntry {
    pub key: String,
    pub value: Value,
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix ms after which the entry is gone; `None` keeps it.
    pub expires_at: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MemoryRow {
    key: String,
    value: String,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
}

impl MemoryRow {
    fn entry(self) -> MemoryEntry {
        MemoryEntry {
            key: self.key,
            // Written by `serde_json` below; a hand-edited row reads as text.
            value: serde_json::from_str(&self.value).unwrap_or(Value::String(self.value)),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
        }
    }
}

/// What `update` does with an entry: the new value, or a refusal that
/// leaves it as it was.
pub type Change<'a> = &'a (dyn Fn(Option<&Value>) -> Result<Value, String> + Send + Sync);

const GET: &str = "SELECT key, value, created_at, updated_at, expires_at FROM memory_entries \
    WHERE scope = $1 AND namespace = $2 AND key = $3 AND (expires_at IS NULL OR expires_at > $4)";

/// The row whatever its expiry (an expired one is replaced in place).
const GET_ANY: &str = "SELECT key, value, created_at, updated_at, expires_at FROM memory_entries \
    WHERE scope = $1 AND namespace = $2 AND key = $3";

const LIST: &str = "SELECT key, value, created_at, updated_at, expires_at FROM memory_entries \
    WHERE scope = $1 AND namespace = $2 AND (expires_at IS NULL OR expires_at > $3) ORDER BY key";

const PUT: &str = "INSERT INTO memory_entries \
    (scope, namespace, key, value, created_at, updated_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $5, $6) \
    ON CONFLICT (scope, namespace, key) DO UPDATE SET value = excluded.value, \
    updated_at = excluded.updated_at, expires_at = excluded.expires_at";

const INSERT_NEW: &str = "INSERT INTO memory_entries \
    (scope, namespace, key, value, created_at, updated_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $5, NULL) ON CONFLICT (scope, namespace, key) DO NOTHING";

/// Compare-and-set: only if nobody changed the row since it was read.
const REPLACE: &str = "UPDATE memory_entries SET value = $4, updated_at = $5, \
    created_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= $5 THEN $5 ELSE created_at END, \
    expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= $5 THEN NULL ELSE expires_at END \
    WHERE scope = $1 AND namespace = $2 AND key = $3 AND value = $6 AND updated_at = $7";

const DELETE_KEY: &str =
    "DELETE FROM memory_entries WHERE scope = $1 AND namespace = $2 AND key = $3";

const DELETE_NAMESPACE: &str = "DELETE FROM memory_entries WHERE scope = $1 AND namespace = $2";

const DELETE_EXPIRED: &str =
    "DELETE FROM memory_entries WHERE expires_at IS NOT NULL AND expires_at <= $1";

const TREE_COUNTS: &str = "SELECT pipeline_name, COUNT(*) FROM executions \
    WHERE root_execution_id = $1 GROUP BY pipeline_name ORDER BY pipeline_name";

pub(crate) async fn get<D: Dialect>(
    s: &D,
    scope: &str,
    namespace: &str,
    key: &str,
) -> crate::Result<Option<MemoryEntry>> {
    let row: Option<MemoryRow> = D::q(GET)
        .bind(scope)
        .bind(namespace)
        .bind(key)
        .bind(crate::now_ms())
        .fetch_optional(&mut *conn(s).await?)
        .await?;
    Ok(row.map(MemoryRow::entry))
}

pub(crate) async fn list<D: Dialect>(
    s: &D,
    scope: &str,
    namespace: &str,
) -> crate::Result<Vec<MemoryEntry>> {
    let rows: Vec<MemoryRow> = D::q(LIST)
        .bind(scope)
        .bind(namespace)
        .bind(crate::now_ms())
        .fetch_all(&mut *conn(s).await?)
        .await?;
    Ok(rows.into_iter().map(MemoryRow::entry).collect())
}

pub(crate) async fn put<D: Dialect>(
    s: &D,
    scope: &str,
    namespace: &str,
    key: &str,
    value: &Value,
    expires_at: Option<i64>,
) -> crate::Result<()> {
    let mut tx = Tx::begin(s).await?;
    D::q(PUT)
        .bind(scope)
        .bind(namespace)
        .bind(key)
        .bind(value.to_string())
        .bind(crate::now_ms())
        .bind(expires_at)
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

/// Reads the entry, lets `change` compute the new value and writes it if
/// nobody wrote in between (else reads again): safe across processes
/// without locks either backend spells differently.
pub(crate) async fn update<D: Dialect>(
    s: &D,
    scope: &str,
    namespace: &str,
    key: &str,
    change: Change<'_>,
) -> crate::Result<Result<Value, String>> {
    for _ in 0..50 {
        let now = crate::now_ms();
        let mut tx = Tx::begin(s).await?;
        let row: Option<MemoryRow> = D::q(GET_ANY)
            .bind(scope)
            .bind(namespace)
            .bind(key)
            .fetch_optional(&mut tx)
            .await?;
        let live = row
            .as_ref()
            .filter(|r| r.expires_at.is_none_or(|at| at > now))
            .map(|r| serde_json::from_str(&r.value).unwrap_or(Value::String(r.value.clone())));
        let new = match change(live.as_ref()) {
            Ok(v) => v,
            Err(refused) => return Ok(Err(refused)),
        };
        let written = match &row {
            None => {
                D::q(INSERT_NEW)
                    .bind(scope)
                    .bind(namespace)
                    .bind(key)
                    .bind(new.to_string())
                    .bind(now)
                    .execute(&mut tx)
                    .await?
            }
            Some(r) => {
                D::q(REPLACE)
                    .bind(scope)
                    .bind(namespace)
                    .bind(key)
                    .bind(new.to_string())
                    .bind(now.max(r.updated_at + 1))
                    .bind(r.value.as_str())
                    .bind(r.updated_at)
                    .execute(&mut tx)
                    .await?
            }
        };
        if written == 1 {
            tx.commit().await?;
            return Ok(Ok(new));
        }
        tx.rollback().await?;
        tokio::task::yield_now().await;
    }
    Err(crate::StoreError::Conflict(format!(
        "memory entry '{namespace}/{key}' is being changed by others at the same time; try again"
    )))
}

/// Removes one key, or the whole namespace; how many entries went.
pub(crate) async fn clear<D: Dialect>(
    s: &D,
    scope: &str,
    namespace: &str,
    key: Option<&str>,
) -> crate::Result<u64> {
    let mut tx = Tx::begin(s).await?;
    let n = match key {
        Some(k) => {
            D::q(DELETE_KEY)
                .bind(scope)
                .bind(namespace)
                .bind(k)
                .execute(&mut tx)
                .await?
        }
        None => {
            D::q(DELETE_NAMESPACE)
                .bind(scope)
                .bind(namespace)
                .execute(&mut tx)
                .await?
        }
    };
    tx.commit().await?;
    Ok(n)
}

/// Drops expired entries (upkeep).
pub(crate) async fn purge_expired<D: Dialect>(s: &D) -> crate::Result<u64> {
    let mut tx = Tx::begin(s).await?;
    let n = D::q(DELETE_EXPIRED)
        .bind(crate::now_ms())
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// How many child executions of each pipeline the tree under `root` has
/// started (the root itself is not one of them).
pub(crate) async fn tree_counts<D: Dialect>(
    s: &D,
    root: &str,
) -> crate::Result<Vec<(String, i64)>> {
    D::q(TREE_COUNTS)
        .bind(root)
        .fetch_all(&mut *conn(s).await?)
        .await
}
