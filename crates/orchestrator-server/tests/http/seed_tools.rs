//! The seed's tools through the API, each in a pipeline written in the
//! seed's own syntax (`action: execute` with the tool's action among the
//! parameters, where the seed's examples write it so).

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    mcp_memory_keeps_namespaces_per_execution_tree_or_for_the_server,
    mcp_memory_bad_parameters_are_named,
);

const MEMORY: &str = r#"name: memory_workflow
parameters:
  user_name: {type: string, default: Ada}
steps:
  - id: init_context
    tool: mcp-memory
    action: execute
    parameters:
      action: "store"
      namespace: "conversation"
      key: "user_profile"
      value:
        name: "{{ user_name }}"
        task: "analysis"
  - id: store_steps
    tool: mcp-memory
    action: execute
    parameters:
      action: "store"
      namespace: "conversation"
      key: "task_steps"
      value: ["load", "analyse"]
      ttl: 3600
    dependencies: [init_context]
  - id: short_lived
    tool: mcp-memory
    action: execute
    parameters: {action: store, namespace: conversation, key: blink, value: 1, ttl: 1}
    dependencies: [store_steps]
  - id: shared
    tool: mcp-memory
    action: store
    parameters: {namespace: team, key: "{{ user_name }}", value: seen, scope: server}
  - id: list_memory
    tool: mcp-memory
    action: execute
    parameters: {action: list, namespace: conversation}
    dependencies: [short_lived]
  - id: get_profile
    tool: mcp-memory
    action: execute
    parameters: {action: retrieve, namespace: conversation, key: user_profile}
    dependencies: [list_memory]
  - id: missing
    tool: mcp-memory
    action: retrieve
    parameters: {namespace: conversation, key: nothing_here}
outputs:
  greeting: "Hello {{ get_profile.value.name }} ({{ list_memory.count }} keys)"
  keys: "{{ list_memory.keys | join(',') }}"
"#;

const READER: &str = r#"name: memory_reader
steps:
  - id: mine
    tool: mcp-memory
    action: execute
    parameters: {action: list, namespace: conversation}
  - id: blink
    tool: mcp-memory
    action: retrieve
    parameters: {namespace: conversation, key: blink}
  - id: team
    tool: mcp-memory
    action: list
    parameters: {namespace: team, scope: server}
  - id: wipe
    tool: mcp-memory
    action: clear
    parameters: {namespace: team, scope: server}
    dependencies: [team]
  - id: after
    tool: mcp-memory
    action: list
    parameters: {namespace: team, scope: server}
    dependencies: [wipe]
"#;

async fn mcp_memory_keeps_namespaces_per_execution_tree_or_for_the_server(s: Server) {
    let done = s.run_yaml(MEMORY, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["outputs"]["greeting"], "Hello Ada (3 keys)",
        "{done:#}"
    );
    assert_eq!(done["outputs"]["keys"], "blink,task_steps,user_profile");
    let profile = &step(&done, "get_profile")["result"]["result"];
    assert_eq!(profile["found"], true);
    assert_eq!(profile["value"], json!({"name": "Ada", "task": "analysis"}));
    assert_eq!(profile["metadata"]["type"], "dict", "{profile:#}");
    assert_eq!(profile["metadata"]["ttl"], 0);
    let stored = &step(&done, "store_steps")["result"]["result"];
    assert_eq!(
        *stored,
        json!({"namespace": "conversation", "key": "task_steps", "stored": true, "ttl": 3600})
    );
    let missing = &step(&done, "missing")["result"]["result"];
    assert_eq!(missing["found"], false, "{missing:#}");

    // Another execution sees neither the tree's namespace nor, once its
    // time is up, anything that expired; it does see server-wide entries.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let other = s.run_yaml(READER, "").await;
    assert_eq!(other["status"], "succeeded", "{other:#}");
    assert_eq!(step(&other, "mine")["result"]["result"]["count"], 0);
    assert_eq!(step(&other, "blink")["result"]["result"]["found"], false);
    assert_eq!(
        step(&other, "team")["result"]["result"]["keys"],
        json!(["Ada"]),
        "{other:#}"
    );
    assert_eq!(step(&other, "wipe")["result"]["result"]["removed"], 1);
    assert_eq!(step(&other, "after")["result"]["result"]["count"], 0);

    // The first execution's entries are durable in the database, and go
    // with it when it is deleted.
    let id = done["id"].as_str().expect("id");
    let store = s.store();
    assert_eq!(
        store
            .memory_list(id, "conversation")
            .await
            .expect("list")
            .len(),
        2,
        "the expired entry is not listed"
    );
    let r = reqwest::Client::new()
        .delete(s.url(&format!("/executions/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        store
            .memory_list(id, "conversation")
            .await
            .expect("list")
            .is_empty()
    );
}

async fn mcp_memory_bad_parameters_are_named(s: Server) {
    for (params, needle) in [
        ("{action: store, key: k, value: 1, ttl: -5}", "'ttl'"),
        (
            "{action: store, value: 1}",
            "\"key\" is a required property",
        ),
        ("{action: list, scope: galaxy}", "'scope'"),
        ("{action: retrieve, key: {a: 1}}", "'key'"),
    ] {
        let yaml = format!(
            "name: bad\nsteps:\n  - id: m\n    tool: mcp-memory\n    action: execute\n    max_retries: 1\n    parameters: {params}\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "failed", "{params}: {done:#}");
        let error = step(&done, "m")["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{params}: {error}");
    }
    // An action the tool does not have is refused at submit, at its place.
    let (status, body) = s
        .post_yaml(
            "name: bad\nsteps:\n  - id: m\n    tool: mcp-memory\n    action: execute\n    parameters: {action: forget}\n",
            "",
        )
        .await;
    assert_eq!(status, 422, "{body:#}");
    let text = body.to_string();
    assert!(
        text.contains("no action 'execute'") && text.contains("store, retrieve, list, clear"),
        "{body:#}"
    );
    // A value larger than an entry holds is refused, naming it.
    let big = "x".repeat(1024 * 1024 + 10);
    let yaml = "name: big\ninputs:\n  blob: {type: string}\nsteps:\n  - id: m\n    tool: mcp-memory\n    action: store\n    max_retries: 1\n    parameters: {key: k, value: '{{ blob }}'}\n";
    let r = reqwest::Client::new()
        .post(s.url("/executions"))
        .json(&json!({"pipeline": yaml, "context": {"blob": big}}))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    if status == 201 {
        let done = s.finished(body["id"].as_str().expect("id")).await;
        let error = step(&done, "m")["error"].as_str().unwrap_or_default();
        assert!(error.contains("'value'"), "{error}");
    } else {
        // The body limit refused it first: also a clear answer.
        assert_eq!(status, 413, "{body:#}");
    }
}
