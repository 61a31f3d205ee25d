//! The seed's tools that work with models (`image-analysis`,
//! `image-generation`, `task-delegation`, `multi-model-routing`,
//! `prompt-optimization`) through the API, in the seed's own pipeline
//! syntax, against local providers speaking the real wire formats.

use crate::support::*;
use orchestrator_tools::testing::services::{self, Recorded, Service, Wire};

orchestrator_store::for_each_backend!(
    with database;
    images_are_analysed_and_drawn_by_registered_models,
    routing_tools_choose_among_the_registered_models,
);

async fn register(s: &Server, model: Value) {
    let (status, body) = s
        .send_json(reqwest::Method::POST, "/models", Some(model))
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn images_are_analysed_and_drawn_by_registered_models(database_url: String) {
    let openai = Service::start(services::provider(Wire::OpenAi, Some("sk-o"))).await;
    let anthropic = Service::start(services::provider(Wire::Anthropic, Some("sk-a"))).await;
    let gemini = Service::start(services::provider(Wire::Gemini, Some("g-key"))).await;
    let s = Server::start_with(database_url, |settings| {
        settings.models.env = [
            ("OPENAI_API_KEY", "sk-o"),
            ("ANTHROPIC_API_KEY", "sk-a"),
            ("GOOGLE_API_KEY", "g-key"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    })
    .await;
    let model = |id: &str, provider: &str, base: String, caps: &[&str], key: &str| {
        json!({"id": id, "provider": provider, "model": format!("{id}-v1"), "base_url": base,
               "api_key_env": key, "capabilities": caps,
               "cost_per_1k_tokens": {"input": 0.001, "output": 0.002}})
    };
    register(
        &s,
        model(
            "eye-openai",
            "openai",
            openai.url("/v1"),
            &["vision", "generate"],
            "OPENAI_API_KEY",
        ),
    )
    .await;
    register(
        &s,
        model(
            "eye-claude",
            "anthropic",
            anthropic.url(""),
            &["vision"],
            "ANTHROPIC_API_KEY",
        ),
    )
    .await;
    register(
        &s,
        model(
            "eye-gemini",
            "google",
            gemini.url(""),
            &["vision"],
            "GOOGLE_API_KEY",
        ),
    )
    .await;
    register(
        &s,
        model(
            "plain",
            "openai",
            openai.url("/v1"),
            &["generate"],
            "OPENAI_API_KEY",
        ),
    )
    .await;
    let mut painter = model(
        "painter",
        "openai",
        openai.url("/v1"),
        &["image-generation"],
        "OPENAI_API_KEY",
    );
    painter["cost_per_image"] = json!(0.04);
    register(&s, painter).await;
    let png = services::drawn_png();
    std::fs::create_dir_all(s.workspace.0.join("samples")).expect("mkdir");
    std::fs::write(s.workspace.0.join("samples/pixel.png"), &png).expect("png");
    let saw = format!("Saw 1 image(s): image/png {} bytes", png.len());

    // The seed's multimodal_processing shape.
    let yaml = r#"id: multimodal
name: Multimodal Processing
parameters:
  input_image:
    type: string
    default: samples/pixel.png
  output_path:
    type: string
    default: out
steps:
  - id: analyze_image
    tool: image-analysis
    action: execute
    parameters:
      image: "{{ parameters.input_image }}"
      analysis_type: describe
      detail_level: high
      output_format: json
      model: eye-claude
  - id: detect_objects
    tool: image-analysis
    action: execute
    parameters:
      image: "{{ parameters.input_image }}"
      analysis_type: detect_objects
      confidence_threshold: 0.7
      prompt_suffix: "List objects directly without conversational language."
      model: eye-gemini
  - id: read_text
    tool: image-analysis
    action: execute
    parameters:
      image: "{{ parameters.input_image }}"
      analysis_type: extract_text
      output_format: text
  - id: generate_image
    tool: image-generation
    action: execute
    parameters:
      prompt: "A colorful abstract geometric design"
      size: "1024x1024"
      style: vivid
      num_images: 2
      output_format: file
      output_path: "{{ output_path }}/generated_images"
  - id: named_image
    tool: image-generation
    action: execute
    parameters:
      prompt: "A lighthouse"
      output_path: "{{ output_path }}/art"
      filename: "lighthouse.png"
      model: painter
  - id: inline_image
    tool: image-generation
    action: execute
    parameters:
      prompt: "A boat"
      output_format: base64
  - id: fetched_image
    tool: image-generation
    action: execute
    parameters:
      prompt: "[url] A harbour"
      filename: harbour.png
  - id: save
    tool: filesystem
    action: write
    parameters:
      path: "{{ output_path }}/analysis.md"
      content: "{{ analyze_image.analysis.result }} | {{ read_text.analysis }} | {{ generate_image.images[0].path }}"
    dependencies: [analyze_image, read_text, generate_image]
"#;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let analysis = &step(&done, "analyze_image")["result"]["result"];
    assert_eq!(analysis["analysis"]["result"], saw, "{analysis:#}");
    assert_eq!(
        analysis["analysis"]["image_info"],
        json!({"width": 1, "height": 1, "format": "PNG", "bytes": png.len()})
    );
    assert_eq!(analysis["analysis"]["model_used"], "eye-claude");
    assert_eq!(analysis["metadata"]["model"], "eye-claude");
    let detect = &step(&done, "detect_objects")["result"]["result"];
    assert_eq!(detect["analysis"]["result"], saw, "{detect:#}");
    let read = &step(&done, "read_text")["result"]["result"];
    assert_eq!(read["analysis"], saw, "text output is the answer: {read:#}");
    // Unnamed, the server chose among the vision models only.
    assert!(
        ["eye-openai", "eye-claude", "eye-gemini"]
            .contains(&read["metadata"]["model"].as_str().unwrap_or_default()),
        "{read:#}"
    );
    // Each provider got the image in its own wire format.
    let claude = anthropic.requests();
    let content = &claude[0].json()["messages"][0]["content"];
    assert_eq!(content[0]["type"], "image", "{content:#}");
    assert_eq!(content[0]["source"]["media_type"], "image/png");
    assert_eq!(content[0]["source"]["data"], services::DRAWN_PNG_BASE64);
    assert!(
        content[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("in high detail")),
        "{content:#}"
    );
    let parts = &gemini.requests()[0].json()["contents"][0]["parts"];
    assert_eq!(parts[0]["inlineData"]["mimeType"], "image/png", "{parts:#}");
    let prompt = parts[1]["text"].as_str().unwrap_or_default();
    assert!(
        prompt.contains("at least 70% confident") && prompt.ends_with("conversational language."),
        "{prompt}"
    );
    // Drawn images are files in the workspace.
    let generated = &step(&done, "generate_image")["result"]["result"];
    assert_eq!(generated["metadata"]["num_generated"], 2, "{generated:#}");
    assert_eq!(
        generated["metadata"]["prompt"],
        "A colorful abstract geometric design, vivid style"
    );
    assert_eq!(generated["metadata"]["model"], "painter");
    for image in generated["images"].as_array().expect("images") {
        let path = image["path"].as_str().expect("path");
        assert!(
            path.starts_with("out/generated_images/generated_"),
            "{path}"
        );
        assert_eq!(std::fs::read(s.workspace.0.join(path)).expect("file"), png);
        assert_eq!(
            (image["width"].clone(), image["format"].clone()),
            (json!(1), json!("file"))
        );
    }
    assert_eq!(
        step(&done, "named_image")["result"]["result"]["images"][0]["path"],
        "out/art/lighthouse.png"
    );
    assert!(s.workspace.0.join("out/art/lighthouse.png").is_file());
    let inline = &step(&done, "inline_image")["result"]["result"]["images"][0];
    assert_eq!(inline["format"], "base64");
    assert_eq!(
        inline["data"],
        format!("data:image/png;base64,{}", services::DRAWN_PNG_BASE64)
    );
    // An image the model answered with a URL is fetched from its endpoint.
    assert_eq!(
        std::fs::read(s.workspace.0.join("generated_images/harbour.png")).expect("fetched"),
        png
    );
    let draw_requests: Vec<Value> = openai
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/images/generations")
        .map(Recorded::json)
        .collect();
    assert_eq!(draw_requests.len(), 5, "one request per image");
    let colorful: Vec<&Value> = draw_requests
        .iter()
        .filter(|r| r["prompt"] == "A colorful abstract geometric design, vivid style")
        .collect();
    assert_eq!(colorful.len(), 2, "{draw_requests:#?}");
    assert_eq!(
        (colorful[0]["size"].clone(), colorful[0]["n"].clone()),
        (json!("1024x1024"), json!(1))
    );
    // Images cost what the model says: 5 × $0.04 on top of the tokens.
    let cost = done["usage"]["cost"].as_f64().unwrap_or_default();
    assert!(cost >= 0.2 - 1e-9, "{:#}", done["usage"]);
    assert_eq!(
        s.file("out/analysis.md"),
        format!(
            "{saw} | {saw} | {}",
            generated["images"][0]["path"].as_str().unwrap_or_default()
        )
    );

    // What is refused, and why.
    let fails = |params: &str, tool: &str| {
        format!(
            "name: bad\nsteps:\n  - id: bad\n    tool: {tool}\n    action: execute\n    max_retries: 1\n    parameters: {params}\n"
        )
    };
    for (tool, params, kind, words) in [
        (
            "image-analysis",
            "{image: ../outside.png, analysis_type: describe}",
            "PermissionError",
            "leaves the workspace",
        ),
        (
            "image-analysis",
            "{image: samples/missing.png, analysis_type: describe}",
            "FileNotFoundError",
            "samples/missing.png",
        ),
        (
            "image-analysis",
            "{image: samples/pixel.png, analysis_type: describe, model: plain}",
            "ModelUnavailableError",
            "'vision' capability",
        ),
        (
            "image-analysis",
            "{image: samples/pixel.png, analysis_type: describe, model: nope}",
            "ModelUnavailableError",
            "'nope' is not registered",
        ),
        (
            "image-analysis",
            "{image: 'data:image/png;base64,aGVsbG8gd29ybGQ=', analysis_type: describe}",
            "ValidationError",
            "is not an image",
        ),
        (
            "image-analysis",
            "{image: samples/pixel.png, analysis_type: psychoanalyse}",
            "ValidationError",
            "analysis_type",
        ),
        (
            "image-generation",
            "{prompt: a cat, size: 7x7}",
            "ValidationError",
            "size",
        ),
        (
            "image-generation",
            "{prompt: a cat, num_images: 11}",
            "ValidationError",
            "num_images",
        ),
        (
            "image-generation",
            "{prompt: a cat, filename: ../../etc/passwd}",
            "ValidationError",
            "filename",
        ),
        (
            "image-generation",
            "{prompt: a cat, output_path: ../elsewhere}",
            "PermissionError",
            "leaves the workspace",
        ),
        (
            "image-generation",
            "{prompt: '[refused] a cat'}",
            "ModelRequestError",
            "rejected by the safety system",
        ),
        (
            "image-generation",
            "{prompt: '[not-image] a cat'}",
            "ValidationError",
            "is not an image",
        ),
        (
            "image-generation",
            "{prompt: a cat, model: eye-claude}",
            "ModelUnavailableError",
            "'image-generation' capability",
        ),
    ] {
        let done = s.run_yaml(&fails(params, tool), "").await;
        assert_eq!(done["status"], "failed", "{params}: {done:#}");
        let bad = step(&done, "bad");
        assert_eq!(bad["error_type"], kind, "{params}: {bad:#}");
        let error = bad["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{params}: {error}");
    }
    // The budget counts images before they are drawn.
    let before = openai.requests().len();
    let r = s
        .client
        .post(s.url("/executions"))
        .json(&json!({"pipeline": fails("{prompt: a cat}", "image-generation"), "options": {"max_cost": 0.01}}))
        .send()
        .await
        .expect("send");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let done = s.finished(&id).await;
    assert_eq!(
        step(&done, "bad")["error_type"],
        "BudgetExceeded",
        "{done:#}"
    );
    assert_eq!(openai.requests().len(), before, "nothing was drawn");
}

async fn routing_tools_choose_among_the_registered_models(database_url: String) {
    let provider = Service::start(services::provider(Wire::OpenAi, None)).await;
    let s = Server::start_with(database_url, |_| {}).await;
    let model = |id: &str, cost: f64, caps: &[&str]| {
        json!({"id": id, "provider": "openai", "model": format!("{id}-v1"), "base_url": provider.url("/v1"),
               "capabilities": caps, "context_window": 32000,
               "cost_per_1k_tokens": {"input": cost, "output": cost}})
    };
    register(&s, model("mini", 0.0001, &["generate", "summarization"])).await;
    register(&s, model("coder", 0.01, &["code", "generate"])).await;
    register(&s, model("thinker", 0.05, &["reasoning", "analysis"])).await;

    // The seed's llm_routing_pipeline, unchanged but for the output path.
    let yaml = r#"id: llm_routing_pipeline
name: Smart LLM Routing Pipeline
parameters:
  task:
    type: string
    default: "Implement a function that parses dates, then write code to test it"
  optimization_goals:
    type: array
    default: ["clarity", "brevity", "model_specific"]
  routing_strategy:
    type: string
    default: "capability_based"
steps:
  - id: analyze_task
    tool: task-delegation
    action: execute
    parameters:
      task: "{{ parameters.task }}"
      cost_weight: 0.3
      quality_weight: 0.7
  - id: optimize_prompt
    tool: prompt-optimization
    action: execute
    parameters:
      prompt: "{{ parameters.task }}"
      model: "{{ analyze_task.selected_model }}"
      optimization_goals: "{{ parameters.optimization_goals }}"
      preserve_intent: true
    dependencies: [analyze_task]
  - id: route_request
    tool: multi-model-routing
    action: execute
    parameters:
      request: "{{ optimize_prompt.optimized_prompt }}"
      models: "{{ analyze_task.fallback_models | default([analyze_task.selected_model]) }}"
      strategy: cost_optimized
      max_concurrent: 10
    dependencies: [optimize_prompt]
  - id: save_report
    tool: filesystem
    action: write
    parameters:
      path: "out/{{ parameters.task[:20] | slugify }}_report.md"
      content: |
        Selected: {{ analyze_task.selected_model }} ({{ analyze_task.task_analysis.task_type }}, {{ analyze_task.task_analysis.complexity }})
        Reasons: {{ analyze_task.reasons | join(', ') }}
        Optimized: {{ optimize_prompt.optimized_prompt }}
        Routed: {{ route_request.selected_model }} by {{ route_request.strategy }}: {{ route_request.routing_reason }}
    dependencies: [route_request]
"#;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let analyzed = &step(&done, "analyze_task")["result"]["result"];
    assert_eq!(analyzed["selected_model"], "coder", "{analyzed:#}");
    assert_eq!(analyzed["task_analysis"]["task_type"], "code_generation");
    assert_eq!(analyzed["task_analysis"]["complexity"], "moderate");
    assert!(
        analyzed["reasons"][0] == "Good at code_generation",
        "{analyzed:#}"
    );
    assert_eq!(
        analyzed["fallback_models"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(analyzed["all_scores"].as_array().map(Vec::len), Some(3));
    let optimized = &step(&done, "optimize_prompt")["result"]["result"];
    assert_eq!(optimized["model"], "coder", "{optimized:#}");
    assert_eq!(
        optimized["optimized_prompt"],
        // "then" reads as structure already: no "Task:" before it.
        "Implement a function that parses dates, then write code to test it\n\nProvide the code with appropriate syntax highlighting.",
        "{optimized:#}"
    );
    assert_eq!(optimized["applied_optimizations"], json!(["clarity"]));
    let routed = &step(&done, "route_request")["result"]["result"];
    // Cheapest among the fallbacks (coder is not one of them).
    assert_eq!(routed["selected_model"], "mini", "{routed:#}");
    assert_eq!(routed["strategy"], "cost_optimized");
    assert_eq!(routed["all_loads"], json!({"mini": 0, "thinker": 0}));
    let report = s.file("out/implement-a-function_report.md");
    assert!(
        report.starts_with(
            "Selected: coder (code_generation, moderate)\nReasons: Good at code_generation"
        ),
        "{report}"
    );
    assert!(provider.requests().is_empty(), "choosing calls no model");

    // The seed's model_routing_demo: `action: execute` with the action
    // among the parameters; optimize_batch really runs each task.
    let yaml = r#"id: model-routing-demo
name: model-routing-demonstration
inputs:
  task_budget: 10.00
  priority: "cost"
steps:
  - id: assess_requirements
    tool: multi-model-routing
    action: execute
    parameters:
      action: "route"
      tasks:
        - task: "Summarize this document in 2-3 sentences"
          context: "AI continues to revolutionize industries."
        - task: "Write a Python function to calculate fibonacci numbers"
          context: "Should be efficient"
        - "Analyze sales data trends"
      routing_strategy: "{{ priority }}"
      constraints:
        total_budget: "{{ task_budget }}"
        max_latency: 30.0
  - id: summarize_document
    action: generate_text
    parameters:
      prompt: "[answer:AI is everywhere.] Summarize"
      model: "{{ assess_requirements.recommendations[0].model }}"
    dependencies: [assess_requirements]
  - id: batch_processing
    tool: multi-model-routing
    action: execute
    parameters:
      action: "optimize_batch"
      tasks:
        - "[answer:Hola Mundo] Translate to Spanish: Hello World"
        - "[answer:Bonjour] Translate to French: Good morning"
      optimization_goal: "minimize_cost"
      constraints:
        max_budget_per_task: 0.05
    dependencies: [summarize_document]
  - id: round_one
    tool: multi-model-routing
    action: execute
    parameters: {request: anything, strategy: round_robin, models: "mini, coder"}
  - id: round_two
    tool: multi-model-routing
    action: execute
    parameters: {request: anything, strategy: round_robin, models: "['mini', 'coder']"}
    dependencies: [round_one]
"#;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let assessed = &step(&done, "assess_requirements")["result"]["result"];
    assert_eq!(assessed["tasks_count"], 3, "{assessed:#}");
    assert_eq!(assessed["routing_strategy"], "cost");
    for (i, r) in assessed["recommendations"]
        .as_array()
        .expect("recommendations")
        .iter()
        .enumerate()
    {
        assert_eq!(
            (r["task_index"].clone(), r["model"].clone()),
            (json!(i), json!("mini")),
            "{assessed:#}"
        );
    }
    assert_eq!(
        step(&done, "summarize_document")["result"]["result"],
        "AI is everywhere."
    );
    let batch = &step(&done, "batch_processing")["result"]["result"];
    assert_eq!(
        batch["results"],
        json!(["Hola Mundo", "Bonjour"]),
        "{batch:#}"
    );
    assert_eq!(batch["models_used"], json!(["mini"]));
    assert_eq!(batch["task_count"], 2);
    assert!(
        batch["total_cost"].as_f64().unwrap_or_default() > 0.0,
        "{batch:#}"
    );
    let picks: Vec<Value> = ["round_one", "round_two"]
        .iter()
        .map(|id| step(&done, id)["result"]["result"]["selected_model"].clone())
        .collect();
    assert_ne!(picks[0], picks[1], "round robin takes turns: {picks:?}");

    // A budget too small for any task leaves them unrouted, and says so.
    let done = s
        .run_yaml(
            "name: tight\nsteps:\n  - id: r\n    tool: multi-model-routing\n    action: route\n    parameters: {tasks: [a long task to write about], routing_strategy: quality, constraints: {total_budget: 0}}\n",
            "",
        )
        .await;
    let routed = &step(&done, "r")["result"]["result"];
    assert_eq!(routed["recommendations"], json!([]), "{done:#}");
    assert!(
        routed["unrouted"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("budget")),
        "{routed:#}"
    );
    // What is refused, and why.
    for (tool, action, params, kind, words) in [
        (
            "multi-model-routing",
            "execute",
            "{request: hi, models: [nope]}",
            "ModelUnavailableError",
            "parameter 'models'",
        ),
        (
            "multi-model-routing",
            "execute",
            "{request: hi, strategy: bogus}",
            "ValidationError",
            "strategy",
        ),
        (
            "multi-model-routing",
            "execute",
            "{strategy: ucb}",
            "ValidationError",
            "request",
        ),
        (
            "multi-model-routing",
            "route",
            "{tasks: []}",
            "ValidationError",
            "tasks",
        ),
        (
            "multi-model-routing",
            "optimize_batch",
            "{tasks: [x], constraints: {max_budget_per_task: -1}}",
            "ValidationError",
            "max_budget_per_task",
        ),
        (
            "multi-model-routing",
            "optimize_batch",
            "{tasks: [x], constraints: {max_budget_per_task: 0.0000001}}",
            "BudgetExceeded",
            "max_budget_per_task",
        ),
        (
            "task-delegation",
            "execute",
            "{task: hi, cost_weight: 2}",
            "ValidationError",
            "cost_weight",
        ),
        (
            "task-delegation",
            "execute",
            "{requirements: {}}",
            "ValidationError",
            "task",
        ),
        (
            "prompt-optimization",
            "execute",
            "{prompt: 3}",
            "ValidationError",
            "prompt",
        ),
    ] {
        let yaml = format!(
            "name: bad\nsteps:\n  - id: bad\n    tool: {tool}\n    action: {action}\n    max_retries: 1\n    parameters: {params}\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        let bad = step(&done, "bad");
        assert_eq!(bad["error_type"], kind, "{params}: {bad:#}");
        let error = bad["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{params}: {error}");
    }
}

/// Without a model registered, the tools say what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_tools_without_models_say_so() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    for tool in ["task-delegation", "multi-model-routing"] {
        let yaml = format!(
            "name: none\nsteps:\n  - id: pick\n    tool: {tool}\n    action: execute\n    max_retries: 1\n    parameters: {{task: hi, request: hi}}\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        let pick = step(&done, "pick");
        assert_eq!(pick["error_type"], "ModelUnavailableError", "{pick:#}");
        assert!(
            pick["error"]
                .as_str()
                .is_some_and(|e| e.contains("no model is registered")),
            "{pick:#}"
        );
    }
    let done = s
        .run_yaml(
            "name: none\nsteps:\n  - id: draw\n    tool: image-generation\n    action: execute\n    max_retries: 1\n    parameters: {prompt: a cat}\n",
            "",
        )
        .await;
    let draw = step(&done, "draw");
    assert_eq!(draw["error_type"], "ModelUnavailableError", "{draw:#}");
    // Without a model to aim at, the prompt is still optimized.
    let done = s
        .run_yaml(
            "name: none\nsteps:\n  - id: opt\n    tool: prompt-optimization\n    action: execute\n    parameters: {prompt: 'Can you please list the planets?', optimization_goals: [brevity, clarity, artistic_quality]}\n",
            "",
        )
        .await;
    let opt = &step(&done, "opt")["result"]["result"];
    assert_eq!(
        opt["optimized_prompt"],
        "Question: Please list the planets?\n\nProvide the output as a bulleted list.",
        "{done:#}"
    );
    assert_eq!(opt["model"], Value::Null);
    assert_eq!(opt["skipped_goals"], json!(["artistic_quality"]));
}
