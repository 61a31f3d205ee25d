//! The HTTP API on a real TCP server, on SQLite and PostgreSQL: the examples
//! run to their documented results, and bad input always gets a problem.

use std::time::Duration;

use orchestrator_server::config::Settings;
use orchestrator_store::testing::{TempDir, sqlite_url};
use serde_json::{Value, json};

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = orchestrator_store::testing::TempDir::new("orch-http");
                    let url = orchestrator_store::testing::sqlite_url(&dir);
                    super::$name(super::Server::start(url).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(url) = orchestrator_store::testing::postgres_url().await {
                        super::$name(super::Server::start(url).await).await;
                    }
                }
            )*
        }
    };
}

both!(
    hello_runs_through_the_api,
    fan_out_fan_in_joins_both_branches,
    branches_follow_the_condition,
    for_each_writes_a_file_per_item,
    report_renders_the_callers_name,
    a_json_pipeline_object_runs_too,
    an_escaping_path_fails_the_step_and_writes_nothing_outside,
    bad_requests_get_problems,
    listing_filters_and_pages,
    idempotent_submissions_replay,
    recovering_a_failed_execution_reruns_only_what_did_not_succeed,
    cancelling_stops_what_has_not_started,
    a_step_that_times_out_is_retried_and_the_run_continues,
    cancelling_kills_a_running_command,
    events_resume_without_gap_or_duplicate,
    webhooks_are_signed_filtered_and_retried,
);

struct Server {
    base: String,
    client: reqwest::Client,
    workspace: TempDir,
    _db_dir: TempDir,
    running: Option<orchestrator_server::RunningServer>,
}

impl Server {
    async fn start(database_url: String) -> Server {
        Self::start_with(database_url, |_| {}).await
    }

