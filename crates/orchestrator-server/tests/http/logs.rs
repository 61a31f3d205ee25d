//! Step logs: what a command printed, kept for failed attempts as for
//! succeeded ones, paged and followed live.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    a_failed_commands_output_is_in_its_log,
    a_running_steps_log_can_be_followed_and_resumed,
);

fn lines(page: &Value) -> Vec<(i64, String, String)> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|l| {
                    (
                        l["attempt"].as_i64().unwrap_or(0),
                        l["stream"].as_str().unwrap_or_default().to_string(),
                        l["line"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn a_failed_commands_output_is_in_its_log(s: Server) {
    let yaml = "name: build\nsteps:\n  - id: compile\n    tool: terminal\n    action: run\n    max_retries: 2\n    retry_delay: 0\n    parameters: {command: \"echo compiling; echo 'error: missing semicolon' >&2; exit 3\"}\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let id = done["id"].as_str().expect("id");
    let (status, page) = s.get(&format!("/executions/{id}/steps/compile/logs")).await;
    assert_eq!(status, 200, "{page:#}");
    assert_eq!(page["step_status"], "failed");
    let got = lines(&page);
    // Both attempts, each with its stdout and stderr (their order between
    // the two pipes is the reader's).
    for attempt in [1, 2] {
        for (stream, text) in [
            ("stdout", "compiling"),
            ("stderr", "error: missing semicolon"),
        ] {
            assert!(
                got.contains(&(attempt, stream.to_string(), text.to_string())),
                "attempt {attempt} {stream}: {got:?}"
            );
        }
    }
    assert_eq!(got.len(), 4, "{got:?}");
    let seqs: Vec<i64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|l| l["seq"].as_i64())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    // Paged.
    let (_, rest) = s
        .get(&format!(
            "/executions/{id}/steps/compile/logs?after=2&limit=1"
        ))
        .await;
    assert_eq!(rest["items"][0]["seq"], 3, "{rest:#}");
    assert_eq!(rest["next_after"], 3);
    // Errors.
    let (status, problem) = s.get(&format!("/executions/{id}/steps/nope/logs")).await;
    assert_eq!(status, 404, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no step 'nope'")
    );
    let (status, _) = s
        .get(&format!("/executions/{id}/steps/compile/logs?limit=0"))
        .await;
    assert_eq!(status, 400);
    // A step that printed nothing has an empty log.
    let done = s
        .run_yaml("name: quiet\nsteps:\n  - id: q\n    tool: echo\n", "")
        .await;
    let (status, page) = s
        .get(&format!(
            "/executions/{}/steps/q/logs",
            done["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"], json!([]));
}

/// Reads `event: log` lines of an SSE response until it ends.
async fn read_log_stream(r: reqwest::Response) -> Vec<(i64, String)> {
    let text = tokio::time::timeout(std::time::Duration::from_secs(30), r.text())
        .await
        .expect("the stream ends with the step")
        .expect("body");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str::<Value>(v).ok();
            }
        }
        if let (Some(id), Some(d)) = (id, data) {
            out.push((id, d["line"].as_str().unwrap_or_default().to_string()));
        }
    }
    out
}

async fn a_running_steps_log_can_be_followed_and_resumed(s: Server) {
    let yaml = "name: ticker\nsteps:\n  - id: tick\n    tool: terminal\n    action: run\n    parameters: {command: 'for i in 1 2 3 4; do echo tick $i; sleep 0.3; done'}\n";
    let (status, created) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201, "{created:#}");
    let id = created["id"].as_str().expect("id").to_string();
    s.until(&id, 20, |e| step(e, "tick")["status"] == "running")
        .await;
    let url = s.url(&format!("/executions/{id}/steps/tick/logs?follow=true"));
    let r = s.client.get(&url).send().await.expect("follow");
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"))
    );
    let all = read_log_stream(r).await;
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["tick 1", "tick 2", "tick 3", "tick 4"], "{all:?}");
    // The step has ended: resuming after line 2 gives the rest, then ends.
    let r = s
        .client
        .get(&url)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .expect("resume");
    let rest = read_log_stream(r).await;
    assert_eq!(rest, all[2..].to_vec());
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
}
