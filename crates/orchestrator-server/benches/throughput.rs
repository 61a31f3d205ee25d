//! End-to-end benchmark, run by hand (never in CI):
//!
//! ```sh
//! cargo bench -p orchestrator-server --bench throughput
//! ORCHESTRATOR_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p orchestrator-server --bench throughput
//! ORCHESTRATOR_BENCH_ONLY=postgres ORCHESTRATOR_TEST_POSTGRES_URL=… cargo bench -p orchestrator-server --bench throughput
//! ```
//!
//! Through the real HTTP API of an in-process server: submit→succeeded latency
//! of a one-step pipeline (p50/p99), and the throughput of a 1,000-step no-op
//! fan-out and of a 200-step chain, on SQLite and (when configured) PostgreSQL.
//! Then as users run it (`ORCHESTRATOR_BENCH_MODE=user` alone,
//! `=engine` without it): default settings, a client polling
//! `GET /executions/{id}` every 20 ms, what that polling costs, and the
//! latency of the view of 1,000- and 10,000-step executions.

mod support;
use support::submit;

use std::time::{Duration, Instant};

use orchestrator_server::config::Settings;
use std::sync::Arc;

use orchestrator_store::testing::{TempDir, postgres_url, sqlite_url};
use orchestrator_store::{NewExecution, Store};

fn fan_out(n: usize) -> String {
    let mut y = String::from("name: fan-out\nsteps:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - id: s{i}\n    tool: echo\n    parameters: {{i: {i}}}\n"
        ));
    }
    y
}

fn chain(n: usize) -> String {
    let mut y = String::from("name: chain\nsteps:\n  - id: s0\n    tool: echo\n");
    for i in 1..n {
        y.push_str(&format!(
            "  - id: s{i}\n    tool: echo\n    depends_on: [s{}]\n",
            i - 1
        ));
    }
    y
}

/// A store of its own (no engine on it), on the backend being measured.
async fn quiet_store(label: &str, dir: &TempDir) -> Arc<dyn Store> {
    orchestrator_store::connect(&if label == "sqlite" {
        sqlite_url(dir)
    } else {
        postgres_url().await.expect("pg")
    })
    .await
    .expect("store")
}

/// `yaml` compiled into an execution to store directly.
fn new_execution(name: &str, yaml: &str) -> NewExecution {
    let catalog = orchestrator_core::builtin_catalog();
    let plan = orchestrator_core::compile_yaml(
        yaml,
        orchestrator_core::CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: None,
        },
    )
    .expect("compile")
    .plan;
    NewExecution {
        id: uuid::Uuid::now_v7().to_string(),
        pipeline_id: name.into(),
        pipeline_name: name.into(),
        source: yaml.into(),
        plan: serde_json::to_value(&plan).expect("plan"),
        inputs: serde_json::json!({}),
        options: serde_json::json!({}),
        idempotency_key: None,
        token_id: None,
        request_hash: None,
        timeout_ms: None,
        resolving: false,
        parent: None,
        steps: plan
            .steps
            .iter()
            .map(|s| orchestrator_store::NewStep {
                planned: s.clone(),
                max_attempts: 1,
            })
            .collect(),
    }
}

/// Claims one step (asking for up to `limit`), reads its context and finishes
/// it: the seconds each took.
async fn one_step(ops: &Arc<dyn Store>, limit: u32) -> [f64; 3] {
    let t = Instant::now();
    let claimed = ops
        .claim_steps("bench", limit, 30_000)
        .await
        .expect("claim")
        .remove(0);
    let claim = t.elapsed().as_secs_f64();
    let t = Instant::now();
    ops.step_context(&claimed.execution_id, &[])
        .await
        .expect("ctx");
    let context = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let result = orchestrator_store::StepResult {
        status: orchestrator_core::flow::StepStatus::Succeeded,
        parameters: None,
        envelope: Some(serde_json::json!({"result": 1, "success": true, "error": null})),
        error: None,
        error_type: None,
        reason: None,
        timed_out: false,
        jump_to: None,
        on_failure: None,
        started_at: 0,
        finished_at: 0,
    };
    ops.finish_step(&claimed, result, &|_, _| (None, None), None)
        .await
        .expect("finish");
    [claim, context, t.elapsed().as_secs_f64()]
}

fn add(total: &mut [f64; 3], one: [f64; 3]) {
    for (t, x) in total.iter_mut().zip(one) {
        *t += x;
    }
}

