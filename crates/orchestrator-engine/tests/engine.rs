//! The engine end to end on both backends: examples run to their documented result.

use std::sync::Arc;
use std::time::Duration;

use orchestrator_core::flow::{ExecutionStatus, StepStatus};
use orchestrator_engine::{Engine, EngineConfig, ExecutionOptions, PipelineSource, Submission};
use orchestrator_store::Store;
use orchestrator_store::testing::TempDir;
use orchestrator_tools::ToolRegistry;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

orchestrator_store::for_each_backend!(
    hello_writes_reads_and_outputs,
    branches_take_the_long_path_and_skip_the_short_one,
    branches_take_the_short_path_when_the_condition_is_false,
    for_each_writes_one_file_per_item_in_order,
    a_failing_step_is_retried_then_fails_the_execution,
    on_failure_continue_runs_dependents_and_fails_the_execution,
    for_each_over_a_step_result_expands_at_run_time,
    while_loops_repeat_until_their_condition_is_false,
    nested_loops_see_both_items,
    nested_loops_expanding_at_run_time_stop_at_the_step_limit,
    parameters_that_do_not_fit_the_schema_fail_before_the_tool_runs,
    seed_template_forms_render_as_the_seed_renders_them,
    until_ends_a_loop_after_an_iteration_and_goto_jumps,
    on_error_handlers_take_the_failures_they_name,
    a_running_pool_starts_first_steps_as_they_are_submitted,
    file_results_name_the_path_as_written_and_keep_trailing_newlines,
);

