//! The built-in tools through the API: every tool in one pipeline, the
//! sandbox, disabled tools.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    an_escaping_path_fails_the_step_and_writes_nothing_outside,
    seed_style_transformations_run_over_a_json_object_file,
);

/// `python-executor`, enabled, runs the seed's way; disabled, it is named.
mod python {
    use crate::support::*;

    orchestrator_store::for_each_backend!(
        with python_server;
        python_steps_run_and_hand_their_output_on,
    );

    async fn python_server(url: String) -> Server {
        Server::start_with(url, |settings| settings.python = Some("python3".into())).await
    }

    async fn python_steps_run_and_hand_their_output_on(s: Server) {
        let found = std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("skipping: python3 is not installed");
            return;
        }
        let yaml = "name: py\nparameters:\n  n: {type: integer, default: 4}\nsteps:\n  - id: calc\n    tool: python-executor\n    action: execute\n    parameters:\n      code: |\n        import json\n        print(json.dumps({'squares': [i * i for i in range({{ n }})]}))\n  - id: use\n    tool: echo\n    parameters: {got: '{{ (calc.stdout | from_json).squares }}'}\noutputs:\n  squares: '{{ use.got }}'\n";
        let done = s.run_yaml(yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(done["outputs"]["squares"], json!([0, 1, 4, 9]));
        let id = done["id"].as_str().expect("id");
        let (_, log) = s.get(&format!("/executions/{id}/steps/calc/logs")).await;
        assert_eq!(log["items"][0]["line"], "{\"squares\": [0, 1, 4, 9]}");
    }
}

/// The seed's data files are `{"records": [...]}`; its pipelines list
/// transformations with a `type` each.
async fn seed_style_transformations_run_over_a_json_object_file(s: Server) {
    let yaml = r#"name: orders
steps:
  - id: file
    tool: filesystem
    action: write
    parameters:
      path: data/orders.json
      content: '{"records": [{"id": 1, "qty": "2", "price": "2.5", "day": "2024-03-05", "status": "shipped"}, {"id": 1, "qty": "2", "price": "2.5", "day": "2024-03-05", "status": "shipped"}, {"id": 2, "qty": "4", "price": "1", "day": "2024-04-01", "status": ""}, {"id": 3, "qty": "1", "price": "9", "day": "2024-04-02", "status": "cancelled"}]}'
  - id: read
    tool: filesystem
    action: read
    parameters: {path: "{{ file.path }}"}
  - id: clean
    tool: data-processing
    action: transform
    parameters:
      data: "{{ read.content }}"
      operations:
        - {type: deduplicate, columns: [id]}
        - {type: cast, columns: {qty: integer, price: float}}
        - {type: fill_missing, strategy: {status: pending}}
        - type: calculate
          expressions: {total: qty * price, month: "DATE_FORMAT(day, '%Y-%m')"}
        - {type: filter, condition: "status != 'cancelled'"}
  - id: sum
    tool: data-processing
    action: transform
    parameters:
      path: data/orders.json
      operation:
        transformations:
          - {type: filter, field: status, value: shipped}
          - {type: aggregate, operation: sum, field: qty}
  - id: wrong
    tool: data-processing
    action: transform
    on_failure: continue
    max_retries: 1
    parameters:
      data: "{{ clean.processed_data }}"
      operations: [{type: explode}]
outputs:
  months: "{{ clean.data | map(attribute='month') | list }}"
  totals: "{{ clean.data | map(attribute='total') | list }}"
  shipped: "{{ sum.aggregation.result }}"
"#;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed", "only 'wrong' fails: {done:#}");
    assert_eq!(
        done["outputs"]["months"],
        json!(["2024-03", "2024-04"]),
        "{done:#}"
    );
    assert_eq!(done["outputs"]["totals"], json!([5.0, 4.0]));
    assert_eq!(done["outputs"]["shipped"], json!(4));
    let wrong = step(&done, "wrong");
    assert!(
        wrong["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown type 'explode'")),
        "{wrong:#}"
    );
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
    let (status, problem) = s
        .post_yaml(
            "name: py\nsteps:\n  - id: calc\n    tool: python-executor\n    action: execute\n    parameters: {code: 'print(1)'}\n",
            "",
        )
        .await;
    assert_eq!(status, 422);
    let message = problem["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("'python-executor' is disabled on this server")
            && message.contains("ORCHESTRATOR_ENABLE_PYTHON"),
        "{message}"
    );
}
