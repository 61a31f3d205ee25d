//! Deleting executions: by id (never while running), and by retention.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    a_finished_execution_is_deleted_with_its_children,
);

async fn a_finished_execution_is_deleted_with_its_children(s: Server) {
    let yaml = "name: parent\nsteps:\n  - id: sub\n    tool: pipeline-executor\n    action: execute\n    parameters:\n      pipeline: \"name: leaf\\nsteps:\\n  - id: x\\n    tool: echo\\n\"\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let id = done["id"].as_str().expect("id").to_string();
    let child = step(&done, "sub")["result"]["result"]["execution_id"]
        .as_str()
        .expect("child")
        .to_string();
    let (status, body) = s
        .send_json(reqwest::Method::DELETE, &format!("/executions/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deleted"], json!([id, child]));
    for gone in [&id, &child] {
        let (status, _) = s.get(&format!("/executions/{gone}")).await;
        assert_eq!(status, 404);
    }
    let (status, _) = s.get(&format!("/executions/{id}/events")).await;
    assert_eq!(status, 404);
    let (status, _) = s
        .send_json(reqwest::Method::DELETE, &format!("/executions/{id}"), None)
        .await;
    assert_eq!(status, 404);

    // Waiting for a person: not ended, so not deleted until cancelled.
    let (status, created) = s
        .post_yaml(
            "name: gate\nsteps:\n  - id: g\n    tool: approval-gate\n    action: execute\n    parameters: {title: ok?, content: x}\n",
            "",
        )
        .await;
    assert_eq!(status, 201);
    let waiting = created["id"].as_str().expect("id").to_string();
    s.until(&waiting, 20, |e| step(e, "g")["status"] == "waiting")
        .await;
    let (status, problem) = s
        .send_json(
            reqwest::Method::DELETE,
            &format!("/executions/{waiting}"),
            None,
        )
        .await;
    assert_eq!(status, 409, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cancel it first")),
        "{problem:#}"
    );
    let (status, _) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{waiting}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .send_json(
            reqwest::Method::DELETE,
            &format!("/executions/{waiting}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body:#}");
}

/// A server whose retention keeps only the newest succeeded execution.
mod by_age {
    use crate::support::*;

    orchestrator_store::for_each_backend!(
        with retention_server;
        retention_deletes_finished_executions_by_age,
    );

    async fn retention_server(url: String) -> Server {
        Server::start_with(url, |settings| {
            settings.retention = orchestrator_engine::retention::RetentionSettings {
                rules: vec![orchestrator_engine::retention::RetentionRule {
                    status: orchestrator_core::flow::ExecutionStatus::Succeeded,
                    max_age_ms: Some(0),
                    keep: Some(1),
                }],
                every: std::time::Duration::from_secs(1),
            };
        })
        .await
    }

    async fn retention_deletes_finished_executions_by_age(s: Server) {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let done = s
                .run_yaml("name: short\nsteps:\n  - id: a\n    tool: echo\n", "")
                .await;
            assert_eq!(done["status"], "succeeded");
            ids.push(done["id"].as_str().expect("id").to_string());
        }
        let failed = s
            .run_yaml(
                "name: bad\nsteps:\n  - id: r\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nothing/here.txt}\n",
                "",
            )
            .await;
        assert_eq!(failed["status"], "failed");
        // Within a few seconds, all succeeded ones but the newest are gone; the
        // failed one has no rule.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let mut left = Vec::new();
            for id in &ids {
                let (status, _) = s.get(&format!("/executions/{id}")).await;
                left.push(status == 200);
            }
            if left == [false, false, true] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still there: {left:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let (status, _) = s
            .get(&format!(
                "/executions/{}",
                failed["id"].as_str().unwrap_or_default()
            ))
            .await;
        assert_eq!(status, 200);
    }
}
