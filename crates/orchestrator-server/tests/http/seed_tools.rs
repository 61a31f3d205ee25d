//! The seed's tools through the API, each in a pipeline written in the
//! seed's own syntax (`action: execute` with the tool's action among the
//! parameters, where the seed's examples write it so).

use crate::support::*;

orchestrator_store::for_each_backend!(
    with Server::start;
    mcp_memory_keeps_namespaces_per_execution_tree_or_for_the_server,
    mcp_memory_bad_parameters_are_named,
    markdown_becomes_an_html_page_in_the_workspace,
    markdown_becomes_a_pdf_in_the_workspace,
    charts_and_a_dashboard_are_drawn_into_the_workspace,
);

async fn charts_and_a_dashboard_are_drawn_into_the_workspace(s: Server) {
    std::fs::create_dir_all(s.workspace.0.join("data")).expect("mkdir");
    std::fs::write(
        s.workspace.0.join("data/sales.csv"),
        "date,region,revenue,units\n2024-01-01,North,120,10\n2024-01-02,South,80,8\n2024-01-03,North,30,3\n2024-01-04,East,50,4\n",
    )
    .expect("csv");
    // The seed's own pipeline shape (test_simple_pipeline, modular_analysis).
    let yaml = r#"name: viz
steps:
  - id: generate_visualizations
    tool: visualization
    action: create_charts
    parameters:
      data:
        - {id: 1, value: 100, category: A}
        - {id: 2, value: 200, category: B}
        - {id: 3, value: 150, category: A}
      chart_types: [bar, pie]
      output_dir: out/charts
      title: Test Charts
  - id: from_file
    tool: visualization
    action: create_charts
    parameters:
      data: data/sales.csv
      chart_types: auto
      format: svg
      theme: dark
      output_dir: out/svg
  - id: create_dashboard
    tool: visualization
    action: create_dashboard
    parameters:
      charts: '{{ generate_visualizations.charts }}'
      layout: grid
      title: "Sales & more"
      output_dir: out/dashboard
  - id: export
    tool: visualization
    action: export_figures
    parameters:
      charts: '{{ from_file.files }}'
      format: svg
outputs:
  dashboard_url: "{{ create_dashboard.url }}"
  chart_files: "{{ generate_visualizations.files }}"
"#;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["outputs"]["chart_files"],
        json!(["out/charts/bar_chart.png", "out/charts/pie_chart.png"])
    );
    let png = std::fs::read(s.workspace.0.join("out/charts/bar_chart.png")).expect("png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg_step = &step(&done, "from_file")["result"]["result"];
    // A date column is not a category; revenue and units are numbers.
    assert_eq!(
        svg_step["chart_types"],
        json!(["bar", "scatter", "histogram", "pie"]),
        "{svg_step:#}"
    );
    let svg = s.file("out/svg/bar_chart.svg");
    assert!(svg.starts_with("<svg"), "{svg:.100}");
    assert!(svg.contains("Total Revenue by Region"), "the title is text");
    assert_eq!(
        done["outputs"]["dashboard_url"],
        "out/dashboard/dashboard.html"
    );
    let page = s.file("out/dashboard/dashboard.html");
    assert!(page.contains("<title>Sales &amp; more</title>"), "{page}");
    assert!(page.contains("src=\"../charts/bar_chart.png\""), "{page}");
    assert_eq!(
        step(&done, "export")["result"]["result"]["count"],
        4,
        "{done:#}"
    );
    assert!(s.workspace.0.join("exports/pie_chart.svg").exists());

    for (params, expected) in [
        ("{data: [{a: 1}], chart_types: [radar]}", "radar"),
        (
            "{data: [{a: 1}], output_dir: ../../etc}",
            "leaves the workspace",
        ),
        ("{data: [{a: 1}], width: 100000}", "'width'"),
        ("{data: [{a: 1}], theme: neon}", "'theme'"),
        ("{data: [{a: 1}], x_column: nope}", "no column 'nope'"),
        ("{data: [[1, 2]]}", "not an object"),
        ("{data: missing.csv}", "does not exist"),
        (
            "{data: [{w: text}], chart_types: [scatter]}",
            "two numeric columns",
        ),
        ("{chart_types: [bar]}", "'data'"),
    ] {
        let yaml = format!(
            "name: bad\nsteps:\n  - id: c\n    tool: visualization\n    action: create_charts\n    max_retries: 1\n    parameters: {params}\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "failed", "{params}: {done:#}");
        let error = step(&done, "c")["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{params}: {error}");
    }
}

async fn markdown_becomes_an_html_page_in_the_workspace(s: Server) {
    let yaml = r##"name: report_html
inputs:
  topic: {type: string, default: "Rust & pipelines"}
steps:
  - id: compile_final_report
    tool: echo
    action: echo
    parameters:
      final_report: |
        # Research: {{ topic }}

        ## Findings

        | metric | value |
        |---|---|
        | steps | 3 |

        <script>alert('x')</script>
  - id: generate_html_output
    tool: markdown-to-html
    parameters:
      markdown_content: '{{ compile_final_report.final_report }}'
      output_path: "reports/{{ topic | slugify }}.html"
      css_theme: academic
      include_toc: true
  - id: fragment
    tool: markdown-to-html
    action: convert
    parameters: {content: "*hi*", standalone: false}
outputs:
  path: "{{ generate_html_output.output_path }}"
  title: "{{ generate_html_output.title }}"
"##;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["path"], "reports/rust-pipelines.html");
    assert_eq!(done["outputs"]["title"], "Research: Rust & pipelines");
    let html = s.file("reports/rust-pipelines.html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<title>Research: Rust &amp; pipelines</title>"));
    assert!(
        html.contains("<a href=\"#findings\">Findings</a>"),
        "{html}"
    );
    assert!(html.contains("<td>3</td>") && html.contains("Georgia"));
    assert!(!html.contains("<script>"), "raw HTML is shown, not run");
    let fragment = &step(&done, "fragment")["result"]["result"];
    assert_eq!(fragment["html"], "<p><em>hi</em></p>\n");

    let done = s
        .run_yaml(
            "name: bad\nsteps:\n  - id: m\n    tool: markdown-to-html\n    max_retries: 1\n    parameters: {content: x, css_theme: neon}\n",
            "",
        )
        .await;
    let error = step(&done, "m")["error"].as_str().unwrap_or_default();
    assert!(error.contains("'css_theme'"), "{error}");
    let done = s
        .run_yaml(
            "name: bad\nsteps:\n  - id: m\n    tool: markdown-to-html\n    max_retries: 1\n    parameters: {content: x, output_path: ../out.html}\n",
            "",
        )
        .await;
    let error = step(&done, "m")["error"].as_str().unwrap_or_default();
    assert!(error.contains("leaves the workspace"), "{error}");
}

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
            .memory_list(id, "mcp-memory/conversation")
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
            .memory_list(id, "mcp-memory/conversation")
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

/// `headless-browser` and `web-scraper` against a real local web server and
/// a SearXNG-speaking search backend.
mod web {
    use crate::support::*;
    use orchestrator_tools::testing::services::{self, Service};

    orchestrator_store::for_each_backend!(
        with database;
        pages_are_read_searched_and_verified_the_seeds_way,
        private_addresses_stay_out_of_reach,
        http_client_speaks_the_seed_examples_names,
    );

    /// Each test starts its server with its own settings.
    async fn database(url: String) -> String {
        url
    }

    async fn pages_are_read_searched_and_verified_the_seeds_way(url: String) {
        let searx = Service::start(services::searxng()).await;
        let web = Service::start(services::web()).await;
        let s = Server::start_with(url, |settings| {
            settings.search_backends =
                vec![orchestrator_tools::search::SearchBackend::Searxng { url: searx.url("") }];
        })
        .await;
        let base = web.url("");
        let yaml = format!(
            r#"name: web_research
steps:
  - id: search_topic
    tool: headless-browser
    action: search
    parameters: {{query: "pipelines", max_results: 3}}
  - id: scrape_page
    tool: headless-browser
    action: scrape
    parameters: {{url: "{base}/article"}}
  - id: main_text
    tool: headless-browser
    action: extract
    parameters: {{url: "{base}/article", selector: "article p", extract_main_content: true, timeout: 10000}}
  - id: alive
    tool: headless-browser
    action: verify
    parameters: {{url: "{base}/article"}}
  - id: gone
    tool: headless-browser
    action: verify
    parameters: {{url: "{base}/status/404"}}
  - id: links
    tool: web-scraper
    action: extract_links
    parameters: {{url: "{base}/article"}}
  - id: huge
    tool: web-scraper
    action: extract_text
    parameters: {{url: "{base}/big?bytes=3000000", max_content_length: 100000}}
outputs:
  title: "{{{{ scrape_page.title }}}}"
  found: "{{{{ search_topic.total_results }}}}"
"#
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(done["outputs"]["title"], "Pipelines in practice");
        assert_eq!(done["outputs"]["found"], 3);
        let page = &step(&done, "scrape_page")["result"]["result"];
        assert_eq!(
            page["text"], "Home Pipelines Steps run in parallel where they can. Read more",
            "{page:#}"
        );
        assert!(!page.to_string().contains("not text"));
        assert_eq!(page["description"], "How pipelines run");
        assert_eq!(page["status_code"], 200);
        assert_eq!(page["images"][0]["url"], format!("{base}/img/dag.png"));
        assert_eq!(
            step(&done, "main_text")["result"]["result"]["text"],
            "Steps run in parallel where they can."
        );
        assert_eq!(step(&done, "alive")["result"]["result"]["accessible"], true);
        let gone = &step(&done, "gone")["result"]["result"];
        assert_eq!(gone["accessible"], false, "{gone:#}");
        assert_eq!(gone["status_code"], 404);
        let links = &step(&done, "links")["result"]["result"];
        assert_eq!(
            links["links"],
            json!([
                {"url": format!("{base}/"), "text": "Home", "title": ""},
                {"url": "https://example.org/more", "text": "Read more", "title": "More"}
            ]),
            "{links:#}"
        );
        assert!(links.get("text").is_none(), "extract_links reads no text");
        let huge = &step(&done, "huge")["result"]["result"];
        assert_eq!(huge["truncated"], true, "{huge:#}");
        assert_eq!(huge["content_length"], 100_000);
        assert!(huge.get("links").is_none());

        // No JavaScript engine: said plainly.
        let done = s
            .run_yaml(
                &format!("name: js\nsteps:\n  - id: js\n    tool: headless-browser\n    action: scrape_js\n    max_retries: 1\n    parameters: {{url: \"{base}/article\"}}\n"),
                "",
            )
            .await;
        assert_eq!(done["status"], "failed");
        assert!(
            step(&done, "js")["error"]
                .as_str()
                .is_some_and(|e| e.contains("use scrape")),
            "{done:#}"
        );
    }

    async fn http_client_speaks_the_seed_examples_names(url: String) {
        let web = Service::start(services::web()).await;
        let s = Server::start(url).await;
        let base = web.url("");
        // As the seed's integrations/external_apis example writes it.
        let yaml = format!(
            r#"name: external_apis
inputs:
  research_topic: {{type: string, default: "rust"}}
steps:
  - id: fetch_news
    tool: http-client
    action: get
    parameters:
      url: "{base}/json"
      headers: {{X-Agent: "Orchestrator Research Bot 1.0"}}
      params: {{q: "{{{{ research_topic }}}}", pageSize: 5}}
      timeout: "30"
  - id: send
    tool: http-client
    action: post
    parameters: {{url: "{base}/echo", json: {{topic: "{{{{ research_topic }}}}"}}}}
  - id: any
    tool: http-client
    action: request
    parameters: {{url: "{base}/echo", method: POST, data: plain}}
outputs:
  query: "{{{{ fetch_news.body.query.q }}}}"
"#
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let news = &step(&done, "fetch_news")["result"]["result"];
        assert_eq!(
            news["body"]["query"],
            json!({"q": "rust", "pageSize": "5"}),
            "{news:#}"
        );
        assert_eq!(news["body"]["agent"], "Orchestrator Research Bot 1.0");
        assert_eq!(
            step(&done, "send")["result"]["result"]["body"],
            "application/json|{\"topic\":\"rust\"}"
        );
        assert_eq!(step(&done, "any")["result"]["result"]["body"], "|plain");
        for (params, expected) in [
            (
                format!("{{url: \"{base}/json\", timeout: soon}}"),
                "'timeout'",
            ),
            (
                format!("{{url: \"{base}/json\", params: {{a: 1}}, query: {{b: 2}}}}"),
                "not both",
            ),
            (format!("{{url: \"{base}/status/404\"}}"), "404"),
        ] {
            let yaml = format!(
                "name: bad\nsteps:\n  - id: h\n    tool: http-client\n    action: get\n    max_retries: 1\n    parameters: {params}\n"
            );
            let done = s.run_yaml(&yaml, "").await;
            assert_eq!(done["status"], "failed", "{params}: {done:#}");
            let error = step(&done, "h")["error"].as_str().unwrap_or_default();
            assert!(error.contains(expected), "{params}: {error}");
        }
    }

    async fn private_addresses_stay_out_of_reach(url: String) {
        let web = Service::start(services::web()).await;
        // The server's default policy: public addresses only.
        let s = Server::start_with(url, |settings| {
            settings.http = orchestrator_tools::http::HttpSettings::default();
        })
        .await;
        for (tool, action, target) in [
            ("headless-browser", "scrape", web.url("/article")),
            ("headless-browser", "verify", web.url("/article")),
            (
                "web-scraper",
                "extract_text",
                "http://169.254.169.254/latest/meta-data".to_string(),
            ),
            ("web-scraper", "scrape", "http://localhost:1/".to_string()),
            ("web-scraper", "scrape", "file:///etc/passwd".to_string()),
        ] {
            let yaml = format!(
                "name: private\nsteps:\n  - id: p\n    tool: {tool}\n    action: {action}\n    max_retries: 1\n    parameters: {{url: \"{target}\"}}\n"
            );
            let done = s.run_yaml(&yaml, "").await;
            assert_eq!(done["status"], "failed", "{target}: {done:#}");
            let error = step(&done, "p")["error"].as_str().unwrap_or_default();
            assert!(error.contains("'url'"), "{target}: {error}");
        }
        assert!(
            web.requests().is_empty(),
            "nothing reached the local server"
        );
    }
}

mod mcp {
    use crate::support::*;
    use orchestrator_tools::mcp::ServerSpec;
    use orchestrator_tools::testing::services::{self, MCP_STDIO_SERVER, Service};

    orchestrator_store::for_each_backend!(
        with database;
        mcp_servers_over_stdio_and_http_the_seeds_way,
        mcp_refusals_are_clear_and_nothing_is_reached,
        mcp_urls_in_private_networks_are_refused,
        configured_mcp_servers_offer_their_tools_as_tools,
        connections_left_open_are_closed_when_idle,
        connections_close_when_their_execution_ends,
    );

    async fn database(url: String) -> String {
        url
    }

    /// The stdio test server, written where the test can find it.
    fn stdio_server() -> (TempDir, String) {
        let dir = TempDir::new("orch-mcp-server");
        let path = dir.0.join("server.py");
        std::fs::write(&path, MCP_STDIO_SERVER).expect("write the server");
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    async fn mcp_servers_over_stdio_and_http_the_seeds_way(url: String) {
        let (_dir, script) = stdio_server();
        let http = Service::start(services::mcp()).await;
        let s = Server::start_with(url, |settings| {
            settings.mcp.allow_commands = true;
        })
        .await;
        let endpoint = http.url("/mcp");
        // As the seed's examples write it: `action: execute`, the action
        // among the parameters.
        let yaml = format!(
            r#"name: mcp_simple_test
parameters:
  search_query: {{type: string, default: "Python programming"}}
steps:
  - id: connect
    tool: mcp-server
    action: execute
    parameters:
      action: "connect"
      server_name: "local"
      server_config:
        command: "python3"
        args: ["{script}"]
        env: {{GIVEN: "yes"}}
  - id: list_tools
    tool: mcp-server
    action: execute
    parameters: {{action: list_tools, server_name: local}}
    dependencies: [connect]
  - id: search
    tool: mcp-server
    action: execute
    parameters:
      action: "execute_tool"
      server_name: "local"
      tool_name: "echo"
      tool_params: {{text: "{{{{ parameters.search_query }}}}"}}
    dependencies: [list_tools]
  - id: first
    tool: mcp-server
    action: execute_tool
    parameters: {{server_name: local, tool_name: count}}
    dependencies: [search]
  - id: second
    tool: mcp-server
    action: execute_tool
    parameters: {{server_name: local, tool_name: count}}
    dependencies: [first]
  - id: whoami
    tool: mcp-server
    action: execute_tool
    parameters: {{server_name: local, tool_name: whoami}}
    dependencies: [second]
  - id: resources
    tool: mcp-server
    action: list_resources
    parameters: {{server_name: local}}
    dependencies: [connect]
  - id: greeting
    tool: mcp-server
    action: read_resource
    parameters: {{server_name: local, uri: "mem://greeting"}}
    dependencies: [connect]
  - id: prompts
    tool: mcp-server
    action: list_prompts
    parameters: {{server_name: local}}
    dependencies: [connect]
  - id: prompt
    tool: mcp-server
    action: get_prompt
    parameters: {{server_name: local, prompt_name: greet, prompt_arguments: {{name: Ada}}}}
    dependencies: [connect]
  - id: remote
    tool: mcp-server
    action: connect
    parameters: {{server_name: remote, server_config: {{url: "{endpoint}", headers: {{X-Team: pipelines}}}}}}
  - id: sum
    tool: mcp-server
    action: execute_tool
    parameters: {{server_name: remote, tool_name: add, tool_params: {{a: 2, b: 3.5}}}}
    dependencies: [remote]
  - id: disconnect
    tool: mcp-server
    action: execute
    parameters: {{action: disconnect, server_name: local}}
    dependencies: [whoami, resources, greeting, prompts, prompt]
  - id: after
    tool: mcp-server
    action: execute_tool
    on_error: "expected: the connection is gone"
    max_retries: 1
    parameters: {{server_name: local, tool_name: count}}
    dependencies: [disconnect]
  - id: bye
    tool: mcp-server
    action: disconnect
    parameters: {{server_name: remote}}
    dependencies: [sum]
outputs:
  connected: "{{{{ connect.connected }}}}"
  tools_count: "{{{{ list_tools.tools | length if list_tools.tools else 0 }}}}"
  search_results: "{{{{ search.result }}}}"
"#
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let result = |id: &str| step(&done, id)["result"]["result"].clone();
        assert_eq!(done["outputs"]["connected"], true);
        assert_eq!(done["outputs"]["tools_count"], 5);
        assert_eq!(
            // `search.result` is the step's result (the envelope's), which
            // holds the seed's `result` (the MCP result).
            done["outputs"]["search_results"]["result"]["content"][0]["text"],
            "echo: Python programming",
            "{done:#}"
        );
        let connect = result("connect");
        assert_eq!(connect["server_info"]["name"], "stdio-test-server");
        assert!(connect["capabilities"]["tools"].is_object(), "{connect:#}");
        let tools = result("list_tools");
        assert_eq!(tools["tools"][1]["name"], "add");
        assert_eq!(
            tools["tools"][1]["input_schema"]["required"],
            json!(["a", "b"])
        );
        assert_eq!(result("search")["text"], "echo: Python programming");
        // One connection across steps: the server counts on.
        assert_eq!(result("first")["text"], "1");
        assert_eq!(result("second")["text"], "2");
        let who = &result("whoami")["result"]["structuredContent"];
        assert_eq!(who["given"], "yes");
        assert_eq!(
            who["secret"],
            Value::Null,
            "nothing of the server's environment"
        );
        let pid = who["pid"].as_u64().expect("pid");
        assert!(
            gone(&std::path::PathBuf::from(format!("/proc/{pid}")), 10).await,
            "disconnect stops the server's process"
        );
        assert_eq!(result("resources")["resources"][0]["uri"], "mem://greeting");
        assert_eq!(result("greeting")["text"], "hello");
        assert_eq!(result("prompts")["prompts"][0]["name"], "greet");
        assert_eq!(
            result("prompt")["messages"][0]["content"]["text"],
            "Say hello to Ada"
        );
        let sum = result("sum");
        assert_eq!(sum["result"]["structuredContent"]["sum"], 5.5, "{sum:#}");
        assert_eq!(result("disconnect")["disconnected"], true);
        assert_eq!(result("bye")["disconnected"], true);
        let after = step(&done, "after");
        assert_eq!(after["status"], "failed");
        assert!(
            after["error"]
                .as_str()
                .is_some_and(|e| e.contains("'local' is not connected")),
            "{after:#}"
        );
        // The HTTP server saw the headers the step gave, and a session.
        let calls = http.requests();
        assert!(
            calls
                .iter()
                .all(|r| r.header("x-team") == Some("pipelines"))
        );
        assert!(
            calls
                .iter()
                .any(|r| r.json()["method"] == "tools/call"
                    && r.header("mcp-session-id").is_some()),
            "{:?}",
            calls.iter().map(|r| r.json()).collect::<Vec<_>>()
        );
        // What the stdio server said on stderr is in the log of the step
        // that started it.
        let id = done["id"].as_str().expect("id");
        let (_, log) = s.get(&format!("/executions/{id}/steps/connect/logs")).await;
        assert!(
            log.to_string().contains("stdio test server started"),
            "{log:#}"
        );
    }

    async fn connections_left_open_are_closed_when_idle(url: String) {
        let (_dir, script) = stdio_server();
        let s = Server::start_with(url, |settings| {
            settings.mcp.allow_commands = true;
            settings.mcp.idle_timeout = std::time::Duration::from_millis(300);
        })
        .await;
        let yaml = format!(
            "name: open\nsteps:\n  - id: c\n    tool: mcp-server\n    action: connect\n    parameters: {{server_config: {{command: python3, args: [\"{script}\"]}}}}\n  - id: who\n    tool: mcp-server\n    action: execute_tool\n    parameters: {{tool_name: whoami}}\n    dependencies: [c]\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let who = &step(&done, "who")["result"]["result"]["result"]["structuredContent"];
        assert_eq!(
            who["cwd"].as_str().map(std::path::PathBuf::from),
            Some(std::fs::canonicalize(&s.workspace.0).expect("workspace")),
            "the server runs in the workspace: {who:#}"
        );
        let pid = who["pid"].as_u64().expect("pid");
        assert!(
            gone(&std::path::PathBuf::from(format!("/proc/{pid}")), 10).await,
            "an idle connection's process is stopped"
        );
    }

    async fn connections_close_when_their_execution_ends(url: String) {
        let (_dir, script) = stdio_server();
        // The idle reaper would wait five minutes: the end of the execution
        // closes the connection it left open.
        let s = Server::start_with(url, |settings| {
            settings.mcp.allow_commands = true;
        })
        .await;
        let yaml = format!(
            "name: open\nsteps:\n  - id: c\n    tool: mcp-server\n    action: connect\n    parameters: {{server_config: {{command: python3, args: [\"{script}\"]}}}}\n  - id: who\n    tool: mcp-server\n    action: execute_tool\n    parameters: {{tool_name: whoami}}\n    dependencies: [c]\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let pid = step(&done, "who")["result"]["result"]["result"]["structuredContent"]["pid"]
            .as_u64()
            .expect("pid");
        assert!(
            gone(&std::path::PathBuf::from(format!("/proc/{pid}")), 10).await,
            "the server's process is stopped when the execution ends"
        );
    }

    async fn mcp_refusals_are_clear_and_nothing_is_reached(url: String) {
        let (_dir, script) = stdio_server();
        let http = Service::start(services::mcp()).await;
        // Commands are off by default; the test allows loopback for HTTP.
        let s = Server::start(url).await;
        let cases = [
            (
                format!("action: connect\n    parameters: {{server_name: s, server_config: {{command: python3, args: [\"{script}\"]}}}}"),
                "tools.mcp.allow_commands",
            ),
            (
                "action: connect\n    parameters: {server_name: s, server_config: {url: \"http://169.254.169.254/mcp\"}}".to_string(),
                "'server_config'",
            ),
            (
                "action: connect\n    parameters: {server_name: s, server_config: {url: \"file:///etc/passwd\"}}".to_string(),
                "'server_config'",
            ),
            (
                "action: connect\n    parameters: {server_name: s, server_config: [1]}".to_string(),
                "parameter 'server_config'",
            ),
            (
                "action: connect\n    parameters: {server_name: s, server_config: {command: x, url: \"http://a\"}}".to_string(),
                "not both",
            ),
            (
                "action: connect\n    parameters: {server_name: s}".to_string(),
                "'server_config' is required",
            ),
            (
                "action: execute_tool\n    parameters: {server_name: nowhere, tool_name: echo}".to_string(),
                "'nowhere' is not connected",
            ),
            (
                "action: execute_tool\n    parameters: {server_name: s}".to_string(),
                "\"tool_name\"",
            ),
        ];
        for (step_text, expected) in cases {
            let yaml = format!(
                "name: refused\nsteps:\n  - id: m\n    tool: mcp-server\n    max_retries: 1\n    {step_text}\n"
            );
            let done = s.run_yaml(&yaml, "").await;
            assert_eq!(done["status"], "failed", "{yaml}: {done:#}");
            let error = step(&done, "m")["error"].as_str().unwrap_or_default();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        // A tool's own error fails the step with its message.
        let yaml = format!(
            "name: failing\nsteps:\n  - id: c\n    tool: mcp-server\n    action: connect\n    parameters: {{server_name: h, server_config: {{url: \"{}\"}}}}\n  - id: m\n    tool: mcp-server\n    action: execute_tool\n    max_retries: 1\n    parameters: {{server_name: h, tool_name: fail}}\n    dependencies: [c]\n",
            http.url("/mcp")
        );
        let done = s.run_yaml(&yaml, "").await;
        let error = step(&done, "m")["error"].as_str().unwrap_or_default();
        assert!(error.contains("it broke"), "{done:#}");
    }

    /// With the server's default policy (public addresses only) a step
    /// cannot reach a local MCP server. Its own database: no other server
    /// with a laxer policy may take the step.
    async fn mcp_urls_in_private_networks_are_refused(url: String) {
        let http = Service::start(services::mcp()).await;
        let s = Server::start_with(url, |settings| {
            settings.http = orchestrator_tools::http::HttpSettings::default();
        })
        .await;
        let before = http.requests().len();
        let yaml = format!(
            "name: private\nsteps:\n  - id: m\n    tool: mcp-server\n    action: connect\n    max_retries: 1\n    parameters: {{server_config: {{url: \"{}\"}}}}\n",
            http.url("/mcp")
        );
        let done = s.run_yaml(&yaml, "").await;
        let error = step(&done, "m")["error"].as_str().unwrap_or_default();
        assert!(error.contains("'server_config'"), "{done:#}");
        assert_eq!(
            http.requests().len(),
            before,
            "nothing reached the local server"
        );
    }

    async fn configured_mcp_servers_offer_their_tools_as_tools(url: String) {
        let http = Service::start(services::mcp()).await;
        let endpoint = http.url("/mcp");
        let s = Server::start_with(url, |settings| {
            settings.mcp.servers.insert(
                "calc".into(),
                ServerSpec {
                    command: None,
                    args: vec![],
                    env: Default::default(),
                    url: Some(endpoint),
                    headers: Default::default(),
                },
            );
        })
        .await;
        let (_, tools) = s.get("/tools").await;
        let tool = tools["items"]
            .as_array()
            .and_then(|items| items.iter().find(|t| t["id"] == "mcp:calc:add"))
            .cloned()
            .unwrap_or_else(|| panic!("mcp:calc:add is offered: {tools:#}"));
        assert_eq!(tool["id"], "mcp:calc:add", "{tool:#}");
        assert_eq!(tool["description"], "Add two numbers");
        assert_eq!(
            tool["actions"][0]["parameters"]["required"],
            json!(["a", "b"]),
            "{tool:#}"
        );
        let yaml = "name: configured\nsteps:\n  - id: add\n    tool: mcp:calc:add\n    action: execute\n    parameters: {a: 1, b: 2}\n  - id: count\n    tool: mcp-server\n    action: execute_tool\n    parameters: {server_name: calc, tool_name: count}\n  - id: keep\n    tool: mcp-server\n    action: disconnect\n    parameters: {server_name: calc}\n    dependencies: [count]\n";
        let done = s.run_yaml(yaml, "").await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        let add = &step(&done, "add")["result"]["result"];
        assert_eq!(add["text"], "3");
        assert_eq!(add["structured_content"]["sum"], 3.0);
        assert_eq!(step(&done, "count")["result"]["result"]["text"], "1");
        assert_eq!(
            step(&done, "keep")["result"]["result"]["disconnected"],
            false
        );
        // Parameters are checked against the tool's schema before it runs.
        let done = s
            .run_yaml(
                "name: bad\nsteps:\n  - id: add\n    tool: mcp:calc:add\n    max_retries: 1\n    parameters: {a: 1}\n",
                "",
            )
            .await;
        let error = step(&done, "add")["error"].as_str().unwrap_or_default();
        assert!(error.contains("\"b\""), "{done:#}");
    }
}

async fn markdown_becomes_a_pdf_in_the_workspace(s: Server) {
    // The seed's research_advanced_tools and modular_analysis shapes.
    let yaml = r##"name: research_pdf
inputs:
  topic: {type: string, default: "Solar power"}
  output_path: {type: string, default: out}
  compile_to_pdf: {type: boolean, default: true}
steps:
  - id: save_report
    tool: filesystem
    action: write
    parameters:
      path: "{{ output_path }}/report.md"
      content: |
        # {{ topic }}

        Solar **grew** fast; see [the data](https://example.org/data).

        ## Findings

        1. Cheaper panels
        2. Better storage

        | Year | Share |
        |---|---|
        | 2023 | 5 % |
        | 2024 | 7 % |
  - id: read_report
    tool: filesystem
    action: read
    parameters:
      path: "{{ output_path }}/report.md"
    dependencies: [save_report]
  - id: compile_pdf
    tool: pdf-compiler
    action: compile
    parameters:
      markdown_content: "{{ read_report.result.content }}"
      output_path: "{{ output_path }}/research_{{ topic | slugify }}.pdf"
      title: "Research Report: {{ topic }}"
      author: "AI Research Assistant"
      install_if_missing: true
    dependencies: [read_report]
    condition: "{{ compile_to_pdf }}"
  - id: as_html
    tool: pdf-compiler
    action: compile
    parameters:
      content: "{{ read_report.content }}"
      output_path: "{{ output_path }}/analysis_report.html"
      format: html
      include_toc: true
      include_timestamp: true
    dependencies: [read_report]
outputs:
  pdf_file: "{{ compile_pdf.output_path if compile_pdf.success else 'PDF generation skipped' }}"
"##;
    let done = s.run_yaml(yaml, "").await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["outputs"]["pdf_file"], "out/research_solar-power.pdf");
    let result = &step(&done, "compile_pdf")["result"]["result"];
    assert_eq!(result["pages"], 1, "{result:#}");
    assert_eq!(result["format"], "pdf");
    let pdf = std::fs::read(s.workspace.0.join("out/research_solar-power.pdf")).expect("pdf");
    assert_eq!(result["file_size"], pdf.len());
    assert!(pdf.starts_with(b"%PDF-1."), "a PDF");
    assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
    let text = String::from_utf8_lossy(&pdf);
    for part in [
        "/FontFile2",
        "/ToUnicode",
        "/Title (Research Report: Solar power)",
        "/Author (AI Research Assistant)",
        "/URI (https://example.org/data)",
        "/Outlines",
    ] {
        assert!(text.contains(part), "{part} is in the PDF");
    }
    // Only the glyphs used are embedded: far smaller than the font.
    assert!(pdf.len() < 60_000, "{} bytes", pdf.len());
    let html = s.file("out/analysis_report.html");
    assert!(
        html.contains("<h1 id=\"solar-power\">Solar power</h1>"),
        "{html}"
    );
    assert!(html.contains("<table>"));

    for (params, kind, words) in [
        (
            "{markdown_content: '# x', output_path: ../x.pdf}",
            "PermissionError",
            "leaves the workspace",
        ),
        (
            "{markdown_content: '', output_path: x.pdf}",
            "ValidationError",
            "markdown_content",
        ),
        (
            "{output_path: x.pdf}",
            "ValidationError",
            "markdown_content",
        ),
        (
            "{markdown_content: '# x', format: docx}",
            "ValidationError",
            "format",
        ),
    ] {
        let yaml = format!(
            "name: bad\nsteps:\n  - id: bad\n    tool: pdf-compiler\n    action: compile\n    max_retries: 1\n    parameters: {params}\n"
        );
        let done = s.run_yaml(&yaml, "").await;
        let bad = step(&done, "bad");
        assert_eq!(bad["error_type"], kind, "{params}: {bad:#}");
        let error = bad["error"].as_str().unwrap_or_default();
        assert!(error.contains(words), "{params}: {error}");
    }
}
