//! The tools that speak HTTP (`http`, `web-search`, tools over HTTP), each
//! against a real local server that answers in the real wire format.

use std::time::{Duration, Instant};

use orchestrator_tools::http::{HttpSettings, HttpTool};
use orchestrator_tools::net::OutboundPolicy;
use orchestrator_tools::remote::RemoteTool;
use orchestrator_tools::search::{SearchBackend, WebSearch};
use orchestrator_tools::testing::services::{self, Service};
use orchestrator_tools::testing::{TestWorkspace, test_workspace};
use orchestrator_tools::{ActionSpec, Tool, ToolContext, ToolError};
use serde_json::{Map, Value, json};

fn ctx() -> (ToolContext, TestWorkspace) {
    let ws = test_workspace();
    (ws.ctx.clone(), ws)
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The `http` tool allowed to reach the loopback test servers.
fn local_http(max_response_bytes: usize) -> HttpTool {
    HttpTool::new(HttpSettings {
        policy: OutboundPolicy::new(&["127.0.0.1".into()], false).expect("policy"),
        max_response_bytes,
        ..HttpSettings::default()
    })
}

async fn request(tool: &HttpTool, ctx: &ToolContext, p: Value) -> Result<Value, ToolError> {
    tool.execute("request", &params(p), ctx).await
}

#[tokio::test]
async fn http_sends_query_headers_and_bodies_and_parses_json() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = local_http(1 << 20);
    let r = request(
        &tool,
        &ctx,
        json!({"url": web.url("/json"), "query": {"q": "a b&c", "n": 3}, "headers": {"X-Agent": "pipeline"}}),
    )
    .await
    .expect("GET");
    assert_eq!(r["status"], 200);
    assert_eq!(r["ok"], true);
    assert_eq!(
        r["body"],
        json!({"query": {"q": "a b&c", "n": "3"}, "agent": "pipeline"})
    );
    assert!(
        r["headers"]["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("application/json"))
    );

    let r = request(
        &tool,
        &ctx,
        json!({"url": web.url("/echo"), "method": "post", "body": {"k": [1, 2]}}),
    )
    .await
    .expect("POST JSON");
    assert_eq!(r["body"], "application/json|{\"k\":[1,2]}");
    let r = request(
        &tool,
        &ctx,
        json!({"url": web.url("/echo"), "method": "POST", "body": "plain words", "headers": {"Content-Type": "text/plain"}}),
    )
    .await
    .expect("POST text");
    assert_eq!(r["body"], "text/plain|plain words");

    let sent = web.requests();
    assert_eq!(sent[0].query.get("q").map(String::as_str), Some("a b&c"));
    assert_eq!(sent[1].method, "POST");
    assert!(
        sent[1]
            .header("user-agent")
            .is_some_and(|a| a.starts_with("orchestrator/"))
    );
}

#[tokio::test]
async fn http_error_statuses_fail_the_step_unless_asked_not_to() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = local_http(1 << 20);
    let e = request(&tool, &ctx, json!({"url": web.url("/status/404")}))
        .await
        .expect_err("404");
    assert_eq!(e.kind, "HttpClientError");
    assert!(e.message.contains("404 Not Found"), "{}", e.message);
    let e = request(&tool, &ctx, json!({"url": web.url("/status/503")}))
        .await
        .expect_err("503");
    assert_eq!(e.kind, "HttpError", "5xx may be retried");
    let e = request(&tool, &ctx, json!({"url": web.url("/status/429")}))
        .await
        .expect_err("429");
    assert_eq!(e.kind, "HttpError", "429 may be retried");
    let r = request(
        &tool,
        &ctx,
        json!({"url": web.url("/status/404"), "fail_on_status": false}),
    )
    .await
    .expect("answer kept");
    assert_eq!(
        (r["status"].clone(), r["ok"].clone()),
        (json!(404), json!(false))
    );
    assert_eq!(r["body"]["status"], 404);
}

#[tokio::test]
async fn http_refuses_private_hosts_by_default() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = HttpTool::default();
    let port = web.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/json"),
        format!("http://localhost:{port}/json"),
        format!("http://[::1]:{port}/json"),
        format!("http://[::ffff:127.0.0.1]:{port}/json"),
        format!("http://2130706433:{port}/json"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
    ] {
        let e = request(&tool, &ctx, json!({"url": url}))
            .await
            .expect_err(&url);
        assert_eq!(e.kind, "PermissionError", "{url}: {e:?}");
    }
    let e = request(&tool, &ctx, json!({"url": "file:///etc/passwd"}))
        .await
        .expect_err("file");
    assert_eq!(e.kind, "PermissionError");
    assert!(web.requests().is_empty(), "nothing reached the server");

    // An allow-list that names other hosts refuses this one too.
    let listed = HttpTool::new(HttpSettings {
        policy: OutboundPolicy::new(&["api.example.com".into()], false).expect("policy"),
        ..HttpSettings::default()
    });
    let e = request(&listed, &ctx, json!({"url": web.url("/json")}))
        .await
        .expect_err("not listed");
    assert!(e.message.contains("not in the allow-list"), "{}", e.message);
}

