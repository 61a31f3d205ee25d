//! Webhook deliveries: rows of the outbox (written with the events they
//! carry) are leased, sent signed, and retried with backoff until they are
//! delivered or run out of attempts. A restart loses nothing: what was not
//! delivered is still in the outbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use orchestrator_store::{DeliveryJob, DeliveryUpdate, now_ms};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Inner;

/// How deliveries are sent and retried.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Attempts before a delivery is given up (`failed`).
    pub max_attempts: i64,
    /// The first retry waits this long; each next one twice as long.
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub request_timeout: Duration,
    /// How long a leased delivery stays with this process.
    pub lock_ms: i64,
    /// Longest wait before looking for due deliveries again.
    pub poll: Duration,
    /// Sends the requests (the server gives the `http` tool's guarded client).
    pub client: Option<reqwest::Client>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_attempts: 10,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            request_timeout: Duration::from_secs(10),
            lock_ms: 15_000,
            poll: Duration::from_millis(500),
            client: None,
        }
    }
}

fn mac(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

/// `sha256=` and the hex HMAC-SHA256 of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Whether `signature` (as sent in `X-Orchestrator-Signature`) is `body`'s.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(bytes) = hex::decode(hex_sig) else {
        return false;
    };
    mac(secret, body).verify_slice(&bytes).is_ok()
}

/// Delay before attempt `attempts + 1`, after `attempts` failures.
fn backoff(settings: &WebhookSettings, attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    settings
        .backoff_base_ms
        .saturating_mul(1_i64 << exp)
        .min(settings.backoff_max_ms)
}

/// Sends one delivery and says what became of it.
async fn send(
    client: &reqwest::Client,
    settings: &WebhookSettings,
    job: DeliveryJob,
) -> (i64, DeliveryUpdate) {
    let attempt = job.attempts + 1;
    let now = now_ms();
    let mut log = match job.log {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let Some(url) = job.url else {
        return (
            job.id,
            DeliveryUpdate {
                status: "cancelled".into(),
                attempts: job.attempts,
                next_attempt_at: now,
                last_status_code: None,
                last_error: Some("the webhook was deleted".into()),
                log: Value::Array(log),
                delivered_at: None,
            },
        );
    };
    let mut body = json!({
        "delivery_id": job.id,
        "webhook_id": job.webhook_id,
        "attempt": attempt,
        "sent_at": chrono::DateTime::from_timestamp_millis(now)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let (Some(obj), Value::Object(event)) = (body.as_object_mut(), job.payload) {
        obj.extend(event);
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let started = Instant::now();
    let result = client
        .post(&url)
        .timeout(settings.request_timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Orchestrator-Event", &job.kind)
        .header("X-Orchestrator-Delivery", job.id.to_string())
        .header("X-Orchestrator-Timestamp", (now / 1000).to_string())
        .header("X-Orchestrator-Signature", sign(&job.secret, &bytes))
        .body(bytes)
        .send()
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;
    let (code, error) = match result {
        Ok(r) if r.status().is_success() => (Some(i64::from(r.status().as_u16())), None),
        Ok(r) => (
            Some(i64::from(r.status().as_u16())),
            Some(format!("the receiver answered {}", r.status())),
        ),
        Err(e) => (None, Some(orchestrator_tools::net::describe(&e))),
    };
    log.push(json!({"attempt": attempt, "at": now, "status_code": code, "error": error, "duration_ms": duration_ms}));
    let update = match error {
        None => DeliveryUpdate {
            status: "delivered".into(),
            attempts: attempt,
            next_attempt_at: now,
            last_status_code: code,
            last_error: None,
            log: Value::Array(log),
            delivered_at: Some(now_ms()),
        },
        Some(e) => {
            let give_up = attempt >= settings.max_attempts;
            DeliveryUpdate {
                status: if give_up { "failed" } else { "pending" }.into(),
                attempts: attempt,
                next_attempt_at: now_ms() + backoff(settings, attempt),
                last_status_code: code,
                last_error: Some(e),
                log: Value::Array(log),
                delivered_at: None,
            }
        }
    };
    (job.id, update)
}

/// Sends due deliveries until `shutdown`.
/// The shortest time between two looks for due deliveries.
const WAKE_GAP: Duration = Duration::from_millis(20);

pub(crate) async fn deliver_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let settings = inner.config.webhooks.clone();
    let client = settings
        .client
        .clone()
        .unwrap_or_else(|| inner.tools.http_client().clone());
    loop {
        let looked = tokio::time::Instant::now();
        let jobs = match inner.store.claim_deliveries(32, settings.lock_ms).await {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(error = ?e, "looking for webhook deliveries failed");
                Vec::new()
            }
        };
        let full = jobs.len() == 32;
        let sends = jobs.into_iter().map(|job| send(&client, &settings, job));
        for (id, update) in futures_util::future::join_all(sends).await {
            debug!(delivery = id, status = %update.status, attempts = update.attempts, "webhook delivery");
            if update.status == "failed" {
                warn!(
                    delivery = id,
                    error = update.last_error.as_deref().unwrap_or(""),
                    "webhook delivery given up"
                );
            }
            if let Err(e) = inner.store.finish_delivery(id, &update).await {
                warn!(delivery = id, error = ?e, "recording a webhook delivery failed");
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = inner.webhook_wake.notified() => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
        // Every step's start and end wakes this loop: under load, one look
        // per WAKE_GAP covers the burst (a database read each, not one per step).
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(looked + WAKE_GAP) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_backoff_doubles() {
        let sig = sign("s3cret", b"{\"a\":1}");
        assert!(verify("s3cret", b"{\"a\":1}", &sig));
        assert!(!verify("other", b"{\"a\":1}", &sig));
        assert!(!verify("s3cret", b"{\"a\":2}", &sig));
        let s = WebhookSettings::default();
        assert_eq!(
            (backoff(&s, 1), backoff(&s, 2), backoff(&s, 3)),
            (1_000, 2_000, 4_000)
        );
        assert_eq!(backoff(&s, 40), 600_000);
    }
}
