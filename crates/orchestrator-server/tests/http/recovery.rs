//! Recovery from checkpoints, cancellation, step and execution timeouts,
//! and the queue's back-pressure.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    recovering_a_failed_execution_reruns_only_what_did_not_succeed,
    cancelling_stops_what_has_not_started,
    a_step_that_times_out_is_retried_and_the_run_continues,
    cancelling_kills_a_running_command,
);

async fn recovering_a_failed_execution_reruns_only_what_did_not_succeed(s: Server) {
    let yaml = "name: rec\nsteps:\n  - id: write_a\n    tool: filesystem\n    action: write\n    parameters: {path: count/a.txt, content: \"a\\n\", append: true}\n  - id: read_input\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: input.txt}\n  - id: after\n    tool: filesystem\n    action: write\n    depends_on: [write_a]\n    parameters: {path: count/after.txt, content: \"{{ read_input.result.content }}\\n\", append: true}\noutputs:\n  got: '{{ read_input.result.content }}'\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let id = done["id"].as_str().expect("id").to_string();
    assert_eq!(step(&done, "write_a")["status"], "succeeded");
    assert_eq!(step(&done, "read_input")["status"], "failed");
    std::fs::write(s.workspace.path().join("input.txt"), "fixed").expect("write input");

    let recover = |body: Value| {
        s.client
            .post(s.url(&format!("/executions/{id}/recover")))
            .json(&body)
            .send()
    };
    let r = recover(json!({})).await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    let rerun: Vec<&str> = body["rerun"]
        .as_array()
        .expect("rerun")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rerun.contains(&"read_input") && !rerun.contains(&"write_a"),
        "{rerun:?}"
    );
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["got"], "fixed");
    assert_eq!(s.file("count/a.txt"), "a\n", "a succeeded step ran again");
    assert_eq!(s.file("count/after.txt"), "fixed\n");

    // From a checkpoint: exactly that step and what depends on it.
    let r = recover(json!({"from_checkpoint": "write_a"}))
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["rerun"], json!(["write_a", "after"]));
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(s.file("count/a.txt"), "a\na\n");
    assert_eq!(s.file("count/after.txt"), "fixed\nfixed\n");
    let (_, cps) = s.get(&format!("/executions/{id}/checkpoints")).await;
    let reads = cps["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|c| c["step_id"] == "read_input")
        .count();
    assert_eq!(
        reads, 2,
        "read_input: one failed attempt, one success, nothing more"
    );

    // Nothing left to recover, unknown steps and executions.
    assert_eq!(
        recover(json!({})).await.expect("send").status().as_u16(),
        409
    );
    assert_eq!(
        recover(json!({"from_checkpoint": "nope"}))
            .await
            .expect("send")
            .status()
            .as_u16(),
        422
    );
    assert_eq!(
        recover(json!({"from_checkpoint": 999999}))
            .await
            .expect("send")
            .status()
            .as_u16(),
        422
    );
    let missing = s
        .client
        .post(s.url("/executions/00000000-0000-0000-0000-000000000000/recover"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status().as_u16(), 404);
}

async fn cancelling_stops_what_has_not_started(s: Server) {
    let yaml = "name: slow\nsteps:\n  - id: waits\n    tool: filesystem\n    action: read\n    max_retries: 5\n    retry: {delay_ms: 60000, backoff: fixed}\n    parameters: {path: never.txt}\n  - id: next\n    tool: echo\n    depends_on: [waits]\n";
    let (status, body) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().expect("id").to_string();
    // Wait for the first attempt to fail and the retry to be scheduled.
    s.until(&id, 10, |e| step(e, "waits")["status"] == "retrying")
        .await;
    let cancel = || {
        s.client
            .post(s.url(&format!("/executions/{id}/cancel")))
            .send()
    };
    let r = cancel().await.expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["status"], "cancelled");
    assert_eq!(step(&e, "waits")["status"], "cancelled");
    assert_eq!(step(&e, "next")["status"], "cancelled");
    let again: Value = cancel().await.expect("send").json().await.expect("json");
    assert_eq!(again["status"], "cancelled");
    let missing = s
        .client
        .post(s.url("/executions/00000000-0000-0000-0000-000000000000/cancel"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status().as_u16(), 404);
}

async fn a_step_that_times_out_is_retried_and_the_run_continues(s: Server) {
    let done = s.run_yaml(&example("retries_and_timeouts.yaml"), "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let slow = step(&done, "slow");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["error_type"], "TimeoutError");
    assert_eq!(slow["timed_out"], true);
    assert_eq!(slow["attempt"], 2);
    assert_eq!(step(&done, "before")["status"], "succeeded");
    assert_eq!(step(&done, "after")["status"], "succeeded");
    assert_eq!(s.file("out/after.txt"), "ran anyway");
}

async fn cancelling_kills_a_running_command(s: Server) {
    let yaml = "name: sleepy\nsteps:\n  - id: nap\n    tool: terminal\n    action: run\n    parameters: {command: 'echo $$ > nap.pid; exec sleep 30'}\n  - id: later\n    tool: echo\n    depends_on: [nap]\n";
    let (status, body) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().expect("id").to_string();
    let pid_file = s.workspace.path().join("nap.pid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pid_file)
            && !text.trim().is_empty()
        {
            break text.trim().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let r = s
        .client
        .post(s.url(&format!("/executions/{id}/cancel")))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(
        gone(&proc, 2).await,
        "the command still runs 2 s after cancelling"
    );
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(step(&done, "later")["status"], "cancelled");
    // The running step's end is recorded once its worker has stopped it.
    s.until(&id, 5, |e| step(e, "nap")["status"] == "cancelled")
        .await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| settings.max_queued_steps = 0).await;
    let r = s
        .client
        .post(s.url("/executions"))
        .header("content-type", "application/yaml")
        .body(example("hello.yaml"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["type"], "/problems/too-many-requests");
}

/// An execution-wide timeout fails the execution and stops its running step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_past_its_timeout_fails_and_its_steps_stop() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    let yaml = "name: long\nsteps:\n  - id: nap\n    tool: terminal\n    parameters: {command: 'echo $$ > nap.pid; exec sleep 30'}\n  - id: later\n    tool: echo\n    depends_on: [nap]\n";
    let r = s
        .client
        .post(s.url("/executions"))
        .json(&json!({"pipeline": yaml, "options": {"timeout_seconds": 1}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let started = tokio::time::Instant::now();
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        done["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{done:#}"
    );
    assert_eq!(step(&done, "later")["status"], "cancelled");
    // Deadlines are looked at every 250 ms: a 1 s timeout ends well before
    // the next lease reap (5 s); the margin is for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timed out only after {:?}",
        started.elapsed()
    );
    let pid = std::fs::read_to_string(s.workspace.path().join("nap.pid")).expect("pid");
    let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
    assert!(gone(&proc, 15).await, "the step's command still runs");
}
