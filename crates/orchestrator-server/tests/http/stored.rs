//! Pipelines stored by name: versions, reading them back, running them.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    stored_pipelines_are_versioned_and_run_by_name,
);

async fn put_yaml(s: &Server, name: &str, yaml: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(s.url(&format!("/pipelines/{name}")))
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("put");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn stored_pipelines_are_versioned_and_run_by_name(s: Server) {
    let v1 = "name: greet\nparameters:\n  who: {type: string, default: world}\nsteps:\n  - id: say\n    tool: echo\n    parameters: {text: 'hello {{ who }}'}\noutputs:\n  said: '{{ say.text }}'\n";
    let (status, stored) = put_yaml(&s, "greet", v1).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(
        (stored["name"].clone(), stored["version"].clone()),
        (json!("greet"), json!(1))
    );
    assert_eq!(stored["steps"], 1);
    // An invalid pipeline is refused and takes no version.
    let (status, problem) = put_yaml(
        &s,
        "greet",
        "name: greet\nsteps:\n  - id: a\n    tool: nope\n",
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let v2 = v1.replace("hello", "hi");
    let (status, stored) = put_yaml(&s, "greet", &v2).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["version"], 2, "{stored}");
    // As JSON, another name.
    let (status, other) = s
        .send_json(
            reqwest::Method::PUT,
            "/pipelines/other_one",
            Some(json!({"pipeline": {"name": "o", "steps": [{"id": "a", "tool": "echo"}]}})),
        )
        .await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(other["format"], "json");

    let (_, list) = s.get("/pipelines").await;
    assert_eq!(
        list["items"].as_array().map(|i| i
            .iter()
            .map(|p| (p["name"].clone(), p["latest_version"].clone()))
            .collect::<Vec<_>>()),
        Some(vec![
            (json!("greet"), json!(2)),
            (json!("other_one"), json!(1))
        ]),
        "{list}"
    );
    let (_, latest) = s.get("/pipelines/greet").await;
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["source"], v2.as_str());
    let (_, first) = s.get("/pipelines/greet?version=1").await;
    assert_eq!(first["source"], v1);
    for (path, want) in [
        ("/pipelines/greet?version=9", 404),
        ("/pipelines/nothing", 404),
        ("/pipelines/greet?version=x", 400),
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    let (status, problem) = put_yaml(&s, "bad name!", v1).await;
    assert_eq!(status, 400, "{problem}");

    // Run the newest, then version 1, with inputs.
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/pipelines/greet/executions",
            Some(json!({"context": {"who": "ada"}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let done = s.finished(created["id"].as_str().expect("id")).await;
    assert_eq!(done["outputs"]["said"], "hi ada", "{done:#}");
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/pipelines/greet/executions",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let done = s.finished(created["id"].as_str().expect("id")).await;
    assert_eq!(done["outputs"]["said"], "hello world", "{done:#}");
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/pipelines/other_one/executions",
            None,
        )
        .await;
    assert_eq!(status, 201, "{created}");
    for (body, want) in [
        (json!({"version": 7}), 404),
        (json!({"context": {"who": 3}}), 422),
        (json!({"colour": "red"}), 422),
    ] {
        let (status, problem) = s
            .send_json(
                reqwest::Method::POST,
                "/pipelines/greet/executions",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, want, "{body}: {problem}");
    }
    let (status, problem) = s
        .send_json(reqwest::Method::POST, "/pipelines/nothing/executions", None)
        .await;
    assert_eq!(status, 404, "{problem}");
}
