//! Submitting, running, listing and validating executions; bad requests
//! answered with problems.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    hello_runs_through_the_api,
    fan_out_fan_in_joins_both_branches,
    branches_follow_the_condition,
    for_each_writes_a_file_per_item,
    report_renders_the_callers_name,
    a_json_pipeline_object_runs_too,
    bad_requests_get_problems,
    listing_filters_and_pages,
    idempotent_submissions_replay,
    keys_the_compiler_ignores_are_reported_on_the_execution,
    the_execution_error_names_the_step_that_failed_first,
    polling_a_large_execution_never_shows_a_stale_status,
);

/// The cause first: an output that reads the failed step is secondary.
async fn the_execution_error_names_the_step_that_failed_first(s: Server) {
    let yaml = "name: cause\nsteps:\n  - id: read\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nowhere/input.txt}\n  - id: shout\n    tool: echo\n    depends_on: [read]\n    parameters: {text: '{{ read.content | upper }}'}\noutputs:\n  loud: '{{ shout.text }}'\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "step 'read' failed (FileNotFoundError): 'nowhere/input.txt' does not exist"
        ),
        "{error}"
    );
    assert!(
        error.contains("then output 'loud' cannot be rendered"),
        "{error}"
    );
    let url = s.url(&format!(
        "/executions/{}/events",
        done["id"].as_str().unwrap_or_default()
    ));
    let (events, _) =
        crate::events::read_sse(s.client.get(&url).send().await.expect("events"), usize::MAX).await;
    let failed = events
        .iter()
        .find(|e| e.event == "execution.failed")
        .expect("an execution.failed event");
    assert_eq!(failed.data["data"]["error"], error, "{:?}", failed.data);
}

async fn hello_runs_through_the_api(s: Server) {
    let r = s
        .client
        .post(s.url("/executions"))
        .header("content-type", "application/yaml")
        .body(example("hello.yaml"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("location");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        location,
        format!("/executions/{}", body["id"].as_str().expect("id"))
    );
    let done = s.finished(body["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"], json!({"greeting": "hello, world"}));
    assert_eq!(
        done["levels"],
        json!([["write_greeting"], ["read_greeting"]])
    );
    assert_eq!(done["progress"]["succeeded"], 2);
    assert_eq!(
        step(&done, "read_greeting")["result"]["result"]["content"],
        "hello, world"
    );
    assert_eq!(step(&done, "read_greeting")["attempt"], 1);
    assert_eq!(s.file("out/greeting.txt"), "hello, world");
    let (status, cps) = s.get(&format!("{location}/checkpoints")).await;
    assert_eq!(status, 200);
    assert_eq!(cps["items"].as_array().map(Vec::len), Some(2));

    // Inputs as query parameters.
    let done = s.run_yaml(&example("hello.yaml"), "?who=query").await;
    assert_eq!(done["outputs"]["greeting"], "hello, query");
}

async fn fan_out_fan_in_joins_both_branches(s: Server) {
    let done = s.run_yaml(&example("fan_out_fan_in.yaml"), "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["levels"],
        json!([["left", "right"], ["read_left", "read_right"], ["join"]])
    );
    assert_eq!(s.file("out/joined.txt"), "LR");
    assert_eq!(done["outputs"]["joined"], "out/joined.txt");

    // The graph: one node per step with its status, one edge per dependency.
    let id = done["id"].as_str().expect("id");
    let text = |format: &'static str| {
        let url = s.url(&format!("/executions/{id}/graph?format={format}"));
        let client = s.client.clone();
        async move {
            let r = client.get(url).send().await.expect("send");
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (ct, r.text().await.unwrap_or_default())
        }
    };
    let (ct, mermaid) = text("mermaid").await;
    assert!(ct.starts_with("text/vnd.mermaid"), "{ct}");
    let lines: Vec<&str> = mermaid.lines().collect();
    assert_eq!(lines[0], "flowchart TD");
    assert_eq!(
        lines.iter().filter(|l| l.contains(":::succeeded")).count(),
        5,
        "{mermaid}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(" --> ")).count(),
        4,
        "{mermaid}"
    );
    let (ct, dot) = text("dot").await;
    assert!(ct.starts_with("text/vnd.graphviz"), "{ct}");
    assert!(
        dot.starts_with("digraph \"fan-out-fan-in\" {") && dot.trim_end().ends_with('}'),
        "{dot}"
    );
    for edge in [
        "\"left\" -> \"read_left\";",
        "\"read_left\" -> \"join\";",
        "\"read_right\" -> \"join\";",
    ] {
        assert!(dot.contains(edge), "{edge} missing from {dot}");
    }
    let (status, _) = s.get(&format!("/executions/{id}/graph?format=png")).await;
    assert_eq!(status, 400);
}

