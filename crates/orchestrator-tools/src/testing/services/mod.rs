//! Real HTTP servers on 127.0.0.1 that answer like the services the tools
//! talk to (SearXNG, Brave Search, Tavily, a tool over HTTP), and record
//! every request they receive so tests can check what was sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

mod mcp;
mod models;

pub use mcp::{MCP_STDIO_SERVER, mcp};
pub use models::{DRAWN_PNG_BASE64, Wire, drawn_png, images, provider};

/// One request a service received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A running service; stops when dropped.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    /// Serves `router` on a free port of 127.0.0.1.
    pub async fn start(router: Router) -> Service {
        Self::start_on("127.0.0.1:0", router).await
    }

    /// Serves `router` on `addr` (a port chosen earlier, for example).
    pub async fn start_on(addr: &str, router: Router) -> Service {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = Arc::clone(&requests);
        let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let log = Arc::clone(&log);
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let query = parts
                    .uri
                    .query()
                    .map(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .map(|(k, v)| (k.into_owned(), v.into_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let headers = parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                if let Ok(mut log) = log.lock() {
                    log.push(Recorded {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_string(),
                        query,
                        headers,
                        body: bytes.to_vec(),
                    });
                }
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
        }));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot bind a test service: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Service {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn hits(query: &str, n: usize) -> Vec<(String, String, String)> {
    (1..=n)
        .map(|i| {
            (
                format!("Result {i} for {query}"),
                format!("https://example.org/{}/{i}", query.replace(' ', "-")),
                format!("About {query}, part {i}."),
            )
        })
        .collect()
}

/// SearXNG: `GET /search?q=…&format=json` answers its JSON document with 12
/// results; without `format=json` it answers 403, as an instance whose
/// settings do not allow the format does.
pub fn searxng() -> Router {
    Router::new().route(
        "/search",
        get(|Query(q): Query<BTreeMap<String, String>>| async move {
            if q.get("format").map(String::as_str) != Some("json") {
                return (StatusCode::FORBIDDEN, "403 Forbidden").into_response();
            }
            let query = q.get("q").cloned().unwrap_or_default();
            let results: Vec<Value> = hits(&query, 12)
                .into_iter()
                .map(|(title, url, content)| {
                    json!({"url": url, "title": title, "content": content, "engine": "duckduckgo",
                           "parsed_url": ["https", "example.org", "/", "", "", ""], "template": "default.html",
                           "engines": ["duckduckgo"], "positions": [1], "score": 1.0, "category": "general"})
                })
                .collect();
            axum::Json(json!({
                "query": query, "number_of_results": 0, "results": results,
                "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []
            }))
            .into_response()
        }),
    )
}

/// DuckDuckGo's HTML page: `GET /html/?q=…` answers the results page's
/// markup (an ad first, then 12 results behind its redirect links, titles
/// and snippets with `<b>` markup); the query `challenge` gets the page it
/// shows to clients that search too often.
pub fn duckduckgo() -> Router {
    Router::new().route(
        "/html/",
        get(|Query(q): Query<BTreeMap<String, String>>| async move {
            let query = q.get("q").cloned().unwrap_or_default();
            if query == "challenge" {
                return axum::response::Html(
                    "<html><body><div class=\"anomaly-modal\">Unfortunately, bots use DuckDuckGo too.</div></body></html>".to_string(),
                );
            }
            let mut page = String::from(
                "<html><body><div class=\"result results_links result--ad\"><h2 class=\"result__title\">\
                 <a rel=\"nofollow\" class=\"result__a\" href=\"https://duckduckgo.com/y.js?ad_domain=shop.example\">Buy now</a></h2>\
                 <a class=\"result__snippet\" href=\"https://duckduckgo.com/y.js?ad\">An ad</a></div>\n",
            );
            for (title, url, snippet) in hits(&query, 12) {
                let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
                page.push_str(&format!(
                    "<div class=\"result results_links results_links_deep web-result \"><div class=\"links_main links_deep result__body\">\
                     <h2 class=\"result__title\"><a rel=\"nofollow\" class=\"result__a\" href=\"//duckduckgo.com/l/?uddg={encoded}&amp;rut=abc\">{}</a></h2>\
                     <a class=\"result__snippet\" href=\"//duckduckgo.com/l/?uddg={encoded}\">{}</a></div></div>\n",
                    title.replacen("Result", "<b>Result</b>", 1),
                    snippet.replace('&', "&amp;"),
                ));
            }
            page.push_str("</body></html>");
            axum::response::Html(page)
        }),
    )
}

/// Brave Search: `GET /res/v1/web/search?q=…&count=…` with
/// `X-Subscription-Token: {key}`; descriptions carry `<strong>` markup.
/// A wrong token gets Brave's 422 error document; the query `rate-limited`
/// gets 429 with `Retry-After`.
pub fn brave(key: &'static str) -> Router {
    Router::new().route(
        "/res/v1/web/search",
        get(
            move |headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| async move {
                if headers.get("x-subscription-token").and_then(|v| v.to_str().ok()) != Some(key) {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        axum::Json(json!({"type": "ErrorResponse", "error": {
                            "id": "c1d5e3f0-0000-4000-8000-000000000000", "status": 422,
                            "code": "SUBSCRIPTION_TOKEN_INVALID",
                            "detail": "The provided subscription token is invalid.",
                            "meta": {"component": "authentication"}}, "time": 1_700_000_000})),
                    )
                        .into_response();
                }
                let query = q.get("q").cloned().unwrap_or_default();
                if query == "rate-limited" {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "1")],
                        axum::Json(json!({"type": "ErrorResponse", "error": {"status": 429,
                            "code": "RATE_LIMITED", "detail": "Request rate limit exceeded for plan."}})),
                    )
                        .into_response();
                }
                let count = q.get("count").and_then(|c| c.parse().ok()).unwrap_or(20);
                let results: Vec<Value> = hits(&query, count)
                    .into_iter()
                    .map(|(title, url, content)| {
                        json!({"type": "search_result", "title": title, "url": url,
                               "description": content.replacen(&query, &format!("<strong>{query}</strong>"), 1),
                               "is_source_local": false, "language": "en", "family_friendly": true})
                    })
                    .collect();
                axum::Json(json!({
                    "type": "search",
                    "query": {"original": query, "more_results_available": true},
                    "web": {"type": "search", "results": results, "family_friendly": true}
                }))
                .into_response()
            },
        ),
    )
}

