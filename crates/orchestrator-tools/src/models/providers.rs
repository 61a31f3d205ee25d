//! The providers' wire formats: OpenAI chat completions (and the servers
//! that speak it), Anthropic Messages, Google Gemini `generateContent`.
//!
//! Rate limits (429, and Anthropic's 529) and 5xx answers are retried here,
//! waiting as `Retry-After` says (or a short backoff), up to a few times;
//! other errors become step errors carrying the provider's message. Keys go
//! in headers only and never into an error or a log line.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ModelSpec, Provider};
use crate::ErrorKind;
use crate::ToolError;
use crate::net::{read_capped, request_error};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// Images shown with the text (vision input; `user` messages).
    pub images: Vec<ImageInput>,
}

impl Message {
    /// A text-only message.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        Message {
            role: role.to_string(),
            content: content.into(),
            images: Vec::new(),
        }
    }
}

/// An image sent to a model, inline.
#[derive(Clone, PartialEq)]
pub struct ImageInput {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    /// The file's bytes, base64 (standard alphabet, padded).
    pub base64: String,
}

/// The bytes stay out of debug output.
impl std::fmt::Debug for ImageInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageInput")
            .field("media_type", &self.media_type)
            .field("base64_len", &self.base64.len())
            .finish()
    }
}

impl ImageInput {
    fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.media_type, self.base64)
    }
}

/// What to ask.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    /// Ask for a JSON object as the answer.
    pub json: bool,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub finish_reason: Option<String>,
    /// The model the provider says answered.
    pub model: String,
    /// Attempts made, including rate-limited ones.
    pub attempts: u32,
}

/// How rate limits and server errors are retried inside one step attempt.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub retries: u32,
    /// Waits longer than this are not waited for here: the error goes to
    /// the step, whose own retry and backoff take over.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Anthropic needs `max_tokens`; this is used when neither the step nor the
/// model says.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

fn body_for(spec: &ModelSpec, req: &ChatRequest) -> (String, Value) {
    let base = spec.base_url();
    match spec.provider {
        Provider::Openai => {
            let mut messages = Vec::new();
            if let Some(system) = &req.system {
                messages.push(json!({"role": "system", "content": system}));
            }
            for m in &req.messages {
                let content =
                    if m.images.is_empty() {
                        json!(m.content)
                    } else {
                        let mut parts = vec![json!({"type": "text", "text": m.content})];
                        parts.extend(m.images.iter().map(
                            |i| json!({"type": "image_url", "image_url": {"url": i.data_url()}}),
                        ));
                        Value::Array(parts)
                    };
                messages.push(json!({"role": m.role, "content": content}));
            }
            let mut body = json!({"model": spec.model, "messages": messages});
            if let Some(t) = req.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(n) = req.max_tokens {
                body["max_tokens"] = json!(n);
            }
            if req.json {
                body["response_format"] = json!({"type": "json_object"});
            }
            (format!("{base}/chat/completions"), body)
        }
        Provider::Anthropic => {
            // Images go before the text, as Anthropic advises.
            let messages: Vec<Value> = req
                .messages
                .iter()
                .map(|m| {
                    if m.images.is_empty() {
                        return json!({"role": m.role, "content": m.content});
                    }
                    let mut parts: Vec<Value> = m
                        .images
                        .iter()
                        .map(|i| {
                            json!({"type": "image", "source": {
                                "type": "base64", "media_type": i.media_type, "data": i.base64}})
                        })
                        .collect();
                    parts.push(json!({"type": "text", "text": m.content}));
                    json!({"role": m.role, "content": parts})
                })
                .collect();
            let mut body = json!({
                "model": spec.model,
                "max_tokens": req.max_tokens.or(spec.max_output_tokens).unwrap_or(DEFAULT_MAX_TOKENS),
                "messages": messages,
            });
            if let Some(system) = &req.system {
                body["system"] = json!(system);
            }
            if let Some(t) = req.temperature {
                body["temperature"] = json!(t);
            }
            (format!("{base}/v1/messages"), body)
        }
        Provider::Google => {
            let contents: Vec<Value> = req
                .messages
                .iter()
                .map(|m| {
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        "user"
                    };
                    let mut parts: Vec<Value> = m
                        .images
                        .iter()
                        .map(
                            |i| json!({"inlineData": {"mimeType": i.media_type, "data": i.base64}}),
                        )
                        .collect();
                    parts.push(json!({"text": m.content}));
                    json!({"role": role, "parts": parts})
                })
                .collect();
            let mut config = serde_json::Map::new();
            if let Some(t) = req.temperature {
                config.insert("temperature".into(), json!(t));
            }
            if let Some(n) = req.max_tokens {
                config.insert("maxOutputTokens".into(), json!(n));
            }
            if req.json {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            let mut body = json!({"contents": contents});
            if let Some(system) = &req.system {
                body["systemInstruction"] = json!({"parts": [{"text": system}]});
            }
            if !config.is_empty() {
                body["generationConfig"] = Value::Object(config);
            }
            (
                format!("{base}/v1beta/models/{}:generateContent", spec.model),
                body,
            )
        }
    }
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Reads a successful answer.
fn parse_answer(spec: &ModelSpec, body: &Value) -> Result<ChatResponse, String> {
    match spec.provider {
        Provider::Openai => {
            let choice = body
                .pointer("/choices/0")
                .ok_or("the answer has no choices")?;
            let text = match choice.pointer("/message/content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            Ok(ChatResponse {
                text,
                input_tokens: as_u64(&body["usage"]["prompt_tokens"]),
                output_tokens: as_u64(&body["usage"]["completion_tokens"]),
                finish_reason: choice["finish_reason"].as_str().map(str::to_string),
                model: body["model"].as_str().unwrap_or(&spec.model).to_string(),
                attempts: 1,
            })
        }
        Provider::Anthropic => {
            let blocks = body["content"]
                .as_array()
                .ok_or("the answer has no content")?;
            let text: String = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            Ok(ChatResponse {
                text,
                input_tokens: as_u64(&body["usage"]["input_tokens"]),
                output_tokens: as_u64(&body["usage"]["output_tokens"]),
                finish_reason: body["stop_reason"].as_str().map(str::to_string),
                model: body["model"].as_str().unwrap_or(&spec.model).to_string(),
                attempts: 1,
            })
        }
        Provider::Google => {
            let candidate = body.pointer("/candidates/0").ok_or_else(|| {
                match body
                    .pointer("/promptFeedback/blockReason")
                    .and_then(Value::as_str)
                {
                    Some(reason) => format!("the prompt was blocked ({reason})"),
                    None => "the answer has no candidates".to_string(),
                }
            })?;
            let text: String = candidate
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default();
            Ok(ChatResponse {
                text,
                input_tokens: as_u64(&body["usageMetadata"]["promptTokenCount"]),
                output_tokens: as_u64(&body["usageMetadata"]["candidatesTokenCount"]),
                finish_reason: candidate["finishReason"].as_str().map(str::to_string),
                model: body["modelVersion"]
                    .as_str()
                    .unwrap_or(&spec.model)
                    .to_string(),
                attempts: 1,
            })
        }
    }
}