async fn branches_follow_the_condition(s: Server) {
    let done = s.run_yaml(&example("branches.yaml"), "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["branch"], "long");
    assert_eq!(step(&done, "short_path")["status"], "skipped");
    assert_eq!(step(&done, "is_long")["result"]["result"], true);
    let done = s.run_yaml(&example("branches.yaml"), "?text=short").await;
    assert_eq!(done["outputs"]["branch"], "short");
    assert_eq!(step(&done, "long_path")["status"], "skipped");
}

async fn for_each_writes_a_file_per_item(s: Server) {
    let done = s.run_yaml(&example("for_each.yaml"), "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(s.file("out/0.txt"), "1/3 red");
    assert_eq!(s.file("out/1.txt"), "2/3 green");
    assert_eq!(s.file("out/2.txt"), "3/3 blue");
    assert_eq!(
        done["levels"],
        json!([
            ["per_colour_0_write"],
            ["per_colour_1_write"],
            ["per_colour_2_write"],
            ["per_colour"]
        ])
    );
}

async fn report_renders_the_callers_name(s: Server) {
    let r = s
        .client
        .post(s.url("/executions"))
        .json(&json!({"pipeline": example("report.yaml"), "context": {"name": "World"}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    let done = s.finished(body["id"].as_str().expect("id")).await;
    assert_eq!(
        step(&done, "hello")["result"]["result"],
        json!({"content": "Hello World!"})
    );
    // Without the name, the reference can never resolve: 422 naming step and line.
    let (status, problem) = s.post_yaml(&example("report.yaml"), "").await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["code"], "unknown_reference");
    assert_eq!(problem["errors"][0]["step"], "hello");
    assert_eq!(problem["errors"][0]["line"], 8);
}

async fn a_json_pipeline_object_runs_too(s: Server) {
    let pipeline = json!({"name": "obj", "steps": [{"id": "e", "tool": "echo", "parameters": {"n": "{{ n * 2 }}"}}],
        "inputs": {"n": {"type": "integer", "default": 1}}, "outputs": {"doubled": "{{ e.result.n }}"}});
    let r = s
        .client
        .post(s.url("/executions"))
        .json(&json!({"pipeline": pipeline, "context": {"n": 21}, "options": {"max_retries": 1}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.expect("json");
    let done = s.finished(body["id"].as_str().expect("id")).await;
    assert_eq!(done["outputs"]["doubled"], 42);
    assert_eq!(step(&done, "e")["max_attempts"], 1);
}

async fn bad_requests_get_problems(s: Server) {
    let check = |status: u16, expected: u16, body: &Value, kind: &str| {
        assert_eq!(status, expected, "{body:#}");
        assert_eq!(body["type"], format!("/problems/{kind}"), "{body:#}");
        assert_eq!(body["status"], expected);
    };
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("send");
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(ct, "application/problem+json", "status {status}");
        (status, r.json::<Value>().await.expect("json"))
    };
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "application/json")
            .body("{nope"),
    )
    .await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .json(&json!({"pipelin": "x"})),
    )
    .await;
    check(st, 422, &b, "validation-error");
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "application/yaml")
            .body("name: [unclosed\n"),
    )
    .await;
    check(st, 422, &b, "compilation-error");
    assert_eq!(b["errors"][0]["code"], "yaml_syntax");
    assert!(b["errors"][0]["line"].is_number());
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "application/yaml")
            .body("name: c\nsteps:\n  - id: a\n    tool: echo\n    depends_on: [b]\n  - id: b\n    tool: echo\n    depends_on: [a]\n"),
    )
    .await;
    check(st, 422, &b, "compilation-error");
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("a -> b -> a")
    );
    let (st, ct, b) = s.oversized_post(10 * 1024 * 1024).await;
    assert_eq!(ct, "application/problem+json");
    check(st, 413, &b, "payload-too-large");
    let (st, b) = send(
        s.client
            .get(s.url("/executions/00000000-0000-0000-0000-000000000000")),
    )
    .await;
    check(st, 404, &b, "not-found");
    let (st, b) = send(s.client.get(s.url("/executions/not-a-uuid"))).await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(s.client.get(s.url("/executions?colour=blue"))).await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(s.client.get(s.url("/executions?status=sleeping"))).await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(s.client.get(s.url("/executions?limit=0"))).await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(s.client.get(s.url("/executions?cursor=garbage"))).await;
    check(st, 400, &b, "validation-error");
    let (st, b) = send(s.client.get(s.url("/no/such/route"))).await;
    check(st, 404, &b, "not-found");
    let (st, b) = send(s.client.delete(s.url("/executions"))).await;
    check(st, 405, &b, "method-not-allowed");
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "text/html")
            .body("<p>"),
    )
    .await;
    check(st, 415, &b, "unsupported-media-type");
    let (st, b) = send(
        s.client
            .post(s.url("/executions"))
            .json(&json!({"pipeline": example("hello.yaml"), "context": {"who": 5}})),
    )
    .await;
    check(st, 422, &b, "compilation-error");
    assert_eq!(b["errors"][0]["code"], "input_type");
    let (st, b) =
        send(s.client.post(s.url("/executions")).json(
            &json!({"pipeline": example("hello.yaml"), "options": {"workspace": "elsewhere"}}),
        ))
        .await;
    check(st, 422, &b, "validation-error");
    // Nothing of the above was stored.
    let (_, page) = s.get("/executions").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page:#}");
}

