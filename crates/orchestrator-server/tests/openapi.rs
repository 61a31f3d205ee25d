//! `openapi/openapi.json` is generated from the code and committed. When it is
//! stale this test rewrites it and fails: commit the new file.

use std::collections::BTreeSet;

#[test]
fn committed_openapi_document_is_current() {
    let path = format!("{}/../../openapi/openapi.json", env!("CARGO_MANIFEST_DIR"));
    let generated =
        serde_json::to_string_pretty(&orchestrator_server::openapi()).expect("serialize") + "\n";
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        std::fs::write(&path, &generated).expect("write openapi.json");
        panic!(
            "openapi/openapi.json was stale and has been regenerated; review and commit it (cargo test -p orchestrator-server --test openapi)"
        );
    }
}

#[test]
fn every_route_is_documented_with_an_operation_id_and_tag() {
    let doc = orchestrator_server::openapi();
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "/executions",
        "/executions/{id}",
        "/executions/{id}/checkpoints",
        "/executions/{id}/cancel",
        "/executions/{id}/recover",
        "/executions/{id}/steps/{step}/answer",
        "/executions/{id}/steps/{step}/logs",
        "/waiting",
        "/pipelines/validate",
        "/pipelines",
        "/pipelines/{name}",
        "/pipelines/{name}/executions",
        "/tools",
        "/models",
        "/models/{id}",
        "/models/select",
        "/models/metrics",
        "/executions/{id}/graph",
        "/executions/{id}/events",
        "/webhooks",
        "/webhooks/{id}",
        "/webhooks/{id}/deliveries",
        "/tokens",
        "/tokens/{id}",
        "/metrics",
        "/metrics/summary",
        "/health/components",
        "/health",
        "/ready",
    ]
    .into_iter()
    .collect();
    assert_eq!(paths, expected);
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operation id"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path} has no tag"
            );
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
        }
    }
}

#[test]
fn every_built_in_actions_parameters_are_documented() {
    let doc = orchestrator_server::openapi();
    for name in [
        "tool.filesystem.write",
        "tool.http.request",
        "tool.web-search.search",
        "tool.terminal.run",
    ] {
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["type"], "object", "{name}");
        assert!(schema["description"].is_string(), "{name}");
    }
}