struct Harness {
    engine: Engine,
    workspace: TempDir,
    shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn harness(store: Arc<dyn Store>) -> Harness {
    let workspace = TempDir::new("orch-engine-ws");
    let config = EngineConfig {
        workspace_root: workspace.path().to_path_buf(),
        idle_poll_ms: 50,
        ..Default::default()
    };
    let engine = Engine::new(store, Arc::new(ToolRegistry::builtin()), config);
    let shutdown = CancellationToken::new();
    engine.start(shutdown.clone(), Duration::from_secs(5));
    Harness {
        engine,
        workspace,
        shutdown,
    }
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example")
}

async fn run(h: &Harness, yaml: &str, context: Value) -> orchestrator_store::ExecutionRecord {
    let mut request = submission(yaml);
    request.context = context.as_object().cloned().unwrap_or_else(Map::new);
    let (record, created) = h.engine.submit(request).await.expect("submit");
    assert!(created);
    finished(h, &record.id).await
}

/// Waits for an execution to end.
async fn finished(h: &Harness, id: &str) -> orchestrator_store::ExecutionRecord {
    let done = h
        .engine
        .wait_finished(id, Duration::from_secs(60))
        .await
        .expect("wait")
        .expect("exists");
    assert!(done.status.is_terminal(), "not finished: {done:?}");
    done
}

async fn statuses(h: &Harness, id: &str) -> Vec<(String, StepStatus)> {
    h.engine
        .store()
        .list_steps(id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| (s.step_id, s.status))
        .collect()
}

fn read(h: &Harness, path: &str) -> String {
    std::fs::read_to_string(h.workspace.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn hello_writes_reads_and_outputs(store: Arc<dyn Store>) {
    let h = harness(store);
    let done = run(&h, &example("hello.yaml"), json!({"who": "tests"})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(done.outputs, Some(json!({"greeting": "hello, tests"})));
    assert_eq!(read(&h, "out/greeting.txt"), "hello, tests");
    let checkpoints = h
        .engine
        .store()
        .list_checkpoints(&done.id)
        .await
        .expect("cps");
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(
        checkpoints[1].parameters,
        Some(json!({"path": "out/greeting.txt"}))
    );
}

async fn branches_take_the_long_path_and_skip_the_short_one(store: Arc<dyn Store>) {
    let h = harness(store);
    let done = run(&h, &example("branches.yaml"), json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(done.outputs, Some(json!({"branch": "long"})));
    let s = statuses(&h, &done.id).await;
    assert_eq!(s[2], ("short_path".to_string(), StepStatus::Skipped));
}

async fn branches_take_the_short_path_when_the_condition_is_false(store: Arc<dyn Store>) {
    let h = harness(store);
    let done = run(&h, &example("branches.yaml"), json!({"text": "tiny"})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(done.outputs, Some(json!({"branch": "short"})));
    let s = statuses(&h, &done.id).await;
    assert_eq!(s[1], ("long_path".to_string(), StepStatus::Skipped));
    assert_eq!(s[2], ("short_path".to_string(), StepStatus::Succeeded));
}

async fn for_each_writes_one_file_per_item_in_order(store: Arc<dyn Store>) {
    let h = harness(store);
    let done = run(&h, &example("for_each.yaml"), json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(read(&h, "out/0.txt"), "1/3 red");
    assert_eq!(read(&h, "out/1.txt"), "2/3 green");
    assert_eq!(read(&h, "out/2.txt"), "3/3 blue");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let join = steps
        .iter()
        .find(|s| s.step_id == "per_colour")
        .expect("join");
    assert_eq!(
        join.result
            .as_ref()
            .map(|r| r["result"].as_array().map(Vec::len)),
        Some(Some(3))
    );
    let starts: Vec<i64> = steps
        .iter()
        .filter(|s| s.step_id.ends_with("_write"))
        .filter_map(|s| s.started_at)
        .collect();
    let ends: Vec<i64> = steps
        .iter()
        .filter(|s| s.step_id.ends_with("_write"))
        .filter_map(|s| s.finished_at)
        .collect();
    assert!(
        starts[1] >= ends[0] && starts[2] >= ends[1],
        "iterations overlapped"
    );
}

async fn a_failing_step_is_retried_then_fails_the_execution(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: r\nsteps:\n  - id: missing\n    tool: filesystem\n    action: read\n    max_retries: 3\n    retry: {delay_ms: 10, backoff: fixed}\n    parameters: {path: nope.txt}\n  - id: after\n    tool: echo\n    depends_on: [missing]\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    assert_eq!((steps[0].status, steps[0].attempt), (StepStatus::Failed, 3));
    assert_eq!(steps[0].error_type.as_deref(), Some("FileNotFoundError"));
    assert_eq!(steps[1].status, StepStatus::Cancelled);
    let checkpoints = h
        .engine
        .store()
        .list_checkpoints(&done.id)
        .await
        .expect("cps");
    assert_eq!(
        checkpoints.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

async fn on_failure_continue_runs_dependents_and_fails_the_execution(store: Arc<dyn Store>) {
    let h = harness(store);
    // The seed's spelling `continue_on_error: true` means the same.
    for mode in ["on_failure: continue", "continue_on_error: true"] {
        let yaml = format!(
            "name: c\nsteps:\n  - id: bad\n    tool: filesystem\n    action: read\n    max_retries: 1\n    {mode}\n    parameters: {{path: nope.txt}}\n  - id: after\n    tool: echo\n    depends_on: [bad]\n    parameters: {{ok: '{{{{ bad.success }}}}'}}\n"
        );
        let done = run(&h, &yaml, json!({})).await;
        assert_eq!(done.status, ExecutionStatus::Failed, "{mode}");
        let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
        assert_eq!(steps[1].status, StepStatus::Succeeded, "{mode}");
        assert_eq!(
            steps[1].result.as_ref().map(|r| r["result"].clone()),
            Some(json!({"ok": false})),
            "{mode}"
        );
    }
}

async fn for_each_over_a_step_result_expands_at_run_time(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: rt\nsteps:\n  - id: list\n    tool: echo\n    parameters: {names: [ann, bob]}\n  - id: greet\n    for_each: '{{ list.result.names }}'\n    max_parallel: 2\n    steps:\n      - id: write\n        tool: filesystem\n        action: write\n        parameters: {path: 'g/{{ item }}.txt', content: 'hi {{ item }} {{ position }}/{{ length }}'}\n      - id: check\n        tool: filesystem\n        action: read\n        parameters: {path: '{{ write.result.path }}'}\n  - id: empty\n    for_each: '{{ list.result.none | default([]) }}'\n    steps:\n      - id: never\n        tool: echo\n  - id: after\n    tool: echo\n    parameters: {n: '{{ greet.result | length }}', first: '{{ greet.result[0].check.content }}'}\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(read(&h, "g/ann.txt"), "hi ann 1/2");
    assert_eq!(read(&h, "g/bob.txt"), "hi bob 2/2");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let after = steps.iter().find(|s| s.step_id == "after").expect("after");
    assert_eq!(
        after.result.as_ref().map(|r| r["result"].clone()),
        Some(json!({"n": 2, "first": "hi ann 1/2"}))
    );
    let empty = steps.iter().find(|s| s.step_id == "empty").expect("empty");
    assert_eq!(
        empty.result.as_ref().map(|r| r["result"].clone()),
        Some(json!([]))
    );
    assert!(
        steps
            .iter()
            .any(|s| s.step_id == "greet_1_check" && s.status == StepStatus::Succeeded)
    );
}

async fn while_loops_repeat_until_their_condition_is_false(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: w\nsteps:\n  - id: loop\n    while: '{{ iteration < 3 }}'\n    max_iterations: 10\n    steps:\n      - id: tick\n        tool: filesystem\n        action: write\n        parameters: {path: 'w/{{ iteration }}.txt', content: 'tick {{ iteration }}', append: false}\n  - id: capped\n    while: 'true'\n    max_iterations: 2\n    steps:\n      - id: t\n        tool: echo\n        parameters: {i: '{{ iteration }}'}\n  - id: until\n    while: '{{ t2 is none or t2.result.i < 1 }}'\n    steps:\n      - id: t2\n        tool: echo\n        parameters: {i: '{{ iteration }}'}\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(read(&h, "w/0.txt"), "tick 0");
    assert_eq!(read(&h, "w/2.txt"), "tick 2");
    assert!(!h.workspace.path().join("w/3.txt").exists());
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let result = |id: &str| {
        steps
            .iter()
            .find(|s| s.step_id == id)
            .and_then(|s| s.result.clone())
            .map(|r| r["result"].clone())
    };
    assert_eq!(
        result("capped"),
        Some(json!([{"t": {"i": 0}}, {"t": {"i": 1}}]))
    );
    assert_eq!(
        result("until").map(|r| r.as_array().map(Vec::len)),
        Some(Some(2))
    );
}

async fn nested_loops_see_both_items(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: n\nsteps:\n  - id: src\n    tool: echo\n    parameters: {rows: [a, b]}\n  - id: outer\n    for_each: '{{ src.result.rows }}'\n    steps:\n      - id: inner\n        for_each: [1, 2]\n        steps:\n          - id: cell\n            tool: filesystem\n            action: write\n            parameters: {path: 'n/{{ item }}.txt', content: 'x'}\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let ids: Vec<&str> = steps
        .iter()
        .map(|s| s.step_id.as_str())
        .filter(|id| id.contains("cell"))
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(ids.contains(&"outer_1_inner_1_cell"));
}

/// Workers of one process are woken by submissions made in another process
/// (PostgreSQL LISTEN/NOTIFY): with idle polling effectively off, the
/// execution still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_wake_for_work_queued_by_another_process() {
    let Some(url) = orchestrator_store::testing::postgres_url().await else {
        return;
    };
    let worker_store = orchestrator_store::connect(&url).await.expect("connect");
    let api_store = orchestrator_store::connect(&url).await.expect("connect");
    let workspace = TempDir::new("orch-engine-ws");
    let config = EngineConfig {
        workspace_root: workspace.path().to_path_buf(),
        idle_poll_ms: 3_600_000,
        ..Default::default()
    };
    let tools = Arc::new(ToolRegistry::builtin());
    let workers = Engine::new(worker_store, tools.clone(), config.clone());
    let shutdown = CancellationToken::new();
    workers.start(shutdown.clone(), Duration::from_secs(5));
    // Let the pool go idle and start listening.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api = Engine::new(api_store, tools, config);
    let yaml = "name: x\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n";
    let (record, _) = api.submit(submission(yaml)).await.expect("submit");
    let done = api
        .wait_finished(&record.id, Duration::from_secs(60))
        .await
        .expect("wait")
        .expect("exists");
    shutdown.cancel();
    assert_eq!(done.status, ExecutionStatus::Succeeded);
}

async fn parameters_that_do_not_fit_the_schema_fail_before_the_tool_runs(store: Arc<dyn Store>) {
    let h = harness(store);
    // The tool itself would ignore a non-text format and write the file.
    let yaml = "name: bad-params\nsteps:\n  - id: rep\n    tool: report-generator\n    parameters: {content: hi, format: 5, path: out/r.md}\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    assert_eq!(steps[0].error_type.as_deref(), Some("ValidationError"));
    assert_eq!(steps[0].attempt, 1, "not retried");
    let message = steps[0].error.clone().unwrap_or_default();
    assert!(message.contains("parameter 'format'"), "{message}");
    assert!(
        !h.workspace.path().join("out/r.md").exists(),
        "the tool did not run"
    );
}

async fn nested_loops_expanding_at_run_time_stop_at_the_step_limit(store: Arc<dyn Store>) {
    // Each inner loop stays under the limit on its own; together they pass
    // it (limits.max_steps, 10,000). Before, every loop was judged alone and
    // an execution grew to 100,000 steps and more.
    let h = harness(store);
    let yaml = "name: nested\nsteps:\n  - id: outer\n    for_each: [a, b]\n    max_parallel: 2\n    steps:\n      - id: inner\n        for_each: '{{ range(6000) | list }}'\n        steps:\n          - id: say\n            tool: echo\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Failed, "{done:?}");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    assert!(steps.len() <= 10_000, "{} steps", steps.len());
    let refused = steps
        .iter()
        .find(|s| s.error_type.as_deref() == Some("LimitExceededError"))
        .expect("one inner loop refused");
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("limits.max_steps")),
        "{refused:?}"
    );
}

/// The seed's template forms: `execution.timestamp` and the bare
/// `timestamp`/`execution_id` as the run's start, `now()`, Jinja's
/// `truncate`/`wordcount`/`center`, a skipped step with a `status`, `$item`
/// in loops, and a step standing for its result as a whole value.
async fn seed_template_forms_render_as_the_seed_renders_them(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = r#"
name: seed-forms
inputs:
  topic: {type: string, default: "a long sentence about rivers and the sea"}
steps:
  - id: stamp
    tool: filesystem
    action: write
    parameters:
      path: "runs/{{ execution.timestamp | slugify }}.txt"
      content: "{{ timestamp }}|{{ execution_id }}|{{ execution.timestamp | date('%Y') }}|{{ topic | truncate(20) }}|{{ topic | wordcount }}|[{{ 'ab' | center(6) }}]|{{ now() | date('%Y') }}"
  - id: never
    tool: echo
    condition: "false"
  - id: after
    tool: filesystem
    action: write
    depends_on: [never, stamp]
    parameters:
      path: status.txt
      content: "{% if never.status != 'skipped' %}ran{% else %}{{ never.status }}:{{ never.skipped }}:[{{ never }}]{% endif %}"
  - id: whole
    tool: echo
    depends_on: [stamp]
    parameters:
      value: "{{ stamp }}"
  - id: each
    for_each: ["x", "y"]
    steps:
      - id: w
        tool: filesystem
        action: write
        parameters: {path: "each/{{ $item }}.txt", content: "{{ $index }}"}
  - id: lister
    tool: echo
    parameters: {list: "[p, 'q r']"}
  - id: listed
    for_each: "{{ lister.list }}"
    steps:
      - id: w
        tool: filesystem
        action: write
        parameters: {path: "listed/{{ item }}.txt", content: "{{ item }}"}
"#;
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    let started = chrono::DateTime::from_timestamp_millis(done.created_at)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let slug = orchestrator_core::template::render_str(
        "{{ t | slugify }}",
        orchestrator_core::template::Scope::new().set("t", &json!(started)),
    )
    .expect("slug");
    let year = &started[..4];
    assert_eq!(
        read(&h, &format!("runs/{slug}.txt")),
        format!(
            "{started}|{}|{year}|a long sentence...|8|[  ab  ]|{}",
            done.id,
            chrono::Utc::now().format("%Y")
        )
    );
    // Booleans print as Jinja prints them.
    assert_eq!(read(&h, "status.txt"), "skipped:True:[]");
    assert_eq!(
        (read(&h, "each/x.txt"), read(&h, "each/y.txt")),
        ("0".into(), "1".into())
    );
    // Text a step produced is read as a literal would be.
    assert_eq!(read(&h, "listed/q r.txt"), "q r");
    assert_eq!(read(&h, "listed/p.txt"), "p");
    let checkpoints = h
        .engine
        .store()
        .list_checkpoints(&done.id)
        .await
        .expect("cps");
    let whole = checkpoints
        .iter()
        .find(|c| c.step_id == "whole")
        .and_then(|c| c.parameters.clone())
        .expect("whole ran");
    assert!(whole["value"]["path"].is_string(), "{whole}");
    assert!(whole["value"].get("success").is_none(), "{whole}");
}

/// The seed's `until` (alone: the body runs until it holds, at least once;
/// with `while`: whichever ends first) and `goto` (a jump once the step
/// succeeds, skipping what lies between).
async fn until_ends_a_loop_after_an_iteration_and_goto_jumps(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: u\nsteps:\n  - id: retry_until\n    until: '{{ t.result.i >= 2 }}'\n    steps:\n      - id: t\n        tool: echo\n        parameters: {i: '{{ iteration }}'}\n  - id: at_once\n    until: 'true'\n    steps:\n      - id: once\n        tool: echo\n        parameters: {i: '{{ iteration }}'}\n  - id: both\n    while: '{{ iteration < 1 }}'\n    until: 'false'\n    steps:\n      - id: b\n        tool: echo\n  - id: jump\n    tool: echo\n    goto: landing\n    depends_on: [retry_until]\n  - id: jumped_over\n    tool: echo\n    depends_on: [jump]\n  - id: landing\n    tool: echo\n    depends_on: [jumped_over]\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let of = |id: &str| steps.iter().find(|s| s.step_id == id).cloned();
    let iterations = |id: &str| {
        of(id)
            .and_then(|s| s.result)
            .and_then(|r| r["result"].as_array().map(Vec::len))
    };
    assert_eq!(iterations("retry_until"), Some(3), "{steps:#?}");
    assert_eq!(iterations("at_once"), Some(1));
    assert_eq!(iterations("both"), Some(1));
    assert_eq!(
        of("jumped_over").map(|s| s.status),
        Some(StepStatus::Skipped)
    );
    assert_eq!(of("landing").map(|s| s.status), Some(StepStatus::Succeeded));
}

/// The seed's `on_error`: a fallback value, words alone (the failure is
/// taken: dependents run, the execution does not fail for it), a handler
/// step to go to, handlers that do not match, and `propagate_error`.
async fn on_error_handlers_take_the_failures_they_name(store: Arc<dyn Store>) {
    let h = harness(store);
    let yaml = "name: handled\nsteps:\n  - id: missing\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nope/1.txt}\n    on_error:\n      fallback_value: {content: default}\n      error_types: [FileNotFoundError]\n  - id: uses\n    tool: echo\n    parameters: {got: '{{ missing.content }}'}\n  - id: words\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nope/2.txt}\n    on_error: Use cached data\n  - id: after_words\n    tool: echo\n    depends_on: [words]\n  - id: jumper\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nope/3.txt}\n    on_error:\n      - handler_action: never taken\n        error_types: [HTTPError]\n      - handler_task_id: rescue\n        error_types: ['*']\n        priority: 5\n  - id: jumped_over\n    tool: echo\n    depends_on: [jumper]\n  - id: rescue\n    tool: echo\n    depends_on: [jumped_over]\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let of = |id: &str| {
        steps
            .iter()
            .find(|s| s.step_id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    assert_eq!(of("missing").status, StepStatus::Succeeded);
    assert_eq!(
        of("missing").result.map(|r| r["result"].clone()),
        Some(json!({"content": "default"}))
    );
    assert_eq!(
        of("uses").result.map(|r| r["result"]["got"].clone()),
        Some(json!("default"))
    );
    assert_eq!(of("words").status, StepStatus::Failed);
    assert!(
        of("words")
            .reason
            .is_some_and(|r| r.contains("Use cached data") && r.contains("FileNotFoundError")),
        "{:?}",
        of("words")
    );
    assert_eq!(of("after_words").status, StepStatus::Succeeded);
    assert_eq!(of("jumper").status, StepStatus::Failed);
    assert_eq!(of("jumped_over").status, StepStatus::Skipped);
    assert_eq!(of("rescue").status, StepStatus::Succeeded);

    // A handler that passes the error on, and one that does not match.
    let yaml = "name: passed-on\nsteps:\n  - id: a\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: nope/4.txt}\n    on_error:\n      handler_action: tell someone\n      propagate_error: true\n  - id: b\n    tool: filesystem\n    action: read\n    max_retries: 1\n    on_failure: continue\n    parameters: {path: nope/5.txt}\n    on_error:\n      fallback_value: x\n      error_patterns: ['^never$']\n";
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Failed, "{done:?}");
    let steps = h.engine.store().list_steps(&done.id).await.expect("steps");
    let b = steps.iter().find(|s| s.step_id == "b").expect("b");
    assert!(
        b.status == StepStatus::Failed || b.status == StepStatus::Cancelled,
        "{b:?}"
    );
}

fn submission(yaml: &str) -> Submission {
    Submission {
        source: PipelineSource::Yaml(yaml.to_string()),
        context: Map::new(),
        options: ExecutionOptions::default(),
        idempotency_key: None,
        token_id: None,
    }
}

async fn a_running_pool_starts_first_steps_as_they_are_submitted(store: Arc<dyn Store>) {
    const FAN: &str = "name: fan\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n  - id: c\n    tool: echo\n    depends_on: [a, b]\n";
    // Without a pool here nothing is taken: the steps wait for a claim.
    let idle = Engine::new(
        store.clone(),
        Arc::new(ToolRegistry::builtin()),
        EngineConfig::default(),
    );
    let (queued, _) = idle.submit(submission(FAN)).await.expect("submit");
    assert_eq!(queued.status, ExecutionStatus::Queued);

    let h = harness(store);
    // Once the pool takes work (it has run something), a submit leases
    // the first steps to it in the creating transaction.
    run(
        &h,
        "name: warm\nsteps:\n  - id: a\n    tool: echo\n",
        json!({}),
    )
    .await;
    let (record, _) = h.engine.submit(submission(FAN)).await.expect("submit");
    assert_eq!(record.status, ExecutionStatus::Running, "{record:?}");
    let done = finished(&h, &record.id).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    let events = h
        .engine
        .store()
        .list_events(&record.id, 0, 100)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        &kinds[..4],
        [
            "execution.queued",
            "execution.started",
            "step.started",
            "step.started"
        ]
    );
    // The execution queued before the pool ran is claimed like any other.
    let done = finished(&h, &queued.id).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
}

async fn file_results_name_the_path_as_written_and_keep_trailing_newlines(store: Arc<dyn Store>) {
    let yaml = r##"
name: paths
parameters:
  dir: {type: string, default: "./out"}
steps:
  - id: head
    tool: filesystem
    action: write
    parameters: {path: "{{ dir }}/head.md", content: "# Title\n\nBy me\n"}
  - id: again
    tool: filesystem
    action: read
    parameters: {path: "{{ head.result.path }}"}
    dependencies: [head]
  - id: body
    tool: filesystem
    action: write
    parameters:
      path: "{{ dir }}/all.md"
      content: "{{ again.result.content }}\nBody.\n"
    dependencies: [again]
outputs:
  written: "{{ body.result.path }}"
  head: "{{ again.result.content }}"
"##;
    let h = harness(store);
    let done = run(&h, yaml, json!({})).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(
        done.outputs,
        Some(json!({"written": "./out/all.md", "head": "# Title\n\nBy me\n"}))
    );
    assert_eq!(read(&h, "out/all.md"), "# Title\n\nBy me\n\nBody.\n");
}
