//! Executions that start executions (`pipeline-executor`): outputs back,
//! failures by `error_handling`, depth, cancel and recover through the tree.

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    child_pipelines_run_and_hand_back_their_outputs,
    child_failures_follow_error_handling_and_depth_is_bounded,
    cancel_and_recover_go_through_the_tree,
    recursion_control_stops_a_pipeline_that_calls_itself,
);

async fn store_pipeline(s: &Server, name: &str, yaml: &str) {
    let r = reqwest::Client::new()
        .put(s.url(&format!("/pipelines/{name}")))
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
}

fn children(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn child_pipelines_run_and_hand_back_their_outputs(s: Server) {
    // Inline: the child's templates are its own ({{ n }}, {{ double.x }}).
    let yaml = "name: parent\nparameters:\n  n: {type: integer, default: 4}\nsteps:\n  - id: run_child\n    tool: pipeline-executor\n    action: execute\n    parameters:\n      pipeline: |\n        name: child\n        parameters:\n          n: {type: integer, default: 1}\n        steps:\n          - id: double\n            tool: echo\n            parameters: {x: '{{ n * 2 }}'}\n        outputs:\n          doubled: '{{ double.x }}'\n      inputs: {n: '{{ n }}'}\n      output_mapping: {doubled: twice}\n  - id: after\n    tool: echo\n    parameters: {got: '{{ run_child.outputs.twice }}'}\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let result = &step(&done, "run_child")["result"]["result"];
    assert_eq!(result["outputs"], json!({"twice": 8}), "{done:#}");
    assert_eq!(
        step(&done, "after")["result"]["result"]["got"],
        8,
        "{done:#}"
    );
    let child_id = result["execution_id"]
        .as_str()
        .expect("child id")
        .to_string();
    let (_, child) = s.get(&format!("/executions/{child_id}")).await;
    assert_eq!(child["parent_execution_id"], done["id"], "{child:#}");
    assert_eq!(child["parent_step_id"], "run_child");
    assert_eq!(child["depth"], 1);
    assert_eq!(child["status"], "succeeded");
    let parent_id = done["id"].as_str().expect("id");
    let (_, listing) = s.get(&format!("/executions?parent={parent_id}")).await;
    assert_eq!(children(&listing), vec![child_id.clone()], "{listing:#}");

    // By name, inheriting the inputs the child declares.
    store_pipeline(&s, "greeter", "name: greeter\nparameters:\n  who: {type: string, default: nobody}\nsteps:\n  - id: hi\n    tool: echo\n    parameters: {text: 'hi {{ who }}'}\noutputs:\n  text: '{{ hi.text }}'\n").await;
    let done = s
        .run_yaml(
            "name: caller\nparameters:\n  who: {type: string, default: ada}\n  other: {type: string, default: x}\nsteps:\n  - id: greet\n    tool: pipeline-executor\n    action: execute\n    parameters: {pipeline: greeter}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "greet")["result"]["result"]["outputs"]["text"],
        "hi ada",
        "{done:#}"
    );
    // Not waiting: the step is done at once with the child's id.
    let done = s
        .run_yaml(
            "name: fire\nsteps:\n  - id: go\n    tool: pipeline-executor\n    action: execute\n    parameters: {pipeline: greeter@1, wait_for_completion: false}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let started = step(&done, "go")["result"]["result"]["execution_id"]
        .as_str()
        .expect("child")
        .to_string();
    let child = s.finished(&started).await;
    assert_eq!(child["status"], "succeeded", "{child:#}");
    // An unknown name fails the step, naming it.
    let done = s
        .run_yaml(
            "name: lost\nsteps:\n  - id: go\n    tool: pipeline-executor\n    action: execute\n    max_retries: 1\n    parameters: {pipeline: nowhere}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        step(&done, "go")["error"]
            .as_str()
            .is_some_and(|e| e.contains("nowhere")),
        "{done:#}"
    );
}

const FAILING: &str = "name: failing\nsteps:\n  - id: read\n    tool: filesystem\n    action: read\n    max_retries: 1\n    parameters: {path: missing/input.txt}\n";

fn calling(mode: &str, extra: &str) -> String {
    format!(
        "name: calls-{mode}\nsteps:\n  - id: sub\n    tool: pipeline-executor\n    action: execute\n    max_retries: 1\n    parameters:\n      pipeline: failing\n      error_handling: {mode}\n{extra}  - id: after\n    tool: echo\n    depends_on: [sub]\n"
    )
}

async fn child_failures_follow_error_handling_and_depth_is_bounded(s: Server) {
    store_pipeline(&s, "failing", FAILING).await;
    let done = s.run_yaml(&calling("fail", ""), "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        step(&done, "sub")["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed") && e.contains("missing/input.txt")),
        "{done:#}"
    );
    assert_eq!(step(&done, "after")["status"], "cancelled", "{done:#}");

    let done = s.run_yaml(&calling("continue", ""), "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let sub = &step(&done, "sub")["result"]["result"];
    assert_eq!(
        (sub["success"].clone(), sub["continued"].clone()),
        (json!(false), json!(true)),
        "{done:#}"
    );
    assert_eq!(step(&done, "after")["status"], "succeeded");

    let done = s
        .run_yaml(
            &calling("retry", "      retry_count: 2\n      retry_delay: 0.3\n"),
            "",
        )
        .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let id = done["id"].as_str().expect("id");
    let (_, listing) = s.get(&format!("/executions?parent={id}")).await;
    assert_eq!(
        children(&listing).len(),
        3,
        "one try and two retries: {listing:#}"
    );
    // Newest first; each retry starts after its backoff (0.3 s, then 0.6 s).
    let tries: Vec<(i64, i64)> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .map(|e| {
            let at = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(e[k].as_str().unwrap_or_default())
                    .map_or(0, |t| t.timestamp_millis())
            };
            (at("started_at"), at("finished_at"))
        })
        .collect();
    assert!(tries[1].0 - tries[0].1 >= 300, "{tries:?}");
    assert!(tries[2].0 - tries[1].1 >= 600, "{tries:?}");

    // A pipeline that runs itself stops at the depth limit, named.
    store_pipeline(&s, "itself", "name: itself\nsteps:\n  - id: again\n    tool: pipeline-executor\n    action: execute\n    max_retries: 1\n    parameters: {pipeline: itself}\n").await;
    let (status, created) = s
        .send_json(reqwest::Method::POST, "/pipelines/itself/executions", None)
        .await;
    assert_eq!(status, 201, "{created}");
    let root = s
        .until(created["id"].as_str().expect("id"), 60, |e| {
            matches!(
                e["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await;
    assert_eq!(root["status"], "failed", "{root:#}");
    let (_, deepest) = s.get("/executions?pipeline=itself&limit=1").await;
    let deepest_id = deepest["items"][0]["id"].as_str().expect("id");
    let (_, deepest) = s.get(&format!("/executions/{deepest_id}")).await;
    assert_eq!(deepest["depth"], 10, "{deepest:#}");
    assert!(
        step(&deepest, "again")["error"]
            .as_str()
            .is_some_and(|e| e.contains("limits.max_pipeline_depth")),
        "{deepest:#}"
    );
}

async fn cancel_and_recover_go_through_the_tree(s: Server) {
    // Cancelling the parent cancels the child waiting on a person.
    let yaml = "name: asks-below\nsteps:\n  - id: sub\n    tool: pipeline-executor\n    action: execute\n    parameters:\n      pipeline: |\n        name: asking\n        steps:\n          - id: ask\n            tool: user-prompt\n            action: execute\n            parameters: {prompt: 'ok?'}\n";
    let (status, created) = s.post_yaml(yaml, "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let mut child = String::new();
    for _ in 0..400 {
        let (_, listing) = s.get(&format!("/executions?parent={id}")).await;
        if let Some(c) = children(&listing).pop() {
            let (_, view) = s.get(&format!("/executions/{c}")).await;
            if step(&view, "ask")["status"] == "waiting" {
                child = c;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!child.is_empty(), "the child never asked");
    let (_, parent) = s.get(&format!("/executions/{id}")).await;
    assert_eq!(step(&parent, "sub")["status"], "waiting", "{parent:#}");
    assert_eq!(
        step(&parent, "sub")["waiting"]["request"]["execution_id"],
        child.as_str()
    );
    let (status, _) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let child_view = s.finished(&child).await;
    assert_eq!(child_view["status"], "cancelled", "{child_view:#}");

    // Recovering the parent recovers its failed child: no new child, and
    // the child's finished step does not run again.
    let yaml = "name: repairable-tree\nsteps:\n  - id: sub\n    tool: pipeline-executor\n    action: execute\n    max_retries: 1\n    parameters:\n      pipeline: |\n        name: leaf\n        steps:\n          - id: first\n            tool: filesystem\n            action: write\n            parameters: {path: tree/first.txt, content: one}\n          - id: second\n            tool: filesystem\n            action: read\n            max_retries: 1\n            depends_on: [first]\n            parameters: {path: tree/input.txt}\n        outputs:\n          read: '{{ second.content }}'\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let id = done["id"].as_str().expect("id").to_string();
    std::fs::create_dir_all(s.workspace.path().join("tree")).expect("dir");
    std::fs::write(s.workspace.path().join("tree/input.txt"), "repaired").expect("write");
    let (status, body) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{id}/recover"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "sub")["result"]["result"]["outputs"]["read"],
        "repaired",
        "{done:#}"
    );
    let (_, listing) = s.get(&format!("/executions?parent={id}")).await;
    let kids = children(&listing);
    assert_eq!(kids.len(), 1, "{listing:#}");
    let (_, leaf) = s.get(&format!("/executions/{}", kids[0])).await;
    assert_eq!(step(&leaf, "first")["attempt"], 1, "{leaf:#}");
}

/// Calls itself until its shared counter reaches 3 (or a limit stops it).
const COUNTDOWN: &str = "name: countdown
parameters:
  depth_limit: {type: integer, default: 10}
steps:
  - id: check
    tool: recursion-control
    action: check_condition
    parameters:
      context_id: loop
      condition: \"state.get('count', 0) >= 3\"
      depth_limit: '{{ depth_limit }}'
  - id: bump
    tool: recursion-control
    action: update_state
    depends_on: [check]
    condition: '{{ not check.should_terminate }}'
    parameters: {context_id: loop, state_key: count, increment: 1}
  - id: again
    tool: pipeline-executor
    action: execute
    depends_on: [bump]
    condition: '{{ not check.should_terminate }}'
    parameters:
      pipeline: countdown
      inherit_context: true
  - id: seen
    tool: recursion-control
    action: get_state
    depends_on: [again]
    parameters: {context_id: loop}
outputs:
  stopped_at: '{{ check.depth }}'
  reason: \"{{ check.reason | default('condition') }}\"
";

async fn recursion_control_stops_a_pipeline_that_calls_itself(s: Server) {
    store_pipeline(&s, "countdown", COUNTDOWN).await;
    let (status, body) = s
        .send_json(
            reqwest::Method::POST,
            "/pipelines/countdown/executions",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{body:#}");
    let done = s.finished(body["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    // Three levels counted; the fourth (depth 3) saw count 3 and stopped.
    let seen = &step(&done, "seen")["result"]["result"];
    assert_eq!(seen["state"], json!({"count": 3}), "{done:#}");
    assert_eq!(seen["depth"], 0);
    assert_eq!(seen["call_stack"], json!(["countdown"]));
    assert_eq!(
        seen["execution_counts"],
        json!({"countdown": 3}),
        "{seen:#}"
    );
    assert_eq!(seen["iterations"], 3);
    let mut id = step(&done, "again")["result"]["result"]["execution_id"]
        .as_str()
        .expect("child")
        .to_string();
    let mut levels = 1;
    loop {
        let (_, child) = s.get(&format!("/executions/{id}")).await;
        assert_eq!(child["status"], "succeeded", "{child:#}");
        assert_eq!(child["depth"], levels);
        let next = step(&child, "again")["result"]["result"]["execution_id"].as_str();
        match next {
            Some(n) => {
                id = n.to_string();
                levels += 1;
            }
            None => {
                assert_eq!(step(&child, "again")["status"], "skipped", "{child:#}");
                let deepest = &step(&child, "seen")["result"]["result"];
                assert_eq!(
                    deepest["call_stack"],
                    json!(vec!["countdown"; 4]),
                    "{deepest:#}"
                );
                break;
            }
        }
    }
    assert_eq!(levels, 3);

    // Another tree starts from nothing; a depth limit stops it first.
    let (status, body) = s
        .send_json(
            reqwest::Method::POST,
            "/pipelines/countdown/executions",
            Some(json!({"inputs": {"depth_limit": 1}})),
        )
        .await;
    assert_eq!(status, 201, "{body:#}");
    let done = s.finished(body["id"].as_str().expect("id")).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "seen")["result"]["result"]["state"],
        json!({"count": 1}),
        "{done:#}"
    );
    let child = step(&done, "again")["result"]["result"]["outputs"].clone();
    assert_eq!(child["reason"], "depth_limit exceeded", "{done:#}");
    assert_eq!(child["stopped_at"], 1);

    // Bad use fails the step with the reason.
    let done = s
        .run_yaml(
            "name: bad\nsteps:\n  - id: inc\n    tool: recursion-control\n    action: update_state\n    max_retries: 1\n    parameters: {state_key: x}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        step(&done, "inc")["error"]
            .as_str()
            .is_some_and(|e| e.contains("state_value")),
        "{done:#}"
    );
}
