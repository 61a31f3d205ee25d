//! Webhooks and their deliveries.

use crate::support::*;

orchestrator_store::for_each_backend!(
    webhooks_are_created_listed_and_deleted,
    events_become_deliveries_that_are_claimed_once_finished_and_cancelled,
);

async fn webhooks_are_created_listed_and_deleted(store: Arc<dyn Store>) {
    let hook = |id: &str| orchestrator_store::WebhookRecord {
        id: id.to_string(),
        url: format!("https://example.com/{id}"),
        events: vec!["execution.finished".into()],
        secret: format!("secret-{id}"),
        created_at: now_ms(),
    };
    store
        .create_webhook(
            &hook("h1"),
            &["execution.succeeded".into(), "execution.failed".into()],
        )
        .await
        .expect("h1");
    store
        .create_webhook(&hook("h2"), &["step.failed".into()])
        .await
        .expect("h2");
    let listed = store.list_webhooks().await.expect("list");
    assert_eq!(listed.len(), 2);
    let h1 = listed.iter().find(|h| h.id == "h1").expect("h1");
    assert_eq!(h1.events, vec!["execution.finished"]);
    assert_eq!(h1.secret, "secret-h1");
    assert!(store.delete_webhook("h1").await.expect("delete"));
    assert!(!store.delete_webhook("h1").await.expect("again"));
    let listed = store.list_webhooks().await.expect("list");
    assert_eq!(
        listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["h2"]
    );
    assert!(
        store
            .list_deliveries("h2", 10)
            .await
            .expect("deliveries")
            .is_empty()
    );
}

async fn events_become_deliveries_that_are_claimed_once_finished_and_cancelled(
    store: Arc<dyn Store>,
) {
    let hook = |id: &str| orchestrator_store::WebhookRecord {
        id: id.to_string(),
        url: format!("https://example.com/{id}"),
        events: vec!["*".into()],
        secret: format!("secret-{id}"),
        created_at: now_ms(),
    };
    store
        .create_webhook(&hook("all"), &["*".into()])
        .await
        .expect("all");
    store
        .create_webhook(&hook("none"), &["model.never".into()])
        .await
        .expect("none");
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let a = claim_ids(&store, 10).await.remove(0);
    finish(&store, &a, StepStatus::Succeeded, json!("a")).await;
    let events = store.list_events(&new.id, 0, 100).await.expect("events");
    assert!(events.len() >= 2, "{events:?}");

    // Every event of the execution, once, for the webhook that wants it.
    let jobs = store.claim_deliveries(100, 30_000).await.expect("claim");
    assert_eq!(jobs.len(), events.len(), "{jobs:?}");
    assert!(jobs.iter().all(|j| j.webhook_id == "all"
        && j.url.as_deref() == Some("https://example.com/all")
        && j.secret == "secret-all"));
    assert!(
        store
            .claim_deliveries(100, 30_000)
            .await
            .expect("again")
            .is_empty(),
        "a claimed delivery is locked"
    );
    let first = &jobs[0];
    store
        .finish_delivery(
            first.id,
            &orchestrator_store::DeliveryUpdate {
                status: "delivered".into(),
                attempts: 1,
                next_attempt_at: now_ms(),
                last_status_code: Some(204),
                last_error: None,
                log: json!([{"status_code": 204}]),
                delivered_at: Some(now_ms()),
            },
        )
        .await
        .expect("delivered");
    let second = &jobs[1];
    store
        .finish_delivery(
            second.id,
            &orchestrator_store::DeliveryUpdate {
                status: "pending".into(),
                attempts: 1,
                next_attempt_at: now_ms() + 3_600_000,
                last_status_code: Some(500),
                last_error: Some("server error".into()),
                log: json!([{"status_code": 500}]),
                delivered_at: None,
            },
        )
        .await
        .expect("retry later");
    let listed = store.list_deliveries("all", 100).await.expect("list");
    let status_of = |id: i64| {
        listed
            .iter()
            .find(|d| d.id == id)
            .map(|d| (d.status.clone(), d.attempts))
    };
    assert_eq!(status_of(first.id), Some(("delivered".into(), 1)));
    assert_eq!(status_of(second.id), Some(("pending".into(), 1)));
    assert!(
        store
            .list_deliveries("none", 100)
            .await
            .expect("list")
            .is_empty()
    );

    // Deleting the webhook cancels what it still had pending.
    assert!(store.delete_webhook("all").await.expect("delete"));
    let listed = store.list_deliveries("all", 100).await.expect("list");
    assert!(
        listed
            .iter()
            .filter(|d| d.id != first.id)
            .all(|d| d.status == "cancelled"),
        "{listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .find(|d| d.id == first.id)
            .map(|d| d.status.as_str()),
        Some("delivered")
    );
}
