//! Webhooks: signed, filtered and retried deliveries.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    webhooks_are_signed_filtered_and_retried,
);

async fn webhooks_are_signed_filtered_and_retried(s: Server) {
    use orchestrator_tools::testing::services::{self, Service};
    let receiver = Service::start(services::webhook_receiver(2)).await;
    let secret = "correct-horse-battery-staple";
    let (status, hook) = s
        .send_json(
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({"url": receiver.url("/hook"), "events": ["execution.finished", "step.failed"], "secret": secret})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["secret"], secret, "shown once");
    let hook_id = hook["id"].as_str().expect("id").to_string();
    let (_, listed) = s.get("/webhooks").await;
    assert!(
        listed["items"][0].get("secret").is_none(),
        "never listed: {listed}"
    );
    for (bad, says) in [
        (
            json!({"url": receiver.url("/hook"), "events": ["step.exploded"]}),
            "not an event kind",
        ),
        (json!({"url": "ftp://x/", "events": ["*"]}), "refused"),
        (
            json!({"url": receiver.url("/hook"), "events": ["*"], "secret": "short"}),
            "16 characters",
        ),
    ] {
        let (status, problem) = s
            .send_json(reqwest::Method::POST, "/webhooks", Some(bad))
            .await;
        assert_eq!(status, 422, "{problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{problem}"
        );
    }

    // One execution that succeeds: one `execution.succeeded` delivery,
    // refused twice by the receiver, delivered on the third attempt.
    let done = s
        .run_yaml("name: hooked\nsteps:\n  - id: a\n    tool: echo\n", "")
        .await;
    let id = done["id"].as_str().expect("id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let (_, d) = s.get(&format!("/webhooks/{hook_id}/deliveries")).await;
        if d["items"][0]["status"] == "delivered" {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let item = &delivered["items"][0];
    assert_eq!(
        (item["attempts"].clone(), item["event"].clone()),
        (json!(3), json!("execution.succeeded"))
    );
    let codes: Vec<Value> = item["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(500), json!(204)]);
    // Times as everywhere in the API: RFC 3339, as executions write them.
    let rfc3339 = |v: &Value| {
        v.as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    };
    assert!(
        rfc3339(&item["created_at"]) && rfc3339(&item["delivered_at"]),
        "{item:#}"
    );
    assert!(rfc3339(&item["log"][0]["at"]), "{item:#}");
    assert!(rfc3339(&receiver.requests()[0].json()["created_at"]));
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    for (n, r) in got.iter().enumerate() {
        let sig = r.header("x-orchestrator-signature").unwrap_or_default();
        assert!(
            orchestrator_engine::webhooks::verify(secret, &r.body, sig),
            "attempt {n}: bad signature"
        );
        assert!(!orchestrator_engine::webhooks::verify(
            "wrong-secret-xxxxxxxx",
            &r.body,
            sig
        ));
        let body = r.json();
        assert_eq!(
            (body["execution_id"].clone(), body["attempt"].clone()),
            (json!(id), json!(n + 1))
        );
        assert_eq!(
            r.header("x-orchestrator-delivery").map(str::to_string),
            Some(item["id"].to_string())
        );
        let ts: i64 = r
            .header("x-orchestrator-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        assert_eq!(
            ts,
            body["sent_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(0, |t| t.timestamp()),
            "the signed body carries the timestamp"
        );
    }

    // A failing step: its step.failed and the execution.failed, nothing else.
    let done = s
        .run_yaml("name: hooked-fail\nsteps:\n  - id: ok\n    tool: echo\n  - id: bad\n    tool: filesystem\n    action: read\n    depends_on: [ok]\n    parameters: {path: nope.txt}\n", "")
        .await;
    assert_eq!(done["status"], "failed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = s.get(&format!("/webhooks/{hook_id}/deliveries")).await;
        let events: Vec<&str> = d["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|i| i["event"].as_str())
            .collect();
        if events.len() >= 3
            && d["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|i| i["status"] == "delivered")
        {
            assert_eq!(
                events,
                ["execution.failed", "step.failed", "execution.succeeded"],
                "newest first"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = s
        .send_json(
            reqwest::Method::DELETE,
            &format!("/webhooks/{hook_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s.get(&format!("/webhooks/{hook_id}/deliveries")).await;
    assert_eq!(status, 404);
}
