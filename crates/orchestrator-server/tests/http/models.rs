//! Models: registration, selection and model steps against a local
//! provider speaking the real wire format; the egress policy of endpoints.

use crate::support::*;

orchestrator_store::for_each_backend!(with database; models_run_against_a_local_provider, auto_tags_are_answered_after_the_submit, an_unreachable_model_is_passed_over);

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

    // validation's extract_structured runs on a model and checks its answer
    // against the schema, as generate_structured does.
    let yaml = "name: extract\nsteps:\n  - id: extract_info\n    tool: validation\n    action: extract_structured\n    parameters:\n      text: \"[json] The report is titled Report and scores 7.\"\n      schema: {type: object, required: [title, score], properties: {title: {type: string}, score: {type: integer}}}\n      model: local-mini\n";
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "extract_info")["result"]["result"],
        json!({"title": "Report", "score": 7}),
        "{done:#}"
    );

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
    // A tag answered with what its type refuses: accepted (the tags are
    // answered after the answer), then failed naming the tag's line.
    let (status, created) = s
        .post_yaml("name: bad\nsteps:\n  - id: pick\n    tool: echo\n    parameters:\n      n: <AUTO type=\"integer\">[answer:many] how many?</AUTO>\n", "")
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "resolving", "{created}");
    let failed = s.finished(created["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("line 6")
            && error.contains("step 'pick'")
            && error.contains("not a valid integer"),
        "{failed:#}"
    );
    assert_eq!(failed["steps"], json!([]), "{failed:#}");

    let (_, metrics) = s.get("/models/metrics").await;
    let mini = metrics["items"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["model_id"] == "local-mini"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (mini["calls"].clone(), mini["successes"].clone()),
        // Seven calls above, and the extraction.
        (json!(8), json!(8)),
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

    // An <AUTO> tag in a model slot picks a registered model by the task its
    // words name, without asking a model.
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(model("local-coder", 0.004, &["generate", "code"])),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let before = provider.requests().len();
    let done = s
        .run_yaml(
            "name: slots\nsteps:\n  - id: tune\n    action: generate\n    model: <AUTO>Select a model for code optimization</AUTO>\n    parameters: {prompt: '[answer:ok] make it faster'}\n  - id: chat\n    action: generate\n    model: <AUTO>Simple text generation</AUTO>\n    parameters: {prompt: '[answer:hi] hello'}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["auto_answers"][0]["answer"], "local-coder", "{done:#}");
    assert_eq!(done["auto_answers"][1]["answer"], "local-mini", "{done:#}");
    assert!(done["auto_answers"][0]["selected"].is_string(), "{done:#}");
    assert_eq!(
        provider.requests().len(),
        before + 2,
        "the two steps called their models; the tags did not"
    );
    // `model: <AUTO>` with nothing to ask: the registry chooses.
    let done = s
        .run_yaml(
            "name: any\nsteps:\n  - id: any\n    action: generate_text\n    parameters: {prompt: '[answer:fine] anything', model: <AUTO>}\n",
            "",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(step(&done, "any")["result"]["result"], "fine", "{done:#}");
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
    let store = s.store();
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

/// `<AUTO>` tags that ask a model are answered after the submit's answer:
/// the execution is `resolving` meanwhile, can be cancelled, and what is
/// wrong outside the tags is still refused at once.
async fn auto_tags_are_answered_after_the_submit(database_url: String) {
    use orchestrator_tools::testing::services::{self, Service, Wire};
    let provider = Service::start(services::provider(Wire::OpenAi, None)).await;
    let s = Server::start(database_url).await;
    let (status, created) = s
        .send_json(
            reqwest::Method::POST,
            "/models",
            Some(json!({"id": "local", "provider": "openai", "model": "m",
                        "base_url": provider.url("/v1"), "capabilities": ["generate"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    // Wrong outside its tags: refused at once, no model asked.
    let (status, problem) = s
        .post_yaml("name: wrong\nsteps:\n  - id: a\n    tool: no-such-tool\n    parameters: {x: '<AUTO>[answer:1] pick</AUTO>'}\n", "")
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("no-such-tool"), "{problem}");
    assert!(provider.requests().is_empty());

    // A tag in a typed slot is checked once answered: the submit accepts it.
    let (status, created) = s
        .post_yaml("name: typed\nparameters:\n  who: {type: string, default: ada}\nsteps:\n  - id: a\n    tool: echo\n    timeout: <AUTO type=\"integer\">[answer:7] seconds for {{ who }}?</AUTO>\n    parameters: {name: '{{ who }}'}\n", "")
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "resolving", "{created}");
    assert_eq!(created["progress"]["percent"], 0.0, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let done = s.finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["auto_answers"][0]["answer"], "7", "{done:#}");
    assert_eq!(
        done["auto_answers"][0]["asked"], "[answer:7] seconds for ada?",
        "the question was rendered over the inputs: {done:#}"
    );
    let kinds: Vec<String> = s
        .store()
        .list_events(&id, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds[..2],
        ["execution.resolving", "execution.queued"],
        "{kinds:?}"
    );
    let (_, listed) = s.get("/executions?status=resolving").await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    // A tag that reads an earlier step's result is asked by its step, when
    // it runs, with the result in the question; in a condition too.
    let done = s
        .run_yaml("name: later\nsteps:\n  - id: first\n    tool: echo\n    parameters: {kind: poem}\n  - id: second\n    tool: echo\n    parameters:\n      fmt: '<AUTO>[answer:markdown] best format for {{ first.result.kind }}?</AUTO>'\n  - id: third\n    tool: echo\n    condition: '<AUTO>[answer:false] is {{ first.kind }} prose?</AUTO>'\n  - id: fourth\n    tool: echo\n    condition: '<AUTO>[answer:yes] is {{ first.kind }} verse?</AUTO>'\n", "")
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        step(&done, "second")["result"]["result"]["fmt"],
        "markdown",
        "{done:#}"
    );
    assert_eq!(step(&done, "third")["status"], "skipped", "{done:#}");
    assert_eq!(step(&done, "fourth")["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["auto_answers"][0]["answered_by_step"], true,
        "{done:#}"
    );
    let asked: Vec<String> = provider
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .collect();
    assert!(
        asked.iter().any(|b| b.contains("best format for poem?"))
            && asked.iter().any(|b| b.contains("is poem prose?")),
        "{asked:?}"
    );

    // Cancelled while the model thinks: it ends at once, no step is stored,
    // and the late answer changes nothing.
    let (status, created) = s
        .post_yaml("name: slow\nsteps:\n  - id: a\n    tool: echo\n    parameters: {x: '<AUTO>[slow:1500][answer:late] pick</AUTO>'}\n", "")
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let (_, listed) = s.get("/executions?status=resolving").await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    let (status, cancelled) = s
        .send_json(
            reqwest::Method::POST,
            &format!("/executions/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let (_, after) = s.get(&format!("/executions/{id}")).await;
    assert_eq!(after["status"], "cancelled", "{after:#}");
    assert_eq!(after["steps"], json!([]), "{after:#}");

    // Recovering it asks again.
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
        step(&done, "a")["result"]["result"]["x"],
        "late",
        "{done:#}"
    );

    // No model can answer: the execution fails naming the tag.
    let (status, _) = s
        .send_json(reqwest::Method::DELETE, "/models/local", None)
        .await;
    assert_eq!(status, 204);
    let (status, created) = s
        .post_yaml("name: none\nsteps:\n  - id: a\n    tool: echo\n    parameters:\n      x: <AUTO>pick one</AUTO>\n", "")
        .await;
    assert_eq!(status, 201, "{created}");
    let failed = s.finished(created["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("line 6") && error.contains("pick one"),
        "{failed:#}"
    );
}

/// A model whose endpoint refuses connections fails its step once, then is
/// passed over for a minute while another model fits.
async fn an_unreachable_model_is_passed_over(database_url: String) {
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
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    for (id, base, cost) in [
        ("gone", format!("http://127.0.0.1:{closed}/v1"), 0.0),
        ("near", provider.url("/v1"), 0.01),
    ] {
        let (status, body) = s
            .send_json(
                reqwest::Method::POST,
                "/models",
                Some(json!({"id": id, "provider": "openai", "model": format!("{id}-v1"), "base_url": base,
                    "api_key_env": "OPENAI_API_KEY", "capabilities": ["generate"], "context_window": 8000,
                    "cost_per_1k_tokens": cost})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let yaml = "name: ask\nsteps:\n  - id: ask\n    action: generate\n    max_retries: 1\n    parameters: {prompt: hello}\n";
    let first = s.run_yaml(yaml, "").await;
    assert_eq!(
        first["status"], "failed",
        "the cheapest cannot be reached: {first:#}"
    );
    assert_eq!(
        step(&first, "ask")["error_type"],
        "ConnectionError",
        "{first:#}"
    );
    let second = s.run_yaml(yaml, "").await;
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(step(&second, "ask")["usage"]["models"], json!(["near"]));
    // Each call is a line of the step's log, failed ones too.
    let log_of = |e: &Value| {
        format!(
            "/executions/{}/steps/ask/logs",
            e["id"].as_str().unwrap_or_default()
        )
    };
    let (_, failed_log) = s.get(&log_of(&first)).await;
    let text = failed_log["items"].to_string();
    assert!(
        text.contains("model 'gone' chosen")
            && text.contains("failed after")
            && text.contains("ConnectionError"),
        "{failed_log:#}"
    );
    let (_, ok_log) = s.get(&log_of(&second)).await;
    let text = ok_log["items"].to_string();
    assert!(
        text.contains("passed over")
            && text.contains("model 'near' (near-v1):")
            && text.contains("tokens in"),
        "{ok_log:#}"
    );
    let (_, chosen) = s
        .send_json(
            reqwest::Method::POST,
            "/models/select",
            Some(json!({"tasks": ["generate"]})),
        )
        .await;
    assert_eq!(chosen["model"]["id"], "near", "{chosen}");
    assert!(
        chosen["reason"]
            .as_str()
            .is_some_and(|r| r.contains("passed over") && r.contains("gone")),
        "{chosen}"
    );
}
