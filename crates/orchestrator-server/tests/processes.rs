//! Real `orchestrator` processes killed in the middle of a run: a new process
//! on the same database finishes the work, and no succeeded step runs twice.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator_store::testing::{TempDir, postgres_url, sqlite_url};
use serde_json::Value;

struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `orchestrator serve` on a free port and waits until it listens.
fn start(database_url: &str, workspace: &Path, grace_seconds: u64) -> Proc {
    start_with(database_url, workspace, grace_seconds, &[])
}

/// [`start`] with more environment variables.
fn start_with(
    database_url: &str,
    workspace: &Path,
    grace_seconds: u64,
    env: &[(&str, &str)],
) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("serve")
        .envs(env.iter().copied())
        .env("ORCHESTRATOR_BIND", "127.0.0.1:0")
        .env("ORCHESTRATOR_DATABASE_URL", database_url)
        .env("ORCHESTRATOR_WORKSPACE_ROOT", workspace)
        .env("ORCHESTRATOR_ENABLE_TERMINAL", "true")
        .env("ORCHESTRATOR_HTTP_ALLOWED_HOSTS", "127.0.0.1")
        .env("ORCHESTRATOR_LEASE_MS", "1500")
        .env("ORCHESTRATOR_HEARTBEAT_MS", "300")
        .env(
            "ORCHESTRATOR_SHUTDOWN_GRACE_SECONDS",
            grace_seconds.to_string(),
        )
        .env("ORCHESTRATOR_LOG_LEVEL", "info")
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start orchestrator");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server did not start");
    Proc {
        child,
        base: format!("http://{addr}"),
    }
}

