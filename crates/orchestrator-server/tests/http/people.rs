//! Steps that wait for a person: asked, listed, answered (checked against
//! the question), timed out, auto-approved and cancelled, on both backends.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    people_answer_waiting_steps,
    unanswered_questions_time_out_or_need_nobody,
);

const ASK: &str = "name: ask\nsteps:\n  - id: pick\n    tool: user-prompt\n    action: execute\n    parameters: {prompt: 'Pick a format', input_type: choice, choices: [csv, json], default: csv}\n  - id: approve\n    tool: approval-gate\n    action: execute\n    parameters: {title: 'Ship it?', content: 'format {{ pick.value }}'}\n  - id: save\n    tool: filesystem\n    action: write\n    condition: '{{ approve.approved }}'\n    parameters: {path: 'ask/out.{{ pick.value }}', content: \"{{ approve.modified_content or 'original' }}\"}\n  - id: feedback\n    tool: feedback-collection\n    action: execute\n    depends_on: [save]\n    parameters:\n      title: How was it\n      questions: [{id: stars, type: rating, scale: 5}, {id: again, type: boolean}, {id: note, type: text}]\n      required_questions: [stars]\n      save_to_file: ask/feedback.json\n";

/// Waits until `step` of `id` is waiting; returns the execution.
async fn waiting_on(s: &Server, id: &str, step_id: &str) -> Value {
    s.until(id, 20, |e| step(e, step_id)["status"] == "waiting")
        .await
}

async fn answer(s: &Server, id: &str, step_id: &str, body: Value) -> (u16, Value) {
    s.send_json(
        reqwest::Method::POST,
        &format!("/executions/{id}/steps/{step_id}/answer"),
        Some(body),
    )
    .await
}