async fn listing_filters_and_pages(s: Server) {
    let mut ids = Vec::new();
    for yaml in [
        example("hello.yaml"),
        example("fan_out_fan_in.yaml"),
        example("hello.yaml"),
    ] {
        let done = s.run_yaml(&yaml, "").await;
        ids.push(done["id"].as_str().expect("id").to_string());
    }
    let (_, page) = s.get("/executions?limit=2").await;
    let first: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(first, vec![ids[2].as_str(), ids[1].as_str()]);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, page) = s.get(&format!("/executions?limit=2&cursor={cursor}")).await;
    assert_eq!(page["items"][0]["id"], ids[0].as_str());
    assert!(page.get("next_cursor").is_none());
    let (_, page) = s.get("/executions?pipeline=hello&status=succeeded").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    // `*` matches any run of characters, without regard to case; `_` and
    // `%` are themselves.
    let count = |page: &Value| page["items"].as_array().map_or(0, Vec::len);
    let (_, page) = s.get("/executions?pipeline=HEL*").await;
    assert_eq!(count(&page), 2, "{page:#}");
    let (_, page) = s.get("/executions?pipeline=*an*out*").await;
    assert_eq!(count(&page), 1, "{page:#}");
    let (_, page) = s.get("/executions?pipeline=h_llo*").await;
    assert_eq!(count(&page), 0, "{page:#}");
    let (_, page) = s.get("/executions?pipeline=*").await;
    assert_eq!(count(&page), 3, "{page:#}");
    let (_, page) = s.get("/executions?status=failed").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0));
}

async fn idempotent_submissions_replay(s: Server) {
    let post = |body: Value| {
        s.client
            .post(s.url("/executions"))
            .header("idempotency-key", "abc-1")
            .json(&body)
            .send()
    };
    let first = post(json!({"pipeline": example("hello.yaml")}))
        .await
        .expect("send");
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.expect("json");
    let again = post(json!({"pipeline": example("hello.yaml")}))
        .await
        .expect("send");
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    let other = post(json!({"pipeline": example("hello.yaml"), "context": {"who": "else"}}))
        .await
        .expect("send");
    assert_eq!(other.status().as_u16(), 422);
}

#[tokio::test]
async fn lenient_validation_answers_errors_as_a_result() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    let pipeline = "name: p\nsteps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    depends_on: [a, zz]\n";
    let validate = |prefer: Option<&'static str>| {
        let mut r = s
            .client
            .post(s.url("/pipelines/validate"))
            .json(&json!({ "pipeline": pipeline }));
        if let Some(p) = prefer {
            r = r.header("prefer", p);
        }
        r.send()
    };
    let strict = validate(None).await.expect("send");
    assert_eq!(strict.status().as_u16(), 422);
    let lenient = validate(Some("respond-async, handling=lenient"))
        .await
        .expect("send");
    assert_eq!(lenient.status().as_u16(), 200);
    assert_eq!(
        lenient
            .headers()
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("handling=lenient")
    );
    let body: Value = lenient.json().await.expect("json");
    assert_eq!(body["valid"], false);
    let errors = body["errors"].as_array().expect("errors");
    let at: Vec<(&str, u64, u64)> = errors
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default(),
                e["line"].as_u64().unwrap_or_default(),
                e["column"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        at,
        vec![("unknown_tool", 4, 11), ("unknown_dependency", 7, 21)],
        "each error at its token: {errors:?}"
    );
    // A pipeline that compiles is unaffected by the preference.
    let ok = s
        .client
        .post(s.url("/pipelines/validate"))
        .header("prefer", "handling=lenient")
        .json(&json!({ "pipeline": "name: p\nsteps:\n  - id: a\n    tool: echo\n" }))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    let body: Value = ok.json().await.expect("json");
    assert_eq!(
        (body["valid"].as_bool(), body["errors"].is_null()),
        (Some(true), true)
    );
}

