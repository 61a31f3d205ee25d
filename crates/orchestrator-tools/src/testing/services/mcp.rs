//! A Model Context Protocol server over streamable HTTP (`POST /mcp`,
//! JSON-RPC 2.0, answered as `application/json`, sessions by the
//! `Mcp-Session-Id` header), and the text of one over stdio in Python.
//!
//! Tools: `echo` (`{text}` → "echo: TEXT"), `add` (`{a, b}` → the sum, as
//! text and `structuredContent.sum`), `count` (calls on this session so
//! far), `fail` (an error result), `big` (`{bytes}` of text). Resource
//! `mem://greeting` ("hello"); prompt `greet` (`{name}`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The stdio server (Python 3, standard library only): run it as
/// `python3 FILE`.
pub const MCP_STDIO_SERVER: &str = include_str!("mcp_server.py");

fn tool_result(text: String, structured: Option<Value>, error: bool) -> Value {
    let mut r = json!({"content": [{"type": "text", "text": text}], "isError": error});
    if let Some(s) = structured {
        r["structuredContent"] = s;
    }
    r
}

fn handle(method: &str, params: &Value, calls: &mut u64) -> Result<Value, (i64, String)> {
    Ok(match method {
        "initialize" => json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "http-test-server", "version": "1.0.0"}
        }),
        "ping" => json!({}),
        "tools/list" => json!({"tools": [
            {"name": "echo", "description": "Echo the text",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            {"name": "add", "description": "Add two numbers",
             "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
            {"name": "count", "description": "Calls on this session so far",
             "inputSchema": {"type": "object", "properties": {}}},
            {"name": "fail", "description": "Always an error",
             "inputSchema": {"type": "object", "properties": {}}},
            {"name": "big", "description": "A long text",
             "inputSchema": {"type": "object", "properties": {"bytes": {"type": "integer"}}}}
        ]}),
        "tools/call" => {
            let args = &params["arguments"];
            match params["name"].as_str().unwrap_or_default() {
                "echo" => tool_result(
                    format!("echo: {}", args["text"].as_str().unwrap_or_default()),
                    None,
                    false,
                ),
                "add" => {
                    let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
                    tool_result(format!("{sum}"), Some(json!({"sum": sum})), false)
                }
                "count" => {
                    *calls += 1;
                    tool_result(calls.to_string(), None, false)
                }
                "fail" => tool_result("it broke".into(), None, true),
                "big" => tool_result(
                    "x".repeat(usize::try_from(args["bytes"].as_u64().unwrap_or(10)).unwrap_or(10)),
                    None,
                    false,
                ),
                other => return Err((-32602, format!("unknown tool {other}"))),
            }
        }
        "resources/list" => json!({"resources": [
            {"uri": "mem://greeting", "name": "greeting", "mimeType": "text/plain"}
        ]}),
        "resources/read" => {
            if params["uri"] != "mem://greeting" {
                return Err((-32002, format!("no resource {}", params["uri"])));
            }
            json!({"contents": [{"uri": "mem://greeting", "mimeType": "text/plain", "text": "hello"}]})
        }
        "prompts/list" => json!({"prompts": [
            {"name": "greet", "description": "Greet someone", "arguments": [{"name": "name", "required": true}]}
        ]}),
        "prompts/get" => json!({
            "description": "Greet someone",
            "messages": [{"role": "user", "content": {"type": "text",
                "text": format!("Say hello to {}", params["arguments"]["name"].as_str().unwrap_or("nobody"))}}]
        }),
        other => return Err((-32601, format!("method not found: {other}"))),
    })
}

/// The streamable HTTP server at `/mcp`.
pub fn mcp() -> Router {
    let sessions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    Router::new().route(
        "/mcp",
        post(move |headers: HeaderMap, body: Bytes| {
            let sessions = Arc::clone(&sessions);
            async move {
                let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
                    return (StatusCode::BAD_REQUEST, "not JSON").into_response();
                };
                let method = msg["method"].as_str().unwrap_or_default().to_string();
                let Some(id) = msg.get("id").cloned() else {
                    // A notification (or a response): accepted, no body.
                    return StatusCode::ACCEPTED.into_response();
                };
                let session = headers
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut sessions = match sessions.lock() {
                    Ok(s) => s,
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                };
                let session = if method == "initialize" {
                    let new = format!("session-{}", sessions.len() + 1);
                    sessions.insert(new.clone(), 0);
                    new
                } else {
                    match session {
                        Some(s) if sessions.contains_key(&s) => s,
                        _ => return (StatusCode::NOT_FOUND, "unknown session").into_response(),
                    }
                };
                let calls = sessions.entry(session.clone()).or_default();
                let reply = match handle(&method, &msg["params"], calls) {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    Err((code, message)) => {
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                    }
                };
                let mut response: Response = axum::Json(reply).into_response();
                if let Ok(v) = session.parse() {
                    response.headers_mut().insert("mcp-session-id", v);
                }
                response
            }
        })
        .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .delete(|| async { StatusCode::OK }),
    )
}
