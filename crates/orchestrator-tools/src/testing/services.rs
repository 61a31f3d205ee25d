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

/// Which model API a fake provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
}

/// A fake model provider speaking `wire`'s exact JSON, at its real paths
/// (`/v1/chat/completions`, `/v1/messages`,
/// `/v1beta/models/{model}:generateContent`), checking the key the real one
/// checks. What it answers depends on markers in the conversation's first
/// message:
/// `[rate-limit]` gets 429 with `Retry-After: 1` the first time,
/// `[overloaded]` always a 5xx (529 for Anthropic), `[bad]` always a 400,
/// `[json]` a JSON object, `[bad-json-once]` prose first and JSON after,
/// `[answer:TEXT]` exactly TEXT;
/// anything else `Summary: ` and the message's first line. Token counts
/// are word counts.
pub fn provider(wire: Wire, key: Option<&'static str>) -> Router {
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let handler = move |path: axum::extract::Path<BTreeMap<String, String>>,
                        headers: HeaderMap,
                        body: Bytes| {
        let seen = Arc::clone(&seen);
        async move { fake_model(wire, key, &path.0, &headers, &body, &seen) }
    };
    match wire {
        Wire::OpenAi => Router::new().route("/v1/chat/completions", post(handler)),
        Wire::Anthropic => Router::new().route("/v1/messages", post(handler)),
        Wire::Gemini => Router::new().route("/v1beta/models/{call}", post(handler)),
    }
}

fn model_error(wire: Wire, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match wire {
        Wire::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
        }
        Wire::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Wire::Gemini => {
            json!({"error": {"code": status.as_u16(), "message": message, "status": kind}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS
        && let Ok(v) = header::HeaderValue::from_str("1")
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

fn fake_model(
    wire: Wire,
    key: Option<&str>,
    path: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    seen: &Mutex<std::collections::HashSet<String>>,
) -> Response {
    let header_value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let authorized = match (wire, key) {
        (_, None) => true,
        (Wire::OpenAi, Some(k)) => header_value("authorization") == Some(format!("Bearer {k}")),
        (Wire::Anthropic, Some(k)) => header_value("x-api-key").as_deref() == Some(k),
        (Wire::Gemini, Some(k)) => header_value("x-goog-api-key").as_deref() == Some(k),
    };
    if !authorized {
        return match wire {
            Wire::OpenAi => model_error(
                wire,
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Incorrect API key provided.",
            ),
            Wire::Anthropic => model_error(
                wire,
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            ),
            Wire::Gemini => model_error(
                wire,
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            ),
        };
    }
    if wire == Wire::Anthropic && header_value("anthropic-version").is_none() {
        return model_error(
            wire,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let (model, texts): (String, Vec<String>) = match wire {
        Wire::OpenAi | Wire::Anthropic => (
            req["model"].as_str().unwrap_or_default().to_string(),
            req["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter(|m| m["role"] != "system")
                        .filter_map(|m| m["content"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Wire::Gemini => (
            path.get("call")
                .and_then(|c| c.strip_suffix(":generateContent"))
                .unwrap_or_default()
                .to_string(),
            req["contents"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(|c| {
                            c.pointer("/parts/0/text")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
    };
    if model.is_empty() {
        return model_error(
            wire,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: field required",
        );
    }
    let last = texts.last().cloned().unwrap_or_default();
    // Markers are read from the conversation's first message, so a
    // follow-up in the same conversation counts as a second request.
    let opening = texts.first().cloned().unwrap_or_default();
    let first_time = seen
        .lock()
        .map(|mut s| s.insert(opening.clone()))
        .unwrap_or(true);
    if opening.contains("[rate-limit]") && first_time {
        let kind = match wire {
            Wire::OpenAi => "rate_limit_exceeded",
            Wire::Anthropic => "rate_limit_error",
            Wire::Gemini => "RESOURCE_EXHAUSTED",
        };
        return model_error(
            wire,
            StatusCode::TOO_MANY_REQUESTS,
            kind,
            "Rate limit reached; please retry after 1s.",
        );
    }
    if opening.contains("[overloaded]") {
        return match wire {
            Wire::Anthropic => model_error(
                wire,
                StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "overloaded_error",
                "Overloaded",
            ),
            Wire::OpenAi => model_error(
                wire,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request.",
            ),
            Wire::Gemini => model_error(
                wire,
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ),
        };
    }
    if opening.contains("[bad]") {
        let kind = if wire == Wire::Gemini {
            "INVALID_ARGUMENT"
        } else {
            "invalid_request_error"
        };
        return model_error(
            wire,
            StatusCode::BAD_REQUEST,
            kind,
            "Invalid value for 'messages': the prompt is malformed.",
        );
    }
    let answer = opening
        .split("[answer:")
        .nth(1)
        .map(|rest| rest.split(']').next().unwrap_or_default().to_string());
    let reply = if let Some(answer) = answer {
        answer
    } else if opening.contains("[json]") || (opening.contains("[bad-json-once]") && !first_time) {
        json!({"title": "Report", "score": 7}).to_string()
    } else if opening.contains("[bad-json-once]") {
        "Sure! Here is what you asked for.".to_string()
    } else {
        format!(
            "Summary: {}",
            last.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
        )
    };
    let words = |s: &str| s.split_whitespace().count() as u64;
    let input: u64 = texts.iter().map(|t| words(t)).sum::<u64>()
        + req["system"].as_str().map_or(0, words)
        + req["messages"].as_array().map_or(0, |m| {
            m.iter()
                .filter(|m| m["role"] == "system")
                .filter_map(|m| m["content"].as_str())
                .map(words)
                .sum()
        })
        + req
            .pointer("/systemInstruction/parts/0/text")
            .and_then(Value::as_str)
            .map_or(0, words);
    let output = words(&reply);
    let body = match wire {
        Wire::OpenAi => json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
            "system_fingerprint": "fp_test"
        }),
        Wire::Anthropic => json!({
            "id": "msg_test", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": reply}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output}
        }),
        Wire::Gemini => json!({
            "candidates": [{"content": {"parts": [{"text": reply}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": input, "candidatesTokenCount": output, "totalTokenCount": input + output},
            "modelVersion": model
        }),
    };
    axum::Json(body).into_response()
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
