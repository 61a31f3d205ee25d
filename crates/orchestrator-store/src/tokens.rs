//! API tokens (their hashes only).

use serde::{Deserialize, Serialize};

use crate::dialect::{Dialect, conn};
use crate::rows::TokenRow;

/// An API token as stored: the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// `read`, `submit` or `admin`.
    pub scope: String,
    #[serde(skip_serializing)]
    pub hash: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub(crate) async fn create_token<D: Dialect>(s: &D, t: &crate::TokenRecord) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q("INSERT INTO api_tokens (id, name, scope, hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.scope)
        .bind(&t.hash)
        .bind(t.created_at)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn get_token<D: Dialect>(
    s: &D,
    id: &str,
) -> crate::Result<Option<crate::TokenRecord>> {
    let row: Option<TokenRow> = D::q(
        "SELECT id, name, scope, hash, created_at, last_used_at, revoked_at FROM api_tokens WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn(s).await?)
    .await?;
    Ok(row.map(crate::TokenRecord::from))
}

pub(crate) async fn list_tokens<D: Dialect>(s: &D) -> crate::Result<Vec<crate::TokenRecord>> {
    let rows: Vec<TokenRow> = D::q(
        "SELECT id, name, scope, hash, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY created_at, id",
    )
    .fetch_all(&mut *conn(s).await?)
    .await?;
    Ok(rows.into_iter().map(crate::TokenRecord::from).collect())
}

pub(crate) async fn revoke_token<D: Dialect>(s: &D, id: &str, now: i64) -> crate::Result<bool> {
    let _writer = s.write_guard().await;
    let n = D::q("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(n == 1)
}

pub(crate) async fn touch_token<D: Dialect>(s: &D, id: &str, now: i64) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q(
        "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < $2 - 60000)",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *conn(s).await?)
    .await?;
    Ok(())
}

pub(crate) async fn active_executions_of_token<D: Dialect>(
    s: &D,
    token_id: &str,
) -> crate::Result<i64> {
    D::q("SELECT COUNT(*) FROM executions WHERE token_id = $1 AND status IN ('resolving', 'queued', 'running')")
        .bind(token_id)
        .scalar(&mut *conn(s).await?)
        .await
}