#[tokio::test]
async fn http_redirects_are_checked_hop_by_hop() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = local_http(1 << 20);
    let r = request(&tool, &ctx, json!({"url": web.url("/redirect?to=/json")}))
        .await
        .expect("followed");
    assert!(r["url"].as_str().is_some_and(|u| u.ends_with("/json")));
    let r = request(
        &tool,
        &ctx,
        json!({"url": web.url("/redirect?to=/json"), "follow_redirects": false}),
    )
    .await
    .expect("not followed");
    assert_eq!(r["status"], 302);
    let e = request(
        &tool,
        &ctx,
        json!({"url": web.url("/redirect?to=http://169.254.169.254/latest/meta-data/")}),
    )
    .await
    .expect_err("redirect to metadata");
    assert_eq!(e.kind, "PermissionError", "{e:?}");
}

#[tokio::test]
async fn http_bodies_over_the_cap_are_refused() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = local_http(64 * 1024);
    let r = request(&tool, &ctx, json!({"url": web.url("/big?bytes=60000")}))
        .await
        .expect("under");
    assert_eq!(r["bytes"], 60000);
    let e = request(&tool, &ctx, json!({"url": web.url("/big?bytes=200000")}))
        .await
        .expect_err("over");
    assert_eq!(e.kind, "ResponseTooLargeError");
    // A step may lower the cap, never raise it.
    let e = request(
        &tool,
        &ctx,
        json!({"url": web.url("/big?bytes=2000"), "max_response_bytes": 1000}),
    )
    .await
    .expect_err("step cap");
    assert_eq!(e.kind, "ResponseTooLargeError");
    let e = request(
        &tool,
        &ctx,
        json!({"url": web.url("/big?bytes=100000"), "max_response_bytes": 10_000_000}),
    )
    .await
    .expect_err("server cap");
    assert_eq!(e.kind, "ResponseTooLargeError");
}

