//! The event stream of an execution (Server-Sent Events).

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    events_resume_without_gap_or_duplicate,
);

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sse {
    pub(crate) id: i64,
    pub(crate) event: String,
    pub(crate) data: Value,
}

/// Reads an SSE response; stops after `limit` events (then drops the
/// connection) or when the server ends the stream.
pub(crate) async fn read_sse(mut r: reqwest::Response, limit: usize) -> (Vec<Sse>, bool) {
    let mut buf = String::new();
    let mut out = Vec::new();
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                out.push(Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("data is JSON"),
                });
                if out.len() == limit {
                    return (out, false);
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(20), r.chunk())
            .await
            .expect("the stream stalled")
        {
            Ok(Some(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => return (out, true),
            Err(e) => panic!("stream broke: {e}"),
        }
    }
}

async fn events_resume_without_gap_or_duplicate(s: Server) {
    let yaml = "name: slow\nsteps:\n  - id: a\n    tool: echo\n  - id: nap\n    tool: terminal\n    action: run\n    depends_on: [a]\n    parameters: {command: sleep 1}\n  - id: b\n    tool: echo\n    depends_on: [nap]\n  - id: c\n    tool: echo\n    depends_on: [nap]\n";
    let (status, created) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_string();
    // Connect mid-run.
    s.until(&id, 20, |e| step(e, "nap")["status"] == "running")
        .await;
    let url = s.url(&format!("/executions/{id}/events"));
    let r = s.client.get(&url).send().await.expect("connect");
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"))
    );
    let (first, ended) = read_sse(r, 3).await;
    assert!(!ended && first.len() == 3);
    // Reconnect where the first connection stopped.
    let last = first.last().map(|e| e.id).unwrap_or(0);
    let r = s
        .client
        .get(&url)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("reconnect");
    let (rest, ended) = read_sse(r, usize::MAX).await;
    assert!(ended, "the stream ends with the execution");
    let mut joined = first.clone();
    joined.extend(rest);
    // Exactly the execution's events, in order: a full replay now it is over.
    let (all, ended) = read_sse(s.client.get(&url).send().await.expect("replay"), usize::MAX).await;
    assert!(ended);
    assert_eq!(joined, all);
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "numbered without gaps"
    );
    assert_eq!(all[0].event, "execution.queued");
    assert_eq!(
        all.last().map(|e| e.event.as_str()),
        Some("execution.succeeded")
    );
    let kinds_of = |step: &str| -> Vec<&str> {
        all.iter()
            .filter(|e| e.data["step_id"] == step)
            .map(|e| e.event.as_str())
            .collect()
    };
    assert_eq!(
        kinds_of("nap"),
        ["step.ready", "step.started", "step.succeeded"]
    );
    assert_eq!(
        kinds_of("a"),
        ["step.started", "step.succeeded"],
        "queued ready at creation"
    );
    let done = s.finished(&id).await;
    assert_eq!(done["last_event_seq"], all.len() as i64);
    // After the last event: the stream ends at once. A bad cursor is a problem.
    let r = s
        .client
        .get(&url)
        .header("Last-Event-ID", all.len().to_string())
        .send()
        .await
        .expect("tail");
    assert_eq!(read_sse(r, usize::MAX).await, (vec![], true));
    let r = s
        .client
        .get(&url)
        .header("Last-Event-ID", "x")
        .send()
        .await
        .expect("bad");
    assert_eq!(r.status().as_u16(), 400);
}
