//! Model providers speaking the OpenAI, Anthropic and Ollama wire formats.

use super::*;

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
/// `[answer:TEXT]` exactly TEXT (after `[slow:MS]` milliseconds, when
/// the request says so anywhere);
/// anything else `Summary: ` and the message's first line. Token counts
/// are word counts.
pub fn provider(wire: Wire, key: Option<&'static str>) -> Router {
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let handler = move |path: axum::extract::Path<BTreeMap<String, String>>,
                        headers: HeaderMap,
                        body: Bytes| {
        let seen = Arc::clone(&seen);
        async move {
            if let Some(ms) = slow_ms(&body) {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            fake_model(wire, key, &path.0, &headers, &body, &seen)
        }
    };
    match wire {
        Wire::OpenAi => Router::new()
            .route("/v1/chat/completions", post(handler))
            .merge(images(key)),
        Wire::Anthropic => Router::new().route("/v1/messages", post(handler)),
        Wire::Gemini => Router::new().route("/v1beta/models/{call}", post(handler)),
    }
}

/// The `[slow:MS]` marker of a request body.
fn slow_ms(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = text.split("[slow:").nth(1)?;
    rest.split(']').next()?.parse().ok()
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
    let (model, turns): (String, Vec<Value>) = match wire {
        Wire::OpenAi | Wire::Anthropic => (
            req["model"].as_str().unwrap_or_default().to_string(),
            req["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter(|m| m["role"] != "system")
                        .map(|m| m["content"].clone())
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
                .map(|c| c.iter().map(|c| c["parts"].clone()).collect())
                .unwrap_or_default(),
        ),
    };
    let mut images: Vec<String> = Vec::new();
    let texts: Vec<String> = turns
        .iter()
        .map(|content| {
            let (text, seen) = content_parts(content);
            images.extend(seen);
            text
        })
        .collect();
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
    } else if !images.is_empty() {
        format!("Saw {} image(s): {}", images.len(), images.join("; "))
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

/// The text of one message's content and the images in it, each as
/// `MEDIA_TYPE N bytes`: a string, OpenAI parts (`text`, `image_url` with a
/// data URL), Anthropic blocks (`text`, `image` with a base64 source) or
/// Gemini parts (`text`, `inlineData`).
fn content_parts(content: &Value) -> (String, Vec<String>) {
    use base64::Engine as _;
    let decoded =
        |media: &str, data: &str| match base64::engine::general_purpose::STANDARD.decode(data) {
            Ok(bytes) => format!("{media} {} bytes", bytes.len()),
            Err(_) => format!("{media} (not base64)"),
        };
    let Some(parts) = content.as_array() else {
        return (content.as_str().unwrap_or_default().to_string(), Vec::new());
    };
    let mut text = String::new();
    let mut images = Vec::new();
    for part in parts {
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        } else if let Some(url) = part.pointer("/image_url/url").and_then(Value::as_str) {
            let (head, data) = url.split_once(',').unwrap_or(("", ""));
            let media = head.trim_start_matches("data:").trim_end_matches(";base64");
            images.push(decoded(media, data));
        } else if part["type"] == "image" {
            images.push(decoded(
                part.pointer("/source/media_type")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                part.pointer("/source/data")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ));
        } else if let Some(inline) = part.get("inlineData") {
            images.push(decoded(
                inline["mimeType"].as_str().unwrap_or(""),
                inline["data"].as_str().unwrap_or(""),
            ));
        }
    }
    (text, images)
}

/// A 1×1 PNG, what the fake images endpoint draws.
pub const DRAWN_PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

/// The bytes of [`DRAWN_PNG_BASE64`].
pub fn drawn_png() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(DRAWN_PNG_BASE64)
        .unwrap_or_default()
}

/// An OpenAI-compatible images endpoint (`POST /v1/images/generations`),
/// checking the key as the real one does. Markers in the prompt: `[url]`
/// answers a URL on this server (`GET /v1/images/files/drawn.png`) instead
/// of `b64_json`; `[not-image]` answers bytes that are no image;
/// `[refused]` a 400 content-policy error. Otherwise one 1×1 PNG.
pub fn images(key: Option<&'static str>) -> Router {
    let draw = move |headers: HeaderMap, body: Bytes| async move {
        let authorized = key.is_none_or(|k| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {k}"))
        });
        if !authorized {
            return model_error(
                Wire::OpenAi,
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Incorrect API key provided.",
            );
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let prompt = req["prompt"].as_str().unwrap_or_default();
        if req["model"].as_str().is_none_or(str::is_empty) || prompt.is_empty() {
            return model_error(
                Wire::OpenAi,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model and prompt are required",
            );
        }
        if req.get("response_format").is_some() {
            return model_error(
                Wire::OpenAi,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Unknown parameter: 'response_format'.",
            );
        }
        if prompt.contains("[refused]") {
            return model_error(
                Wire::OpenAi,
                StatusCode::BAD_REQUEST,
                "content_policy_violation",
                "Your request was rejected by the safety system.",
            );
        }
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let item = if prompt.contains("[url]") {
            json!({"url": format!("http://{host}/v1/images/files/drawn.png")})
        } else if prompt.contains("[not-image]") {
            json!({"b64_json": "aGVsbG8gd29ybGQ="})
        } else {
            json!({"b64_json": DRAWN_PNG_BASE64, "revised_prompt": prompt})
        };
        axum::Json(json!({"created": 1_700_000_000, "data": [item]})).into_response()
    };
    let file = || async { ([(header::CONTENT_TYPE, "image/png")], drawn_png()).into_response() };
    Router::new()
        .route("/v1/images/generations", post(draw))
        .route("/v1/images/files/drawn.png", get(file))
}