async fn people_answer_waiting_steps(s: Server) {
    let (status, created) = s.post_yaml(ASK, "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    // The first question: on the execution, in GET /waiting, as an event.
    let e = waiting_on(&s, &id, "pick").await;
    assert_eq!(e["status"], "running", "{e:#}");
    assert_eq!(e["progress"]["waiting"], 1, "{e:#}");
    let waiting = &step(&e, "pick")["waiting"];
    assert_eq!(waiting["kind"], "user-prompt", "{e:#}");
    assert_eq!(waiting["request"]["prompt"], "Pick a format");
    assert_eq!(
        waiting["request"]["schema"]["properties"]["value"]["enum"],
        json!(["csv", "json"])
    );
    assert_eq!(
        waiting["answer_url"],
        format!("/executions/{id}/steps/pick/answer")
    );
    let (status, open) = s.get("/waiting").await;
    assert_eq!(status, 200, "{open}");
    let mine: Vec<&Value> = open["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter(|w| w["execution_id"] == id.as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(mine.len(), 1, "{open}");
    assert_eq!(mine[0]["step_id"], "pick");
    let kinds: Vec<String> = s
        .store()
        .list_events(&id, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"step.waiting".to_string()), "{kinds:?}");

    // Answers are checked against the question; a second answer conflicts.
    let (status, problem) = answer(&s, &id, "pick", json!({"value": "xml"})).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("csv, json")),
        "{problem}"
    );
    let (status, problem) = answer(&s, &id, "nowhere", json!({"value": "csv"})).await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = answer(&s, &id, "pick", json!(["json"])).await;
    assert_eq!(status, 400, "{problem}");
    let (status, done) = answer(&s, &id, "pick", json!({"value": "json"})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["answer"], json!({"value": "json"}));
    assert!(done["answered_at"].is_string(), "{done}");
    let (status, problem) = answer(&s, &id, "pick", json!({"value": "csv"})).await;
    assert_eq!(status, 409, "{problem}");

    // The approval: a rejection needs a reason; a modification is approval.
    waiting_on(&s, &id, "approve").await;
    let e = s.get(&format!("/executions/{id}")).await.1;
    assert_eq!(
        step(&e, "pick")["result"]["result"]["value"],
        "json",
        "{e:#}"
    );
    assert_eq!(
        step(&e, "approve")["waiting"]["request"]["content"],
        "format json"
    );
    let (status, problem) = answer(&s, &id, "approve", json!({"action": "reject"})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = answer(&s, &id, "approve", json!({"action": "modify"})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, done) = answer(
        &s,
        &id,
        "approve",
        json!({"action": "modify", "modified_content": "format JSON, reviewed"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");

    // The form: required questions, ranges and unknown ids are checked.
    waiting_on(&s, &id, "feedback").await;
    assert_eq!(s.file("ask/out.json"), "format JSON, reviewed");
    for bad in [
        json!({"responses": {"again": true}}),
        json!({"responses": {"stars": 6}}),
        json!({"responses": {"stars": 4, "mood": "fine"}}),
        json!({"stars": 4}),
    ] {
        let (status, problem) = answer(&s, &id, "feedback", bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {problem}");
    }
    let (status, done) = answer(
        &s,
        &id,
        "feedback",
        json!({"responses": {"stars": 4, "again": true, "note": "quick"}}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let e = s.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let approve = &step(&e, "approve")["result"]["result"];
    assert_eq!(approve["approved"], true, "{e:#}");
    assert_eq!(approve["action"], "modify");
    let feedback = &step(&e, "feedback")["result"]["result"];
    assert_eq!(feedback["summary"]["average_rating"], 4.0, "{e:#}");
    // The seed's names for the summary, which its pipelines read.
    assert_eq!(feedback["summary"]["rating_average"], 4.0, "{e:#}");
    assert_eq!(
        feedback["summary"]["boolean_summary"],
        json!({"again": true})
    );
    assert_eq!(feedback["response_count"], 3);
    assert_eq!(feedback["saved_to_file"], true);
    let saved: Value = serde_json::from_str(&s.file("ask/feedback.json")).expect("json file");
    assert_eq!(saved["responses"]["note"], "quick");
    // Each step ran one attempt, whatever the waiting.
    assert_eq!(step(&e, "pick")["attempt"], 1, "{e:#}");

    // A rejection with its reason: not approved, and the gated step skips.
    let (_, created) = s
        .post_yaml("name: gate\nsteps:\n  - id: gate\n    tool: approval-gate\n    action: execute\n    parameters: {title: Ship?, content: v3}\n  - id: ship\n    tool: echo\n    condition: '{{ gate.approved }}'\n", "")
        .await;
    let gate = created["id"].as_str().expect("id").to_string();
    waiting_on(&s, &gate, "gate").await;
    let (status, done) = answer(
        &s,
        &gate,
        "gate",
        json!({"action": "reject", "reason": "tests are red"}),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let e = s.finished(&gate).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let result = &step(&e, "gate")["result"]["result"];
    assert_eq!(
        (result["approved"].clone(), result["reason"].clone()),
        (json!(false), json!("tests are red")),
        "{e:#}"
    );
    assert_eq!(
        result["rejection_reason"], "tests are red",
        "the seed's name"
    );
    assert_eq!(step(&e, "ship")["status"], "skipped", "{e:#}");

    // Cancelled while waiting: the question is withdrawn.
    let (_, created) = s.post_yaml(ASK, "").await;
    let other = created["id"].as_str().expect("id").to_string();
    waiting_on(&s, &other, "pick").await;
    let (status, cancelled) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{other}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(step(&cancelled, "pick")["status"], "cancelled");
    let (_, open) = s.get("/waiting").await;
    assert!(
        !open.to_string().contains(&other),
        "a cancelled execution asks nothing: {open}"
    );
    let (status, problem) = answer(&s, &other, "pick", json!({"value": "csv"})).await;
    assert_eq!(status, 409, "{problem}");
}

async fn unanswered_questions_time_out_or_need_nobody(s: Server) {
    let yaml = "name: late\nsteps:\n  - id: pick\n    tool: user-prompt\n    action: execute\n    parameters: {prompt: 'How many?', input_type: number, default: 3, timeout: 0.3}\n  - id: gate\n    tool: approval-gate\n    action: execute\n    parameters: {title: t, content: c, auto_approve: true}\n  - id: late_gate\n    tool: approval-gate\n    action: execute\n    parameters: {title: t, content: c, timeout: 0.3, default_action: reject}\n";
    let e = s.run_yaml(yaml, "").await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let pick = &step(&e, "pick")["result"]["result"];
    assert_eq!(
        (pick["value"].clone(), pick["used_default"].clone()),
        (json!(3), json!(true)),
        "{e:#}"
    );
    assert_eq!(
        step(&e, "gate")["result"]["result"]["action"],
        "auto_approved"
    );
    let late = &step(&e, "late_gate")["result"]["result"];
    assert_eq!(
        (late["approved"].clone(), late["timed_out"].clone()),
        (json!(false), json!(true)),
        "{e:#}"
    );

    // No default: the step fails with a timeout.
    let e = s
        .run_yaml(
            "name: nobody\nsteps:\n  - id: gate\n    tool: approval-gate\n    action: execute\n    max_retries: 1\n    parameters: {title: t, content: c, timeout: 0.3}\n",
            "",
        )
        .await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(step(&e, "gate")["error_type"], "TimeoutError", "{e:#}");
}