/// The provider's own words in an error body: OpenAI `{error: {message}}`,
/// Anthropic `{type: "error", error: {type, message}}`, Gemini
/// `{error: {code, message, status}}`.
fn provider_message(body: &Value, raw: &[u8]) -> String {
    if let Some(m) = body.pointer("/error/message").and_then(Value::as_str) {
        let kind = body
            .pointer("/error/type")
            .or_else(|| body.pointer("/error/status"))
            .and_then(Value::as_str);
        return match kind {
            Some(k) => format!("{m} ({k})"),
            None => m.to_string(),
        };
    }
    if let Some(m) = body.get("error").and_then(Value::as_str) {
        return m.to_string();
    }
    let text = String::from_utf8_lossy(raw);
    crate::net::excerpt(&text)
}

/// The wait a 429/5xx answer asks for: `retry-after-ms`, or `Retry-After`
/// in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// Sends `req` to `spec`'s provider.
pub async fn chat(
    client: &reqwest::Client,
    spec: &ModelSpec,
    api_key: Option<&str>,
    req: &ChatRequest,
    cancel: &CancellationToken,
    timeout: Duration,
    policy: RetryPolicy,
) -> Result<ChatResponse, ToolError> {
    let (url, body) = body_for(spec, req);
    let what = format!("{} model '{}'", spec.provider.as_str(), spec.id);
    let started = Instant::now();
    let (parsed, attempts) = send(
        client, spec, api_key, &url, &body, cancel, timeout, policy, &what,
    )
    .await?;
    let mut answer = parse_answer(spec, &parsed)
        .map_err(|e| ToolError::new(ErrorKind::ModelResponseError, format!("{what}: {e}")))?;
    answer.attempts = attempts;
    tracing::debug!(model = %spec.id, latency_ms = started.elapsed().as_millis() as u64, "model answered");
    Ok(answer)
}

/// What to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    /// `WIDTHxHEIGHT`.
    pub size: String,
}

/// One image a model drew: its bytes (base64), or where to fetch them.
#[derive(Debug, Clone, PartialEq)]
pub enum GeneratedImage {
    Base64(String),
    Url(String),
}