    async fn start_with(database_url: String, tweak: impl FnOnce(&mut Settings)) -> Server {
        let workspace = TempDir::new("orch-http-ws");
        let db_dir = TempDir::new("orch-http-db");
        let mut settings = Settings {
            http: orchestrator_tools::http::HttpSettings {
                policy: orchestrator_tools::net::OutboundPolicy::new(&["127.0.0.1".into()], false)
                    .expect("policy"),
                ..Default::default()
            },
            bind: "127.0.0.1:0".parse().expect("addr"),
            database_url,
            workspace_root: workspace.path().to_path_buf(),
            max_body_bytes: 1024 * 1024,
            enable_terminal: true,
            ..Settings::default()
        };
        tweak(&mut settings);
        let running = orchestrator_server::start(settings, true)
            .await
            .expect("server starts");
        Server {
            base: format!("http://{}", running.addr),
            client: orchestrator_tools::net::default_client(),
            workspace,
            _db_dir: db_dir,
            running: Some(running),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_yaml(&self, yaml: &str, query: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(&format!("/executions{query}")))
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the execution until `done` holds for it (or fails after `seconds`).
    async fn until(&self, id: &str, seconds: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let (status, body) = self.get(&format!("/executions/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {seconds} s in vain: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until the execution has finished.
    async fn finished(&self, id: &str) -> Value {
        self.until(id, 20, |e| {
            matches!(
                e["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }

    async fn run_yaml(&self, yaml: &str, query: &str) -> Value {
        let (status, body) = self.post_yaml(yaml, query).await;
        assert_eq!(status, 201, "{body:#}");
        self.finished(body["id"].as_str().expect("id")).await
    }

    /// Posts a body of `size` bytes over a raw connection, reading the answer
    /// while still writing (the server may answer before the body is sent).
    async fn oversized_post(&self, size: usize) -> (u16, String, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        let head = format!(
            "POST /executions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/yaml\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                write.write_all(&chunk[..n]).await?;
                left -= n;
            }
            std::io::Result::Ok(())
        });
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut raw)).await;
        writer.abort();
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ct = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        (
            status,
            ct,
            serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        )
    }

    fn file(&self, path: &str) -> String {
        std::fs::read_to_string(self.workspace.path().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example")
}

/// Whether the process at `proc` (`/proc/PID`) ends (or is a zombie) within `seconds`.
async fn gone(proc: &std::path::Path, seconds: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while proc.exists()
        && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|st| st.contains(") Z "))
    {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn step<'a>(execution: &'a Value, id: &str) -> &'a Value {
    execution["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .unwrap_or(&Value::Null)
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

async fn an_escaping_path_fails_the_step_and_writes_nothing_outside(s: Server) {
    let yaml = "name: escape\nsteps:\n  - id: w\n    tool: filesystem\n    action: write\n    parameters: {path: ../escaped.txt, content: x}\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed");
    let w = step(&done, "w");
    assert_eq!(w["error_type"], "PermissionError");
    assert_eq!(w["attempt"], 1, "a refused path is not retried");
    assert!(
        w["error"]
            .as_str()
            .unwrap_or_default()
            .contains("leaves the workspace"),
        "{w}"
    );
    let outside = s
        .workspace
        .path()
        .parent()
        .expect("parent")
        .join("escaped.txt");
    assert!(!outside.exists());
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
async fn health_ready_and_openapi_answer() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    assert_eq!(s.get("/health").await.1["status"], "ok");
    let (status, ready) = s.get("/ready").await;
    assert_eq!((status, ready["database"].as_str()), (200, Some("sqlite")));
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/executions"]["post"].is_object());
    let r = s
        .client
        .get(s.url("/swagger-ui/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.text().await.unwrap_or_default().contains("swagger"),
        "swagger ui page"
    );
    let r = s.client.get(s.url("/health")).send().await.expect("send");
    let generated = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID request id: {generated:?}");
    let r = s
        .client
        .get(s.url("/nope"))
        .header("x-request-id", "caller-42")
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("caller-42"),
        "kept, on errors too"
    );
    let (_, tools) = s.get("/tools").await;
    let ids: Vec<&str> = tools["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            "data-processing",
            "echo",
            "filesystem",
            "http",
            "llm-generate",
            "report-generator",
            "terminal",
            "validation"
        ]
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_uses_every_tool() {
    use orchestrator_tools::testing::services::{self, Service};
    let searx = Service::start(services::searxng()).await;
    let web = Service::start(services::web()).await;
    let remote = Service::start(services::remote_tool()).await;
    let dir = TempDir::new("orch-http");
    let config = format!(
        "tools:\n  http:\n    allowed_hosts: [127.0.0.1]\n  web_search:\n    backends:\n      - kind: searxng\n        url: {}\n  remote:\n    - id: shout\n      url: {}\n      actions:\n        - name: upper\n          parameters: {{type: object, required: [text], properties: {{text: {{type: string}}}}}}\n",
        searx.url(""),
        remote.url("/tool")
    );
    let config_file = dir.path().join("orchestrator.yaml");
    std::fs::write(&config_file, config).expect("config");
    let loaded = orchestrator_server::config::load(
        &orchestrator_server::config::Overrides {
            config: Some(config_file),
            ..Default::default()
        },
        &std::collections::HashMap::new(),
    )
    .expect("config loads");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.http = loaded.http.clone();
        settings.search_backends = loaded.search_backends.clone();
        settings.remote_tools = loaded.remote_tools.clone();
    })
    .await;

    let (status, tools) = s.get("/tools").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = tools["items"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["id"].as_str()).collect())
        .unwrap_or_default();
    for id in [
        "data-processing",
        "echo",
        "filesystem",
        "http",
        "report-generator",
        "shout",
        "terminal",
        "validation",
        "web-search",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }

    let yaml = format!(
        r#"name: every-tool
steps:
  - id: found
    tool: web-search
    action: search
    parameters: {{query: "sales tax", max_results: 2}}
  - id: fetched
    tool: http
    action: request
    parameters:
      url: "{web}/json"
      query: {{q: "{{{{ found.result.results[0].title }}}}"}}
  - id: loud
    tool: shout
    action: upper
    parameters: {{text: "{{{{ fetched.result.body.query.q }}}}"}}
"#,
        web = web.url("")
    );
    let yaml = yaml
        + r#"
  - id: csv
    tool: filesystem
    action: write
    parameters:
      path: data/sales.csv
      content: "region,amount\nnorth,10\nsouth,5\nnorth,2\n"
  - id: totals
    tool: data-processing
    action: aggregate
    parameters:
      path: "{{ csv.result.path }}"
      group_by: region
      aggregations: {total: {op: sum, field: amount}}
  - id: check
    tool: validation
    action: validate
    parameters:
      data: "{{ totals.result.data }}"
      fail_on_invalid: true
      schema:
        type: array
        items: {type: object, required: [region, total]}
  - id: count_lines
    tool: terminal
    action: run
    depends_on: [check]
    parameters: {command: "wc -l < data/sales.csv"}
  - id: report
    tool: report-generator
    action: generate
    parameters:
      title: Sales
      sections:
        - title: North
          content: "{{ totals.result.data[0].total }} from {{ count_lines.result.stdout | trim }} lines"
      path: out/report.md
  - id: done
    tool: echo
    parameters: {valid: "{{ check.result.valid }}"}
outputs:
  report: "{{ report.result.content }}"
  valid: "{{ done.result.valid }}"
  loud: "{{ loud.result.text }}"
"#;
    let done = s.run_yaml(&yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["valid"], true);
    assert_eq!(done["outputs"]["loud"], "RESULT 1 FOR SALES TAX");
    assert_eq!(remote.requests()[0].json()["step_id"], "loud");
    assert_eq!(
        s.file("out/report.md"),
        "# Sales\n\n## North\n\n12 from 4 lines\n"
    );
}

#[tokio::test]
async fn a_disabled_tool_is_named_as_disabled() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.enable_terminal = false
    })
    .await;
    let (status, problem) = s.post_yaml(&example("retries_and_timeouts.yaml"), "").await;
    assert_eq!(status, 422);
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("'terminal' is disabled on this server"),
        "{message}"
    );
    assert_eq!(problem["errors"][0]["step"], "slow");
}

impl Server {
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn models_run_against_a_local_provider(database_url: String) {
    use orchestrator_tools::testing::services::{self, Service, Wire};
    let provider = Service::start(services::provider(Wire::OpenAi, Some("sk-local"))).await;
    let s = Server::start_with(database_url, |settings| {
        settings.models.env = std::collections::HashMap::from([(
            "OPENAI_API_KEY".to_string(),
            "sk-local".to_string(),
        )]);
        settings.models.strategy = orchestrator_tools::models::Strategy::Cheapest;
    })
    .await;
    let model = |id: &str, cost: f64, caps: &[&str]| {
        json!({"id": id, "provider": "openai", "model": format!("{id}-v1"), "base_url": provider.url("/v1"),
               "api_key_env": "OPENAI_API_KEY", "capabilities": caps, "context_window": 32000,
               "cost_per_1k_tokens": {"input": cost, "output": cost * 2.0}})
    };
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(model(
                "local-mini",
                0.002,
                &["generate", "summarization", "structured"],
            )),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["source"], "api");
    // A model's key comes only from variables models may read: naming the
    // auth pepper sent its value to any listener as a bearer token.
    for var in ["ORCHESTRATOR_AUTH_PEPPER", "DATABASE_URL", "HOME"] {
        let mut stealer = model("stealer", 0.0, &["generate"]);
        stealer["api_key_env"] = json!(var);
        let (status, problem) = s
            .send_json(reqwest::Method::POST, "/models", Some(stealer))
            .await;
        assert_eq!(status, 422, "{var}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("api_key_env_allowed")),
            "{problem}"
        );
    }
    let (status, problem) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(model("local-mini", 0.002, &[])),
        )
        .await;
    assert_eq!(
        (status, problem["status"].clone()),
        (409, json!(409)),
        "{problem}"
    );
    let (status, _) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(model("pricey", 0.05, &["summarization"])),
        )
        .await;
    assert_eq!(status, 201);
    let (status, problem) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(json!({"id": "x", "provider": "openai"})),
        )
        .await;
    assert_eq!(status, 422, "missing model name: {problem}");

    let (_, listed) = s.get("/models?capability=summarization").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    let (_, listed) = s.get("/models?provider=anthropic").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(0));
    let (status, one) = s.get("/models/pricey").await;
    assert_eq!(
        (status, one["spec"]["cost_per_1k_tokens"]["output"].clone()),
        (200, json!(0.1))
    );

    let (status, chosen) = s
        .send_json(
            reqwest::Method::POST,
            "/models/select",
            Some(json!({"tasks": ["summarization"], "max_cost_per_1k": 0.01})),
        )
        .await;
    assert_eq!(status, 200, "{chosen}");
    assert_eq!(chosen["model"]["id"], "local-mini");
    assert!(
        chosen["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cheapest")),
        "{chosen}"
    );
    let (status, problem) = s
        .send_json(
            reqwest::Method::POST,
            "/models/select",
            Some(json!({"capabilities": ["vision"]})),
        )
        .await;
    assert_eq!(status, 422);
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("'local-mini' lacks capability 'vision'")
            && detail.contains("'pricey' lacks"),
        "{detail}"
    );

    // The example: the registry picks the model that meets the requirements.
    std::fs::write(
        s.workspace.path().join("notes.txt"),
        "Rust 2024 shipped.\nIt has async closures.\n",
    )
    .expect("notes");
    let done = s.run_yaml(&example("llm_summary.yaml"), "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["outputs"]["summary"],
        "Summary: Summarise in one sentence:"
    );
    assert_eq!(
        s.file("out/summary.txt"),
        "Summary: Summarise in one sentence:"
    );
    let usage = &step(&done, "summarise")["usage"];
    assert_eq!(usage["models"], json!(["local-mini"]), "{done:#}");
    assert_eq!(
        (usage["calls"].clone(), usage["output_tokens"].clone()),
        (json!(1), json!(5))
    );
    let input = usage["input_tokens"].as_f64().unwrap_or(0.0);
    let expected_cost = (input * 0.002 + 5.0 * 0.004) / 1000.0;
    assert!(
        (usage["cost"].as_f64().unwrap_or(0.0) - expected_cost).abs() < 1e-12,
        "{usage}"
    );
    assert_eq!(done["usage"]["cost"], usage["cost"]);
    let sent = provider.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-local"));
    assert_eq!(sent[0].json()["model"], "local-mini-v1");
    assert_eq!(sent[0].json()["max_tokens"], 100);

    // Structured output: prose first, so it is asked again, then JSON.
    let yaml = "name: structured\nsteps:\n  - id: report\n    action: generate_structured\n    parameters:\n      model: local-mini\n      prompt: \"[bad-json-once] rate this\"\n      schema: {type: object, required: [title, score], properties: {score: {type: integer}}}\noutputs:\n  score: '{{ report.result.score }}'\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["score"], 7);
    assert_eq!(step(&done, "report")["usage"]["calls"], 2);

    // The llm-generate tool with chat messages, on the pipeline's model.
    let yaml = "name: chat\nmodel: openai:local-mini-v1\nsteps:\n  - id: talk\n    tool: llm-generate\n    action: chat\n    parameters:\n      messages:\n        - {role: system, content: Be kind.}\n        - {role: user, content: hello there}\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "talk")["result"]["result"],
        "Summary: hello there"
    );
    let last = provider
        .requests()
        .last()
        .map(|r| r.json())
        .unwrap_or_default();
    assert_eq!(
        last["messages"],
        json!([{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello there"}])
    );

    // A budget the next call could exceed: the step fails without calling.
    let before = provider.requests().len();
    let r = s
        .client
        .post(s.url("/executions"))
        .json(&json!({"pipeline": "name: b\nsteps:\n  - id: ask\n    action: generate\n    parameters: {prompt: hello, model: local-mini}\n", "options": {"max_cost": 0.000001}}))
        .send()
        .await
        .expect("send");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(
        step(&done, "ask")["error_type"],
        "BudgetExceeded",
        "{done:#}"
    );
    assert_eq!(provider.requests().len(), before, "nothing was spent");

    // No model fits: the step says what each one lacks.
    let done = s
        .run_yaml("name: n\nsteps:\n  - id: see\n    action: generate\n    requires_model: {capabilities: [vision]}\n    parameters: {prompt: look}\n", "")
        .await;
    assert_eq!(step(&done, "see")["error_type"], "ModelUnavailableError");
    assert!(
        step(&done, "see")["error"]
            .as_str()
            .is_some_and(|e| e.contains("lacks capability 'vision'")),
        "{done:#}"
    );

    // <AUTO> tags are answered once, at submission, and kept.
    let before = provider.requests().len();
    let yaml = "name: auto\nsteps:\n  - id: pick\n    tool: echo\n    parameters:\n      n: <AUTO type=\"integer\">[answer:3] how many?</AUTO>\n      note: \"take <AUTO>[answer:two] which?</AUTO> of them\"\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "pick")["result"]["result"],
        json!({"n": 3, "note": "take two of them"}),
        "{done:#}"
    );
    assert_eq!(done["auto_answers"][0]["answer"], "3");
    assert_eq!(done["auto_answers"][0]["model"], "local-mini");
    assert_eq!(provider.requests().len(), before + 2);
    let id = done["id"].as_str().expect("id").to_string();
    let (status, _) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{id}/recover"),
            Some(json!({"from_checkpoint": "pick"})),
        )
        .await;
    assert_eq!(status, 200);
    let again = s.finished(&id).await;
    assert_eq!(step(&again, "pick")["result"]["result"]["n"], 3);
    let (_, cps) = s.get(&format!("/executions/{id}/checkpoints")).await;
    assert_eq!(
        cps["items"].as_array().map(Vec::len),
        Some(2),
        "the step ran again: {cps}"
    );
    assert_eq!(
        provider.requests().len(),
        before + 2,
        "a recovery never asks again"
    );
    let (status, problem) = s
        .post_yaml("name: bad\nsteps:\n  - id: pick\n    tool: echo\n    parameters:\n      n: <AUTO type=\"integer\">[answer:many] how many?</AUTO>\n", "")
        .await;
    assert_eq!(status, 422, "{problem}");
    let e = &problem["errors"][0];
    assert_eq!(
        (e["step"].clone(), e["line"].clone()),
        (json!("pick"), json!(6)),
        "{problem}"
    );
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a valid integer")),
        "{problem}"
    );

    let (_, metrics) = s.get("/models/metrics").await;
    let mini = metrics["items"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["model_id"] == "local-mini"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (mini["calls"].clone(), mini["successes"].clone()),
        (json!(7), json!(7)),
        "{metrics}"
    );
    assert!(mini["latency_p95_ms"].as_f64().is_some());

    let (status, _) = s
        .send_json(reqwest::Method::DELETE, "/models/pricey", None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .send_json(reqwest::Method::DELETE, "/models/pricey", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_on_sqlite() {
    let dir = TempDir::new("orch-http");
    models_run_against_a_local_provider(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_on_postgres() {
    if let Some(url) = orchestrator_store::testing::postgres_url().await {
        models_run_against_a_local_provider(url).await;
    }
}

/// A strict reader of the Prometheus text format (0.0.4): every line is a
/// `# HELP`, a `# TYPE` or a sample `name{label="value",...} number`, label
/// values with their escapes; samples belong to a declared metric; histogram
/// buckets are cumulative and end with `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Result<std::collections::BTreeMap<String, f64>, String> {
    use std::collections::BTreeMap;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if !name_ok(name) {
                return Err(at("bad metric name"));
            }
            match kind {
                Some("HELP") => {}
                Some("TYPE")
                    if ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) =>
                {
                    if types.insert(name.to_string(), tail.to_string()).is_some() {
                        return Err(at("metric declared twice"));
                    }
                }
                _ => return Err(at("bad comment")),
            }
            continue;
        }
        let (name, rest) = line.split_at(line.find(['{', ' ']).ok_or_else(|| at("no value"))?);
        if !name_ok(name) {
            return Err(at("bad metric name"));
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut chars = rest.chars().peekable();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                match chars.peek() {
                    Some('}') => {
                        chars.next();
                        break;
                    }
                    Some(',') => {
                        chars.next();
                    }
                    _ => {}
                }
                if chars.peek() == Some(&'}') {
                    continue;
                }
                let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
                if !name_ok(&key) || chars.next() != Some('=') || chars.next() != Some('"') {
                    return Err(at("bad label"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            _ => return Err(at("bad escape")),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(at("unterminated label value")),
                    }
                }
                labels.push((key, value));
            }
        }
        let tail: String = chars.collect();
        let mut fields = tail.split_whitespace();
        let value = match fields.next().ok_or_else(|| at("no value"))? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| at("value is not a number"))?,
        };
        if fields.nth(1).is_some() {
            return Err(at("trailing text"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(at("sample of an undeclared metric"));
        }
        labels.sort();
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        if out.insert(key, value).is_some() {
            return Err(at("duplicate sample"));
        }
    }
    // Histograms: cumulative buckets, +Inf equals _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let prefix = format!("{family}_bucket{{");
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (k, v) in out
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            let inner = &k[prefix.len()..k.len() - 1];
            let (rest, le): (Vec<&str>, Vec<&str>) =
                inner.split(',').partition(|p| !p.starts_with("le="));
            let le = le
                .first()
                .ok_or("bucket without le")?
                .trim_start_matches("le=")
                .trim_matches('"');
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| "bad le")?
            };
            series.entry(rest.join(",")).or_default().push((bound, *v));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1)
                || buckets.last().map(|b| b.0) != Some(f64::INFINITY)
            {
                return Err(format!(
                    "{family}{{{labels}}}: buckets are not cumulative up to +Inf"
                ));
            }
            let count = out.get(&format!("{family}_count{{{labels}}}")).copied();
            if count != buckets.last().map(|b| b.1) {
                return Err(format!(
                    "{family}{{{labels}}}: +Inf bucket differs from _count"
                ));
            }
        }
    }
    Ok(out)
}