async fn bench(label: &str, database_url: String) {
    let ws = TempDir::new("orch-bench-ws");
    let settings = Settings {
        bind: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        workspace_root: ws.path().to_path_buf(),
        // Worker slots (ORCHESTRATOR_BENCH_SLOTS, default 32).
        max_concurrent: std::env::var("ORCHESTRATOR_BENCH_SLOTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32),
        max_body_bytes: 8 * 1024 * 1024,
        ..Settings::default()
    };
    let server = orchestrator_server::start(settings, true)
        .await
        .expect("server");
    let base = format!("http://{}", server.addr);
    let engine = server.state.engine().clone();
    let client = orchestrator_tools::net::default_client();
    let one = "name: one\nsteps:\n  - id: s\n    tool: echo\n    parameters: {x: 1}\n";

    let mut samples = Vec::new();
    for i in 0..330 {
        let t0 = Instant::now();
        let id = submit(&client, &base, one).await;
        let done = engine
            .wait_finished(&id, Duration::from_secs(30))
            .await
            .expect("wait")
            .expect("exists");
        assert_eq!(done.status.as_str(), "succeeded");
        if i >= 30 {
            samples.push(t0.elapsed());
        }
    }
    samples.sort();
    let p = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "{label:<9} one-step submit->succeeded: p50 {:.2} ms, p99 {:.2} ms ({} runs)",
        p(0.5),
        p(0.99),
        samples.len()
    );

    // Store operations one by one: where the time goes.
    {
        let quiet = TempDir::new("orch-bench-ops");
        let ops = quiet_store(label, &quiet).await;
        let mut t_create = 0.0;
        let mut cycle = [0.0; 3];
        let n = 200;
        for _ in 0..n {
            let new = new_execution("one", one);
            let t = Instant::now();
            ops.create_execution(new).await.expect("create");
            t_create += t.elapsed().as_secs_f64();
            add(&mut cycle, one_step(&ops, 10).await);
        }
        let ms = |t: f64| t * 1000.0 / n as f64;
        println!(
            "{label:<9} store ops (mean): create {:.3} ms, claim {:.3} ms, context {:.3} ms, finish {:.3} ms",
            ms(t_create),
            ms(cycle[0]),
            ms(cycle[1]),
            ms(cycle[2])
        );
    }

    // The same, one step at a time, inside a 1,000-step fan-out: whether
    // any step operation grows with the size of its execution.
    {
        let quiet = TempDir::new("orch-bench-big");
        let ops = quiet_store(label, &quiet).await;
        let new = new_execution("fan-out", &fan_out(1000));
        let t = Instant::now();
        ops.create_execution(new).await.expect("create");
        let t_create = t.elapsed().as_secs_f64();
        let mut cycle = [0.0; 3];
        let n = 300;
        for _ in 0..n {
            add(&mut cycle, one_step(&ops, 1).await);
        }
        let ms = |t: f64| t * 1000.0 / n as f64;
        println!(
            "{label:<9} store ops in a 1,000-step fan-out: create {:.1} ms; mean claim {:.3} ms, context {:.3} ms, finish {:.3} ms",
            t_create * 1000.0,
            ms(cycle[0]),
            ms(cycle[1]),
            ms(cycle[2])
        );
    }

    // The same without HTTP: where the time goes.
    let mut submit_ms = Vec::new();
    let mut total_ms = Vec::new();
    for _ in 0..200 {
        let t0 = Instant::now();
        let (record, _) = engine
            .submit(orchestrator_engine::Submission {
                source: orchestrator_engine::PipelineSource::Yaml(one.to_string()),
                context: Default::default(),
                options: Default::default(),
                idempotency_key: None,
                token_id: None,
            })
            .await
            .expect("submit");
        submit_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        engine
            .wait_finished(&record.id, Duration::from_secs(30))
            .await
            .expect("wait");
        total_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    submit_ms.sort_by(f64::total_cmp);
    total_ms.sort_by(f64::total_cmp);
    println!(
        "{label:<9} one-step in process: submit p50 {:.2} ms, submit->succeeded p50 {:.2} ms",
        submit_ms[100], total_ms[100]
    );

    for (name, yaml, steps) in [
        ("fan-out", fan_out(1000), 1000usize),
        ("chain", chain(200), 200usize),
    ] {
        let t0 = Instant::now();
        let id = submit(&client, &base, &yaml).await;
        let submitted = t0.elapsed().as_secs_f64();
        let done = engine
            .wait_finished(&id, Duration::from_secs(300))
            .await
            .expect("wait")
            .expect("exists");
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(done.status.as_str(), "succeeded");
        println!(
            "{label:<9} {name:<8} {steps:>5} steps: {:.3} s, {:.0} steps/s (of which submitting {:.3} s)",
            secs,
            steps as f64 / secs,
            submitted,
        );
    }
    // Many executions at once: 10 fan-outs of 100 steps, submitted together.
    {
        let yaml = fan_out(100);
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(submit(&client, &base, &yaml).await);
        }
        let submitted = t0.elapsed().as_secs_f64();
        for id in &ids {
            let done = engine
                .wait_finished(id, Duration::from_secs(300))
                .await
                .expect("wait")
                .expect("exists");
            assert_eq!(done.status.as_str(), "succeeded");
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{label:<9} 10 × fan-out of 100: {:.3} s, {:.0} steps/s (of which submitting {:.3} s)",
            secs,
            1000.0 / secs,
            submitted,
        );
    }
    server.shutdown().await.expect("shutdown");
}