/// Tavily: `POST /search` with `Authorization: Bearer {key}` and
/// `{query, max_results}`; a wrong key gets Tavily's 401 document.
pub fn tavily(key: &'static str) -> Router {
    Router::new().route(
        "/search",
        post(move |headers: HeaderMap, body: Bytes| async move {
            let expected = format!("Bearer {key}");
            if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"detail": {"error": "Unauthorized: missing or invalid API key."}})),
                )
                    .into_response();
            }
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let query = req["query"].as_str().unwrap_or_default().to_string();
            let n = req["max_results"].as_u64().unwrap_or(5) as usize;
            let results: Vec<Value> = hits(&query, n)
                .into_iter()
                .map(|(title, url, content)| {
                    json!({"title": title, "url": url, "content": content, "score": 0.9, "raw_content": null})
                })
                .collect();
            axum::Json(json!({"query": query, "follow_up_questions": null, "answer": null,
                              "images": [], "results": results, "response_time": 0.42}))
            .into_response()
        }),
    )
}

/// A tool over HTTP at `POST /tool`, with actions:
/// `upper` (`{text}` → `{"result": {"text": TEXT, "step": step_id}}`),
/// `reject` (422 with an error envelope of type `ValidationError`),
/// `crash` (500, plain text), `nothing` (200 without `result`),
/// `slow` (answers after `seconds`).
pub fn remote_tool() -> Router {
    Router::new().route(
        "/tool",
        post(|body: Bytes| async move {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let params = &req["parameters"];
            match req["action"].as_str().unwrap_or_default() {
                "upper" => axum::Json(json!({"result": {
                    "text": params["text"].as_str().unwrap_or_default().to_uppercase(),
                    "step": req["step_id"], "attempt": req["attempt"]}}))
                .into_response(),
                "reject" => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({"error": {"type": "ValidationError", "message": "text must not be empty"}})),
                )
                    .into_response(),
                "crash" => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
                "nothing" => axum::Json(json!({"ok": true})).into_response(),
                "slow" => {
                    let secs = params["seconds"].as_f64().unwrap_or(5.0);
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    axum::Json(json!({"result": "late"})).into_response()
                }
                other => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"type": "ValidationError", "message": format!("unknown action {other}")}})),
                )
                    .into_response(),
            }
        }),
    )
}

/// A small web server for the `http` tool: `/json` (a JSON document,
/// echoing query and headers), `/echo` (answers with the request body and
/// its content type), `/status/{code}`, `/redirect?to=…`, `/big?bytes=…`
/// (chunked, no length), `/slow?seconds=…`.
pub fn web() -> Router {
    Router::new()
        .route(
            "/article",
            get(|| async {
                axum::response::Html(
                    r#"<!doctype html><html lang="en"><head><title>Pipelines in practice</title>
<meta name="description" content="How pipelines run">
<script>window.tracking = "not text";</script></head>
<body><nav><a href="/">Home</a></nav>
<article><h1>Pipelines</h1><p>Steps run in <em>parallel</em> where they can.</p>
<img src="/img/dag.png" alt="A DAG"></article>
<a href="https://example.org/more" title="More">Read more</a></body></html>"#,
                )
            }),
        )
        .route(
            "/json",
            get(
                |headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| async move {
                    let agent = headers
                        .get("x-agent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    axum::Json(json!({"query": q, "agent": agent}))
                },
            ),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (
                    [(header::CONTENT_TYPE, "text/plain")],
                    format!("{ct}|{}", String::from_utf8_lossy(&body)),
                )
            }),
        )
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                    (status, axum::Json(json!({"status": code})))
                },
            ),
        )
        .route(
            "/redirect",
            get(|Query(q): Query<BTreeMap<String, String>>| async move {
                let to = q.get("to").cloned().unwrap_or_else(|| "/json".into());
                (StatusCode::FOUND, [(header::LOCATION, to)], "")
            }),
        )
        .route(
            "/big",
            get(|Query(q): Query<BTreeMap<String, String>>| async move {
                let n: usize = q.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(1024);
                let chunks = (0..n.div_ceil(1024)).map(move |i| {
                    let len = 1024.min(n - i * 1024);
                    Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; len]))
                });
                Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
            }),
        )
        .route(
            "/slow",
            get(|Query(q): Query<BTreeMap<String, String>>| async move {
                let secs: f64 = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                "late"
            }),
        )
}

/// A webhook receiver at `POST /hook` that answers 500 to its first
/// `failures` requests and 204 after that.
pub fn webhook_receiver(failures: usize) -> Router {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Router::new().route(
        "/hook",
        post(move || {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n < failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    )
}
