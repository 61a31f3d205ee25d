//! Health, readiness, the API document, the console, and how connections
//! are held.

use crate::support::*;

#[tokio::test]
async fn health_ready_and_openapi_answer() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    assert_eq!(s.get("/health").await.1["status"], "ok");
    let (status, ready) = s.get("/ready").await;
    assert_eq!((status, ready["database"].as_str()), (200, Some("sqlite")));
    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/executions"]["post"].is_object());
    let r = s
        .client
        .get(s.url("/swagger-ui/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.text().await.unwrap_or_default().contains("swagger"),
        "swagger ui page"
    );
    let r = s.client.get(s.url("/health")).send().await.expect("send");
    let generated = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID request id: {generated:?}");
    let r = s
        .client
        .get(s.url("/nope"))
        .header("x-request-id", "caller-42")
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("caller-42"),
        "kept, on errors too"
    );
    let (_, tools) = s.get("/tools").await;
    let ids: Vec<&str> = tools["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec![
            "approval-gate",
            "data-processing",
            "echo",
            "feedback-collection",
            "filesystem",
            "headless-browser",
            "http",
            "http-client",
            "image-analysis",
            "image-generation",
            "llm-generate",
            "markdown-to-html",
            "mcp-memory",
            "mcp-server",
            "multi-model-routing",
            "pdf-compiler",
            "pipeline-executor",
            "prompt-optimization",
            "recursion-control",
            "report-generator",
            "task-delegation",
            "terminal",
            "user-prompt",
            "validation",
            "visualization",
            "web-scraper"
        ]
    );
}

#[tokio::test]
async fn the_console_is_served_open_with_its_headers() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.auth.enabled = true;
    })
    .await;
    let plain = orchestrator_tools::net::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = plain.get(s.url("/ui")).send().await.expect("send");
    assert!(r.status().is_redirection(), "/ui: {}", r.status());
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/ui/")
    );
    let root = plain.get(s.url("/")).send().await.expect("send");
    assert_eq!(root.status().as_u16(), 200, "the console at /");
    let root = root.text().await.expect("body");
    let r = plain.get(s.url("/ui/")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 200, "open with authentication on");
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let page = r.text().await.expect("body");
    assert!(page.contains("/ui/app.js") && page.contains("/ui/vendor/dagre.min.js"));
    assert_eq!(page, root, "the same page at / and /ui/");

    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("vendor/dagre.min.js", "text/javascript"),
    ] {
        let r = plain
            .get(s.url(&format!("/ui/{file}")))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "{file}");
        assert!(header(&r, "content-type").starts_with(kind), "{file}");
        let etag = header(&r, "etag");
        assert!(etag.starts_with('"'), "{file}: etag {etag:?}");
        let again = plain
            .get(s.url(&format!("/ui/{file}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("send");
        assert_eq!(again.status().as_u16(), 304, "{file} revalidates");
    }
    let r = plain
        .get(s.url("/ui/secrets.txt"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let r = plain.get(s.url("/ui/session")).send().await.expect("send");
    let session: Value = r.json().await.expect("json");
    assert_eq!(session["auth"], true);
    // The data behind the pages still needs a token.
    let r = plain.get(s.url("/executions")).send().await.expect("send");
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_capped() {
    let dir = TempDir::new("orch-http");
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.connections = orchestrator_server::listener::ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            max_connections: 40,
        };
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_string();
    // 30 connections that send part of a request head, then nothing: they
    // stayed open for good.
    let mut slow = Vec::new();
    for _ in 0..30 {
        slow.push(connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await);
    }
    // The server keeps answering others meanwhile.
    let health = s.client.get(s.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    for c in &mut slow {
        assert!(
            closed_within(c, Duration::from_secs(5)).await,
            "a slow request head stayed open"
        );
    }
    // A kept-alive connection that sends nothing more is closed too.
    let mut idle = connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle connection stayed open"
    );
    // At the cap, a new client waits for a slot instead of taking the
    // process's descriptors; the slots come back as slow ones time out.
    let mut full = Vec::new();
    for _ in 0..40 {
        full.push(connection_sending(&addr, b"GET /health HTTP/1.1\r\nHost: x\r\n").await);
    }
    let started = std::time::Instant::now();
    let health = s.client.get(s.url("/health")).send().await.expect("health");
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered past the cap after {:?}",
        started.elapsed()
    );
}