#[tokio::test]
async fn http_timeouts_cancellation_and_dead_hosts_are_step_errors() {
    let web = Service::start(services::web()).await;
    let (ctx, _ws) = ctx();
    let tool = local_http(1 << 20);
    let started = Instant::now();
    let e = request(
        &tool,
        &ctx,
        json!({"url": web.url("/slow?seconds=10"), "timeout": 0.3}),
    )
    .await
    .expect_err("timeout");
    assert_eq!(e.kind, "TimeoutError");
    assert!(started.elapsed() < Duration::from_secs(5));

    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let e = request(&tool, &ctx, json!({"url": web.url("/slow?seconds=10")}))
        .await
        .expect_err("cancel");
    assert_eq!(e.kind, "CancelledError");

    let (ctx, _ws) = self::ctx();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let e = request(
        &tool,
        &ctx,
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .expect_err("closed port");
    assert_eq!(e.kind, "ConnectionError");
    for bad in [
        json!({"url": "not a url"}),
        json!({"url": web.url("/json"), "method": "TRACE"}),
    ] {
        let e = request(&tool, &ctx, bad).await.expect_err("invalid");
        assert_eq!(e.kind, "ValidationError");
    }
}

fn search_tool(backends: Vec<SearchBackend>) -> WebSearch {
    WebSearch::new(backends, Duration::from_secs(5))
}

async fn search(tool: &WebSearch, ctx: &ToolContext, p: Value) -> Result<Value, ToolError> {
    tool.execute("search", &params(p), ctx).await
}

#[tokio::test]
async fn web_search_speaks_searxng_brave_and_tavily() {
    let (ctx, _ws) = ctx();
    let searx = Service::start(services::searxng()).await;
    let tool = search_tool(vec![SearchBackend::Searxng { url: searx.url("") }]);
    let r = search(
        &tool,
        &ctx,
        json!({"query": "rust async", "max_results": 3}),
    )
    .await
    .expect("searxng");
    assert_eq!(r["backend"], "searxng");
    assert_eq!(r["results"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        r["results"][0],
        json!({"title": "Result 1 for rust async", "url": "https://example.org/rust-async/1", "snippet": "About rust async, part 1."})
    );
    let sent = &searx.requests()[0];
    assert_eq!(
        (
            sent.path.as_str(),
            sent.query.get("format").map(String::as_str)
        ),
        ("/search", Some("json"))
    );

    let brave = Service::start(services::brave("brave-key")).await;
    let tool = search_tool(vec![SearchBackend::Brave {
        url: brave.url("/res/v1/web/search"),
        api_key: "brave-key".into(),
    }]);
    let r = search(&tool, &ctx, json!({"query": "tokio", "max_results": 4}))
        .await
        .expect("brave");
    assert_eq!(r["backend"], "brave");
    assert_eq!(r["count"], 4);
    assert_eq!(
        r["results"][1]["snippet"], "About tokio, part 2.",
        "markup removed"
    );
    let sent = &brave.requests()[0];
    assert_eq!(sent.header("x-subscription-token"), Some("brave-key"));
    assert_eq!(sent.query.get("count").map(String::as_str), Some("4"));

    let tavily = Service::start(services::tavily("tvly-key")).await;
    let tool = search_tool(vec![SearchBackend::Tavily {
        url: tavily.url("/search"),
        api_key: "tvly-key".into(),
    }]);
    let r = search(&tool, &ctx, json!({"query": "axum"}))
        .await
        .expect("tavily");
    assert_eq!(r["backend"], "tavily");
    assert_eq!(r["count"], 10, "default max_results");
    let sent = &tavily.requests()[0];
    assert_eq!(sent.header("authorization"), Some("Bearer tvly-key"));
    assert_eq!(sent.json()["query"], "axum");
    assert_eq!(sent.json()["max_results"], 10);
}

#[tokio::test]
async fn web_search_reports_each_backends_errors_and_falls_back() {
    let (ctx, _ws) = ctx();
    let brave = Service::start(services::brave("right")).await;
    let wrong = search_tool(vec![SearchBackend::Brave {
        url: brave.url("/res/v1/web/search"),
        api_key: "wrong".into(),
    }]);
    let e = search(&wrong, &ctx, json!({"query": "x"}))
        .await
        .expect_err("bad key");
    assert_eq!(e.kind, "SearchRejectedError");
    assert!(
        e.message
            .contains("The provided subscription token is invalid."),
        "{}",
        e.message
    );

    let right = search_tool(vec![SearchBackend::Brave {
        url: brave.url("/res/v1/web/search"),
        api_key: "right".into(),
    }]);
    let e = search(&right, &ctx, json!({"query": "rate-limited"}))
        .await
        .expect_err("429");
    assert_eq!(e.kind, "SearchError", "rate limits may be retried");
    assert!(e.message.contains("retry after 1s"), "{}", e.message);

    let tavily = Service::start(services::tavily("k")).await;
    let e = search(
        &search_tool(vec![SearchBackend::Tavily {
            url: tavily.url("/search"),
            api_key: "nope".into(),
        }]),
        &ctx,
        json!({"query": "x"}),
    )
    .await
    .expect_err("401");
    assert!(
        e.message
            .contains("Unauthorized: missing or invalid API key."),
        "{}",
        e.message
    );

    // A SearXNG that does not allow JSON says how to fix it.
    let html_only = Service::start(axum::Router::new().route(
        "/search",
        axum::routing::get(|| async { (axum::http::StatusCode::FORBIDDEN, "Forbidden") }),
    ))
    .await;
    let e = search(
        &search_tool(vec![SearchBackend::Searxng {
            url: html_only.url(""),
        }]),
        &ctx,
        json!({"query": "x"}),
    )
    .await
    .expect_err("403");
    assert!(e.message.contains("search.formats"), "{}", e.message);

    // The first backend fails, the second answers.
    let searx = Service::start(services::searxng()).await;
    let both = search_tool(vec![
        SearchBackend::Brave {
            url: brave.url("/res/v1/web/search"),
            api_key: "wrong".into(),
        },
        SearchBackend::Searxng { url: searx.url("") },
    ]);
    let r = search(&both, &ctx, json!({"query": "fallback", "max_results": 2}))
        .await
        .expect("fallback");
    assert_eq!(r["backend"], "searxng");
    let e = search(&both, &ctx, json!({"query": "  "}))
        .await
        .expect_err("empty query");
    assert_eq!(e.kind, "ValidationError");
}

fn remote(url: String, timeout: Duration) -> RemoteTool {
    RemoteTool {
        id: "shout".into(),
        description: "test".into(),
        url,
        actions: ["upper", "reject", "crash", "nothing", "slow"]
            .iter()
            .map(|n| ActionSpec {
                name: n.to_string(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            })
            .collect(),
        headers: vec![("Authorization".into(), "Bearer tool-token".into())],
        timeout,
        max_response_bytes: 1 << 20,
    }
}

#[tokio::test]
async fn tools_over_http_follow_the_protocol() {
    let svc = Service::start(services::remote_tool()).await;
    let (mut ctx, _ws) = ctx();
    ctx.step_id = "loud".into();
    ctx.attempt = 2;
    let tool = remote(svc.url("/tool"), Duration::from_secs(5));
    let r = tool
        .execute("upper", &params(json!({"text": "hi"})), &ctx)
        .await
        .expect("upper");
    assert_eq!(r, json!({"text": "HI", "step": "loud", "attempt": 2}));
    let sent = &svc.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.header("authorization"), Some("Bearer tool-token"));
    assert_eq!(
        sent.json(),
        json!({"action": "upper", "parameters": {"text": "hi"}, "execution_id": "test-execution", "step_id": "loud", "attempt": 2})
    );

    let e = tool
        .execute("reject", &Map::new(), &ctx)
        .await
        .expect_err("reject");
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("ValidationError", "text must not be empty")
    );
    let e = tool
        .execute("crash", &Map::new(), &ctx)
        .await
        .expect_err("crash");
    assert_eq!(e.kind, "HttpError");
    assert!(e.message.contains("500"), "{}", e.message);
    let e = tool
        .execute("nothing", &Map::new(), &ctx)
        .await
        .expect_err("nothing");
    assert_eq!(e.kind, "ToolProtocolError");

    let quick = remote(svc.url("/tool"), Duration::from_millis(300));
    let e = quick
        .execute("slow", &params(json!({"seconds": 5})), &ctx)
        .await
        .expect_err("slow");
    assert_eq!(e.kind, "TimeoutError");
    let gone = remote("http://127.0.0.1:9/tool".into(), Duration::from_secs(2));
    let e = gone
        .execute("upper", &Map::new(), &ctx)
        .await
        .expect_err("gone");
    assert_eq!(e.kind, "ConnectionError");
}

/// DuckDuckGo needs no key: its HTML page is read for the results, ads
/// left out and redirect links followed to their targets; a challenge page
/// is a search error, not an empty answer.
#[tokio::test]
async fn web_search_reads_duckduckgo_without_a_key() {
    let (ctx, _ws) = ctx();
    let ddg = Service::start(services::duckduckgo()).await;
    let tool = search_tool(vec![SearchBackend::DuckDuckGo {
        url: ddg.url("/html/"),
    }]);
    let r = search(
        &tool,
        &ctx,
        json!({"query": "rust & tokio", "max_results": 2}),
    )
    .await
    .expect("duckduckgo");
    assert_eq!(r["backend"], "duckduckgo");
    assert_eq!(
        r["results"],
        json!([
            {"title": "Result 1 for rust & tokio", "url": "https://example.org/rust-&-tokio/1", "snippet": "About rust & tokio, part 1."},
            {"title": "Result 2 for rust & tokio", "url": "https://example.org/rust-&-tokio/2", "snippet": "About rust & tokio, part 2."}
        ])
    );
    assert_eq!(
        ddg.requests()[0].query.get("q").map(String::as_str),
        Some("rust & tokio")
    );
    let e = search(&tool, &ctx, json!({"query": "challenge"}))
        .await
        .expect_err("challenged");
    assert_eq!(e.kind, "SearchError");
    assert!(e.message.contains("challenge"), "{}", e.message);
}

/// The seed's `backend` parameter puts that configured backend first; one
/// not configured here leaves the configured order.
#[tokio::test]
async fn web_search_tries_the_named_backend_first() {
    let (ctx, _ws) = ctx();
    let searx = Service::start(services::searxng()).await;
    let brave = Service::start(services::brave("brave-key")).await;
    let tool = search_tool(vec![
        SearchBackend::Searxng { url: searx.url("") },
        SearchBackend::Brave {
            url: brave.url("/res/v1/web/search"),
            api_key: "brave-key".into(),
        },
    ]);
    let r = search(&tool, &ctx, json!({"query": "q", "backend": "Brave"}))
        .await
        .expect("brave");
    assert_eq!(r["backend"], "brave");
    assert!(searx.requests().is_empty(), "brave was asked first");
    let r = search(&tool, &ctx, json!({"query": "q", "backend": "duckduckgo"}))
        .await
        .expect("the configured order");
    assert_eq!(r["backend"], "searxng");
    let e = search(&tool, &ctx, json!({"query": "q", "backend": 3}))
        .await
        .expect_err("not text");
    assert!(e.message.contains("'backend'"), "{}", e.message);
}