/// Whole problem bodies as clients receive them (ids and times redacted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problem_bodies_keep_their_shape() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    let body = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        json!({"status": status, "body": body})
    };
    let broken = "name: broken\nsteps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    depends_on: [c]\n    parameters: {x: '{{ a.result'}\n";
    let compile = body(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "application/yaml")
            .body(broken)
            .send()
            .await
            .expect("send"),
    )
    .await;
    insta::assert_json_snapshot!("compile_errors", compile, {".body.instance" => "[instance]"});
    let missing = body(
        s.client
            .get(s.url("/executions/00000000-0000-0000-0000-000000000000"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    insta::assert_json_snapshot!("not_found", missing, {".body.instance" => "[instance]"});
    let bad_json = body(
        s.client
            .post(s.url("/executions"))
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .await
            .expect("send"),
    )
    .await;
    insta::assert_json_snapshot!("invalid_json", bad_json, {".body.instance" => "[instance]"});
}

/// A key the language does not know is not silently dropped: the submit
/// answer and the execution carry a warning naming it and its place.
async fn keys_the_compiler_ignores_are_reported_on_the_execution(s: Server) {
    let yaml = "name: w\nsteps:\n  - id: a\n    tool: echo\n    retry_forever: true\n";
    let (status, created) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201, "{created}");
    let warning = &created["warnings"][0];
    assert_eq!(warning["step"], "a", "{created}");
    assert_eq!(warning["pointer"], "/steps/0/retry_forever", "{created}");
    assert_eq!(warning["line"], 5, "{created}");
    assert!(
        warning["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown step key 'retry_forever'")),
        "{created}"
    );
    let id = created["id"].as_str().expect("id");
    let done = s.finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["warnings"], created["warnings"]);
    // Without anything to warn about, there is no list.
    let (_, clean) = s
        .post_yaml("name: c\nsteps:\n  - id: a\n    tool: echo\n", "")
        .await;
    assert!(clean.get("warnings").is_none(), "{clean}");
}

/// Views of large executions may be kept for a moment between polls
/// (`views.rs`); a status is never served late, and an ended execution's
/// view is complete.
async fn polling_a_large_execution_never_shows_a_stale_status(s: Server) {
    let mut yaml = String::from("name: wide\nsteps:\n");
    for i in 0..800 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    tool: echo\n    parameters: {{text: '{i}'}}\n"
        ));
    }
    yaml.push_str("  - id: last\n    tool: echo\n    depends_on: [s0, s799]\n");
    let (status, body) = s.post_yaml(&yaml, "").await;
    assert_eq!(status, 201, "{body:#}");
    let id = body["id"].as_str().expect("id").to_string();
    let done = s
        .until(&id, 60, |view| {
            let counted: u64 = [
                "pending",
                "ready",
                "running",
                "succeeded",
                "failed",
                "skipped",
                "cancelled",
                "retrying",
                "waiting",
            ]
            .iter()
            .map(|k| view["progress"][k].as_u64().unwrap_or(0))
            .sum();
            assert_eq!(
                counted, 801,
                "every step is counted once: {}",
                view["progress"]
            );
            assert_eq!(view["progress"]["total"], 801);
            view["status"] == "succeeded"
        })
        .await;
    assert_eq!(done["progress"]["succeeded"], 801, "{}", done["progress"]);
    assert!(
        done["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .all(|st| st["status"] == "succeeded")
    );
    // The ended view is served again as it is, and as rebuilt.
    let (_, again) = s.get(&format!("/executions/{id}")).await;
    assert_eq!(again, done);
    // Deleting it is seen at once.
    let r = s
        .client
        .delete(s.url(&format!("/executions/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = s.get(&format!("/executions/{id}")).await;
    assert_eq!(status, 404);
}