/// Asks an OpenAI-compatible images endpoint (`POST {base_url}/images/generations`)
/// for one image. `response_format` is not sent (the newest models refuse
/// it): the answer may hold `b64_json` or `url`, and both are read.
pub async fn generate_image(
    client: &reqwest::Client,
    spec: &ModelSpec,
    api_key: Option<&str>,
    req: &ImageRequest,
    cancel: &CancellationToken,
    timeout: Duration,
    policy: RetryPolicy,
) -> Result<GeneratedImage, ToolError> {
    let what = format!("{} model '{}'", spec.provider.as_str(), spec.id);
    if spec.provider != Provider::Openai {
        return Err(ToolError::new(
            ErrorKind::ModelRequestError,
            format!(
                "{what}: image generation speaks the OpenAI-compatible images API; {} models cannot draw here",
                spec.provider.as_str()
            ),
        ));
    }
    let url = format!("{}/images/generations", spec.base_url());
    let body = json!({"model": spec.model, "prompt": req.prompt, "n": 1, "size": req.size});
    let (parsed, _) = send(
        client, spec, api_key, &url, &body, cancel, timeout, policy, &what,
    )
    .await?;
    let first = parsed.pointer("/data/0").ok_or_else(|| {
        ToolError::new(
            ErrorKind::ModelResponseError,
            format!("{what}: the answer has no image (no data[0])"),
        )
    })?;
    match (first["b64_json"].as_str(), first["url"].as_str()) {
        (Some(b64), _) if !b64.is_empty() => Ok(GeneratedImage::Base64(b64.to_string())),
        (_, Some(url)) if !url.is_empty() => Ok(GeneratedImage::Url(url.to_string())),
        _ => Err(ToolError::new(
            ErrorKind::ModelResponseError,
            format!("{what}: data[0] has neither b64_json nor url"),
        )),
    }
}

/// Posts `body` to `url` with `spec`'s key, retrying rate limits, 5xx
/// answers and refused connections per `policy`; the parsed answer and
/// the attempts it took.
#[allow(clippy::too_many_arguments)]
async fn send(
    client: &reqwest::Client,
    spec: &ModelSpec,
    api_key: Option<&str>,
    url: &str,
    body: &Value,
    cancel: &CancellationToken,
    timeout: Duration,
    policy: RetryPolicy,
    what: &str,
) -> Result<(Value, u32), ToolError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut request = client.post(url).timeout(timeout).json(body);
        request = match (spec.provider, api_key) {
            (Provider::Openai, Some(key)) => request.bearer_auth(key),
            (Provider::Anthropic, key) => {
                let r = request.header("anthropic-version", "2023-06-01");
                match key {
                    Some(k) => r.header("x-api-key", k),
                    None => r,
                }
            }
            (Provider::Google, Some(key)) => request.header("x-goog-api-key", key),
            (_, None) => request,
        };
        let response = tokio::select! {
            r = request.send() => r.map_err(|e| request_error(&e, what)),
            _ = cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        let response = match response {
            Ok(r) => r,
            Err(e) if attempt <= policy.retries && e.kind == ErrorKind::ConnectionError => {
                backoff(attempt, None, policy, cancel).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let raw = read_capped(response, 64 * 1024 * 1024, cancel, what).await?;
        let parsed: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok((parsed, attempt));
        }
        let message = provider_message(&parsed, &raw);
        let code = status.as_u16();
        let transient = code == 429 || code == 529 || status.is_server_error();
        if transient && attempt <= policy.retries {
            if wait.is_some_and(|w| w > policy.max_wait) {
                return Err(ToolError::new(
                    if code == 429 {
                        ErrorKind::ModelRateLimitError
                    } else {
                        ErrorKind::ModelProviderError
                    },
                    format!(
                        "{what} answered {status}: {message} (retry after {}s)",
                        wait.map_or(0, |w| w.as_secs())
                    ),
                ));
            }
            backoff(attempt, wait, policy, cancel).await?;
            continue;
        }
        let kind = match code {
            429 => ErrorKind::ModelRateLimitError,
            401 | 403 => ErrorKind::ModelAuthenticationError,
            _ if transient => ErrorKind::ModelProviderError,
            _ => ErrorKind::ModelRequestError,
        };
        return Err(ToolError::new(
            kind,
            format!("{what} answered {status}: {message}"),
        ));
    }
}

async fn backoff(
    attempt: u32,
    asked: Option<Duration>,
    policy: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<(), ToolError> {
    let wait = asked
        .unwrap_or_else(|| Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6))))
        .min(policy.max_wait);
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = cancel.cancelled() => Err(ToolError::new(ErrorKind::CancelledError, "cancelled while waiting to retry the model")),
    }
}
