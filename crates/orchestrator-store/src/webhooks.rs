//! Webhooks and their deliveries (an outbox leased like the step queue).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dialect::{Dialect, Tx, conn};
use crate::rows::{DeliveryRow, WebhookRow};

/// A webhook subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// The event kinds as the subscriber gave them.
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: i64,
}

/// A delivery leased for sending.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryJob {
    pub id: i64,
    pub webhook_id: String,
    /// `None` when the webhook was deleted meanwhile.
    pub url: Option<String>,
    pub secret: String,
    pub kind: String,
    pub payload: Value,
    pub attempts: i64,
    pub log: Value,
}

/// The state of a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
    /// `pending` (to be retried), `delivered`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub log: Value,
    pub delivered_at: Option<i64>,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub webhook_id: String,
    pub execution_id: String,
    pub event_seq: i64,
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// Every attempt: `{at, status_code, error, duration_ms}`.
    pub log: Value,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

const SELECT_DELIVERIES: &str = "SELECT id, webhook_id, execution_id, event_seq, kind, status, attempts, \
    next_attempt_at, last_status_code, last_error, log, created_at, delivered_at FROM webhook_deliveries \
    WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2";

const FINISH_DELIVERY: &str = "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
    last_status_code = $5, last_error = $6, log = $7, delivered_at = $8, locked_until = NULL WHERE id = $1";

pub(crate) async fn create_webhook<D: Dialect>(
    s: &D,
    webhook: &crate::WebhookRecord,
    kinds: &[String],
) -> crate::Result<()> {
    let mut tx = Tx::begin(s).await?;
    D::q("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&webhook.id)
        .bind(&webhook.url)
        .json(&webhook.events)
        .bind(&webhook.secret)
        .bind(webhook.created_at)
        .execute(&mut tx)
        .await?;
    for kind in kinds {
        D::q("INSERT INTO webhook_subscriptions (webhook_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&webhook.id)
            .bind(kind)
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn list_webhooks<D: Dialect>(s: &D) -> crate::Result<Vec<crate::WebhookRecord>> {
    let rows: Vec<WebhookRow> =
        D::q("SELECT id, url, events, secret, created_at FROM webhooks ORDER BY created_at, id")
            .fetch_all(&mut *conn(s).await?)
            .await?;
    Ok(rows.into_iter().map(crate::WebhookRecord::from).collect())
}

pub(crate) async fn delete_webhook<D: Dialect>(s: &D, id: &str) -> crate::Result<bool> {
    let mut tx = Tx::begin(s).await?;
    D::q("DELETE FROM webhook_subscriptions WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    let n = D::q("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(&mut tx)
        .await?;
    D::q(
        "UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL \
                 WHERE webhook_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(n == 1)
}

pub(crate) async fn claim_deliveries<D: Dialect>(
    s: &D,
    limit: u32,
    lock_ms: i64,
) -> crate::Result<Vec<crate::DeliveryJob>> {
    let now = crate::now_ms();
    // The delivery loop wakes on every event: a read (on the
    // partial index) spares the write transaction when nothing is due.
    let due: Option<i64> = D::q(
        "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 \
         AND (locked_until IS NULL OR locked_until < $1) LIMIT 1",
    )
    .bind(now)
    .scalar_optional(&mut *conn(s).await?)
    .await?;
    if due.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = Tx::begin(s).await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        String,
        String,
        String,
        i64,
        i64,
        sqlx::types::Json<serde_json::Value>,
    )> = D::q(D::CLAIM_DELIVERIES)
        .bind(now)
        .bind(now + lock_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut tx)
        .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for (id, webhook_id, kind, execution_id, seq, attempts, log) in rows {
        let event: Option<(Option<String>, sqlx::types::Json<serde_json::Value>, i64)> = D::q(
            "SELECT step_id, data, created_at FROM events WHERE execution_id = $1 AND seq = $2",
        )
        .bind(&execution_id)
        .bind(seq)
        .fetch_optional(&mut tx)
        .await?;
        let (step_id, data, created_at) =
            event
                .map(|(s, d, c)| (s, d.0, c))
                .unwrap_or((None, serde_json::Value::Null, 0));
        let payload = serde_json::json!({
            "execution_id": execution_id,
            "seq": seq,
            "kind": kind,
            "step_id": step_id,
            "data": data,
            "created_at": chrono::DateTime::from_timestamp_millis(created_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        let hook: Option<(String, String)> = D::q("SELECT url, secret FROM webhooks WHERE id = $1")
            .bind(&webhook_id)
            .fetch_optional(&mut tx)
            .await?;
        jobs.push(crate::DeliveryJob {
            id,
            url: hook.as_ref().map(|h| h.0.clone()),
            secret: hook.map(|h| h.1).unwrap_or_default(),
            webhook_id,
            kind,
            payload,
            attempts,
            log: log.0,
        });
    }
    tx.commit().await?;
    Ok(jobs)
}

pub(crate) async fn finish_delivery<D: Dialect>(
    s: &D,
    id: i64,
    u: &crate::DeliveryUpdate,
) -> crate::Result<()> {
    let _writer = s.write_guard().await;
    D::q(FINISH_DELIVERY)
        .bind(id)
        .bind(&u.status)
        .bind(u.attempts)
        .bind(u.next_attempt_at)
        .bind(u.last_status_code)
        .bind(&u.last_error)
        .json(&u.log)
        .bind(u.delivered_at)
        .execute(&mut *conn(s).await?)
        .await?;
    Ok(())
}

pub(crate) async fn list_deliveries<D: Dialect>(
    s: &D,
    webhook_id: &str,
    limit: u32,
) -> crate::Result<Vec<crate::DeliveryRecord>> {
    let rows: Vec<DeliveryRow> = D::q(SELECT_DELIVERIES)
        .bind(webhook_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn(s).await?)
        .await?;
    Ok(rows.into_iter().map(crate::DeliveryRecord::from).collect())
}