async fn scrape(s: &Server) -> std::collections::BTreeMap<String, f64> {
    let r = s.client.get(s.url("/metrics")).send().await.expect("send");
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let text = r.text().await.expect("text");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    key: &str,
) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_what_a_run_did() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    let before = scrape(&s).await;
    let ok = s
        .run_yaml("name: three\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n  - id: c\n    tool: echo\n    depends_on: [a]\n", "")
        .await;
    assert_eq!(ok["status"], "succeeded");
    let bad = s
        .run_yaml("name: bad\nsteps:\n  - id: r\n    tool: filesystem\n    action: read\n    max_retries: 2\n    retry: {delay: 0.01}\n    parameters: {path: missing.txt}\n", "")
        .await;
    assert_eq!(bad["status"], "failed");
    let after = scrape(&s).await;
    let d = |k: &str| delta(&before, &after, k);
    assert_eq!(d("orchestrator_executions{status=\"succeeded\"}"), 1.0);
    assert_eq!(d("orchestrator_executions{status=\"failed\"}"), 1.0);
    assert_eq!(
        d("orchestrator_steps_finished_total{status=\"succeeded\",tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_steps_finished_total{status=\"failed\",tool=\"filesystem\"}"),
        2.0
    );
    assert_eq!(
        d("orchestrator_step_retries_total{tool=\"filesystem\"}"),
        1.0
    );
    assert_eq!(
        d("orchestrator_step_duration_seconds_count{tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_step_duration_seconds_bucket{le=\"+Inf\",tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_step_queue_wait_seconds_count{tool=\"filesystem\"}"),
        2.0
    );
    assert_eq!(
        d("orchestrator_http_requests_total{method=\"POST\",route=\"/executions\",status=\"201\"}"),
        2.0
    );
    assert!(
        d(
            "orchestrator_http_requests_total{method=\"GET\",route=\"/executions/{id}\",status=\"200\"}"
        ) >= 2.0,
        "polling counted under the route template: {:#?}",
        after
            .keys()
            .filter(|k| k.contains("http_requests"))
            .collect::<Vec<_>>()
    );
    assert_eq!(after.get("orchestrator_queue_ready_steps{}"), Some(&0.0));
    assert_eq!(after.get("orchestrator_worker_slots_total{}"), Some(&10.0));

    let (status, summary) = s.get("/metrics/summary").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            summary["total_executions"].clone(),
            summary["successful_executions"].clone(),
            summary["failed_executions"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(summary["success_rate"], 0.5);
    assert!(
        summary["average_execution_time"]
            .as_f64()
            .is_some_and(|t| t >= 0.0)
    );
    assert!(
        summary["resource_utilization"]["memory_mb"]
            .as_f64()
            .is_some_and(|m| m > 1.0),
        "{summary}"
    );
    assert!(
        summary["resource_utilization"]["cpu_percent"]
            .as_f64()
            .is_some(),
        "{summary}"
    );

    let (status, health) = s.get("/health/components").await;
    assert_eq!(status, 200);
    assert_eq!(health["store"]["status"], "healthy", "{health}");
    assert_eq!(health["worker_pool"]["status"], "healthy", "{health}");
    assert_eq!(
        health["model_registry"]["status"], "warning",
        "no models yet: {health}"
    );
    assert_eq!(health["overall"], "warning");
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// Reads an SSE response; stops after `limit` events (then drops the
/// connection) or when the server ends the stream.
async fn read_sse(mut r: reqwest::Response, limit: usize) -> (Vec<Sse>, bool) {
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
            body["sent_at"].as_i64().unwrap_or(0) / 1000,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_guard_the_api() {
    use orchestrator_server::auth::{Scope, Secret, new_token};
    let dir = TempDir::new("orch-http");
    let pepper = Secret("test-pepper".into());
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.auth.enabled = true;
        settings.auth.pepper = Secret("test-pepper".into());
        settings.auth.max_active_executions_per_token = 1;
    })
    .await;
    let store = s
        .running
        .as_ref()
        .expect("running")
        .state
        .engine()
        .store()
        .clone();
    let mut tokens = std::collections::HashMap::new();
    for scope in [Scope::Read, Scope::Submit, Scope::Admin] {
        let (record, text) = new_token(scope.as_str(), scope, &pepper);
        store.create_token(&record).await.expect("token");
        tokens.insert(scope, (record.id, text));
    }
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut r = s.client.request(method, s.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.expect("send");
            let status = r.status().as_u16();
            let www = r.headers().get("www-authenticate").is_some();
            (status, www, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let read = tokens[&Scope::Read].1.clone();
    let submit = tokens[&Scope::Submit].1.clone();
    let admin = tokens[&Scope::Admin].1.clone();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Open: liveness, readiness, the API document.
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(call(get.clone(), path, None, None).await.0, 200, "{path}");
    }
    let (_, _, doc) = call(get.clone(), "/openapi.json", None, None).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // 401 without a token or with a wrong one, with WWW-Authenticate.
    let (status, www, problem) = call(get.clone(), "/executions", None, None).await;
    assert_eq!(
        (status, www, problem["type"].clone()),
        (401, true, json!("/problems/unauthorized"))
    );
    let forged = format!("{}x", &read[..read.len() - 1]);
    for bad in ["nonsense", "orc_abc_def", forged.as_str()] {
        assert_eq!(
            call(get.clone(), "/executions", Some(bad), None).await.0,
            401,
            "{bad}"
        );
    }
    assert_eq!(
        call(get.clone(), "/metrics", None, None).await.0,
        401,
        "metrics closed by default"
    );
    // read: GET only.
    assert_eq!(
        call(get.clone(), "/executions", Some(&read), None).await.0,
        200
    );
    let submission = json!({"pipeline": "name: t\nsteps:\n  - id: a\n    tool: echo\n"});
    let (status, _, problem) = call(
        post.clone(),
        "/executions",
        Some(&read),
        Some(submission.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (403, json!("/problems/forbidden"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("'submit'")),
        "{problem}"
    );
    // submit: executions, not webhooks or tokens.
    assert_eq!(
        call(post.clone(), "/executions", Some(&submit), Some(submission))
            .await
            .0,
        201
    );
    assert_eq!(
        call(get.clone(), "/webhooks", Some(&submit), None).await.0,
        403
    );
    assert_eq!(
        call(
            post.clone(),
            "/models",
            Some(&submit),
            Some(json!({"id": "m", "provider": "openai", "model": "x"}))
        )
        .await
        .0,
        403
    );
    // admin: tokens; a created token works, a revoked one stops working.
    let (status, _, created) = call(
        post.clone(),
        "/tokens",
        Some(&admin),
        Some(json!({"name": "ci", "scope": "read"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let fresh = created["token"].as_str().expect("shown once").to_string();
    assert_eq!(
        call(get.clone(), "/executions", Some(&fresh), None).await.0,
        200
    );
    let (_, _, listed) = call(get.clone(), "/tokens", Some(&admin), None).await;
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none()),
        "{listed}"
    );
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            &format!("/tokens/{id}"),
            Some(&admin),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(get.clone(), "/executions", Some(&fresh), None).await.0,
        401,
        "revoked"
    );

    // One execution in flight per token here: a second one waits its turn.
    let (record, limited) = new_token("limited", Scope::Submit, &pepper);
    store.create_token(&record).await.expect("token");
    let slow = json!({"pipeline": "name: slow\nsteps:\n  - id: nap\n    tool: terminal\n    action: run\n    parameters: {command: sleep 5}\n"});
    let (status, _, first) = call(
        post.clone(),
        "/executions",
        Some(&limited),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, problem) = call(
        post.clone(),
        "/executions",
        Some(&limited),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (429, json!("/problems/too-many-requests"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_active_executions_per_token")),
        "{problem}"
    );
    let id = first["id"].as_str().expect("id");
    assert_eq!(
        call(
            post.clone(),
            &format!("/executions/{id}/cancel"),
            Some(&limited),
            None
        )
        .await
        .0,
        200
    );
    let (status, _, second) = call(post.clone(), "/executions", Some(&limited), Some(slow)).await;
    assert_eq!(status, 201, "a cancelled execution no longer counts");
    let id = second["id"].as_str().expect("id");
    call(
        post.clone(),
        &format!("/executions/{id}/cancel"),
        Some(&limited),
        None,
    )
    .await;
}

#[test]
fn without_authentication_only_loopback_is_served() {
    use orchestrator_server::cli::check_exposure;
    let mut settings = Settings {
        bind: "0.0.0.0:8080".parse().expect("addr"),
        ..Settings::default()
    };
    let err = check_exposure(&settings).expect_err("refused");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
    settings.auth.allow_unauthenticated = true;
    assert!(check_exposure(&settings).is_ok());
    settings.auth.allow_unauthenticated = false;
    settings.auth.enabled = true;
    assert!(check_exposure(&settings).is_ok());
    settings.auth.enabled = false;
    settings.bind = "127.0.0.1:8080".parse().expect("addr");
    assert!(check_exposure(&settings).is_ok());
}

#[tokio::test]
async fn the_console_is_served_open_with_its_headers() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.auth.enabled = true;
    })
    .await;
    let plain = orchestrator_tools::net::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = plain.get(s.url("/ui")).send().await.expect("send");
    assert!(r.status().is_redirection(), "/ui: {}", r.status());
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui/")
    );
    let root = plain.get(s.url("/")).send().await.expect("send");
    assert_eq!(root.status().as_u16(), 200, "the console at /");
    let root = root.text().await.expect("body");
    let r = plain.get(s.url("/ui/")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200, "open with authentication on");
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let page = r.text().await.expect("body");
    assert!(page.contains("/ui/app.js") && page.contains("/ui/vendor/dagre.min.js"));
    assert_eq!(page, root, "the same page at / and /ui/");

    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/dagre.min.js", "text/javascript"),
    ] {
        let r = plain
            .get(s.url(&format!("/ui/{file}")))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "{file}");
        assert!(header(&r, "content-type").starts_with(kind), "{file}");
        let etag = header(&r, "etag");
        assert!(etag.starts_with('"'), "{file}: etag {etag:?}");
        let again = plain
            .get(s.url(&format!("/ui/{file}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("send");
        assert_eq!(again.status().as_u16(), 304, "{file} revalidates");
    }
    let r = plain
        .get(s.url("/ui/secrets.txt"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let r = plain.get(s.url("/ui/session")).send().await.expect("send");
    let session: Value = r.json().await.expect("json");
    assert_eq!(session["auth"], true);
    // The data behind the pages still needs a token.
    let r = plain.get(s.url("/executions")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
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

/// A connection that has sent `head` (and then sends nothing).
async fn connection_sending(addr: &str, head: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(head).await.expect("write");
    c
}

/// Reads until the server closes the connection; `true` when it did within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_capped() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.connections = orchestrator_server::listener::ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            max_connections: 40,
        };
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // 30 connections that send part of a request head, then nothing: they
    // stayed open for good.
    let mut slow = Vec::new();
    for _ in 0..30 {
        slow.push(connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await);
    }
    // The server keeps answering others meanwhile.
    let health = s.client.get(s.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    for c in &mut slow {
        assert!(
            closed_within(c, Duration::from_secs(5)).await,
            "a slow request head stayed open"
        );
    }
    // A kept-alive connection that sends nothing more is closed too.
    let mut idle = connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle connection stayed open"
    );
    // At the cap, a new client waits for a slot instead of taking the
    // process's descriptors; the slots come back as slow ones time out.
    let mut full = Vec::new();
    for _ in 0..40 {
        full.push(connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await);
    }
    let started = std::time::Instant::now();
    let health = s.client.get(s.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered past the cap after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_endpoints_and_webhooks_obey_the_egress_policy() {
    use orchestrator_tools::testing::services::{self, Service, Wire};
    let provider = Service::start(services::provider(Wire::OpenAi, None)).await;
    let trusted = Service::start(services::provider(Wire::OpenAi, None)).await;
    let trusted_url = trusted.url("/v1");
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        // As configured by default: public hosts only, for models and webhooks.
        settings.http.policy = orchestrator_tools::net::OutboundPolicy::default();
        settings.models.egress = Some(std::sync::Arc::new(
            orchestrator_tools::net::OutboundPolicy::default(),
        ));
        // What the models file names is the operator's choice.
        settings.models.trusted_base_urls = [trusted_url.clone()].into();
    })
    .await;
    let port = provider
        .url("/")
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .to_string();
    let model = |id: &str, base: String| json!({"id": id, "provider": "openai", "model": "m", "base_url": base, "capabilities": ["generate"]});
    for base in [
        provider.url("/v1"),
        format!("http://localhost:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://[::127.0.0.1]:{port}/v1"),
    ] {
        let (status, problem) = s
            .send_json(
                reqwest::Method::POST,
                "/models",
                Some(model("inside", base.clone())),
            )
            .await;
        assert_eq!(status, 422, "{base}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("models.allowed_hosts")),
            "{problem}"
        );
    }
    // A model stored before the policy (or by another process) is refused
    // when called, and nothing of the endpoint's answer reaches the step.
    let store = s
        .running
        .as_ref()
        .expect("running")
        .state
        .engine()
        .store()
        .clone();
    store
        .insert_model("old", &model("old", provider.url("/v1")), "api")
        .await
        .expect("insert");
    let done = s
        .run_yaml(
            "name: m\nsteps:\n  - id: ask\n    action: generate\n    model: old\n    max_retries: 1\n    parameters: {prompt: hi}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let error = done["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("is refused"), "{error}");
    assert!(provider.requests().is_empty(), "the endpoint was reached");
    // The operator's own endpoint on loopback is reached.
    let (status, body) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(model("mine", trusted_url.clone())),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let done = s
        .run_yaml(
            "name: m\nsteps:\n  - id: ask\n    action: generate\n    model: mine\n    parameters: {prompt: hi}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    // A webhook to a name for loopback is refused when registered, not at
    // every delivery.
    let (status, problem) = s
        .send_json(
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({"url": format!("http://localhost:{port}/hook"), "events": ["execution.finished"]})),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is refused") && d.contains("loopback")),
        "{problem}"
    );
}
