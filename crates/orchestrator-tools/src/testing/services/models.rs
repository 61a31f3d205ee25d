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
        Wire::OpenAi => Router::new().route("/v1/chat/completions", post(handler)),
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