async fn get(base: &str, path: &str) -> Value {
    orchestrator_tools::net::default_client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

fn count_lines(workspace: &Path, file: &str) -> usize {
    std::fs::read_to_string(workspace.join(file))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits until `file` in the workspace has `n` lines (the command started).
async fn wait_lines(workspace: &Path, file: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_lines(workspace, file) < n {
        assert!(Instant::now() < deadline, "{file} never got {n} lines");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const CHAIN: &str = "name: slow-chain\nsteps:\n  - id: s1\n    tool: terminal\n    parameters: {command: 'echo ran >> runs/s1.txt; sleep 0.4'}\n  - id: s2\n    tool: terminal\n    depends_on: [s1]\n    parameters: {command: 'echo ran >> runs/s2.txt; sleep 0.4'}\n  - id: s3\n    tool: terminal\n    depends_on: [s2]\n    parameters: {command: 'echo ran >> runs/s3.txt; sleep 3'}\n  - id: s4\n    tool: terminal\n    depends_on: [s3]\n    parameters: {command: 'echo ran >> runs/s4.txt'}\n  - id: s5\n    tool: filesystem\n    action: read\n    depends_on: [s4]\n    parameters: {path: runs/s1.txt}\noutputs:\n  first: '{{ s5.result.content }}'\n";

async fn submit(base: &str) -> String {
    let r = orchestrator_tools::net::default_client()
        .post(format!("{base}/executions"))
        .header("content-type", "application/yaml")
        .body(CHAIN)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_string()
}

async fn wait_for(base: &str, id: &str, what: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let e = get(base, &format!("/executions/{id}")).await;
        if what(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {e:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn step_status(e: &Value, id: &str) -> String {
    e["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .map(|s| s["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

async fn killed_server_work_is_finished_by_the_next_one(database_url: String) {
    let ws = TempDir::new("orch-crash-ws");
    std::fs::create_dir_all(ws.path().join("runs")).expect("runs");
    let first = start(&database_url, ws.path(), 30);
    let id = submit(&first.base).await;
    wait_for(
        &first.base,
        &id,
        |e| step_status(e, "s3") == "running",
        Duration::from_secs(20),
    )
    .await;
    wait_lines(ws.path(), "runs/s3.txt", 1).await;
    let killed_at = Instant::now();
    drop(first); // SIGKILL
    let second = start(&database_url, ws.path(), 30);
    let done = wait_for(
        &second.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    println!(
        "killed -> finished elsewhere in {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    // Steps that had succeeded ran once; the one in flight ran again; none was lost.
    assert_eq!(count_lines(ws.path(), "runs/s1.txt"), 1);
    assert_eq!(count_lines(ws.path(), "runs/s2.txt"), 1);
    assert_eq!(count_lines(ws.path(), "runs/s3.txt"), 2);
    assert_eq!(count_lines(ws.path(), "runs/s4.txt"), 1);
    assert_eq!(done["outputs"]["first"], "ran\n");
}

async fn sigterm_hands_running_steps_back_and_nothing_is_lost(database_url: String) {
    let ws = TempDir::new("orch-term-ws");
    std::fs::create_dir_all(ws.path().join("runs")).expect("runs");
    let first = start(&database_url, ws.path(), 1);
    let id = submit(&first.base).await;
    wait_for(
        &first.base,
        &id,
        |e| step_status(e, "s3") == "running",
        Duration::from_secs(20),
    )
    .await;
    wait_lines(ws.path(), "runs/s3.txt", 1).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(first.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    let stopped = Instant::now();
    let mut first = first;
    loop {
        if first.child.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "the server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = start(&database_url, ws.path(), 30);
    let done = wait_for(
        &second.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(count_lines(ws.path(), "runs/s1.txt"), 1);
    assert_eq!(count_lines(ws.path(), "runs/s2.txt"), 1);
    assert_eq!(count_lines(ws.path(), "runs/s4.txt"), 1);
    let s3 = done["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == "s3"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        s3["attempt"], 1,
        "a step handed back at shutdown keeps its attempt: {s3:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_server_work_is_finished_by_the_next_one() {
    let dir = TempDir::new("orch-crash-db");
    killed_server_work_is_finished_by_the_next_one(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_server_work_is_finished_by_the_next_one() {
    if let Some(url) = postgres_url().await {
        killed_server_work_is_finished_by_the_next_one(url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigterm_hands_running_steps_back_and_nothing_is_lost() {
    let dir = TempDir::new("orch-term-db");
    sigterm_hands_running_steps_back_and_nothing_is_lost(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_hands_running_steps_back_and_nothing_is_lost() {
    if let Some(url) = postgres_url().await {
        sigterm_hands_running_steps_back_and_nothing_is_lost(url).await;
    }
}

/// Two server processes on one PostgreSQL share the work: every step runs
/// exactly once and both processes run some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_share_the_work_and_run_each_step_once() {
    let Some(url) = postgres_url().await else {
        return;
    };
    let ws = TempDir::new("orch-two-ws");
    let a = start(&url, ws.path(), 30);
    let b = start(&url, ws.path(), 30);
    let mut yaml = String::from("name: twenty\nsteps:\n");
    for i in 0..20 {
        yaml.push_str(&format!(
            "  - id: s{i}\n    tool: echo\n    parameters: {{i: {i}}}\n"
        ));
        if i >= 5 {
            yaml.push_str(&format!("    depends_on: [s{}]\n", i - 5));
        }
    }
    let client = orchestrator_tools::net::default_client();
    let mut ids = Vec::new();
    for n in 0..200 {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        let r = client
            .post(format!("{base}/executions"))
            .header("content-type", "application/yaml")
            .body(yaml.clone())
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.expect("json");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    let mut workers = std::collections::BTreeSet::new();
    for id in &ids {
        let done = wait_for(
            &a.base,
            id,
            |e| e["status"] == "succeeded" || e["status"] == "failed",
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let cps = get(&a.base, &format!("/executions/{id}/checkpoints")).await;
        let items = cps["items"].as_array().expect("items");
        assert_eq!(items.len(), 20, "one checkpoint per step");
        let mut seen = std::collections::BTreeSet::new();
        for c in items {
            assert_eq!(c["attempt"], 1, "{cps:#}");
            assert!(
                seen.insert(c["step_id"].as_str().unwrap_or_default().to_string()),
                "a step ran twice"
            );
            workers.insert(c["worker"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(workers.len(), 2, "both processes ran steps: {workers:?}");
}

/// A worker paused past its lease loses the step to another process; when it
/// resumes, its late result is refused (fencing) and the other one's stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workers_late_result_is_refused() {
    use nix::sys::signal::{Signal, kill};
    let Some(url) = postgres_url().await else {
        return;
    };
    let ws = TempDir::new("orch-stop-ws");
    std::fs::create_dir_all(ws.path().join("runs")).expect("runs");
    let a = start(&url, ws.path(), 30);
    let yaml = "name: paused\nsteps:\n  - id: work\n    tool: terminal\n    parameters: {command: 'echo $PPID >> runs/work.txt; sleep 1; echo finished'}\n";
    let r = orchestrator_tools::net::default_client()
        .post(format!("{}/executions", a.base))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("submit");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(
        &a.base,
        &id,
        |e| step_status(e, "work") == "running",
        Duration::from_secs(20),
    )
    .await;
    wait_lines(ws.path(), "runs/work.txt", 1).await;
    let a_pid = nix::unistd::Pid::from_raw(i32::try_from(a.child.id()).expect("pid"));
    kill(a_pid, Signal::SIGSTOP).expect("sigstop");
    let b = start(&url, ws.path(), 30);
    let done = wait_for(
        &b.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    kill(a_pid, Signal::SIGCONT).expect("sigcont");
    // Give the resumed worker time to try to record its late result.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cps = get(&b.base, &format!("/executions/{id}/checkpoints")).await;
    let items = cps["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        1,
        "only the new worker's result is recorded: {cps:#}"
    );
    let after = get(&b.base, &format!("/executions/{id}")).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["steps"][0]["attempt"], 2);
    assert_eq!(
        count_lines(ws.path(), "runs/work.txt"),
        2,
        "the step ran on both workers"
    );
    assert_ne!(items[0]["worker"], Value::Null);
    drop(a);
}

/// A delivery whose receiver is down when the server is killed is sent by
/// the next server once the receiver is up.
async fn a_pending_webhook_delivery_survives_a_kill(database_url: String) {
    use orchestrator_tools::testing::services::{self, Service};
    let ws = TempDir::new("orch-hook-ws");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let client = orchestrator_tools::net::default_client();
    let first = start(&database_url, ws.path(), 30);
    let r = client
        .post(format!("{}/webhooks", first.base))
        .json(&serde_json::json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["execution.finished"], "secret": "a-secret-of-16-chars"}))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(r.status().as_u16(), 201);
    let hook: Value = r.json().await.expect("json");
    let hook_id = hook["id"].as_str().expect("id").to_string();
    let r = client
        .post(format!("{}/executions", first.base))
        .header("content-type", "application/yaml")
        .body("name: quick\nsteps:\n  - id: a\n    tool: echo\n")
        .send()
        .await
        .expect("submit");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(
        &first.base,
        &id,
        |e| e["status"] == "succeeded",
        Duration::from_secs(20),
    )
    .await;
    // The receiver is down: the first attempt fails and the delivery waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = get(&first.base, &format!("/webhooks/{hook_id}/deliveries")).await;
        if d["items"][0]["attempts"].as_i64().unwrap_or(0) >= 1 {
            assert_eq!(d["items"][0]["status"], "pending", "{d:#}");
            break;
        }
        assert!(Instant::now() < deadline, "no attempt was made: {d:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL
    let receiver =
        Service::start_on(&format!("127.0.0.1:{port}"), services::webhook_receiver(0)).await;
    let second = start(&database_url, ws.path(), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.requests().is_empty() {
        assert!(Instant::now() < deadline, "the delivery never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = &receiver.requests()[0];
    assert_eq!(
        got.header("x-orchestrator-event"),
        Some("execution.succeeded")
    );
    let signature = got.header("x-orchestrator-signature").unwrap_or_default();
    assert!(orchestrator_engine::webhooks::verify(
        "a-secret-of-16-chars",
        &got.body,
        signature
    ));
    assert_eq!(got.json()["execution_id"], id.as_str());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = get(&second.base, &format!("/webhooks/{hook_id}/deliveries")).await;
        if d["items"][0]["status"] == "delivered" {
            assert_eq!(
                d["items"].as_array().map(Vec::len),
                Some(1),
                "one delivery: {d:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recorded as delivered: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pending_webhook_delivery_survives_a_kill() {
    let dir = TempDir::new("orch-hook-db");
    a_pending_webhook_delivery_survives_a_kill(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pending_webhook_delivery_survives_a_kill() {
    if let Some(url) = postgres_url().await {
        a_pending_webhook_delivery_survives_a_kill(url).await;
    }
}

/// An execution whose <AUTO> tag is being answered when its server is
/// killed: the next server asks again and runs it; it was answered at once
/// (201, `resolving`), never while the client waited.
async fn a_resolving_execution_survives_a_kill(database_url: String) {
    use orchestrator_tools::testing::services::{self, Service, Wire};
    let provider = Service::start(services::provider(Wire::OpenAi, None)).await;
    let ws = TempDir::new("orch-resolve-ws");
    let models = ws.path().join("models.yaml");
    std::fs::write(
        &models,
        format!(
            "models:\n  - id: local\n    provider: openai\n    model: m\n    base_url: {}\n    capabilities: [generate]\n",
            provider.url("/v1")
        ),
    )
    .expect("models file");
    let models = models.to_string_lossy().to_string();
    let env = [("ORCHESTRATOR_MODELS_FILE", models.as_str())];
    let first = start_with(&database_url, ws.path(), 30, &env);
    let started = Instant::now();
    let r = orchestrator_tools::net::default_client()
        .post(format!("{}/executions", first.base))
        .header("content-type", "application/yaml")
        .body("name: slow-tag\nparameters:\n  topic: {type: string, default: rivers}\nsteps:\n  - id: say\n    tool: echo\n    parameters:\n      word: <AUTO>[slow:1500][answer:delta] one word about {{ topic }}</AUTO>\n")
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the submit waited for the model"
    );
    let created: Value = r.json().await.expect("json");
    assert_eq!(created["status"], "resolving", "{created:#}");
    let id = created["id"].as_str().expect("id").to_string();
    // The question reached the model, rendered: kill the server before it answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.requests().is_empty() {
        assert!(Instant::now() < deadline, "the tag was never asked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(String::from_utf8_lossy(&provider.requests()[0].body).contains("about rivers"));
    drop(first);
    let second = start_with(&database_url, ws.path(), 30, &env);
    let done = wait_for(
        &second.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let say = done["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == "say"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(say["result"]["result"]["word"], "delta", "{done:#}");
    assert_eq!(provider.requests().len(), 2, "asked once by each server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resolving_execution_survives_a_kill() {
    let dir = TempDir::new("orch-resolve-db");
    a_resolving_execution_survives_a_kill(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resolving_execution_survives_a_kill() {
    if let Some(url) = postgres_url().await {
        a_resolving_execution_survives_a_kill(url).await;
    }
}

/// A step waiting for a person holds nothing: the server is killed, the
/// next one lists the question, takes the answer and finishes the run.
async fn a_waiting_step_survives_a_kill(database_url: String) {
    let ws = TempDir::new("orch-wait-ws");
    let client = orchestrator_tools::net::default_client();
    let first = start(&database_url, ws.path(), 30);
    let r = client
        .post(format!("{}/executions", first.base))
        .header("content-type", "application/yaml")
        .body("name: ask\nsteps:\n  - id: gate\n    tool: approval-gate\n    action: execute\n    parameters: {title: Deploy?, content: v2}\n  - id: after\n    tool: echo\n    parameters: {approved: '{{ gate.approved }}'}\n")
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(
        &first.base,
        &id,
        |e| step_status(e, "gate") == "waiting",
        Duration::from_secs(20),
    )
    .await;
    drop(first); // SIGKILL
    let second = start(&database_url, ws.path(), 30);
    let open = get(&second.base, "/waiting").await;
    assert_eq!(open["items"][0]["execution_id"], id.as_str(), "{open:#}");
    let r = client
        .post(format!("{}/executions/{id}/steps/gate/answer", second.base))
        .json(&serde_json::json!({"action": "approve"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
    let done = wait_for(
        &second.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_waiting_step_survives_a_kill() {
    let dir = TempDir::new("orch-wait-db");
    a_waiting_step_survives_a_kill(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiting_step_survives_a_kill() {
    if let Some(url) = postgres_url().await {
        a_waiting_step_survives_a_kill(url).await;
    }
}

/// A server killed while a child execution runs: the next server finishes
/// the child, then its parent, and no succeeded step of either runs twice.
async fn a_child_execution_survives_a_kill(database_url: String) {
    let ws = TempDir::new("orch-child-ws");
    std::fs::create_dir_all(ws.path().join("runs")).expect("runs");
    let client = orchestrator_tools::net::default_client();
    let first = start(&database_url, ws.path(), 30);
    let yaml = "name: tree\nsteps:\n  - id: before\n    tool: terminal\n    parameters: {command: 'echo ran >> runs/before.txt'}\n  - id: sub\n    tool: pipeline-executor\n    action: execute\n    depends_on: [before]\n    parameters:\n      pipeline: |\n        name: leaf\n        steps:\n          - id: c1\n            tool: terminal\n            parameters: {command: 'echo ran >> runs/c1.txt'}\n          - id: c2\n            tool: terminal\n            depends_on: [c1]\n            parameters: {command: 'echo ran >> runs/c2.txt; sleep 3'}\n          - id: c3\n            tool: terminal\n            depends_on: [c2]\n            parameters: {command: 'echo ran >> runs/c3.txt'}\n  - id: after\n    tool: terminal\n    depends_on: [sub]\n    parameters: {command: 'echo ran >> runs/after.txt'}\n";
    let r = client
        .post(format!("{}/executions", first.base))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_lines(ws.path(), "runs/c2.txt", 1).await;
    drop(first); // SIGKILL, in the middle of c2
    let second = start(&database_url, ws.path(), 30);
    let done = wait_for(
        &second.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    for (file, runs) in [
        ("runs/before.txt", 1),
        ("runs/c1.txt", 1),
        ("runs/c3.txt", 1),
        ("runs/after.txt", 1),
    ] {
        assert_eq!(count_lines(ws.path(), file), runs, "{file}");
    }
    // c2 was interrupted: it ran again, once.
    assert_eq!(count_lines(ws.path(), "runs/c2.txt"), 2);
    let children = get(&second.base, &format!("/executions?parent={id}")).await;
    assert_eq!(
        children["items"].as_array().map(Vec::len),
        Some(1),
        "{children:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child_execution_survives_a_kill() {
    let dir = TempDir::new("orch-child-db");
    a_child_execution_survives_a_kill(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_child_execution_survives_a_kill() {
    if let Some(url) = postgres_url().await {
        a_child_execution_survives_a_kill(url).await;
    }
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A step printing 100 MB finishes; its log keeps the bound (head and tail,
/// a marker counting the lines between) and the server's memory stays small.
async fn a_step_printing_100_mb_keeps_its_log_bounded(database_url: String) {
    let ws = TempDir::new("orch-log-ws");
    let server = start_with(
        &database_url,
        ws.path(),
        5,
        &[("ORCHESTRATOR_LIMITS__STEP_LOG_BYTES", "65536")],
    );
    let yaml = "name: loud\nsteps:\n  - id: flood\n    tool: terminal\n    action: run\n    parameters: {command: \"echo first; head -c 100000000 /dev/zero | tr '\\\\0' x | fold -w 99; echo; echo last\"}\n";
    let r = orchestrator_tools::net::default_client()
        .post(format!("{}/executions", server.base))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let done = wait_for(
        &server.base,
        &id,
        |e| e["status"] == "succeeded" || e["status"] == "failed",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let page = get(
        &server.base,
        &format!("/executions/{id}/steps/flood/logs?limit=10000"),
    )
    .await;
    let items = page["items"].as_array().expect("items");
    let stored: usize = items
        .iter()
        .map(|l| l["line"].as_str().map_or(0, str::len) + 32)
        .sum();
    assert!(stored <= 65536 + 512, "{stored} bytes stored");
    assert_eq!(
        items.first().and_then(|l| l["line"].as_str()),
        Some("first")
    );
    assert_eq!(items.last().and_then(|l| l["line"].as_str()), Some("last"));
    let marker = items
        .iter()
        .find(|l| l["stream"] == "log")
        .and_then(|l| l["line"].as_str())
        .expect("a marker line");
    let dropped: u64 = marker
        .trim_start_matches('[')
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the marker counts the dropped lines");
    assert!(dropped > 1_000_000 - 1_000, "{marker}");
    let rss_mib = peak_rss_kib(server.child.id()) / 1024;
    assert!(rss_mib < 200, "peak RSS {rss_mib} MiB");
    eprintln!(
        "100 MB of output: {dropped} lines dropped, {stored} bytes kept, peak RSS {rss_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_step_printing_100_mb_keeps_its_log_bounded() {
    let dir = TempDir::new("orch-log-db");
    a_step_printing_100_mb_keeps_its_log_bounded(orchestrator_store::testing::sqlite_url(&dir))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_step_printing_100_mb_keeps_its_log_bounded() {
    if let Some(url) = postgres_url().await {
        a_step_printing_100_mb_keeps_its_log_bounded(url).await;
    }
}

/// Runs the `orchestrator` client against `base`; (exit code, stdout, stderr).
fn client(base: &str, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(args)
        .env("ORCHESTRATOR_URL", base)
        .env_remove("ORCHESTRATOR_TOKEN")
        .current_dir(dir)
        .output()
        .expect("run the client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_drives_a_server() {
    let db = TempDir::new("orch-client-db");
    let ws = TempDir::new("orch-client-ws");
    let server = start(&orchestrator_store::testing::sqlite_url(&db), ws.path(), 5);
    let base = server.base.clone();
    let files = TempDir::new("orch-client-files");
    let write = |name: &str, text: &str| {
        std::fs::write(files.path().join(name), text).expect("write");
    };
    write(
        "hello.yaml",
        "name: hello\nparameters:\n  who: {type: string, default: world}\nsteps:\n  - id: say\n    tool: terminal\n    action: run\n    parameters: {command: 'echo hello {{ who }}'}\n",
    );
    write(
        "broken.yaml",
        "name: broken\nsteps:\n  - id: a\n    tool: nope\n",
    );
    write(
        "fails.yaml",
        "name: fails\nsteps:\n  - id: bad\n    tool: terminal\n    action: run\n    max_retries: 1\n    parameters: {command: 'echo trying; exit 4'}\n",
    );
    write(
        "gate.yaml",
        "name: gate\nsteps:\n  - id: ok\n    tool: approval-gate\n    action: execute\n    parameters: {title: 'Ship it?', content: v1}\n",
    );
    let dir = files.path();

    let (code, out, err) = client(
        &base,
        dir,
        &["submit", "hello.yaml", "-i", "who=Ada", "--wait"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("succeeded"), "{out}");
    let id = out.split_whitespace().next().expect("id").to_string();
    let (code, out, _) = client(&base, dir, &["logs", &id, "say"]);
    assert_eq!((code, out.as_str()), (0, "hello Ada\n"));
    let (code, out, _) = client(&base, dir, &["status", &id, "--json"]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["status"], "succeeded");

    let (code, _, err) = client(&base, dir, &["submit", "broken.yaml"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("line 4") && err.contains("unknown tool 'nope'"),
        "{err}"
    );

    let (code, out, err) = client(&base, dir, &["submit", "fails.yaml", "--follow"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("bad failed (attempt 1): command exited with code 4"),
        "{out}"
    );
    let failed = out
        .lines()
        .rev()
        .find(|l| l.contains("  fails  failed"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the execution line")
        .to_string();
    let (code, out, _) = client(&base, dir, &["list", "--status", "failed"]);
    assert_eq!(code, 0);
    assert!(out.contains(&failed), "{out}");
    let (code, out, _) = client(&base, dir, &["recover", &failed]);
    assert_eq!(code, 0);
    assert!(out.contains("running again: bad"), "{out}");

    let (code, out, _) = client(&base, dir, &["submit", "gate.yaml"]);
    assert_eq!(code, 0);
    let gate = out.trim().to_string();
    wait_for(
        &base,
        &gate,
        |e| step_status(e, "ok") == "waiting",
        Duration::from_secs(20),
    )
    .await;
    let (code, out, _) = client(&base, dir, &["waiting"]);
    assert_eq!(code, 0);
    assert!(out.contains(&gate) && out.contains("Ship it?"), "{out}");
    let (code, _, err) = client(&base, dir, &["answer", &gate, "ok", "--reject", ""]);
    assert_eq!(code, 2, "a rejection needs a reason: {err}");
    let (code, _, err) = client(&base, dir, &["answer", &gate, "ok", "--approve"]);
    assert_eq!(code, 0, "{err}");
    let done = wait_for(
        &base,
        &gate,
        |e| e["status"] == "succeeded",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(done["status"], "succeeded");

    let (code, out, _) = client(&base, dir, &["submit", "gate.yaml"]);
    assert_eq!(code, 0);
    let other = out.trim().to_string();
    let (code, out, _) = client(&base, dir, &["cancel", &other]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("{other}: cancelled").as_str())
    );

    let (code, _, err) = client("http://127.0.0.1:9", dir, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
}

/// Ctrl-C on `orchestrator run`: the execution is cancelled, the command
/// its step started is killed, and the run's temporary folder is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_run_kills_its_commands_and_leaves_nothing_behind() {
    let work = TempDir::new("orch-run-int");
    let tmp = TempDir::new("orch-run-tmp");
    std::fs::write(
        work.path().join("long.yaml"),
        "name: long\nsteps:\n  - id: wait\n    tool: terminal\n    action: run\n    parameters:\n      command: \"echo $$ > child.pid; exec sleep 60\"\n      timeout: 120\n",
    )
    .expect("pipeline");
    let mut run = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["run", "long.yaml", "--enable-terminal"])
        .current_dir(work.path())
        .env("TMPDIR", tmp.path())
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .env_remove("ORCHESTRATOR_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start run");
    let pid_file = work.path().join("child.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    let child_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let created: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert_eq!(created.len(), 1, "run keeps its database in one folder");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(run.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("sigint");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "run did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "an interrupted run is not a success");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    assert!(said.contains("interrupted"), "{said}");
    let proc = std::path::PathBuf::from(format!("/proc/{child_pid}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc.exists()
        && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|st| st.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the step's command still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