/// Polls `GET /executions/{id}` every `every` until the execution has
/// ended; its status, and how many polls it took.
async fn poll_until_ended(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    every: Duration,
) -> (String, usize) {
    let mut polls = 0;
    loop {
        polls += 1;
        let v: serde_json::Value = client
            .get(format!("{base}/executions/{id}"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let status = v["status"].as_str().unwrap_or_default().to_string();
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            return (status, polls);
        }
        tokio::time::sleep(every).await;
    }
}

/// Milliseconds of `GET /executions/{id}` for a finished execution: p50 of
/// 20 sequential requests, and the body's size in bytes.
async fn view_ms(client: &reqwest::Client, base: &str, id: &str) -> (f64, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let body = client
            .get(format!("{base}/executions/{id}"))
            .send()
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
    }
    times.sort_by(f64::total_cmp);
    (times[10], size)
}

/// As a user runs it: a server with the default settings (10 worker slots
/// unless `ORCHESTRATOR_BENCH_SLOTS` says otherwise), and a client that
/// submits over HTTP and polls `GET /executions/{id}` every 20 ms until the
/// execution has ended (every 1 ms for the one-step latency). Then the
/// latency of that `GET` for finished 1,000- and 10,000-step executions.
async fn as_users_run_it(label: &str, database_url: String) {
    let ws = TempDir::new("orch-bench-user-ws");
    let mut settings = Settings {
        bind: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        workspace_root: ws.path().to_path_buf(),
        ..Settings::default()
    };
    if let Some(slots) = std::env::var("ORCHESTRATOR_BENCH_SLOTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.max_concurrent = slots;
    }
    let slots = settings.max_concurrent;
    let server = orchestrator_server::start(settings, true)
        .await
        .expect("server");
    let base = format!("http://{}", server.addr);
    let client = orchestrator_tools::net::default_client();
    let one = "name: one\nsteps:\n  - id: s\n    tool: echo\n    parameters: {x: 1}\n";
    let mut samples = Vec::new();
    for i in 0..230 {
        let t0 = Instant::now();
        let id = submit(&client, &base, one).await;
        let (status, _) = poll_until_ended(&client, &base, &id, Duration::from_millis(1)).await;
        assert_eq!(status, "succeeded");
        if i >= 30 {
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{label:<9} as users run it ({slots} slots, polling): one-step submit->seen succeeded p50 {:.2} ms, p99 {:.2} ms",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100]
    );
    let mut views = Vec::new();
    for (name, yaml, steps) in [
        ("fan-out", fan_out(1000), 1000usize),
        ("chain", chain(200), 200usize),
        ("fan-out", fan_out(10_000), 10_000usize),
    ] {
        let t0 = Instant::now();
        let id = submit(&client, &base, &yaml).await;
        let (status, polls) =
            poll_until_ended(&client, &base, &id, Duration::from_millis(20)).await;
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(status, "succeeded");
        println!(
            "{label:<9} as users run it ({slots} slots, polling every 20 ms): {name:<8} {steps:>6} steps: {:.3} s, {:.0} steps/s ({polls} polls)",
            secs,
            steps as f64 / secs,
        );
        if name == "fan-out" {
            // The same, waited for in the process instead of polled: what
            // polling costs the workers.
            let engine = server.state.engine().clone();
            let t0 = Instant::now();
            let quiet = submit(&client, &base, &yaml).await;
            let done = engine
                .wait_finished(&quiet, Duration::from_secs(300))
                .await
                .expect("wait")
                .expect("exists");
            assert_eq!(done.status.as_str(), "succeeded");
            let unpolled = t0.elapsed().as_secs_f64();
            println!(
                "{label:<9} as users run it ({slots} slots, not polled):            {name:<8} {steps:>6} steps: {unpolled:.3} s, {:.0} steps/s; polling cost {:+.0} %",
                steps as f64 / unpolled,
                (secs / unpolled - 1.0) * 100.0
            );
            views.push((steps, id));
        }
    }
    for (steps, id) in views {
        let (ms, size) = view_ms(&client, &base, &id).await;
        println!(
            "{label:<9} GET /executions/{{id}} of a finished {steps}-step execution: p50 {ms:.2} ms ({} KB)",
            size / 1024
        );
    }
    server.shutdown().await.expect("shutdown");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // ORCHESTRATOR_BENCH_ONLY=sqlite|postgres measures one backend.
    let only = std::env::var("ORCHESTRATOR_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        let dir = TempDir::new("orch-bench-db");
        // ORCHESTRATOR_BENCH_MODE=engine|user measures one way of running.
        let mode = std::env::var("ORCHESTRATOR_BENCH_MODE").unwrap_or_default();
        if only != "postgres" {
            if mode != "user" {
                bench("sqlite", sqlite_url(&dir)).await;
            }
            if mode != "engine" {
                let user_dir = TempDir::new("orch-bench-user-db");
                as_users_run_it("sqlite", sqlite_url(&user_dir)).await;
            }
        }
        if only == "sqlite" {
            return;
        }
        match postgres_url().await {
            Some(url) => {
                if mode != "user" {
                    bench("postgres", url).await;
                }
                if mode != "engine" {
                    let fresh = postgres_url().await.expect("pg");
                    as_users_run_it("postgres", fresh).await;
                }
            }
            None => println!("postgres  skipped (set ORCHESTRATOR_TEST_POSTGRES_URL)"),
        }
    });
}
