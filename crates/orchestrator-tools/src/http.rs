//! `http`: one HTTP request to a host the outbound policy allows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::net::{OutboundPolicy, read_capped, request_error, status_error};
use crate::{
    ActionSpec, Tool, ToolContext, ToolError, action, as_text, optional_bool, required_str,
};

/// Limits of the `http` tool.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Which hosts requests may reach.
    pub policy: OutboundPolicy,
    /// The largest response body a step may read, in bytes.
    pub max_response_bytes: usize,
    /// Seconds a request may take when the step does not say.
    pub default_timeout_seconds: f64,
    /// How many redirects are followed.
    pub max_redirects: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            policy: OutboundPolicy::default(),
            max_response_bytes: 10 * 1024 * 1024,
            default_timeout_seconds: 30.0,
            max_redirects: 5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpTool {
    settings: HttpSettings,
    policy: Arc<OutboundPolicy>,
    client: reqwest::Client,
    no_redirects: reqwest::Client,
}

impl HttpTool {
    pub fn new(settings: HttpSettings) -> Self {
        let policy = Arc::new(settings.policy.clone());
        HttpTool {
            client: policy.client(settings.max_redirects),
            no_redirects: policy.client(0),
            policy,
            settings,
        }
    }
}

impl Default for HttpTool {
    fn default() -> Self {
        Self::new(HttpSettings::default())
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The body as text, parsed as JSON when the response says it is JSON.
fn decode_body(bytes: &[u8], content_type: &str) -> Value {
    let text = String::from_utf8_lossy(bytes);
    let is_json = content_type
        .split(';')
        .next()
        .map(str::trim)
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    if is_json && let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    Value::String(text.into_owned())
}

#[async_trait]
impl Tool for HttpTool {
    fn id(&self) -> &str {
        "http"
    }

    fn description(&self) -> &str {
        "Send an HTTP request to an allowed host and return the status, headers and body"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "request",
            "Send one request. JSON bodies (objects, lists) are sent as application/json; \
             JSON responses come back parsed. A 4xx/5xx answer fails the step unless \
             fail_on_status is false.",
            json!({
                "type": "object",
                "required": ["url"],
                "properties": {
                    "url": {"type": "string", "description": "http:// or https:// URL"},
                    "method": {"type": "string", "default": "GET", "description": "GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"},
                    "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                    "query": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                    "body": {"description": "Text sent as it is, or any other JSON value sent as JSON"},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds"},
                    "max_response_bytes": {"type": "integer", "minimum": 1},
                    "follow_redirects": {"type": "boolean", "default": true},
                    "fail_on_status": {"type": "boolean", "default": true}
                },
                "additionalProperties": false
            }),
        )]
    }

    async fn execute(
        &self,
        _action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let raw_url = required_str(params, "url")?;
        let url = reqwest::Url::parse(raw_url)
            .map_err(|e| ToolError::invalid(format!("'{raw_url}' is not a valid URL: {e}")))?;
        self.policy.check_url(&url).map_err(|e| {
            ToolError::new(
                ErrorKind::PermissionError,
                format!("request to {url} refused: {e}"),
            )
        })?;

        let method_name = params
            .get("method")
            .map(as_text)
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        if !METHODS.contains(&method_name.as_str()) {
            return Err(ToolError::invalid(format!(
                "method '{method_name}' is not one of {}",
                METHODS.join(", ")
            )));
        }
        let method = reqwest::Method::from_bytes(method_name.as_bytes())
            .map_err(|_| ToolError::invalid(format!("method '{method_name}' is not valid")))?;
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => self.settings.default_timeout_seconds,
            Some(v) => v
                .as_f64()
                .filter(|t| *t > 0.0 && t.is_finite())
                .ok_or_else(|| {
                    ToolError::invalid("'timeout' must be a positive number of seconds")
                })?,
        };
        let max_bytes = match params.get("max_response_bytes") {
            None | Some(Value::Null) => self.settings.max_response_bytes,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    ToolError::invalid("'max_response_bytes' must be a positive whole number")
                })?
                .min(self.settings.max_response_bytes),
        };
        let follow = optional_bool(params, "follow_redirects")?.unwrap_or(true);
        let fail_on_status = optional_bool(params, "fail_on_status")?.unwrap_or(true);

        let client = if follow {
            &self.client
        } else {
            &self.no_redirects
        };
        let mut request = client
            .request(method.clone(), url.clone())
            .timeout(Duration::from_secs_f64(timeout.min(86_400.0)));
        let mut has_content_type = false;
        if let Some(headers) = params.get("headers").and_then(Value::as_object) {
            for (name, value) in headers {
                has_content_type |= name.eq_ignore_ascii_case("content-type");
                let name =
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        ToolError::invalid(format!("'{name}' is not a valid header name"))
                    })?;
                let value =
                    reqwest::header::HeaderValue::from_str(&as_text(value)).map_err(|_| {
                        ToolError::invalid(format!("the value of header '{name}' is not valid"))
                    })?;
                request = request.header(name, value);
            }
        }
        if let Some(query) = params.get("query").and_then(Value::as_object) {
            let pairs: Vec<(String, String)> =
                query.iter().map(|(k, v)| (k.clone(), as_text(v))).collect();
            request = request.query(&pairs);
        }
        match params.get("body") {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => request = request.body(text.clone()),
            Some(other) => {
                let bytes = serde_json::to_vec(other).map_err(|e| {
                    ToolError::invalid(format!("'body' cannot be sent as JSON: {e}"))
                })?;
                if !has_content_type {
                    request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
                }
                request = request.body(bytes);
            }
        }

        let what = format!("{method_name} {url}");
        let started = Instant::now();
        let response = tokio::select! {
            r = request.send() => r.map_err(|e| request_error(&e, &what))?,
            _ = ctx.cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        let status = response.status();
        let final_url = response.url().to_string();
        // Without the query, where keys are often passed.
        let shown = what.split(['?', '#']).next().unwrap_or(&what);
        ctx.log(
            crate::log::Stream::Log,
            &format!(
                "{shown}: {} in {} ms",
                status,
                started.elapsed().as_millis()
            ),
        );
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_string(), Value::String(value));
                }
            }
        }
        let content_type = headers.get("content-type").map(as_text).unwrap_or_default();
        let bytes = read_capped(response, max_bytes, &ctx.cancel, &what).await?;
        let body = decode_body(&bytes, &content_type);
        if fail_on_status && (status.is_client_error() || status.is_server_error()) {
            return Err(status_error(status, &what, &as_text(&body)));
        }
        Ok(json!({
            "status": status.as_u16(),
            "ok": status.is_success(),
            "url": final_url,
            "headers": headers,
            "content_type": content_type,
            "body": body,
            "bytes": bytes.len(),
            "elapsed_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }))
    }
}

/// `http-client`: the seed examples' name for HTTP requests, one action per
/// method (`get`, `post`, `put`, `patch`, `delete`, `head`, and `request`
/// with a `method`), with their parameter names: `params` for the query,
/// `data` or `json` for the body. It is the `http` tool underneath, with its
/// outbound policy, limits and result.
#[derive(Debug, Clone, Default)]
pub struct HttpClient {
    inner: HttpTool,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Self {
        HttpClient {
            inner: HttpTool::new(settings),
        }
    }
}

const CLIENT_ACTIONS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "request"];

#[async_trait]
impl Tool for HttpClient {
    fn id(&self) -> &str {
        "http-client"
    }

    fn description(&self) -> &str {
        "HTTP requests by method (the http tool under the seed examples' names)"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let scalars = json!({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}});
        CLIENT_ACTIONS
            .iter()
            .map(|a| {
                let mut properties = json!({
                    "url": {"type": "string", "description": "http:// or https:// URL; the http tool's outbound policy applies"},
                    "headers": scalars,
                    "params": scalars,
                    "query": scalars,
                    "data": {"description": "the body: text as it is, other values as JSON"},
                    "json": {"description": "the body, sent as JSON"},
                    "body": {"description": "the body: text as it is, other values as JSON"},
                    "timeout": {"type": ["number", "string"], "description": "seconds"},
                    "max_response_bytes": {"type": "integer", "minimum": 1},
                    "follow_redirects": {"type": "boolean"},
                    "fail_on_status": {"type": "boolean"}
                });
                if *a == "request" {
                    properties["method"] = json!({"type": "string", "description": "GET (default), POST, PUT, PATCH, DELETE, HEAD or OPTIONS"});
                }
                action(
                    a,
                    &if *a == "request" {
                        "Send a request with the given method → {status, ok, headers, body, …} (as the http tool)".to_string()
                    } else {
                        format!("Send a {} request → {{status, ok, headers, body, …}} (as the http tool)", a.to_uppercase())
                    },
                    json!({"type": "object", "required": ["url"], "properties": properties}),
                )
            })
            .collect()
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let mut request = Map::new();
        for (k, v) in p {
            match k.as_str() {
                // The seed's parameter names, and its `action` among them.
                "params" | "query" => {
                    if request.contains_key("query") {
                        return Err(ToolError::invalid("give 'params' or 'query', not both"));
                    }
                    request.insert("query".into(), v.clone());
                }
                "data" | "json" | "body" => {
                    if request.contains_key("body") {
                        return Err(ToolError::invalid(
                            "give one of 'data', 'json' and 'body' for the body",
                        ));
                    }
                    request.insert("body".into(), v.clone());
                }
                "timeout" => {
                    let seconds = match v {
                        Value::String(s) => {
                            s.trim().parse::<f64>().map(Value::from).map_err(|_| {
                                ToolError::invalid(format!(
                                    "parameter 'timeout' must be a number of seconds, not '{s}'"
                                ))
                            })?
                        }
                        other => other.clone(),
                    };
                    request.insert("timeout".into(), seconds);
                }
                "action" => {}
                "method" if action != "request" => {}
                _ => {
                    request.insert(k.clone(), v.clone());
                }
            }
        }
        if action != "request" {
            request.insert("method".into(), Value::String(action.to_ascii_uppercase()));
        }
        self.inner.execute("request", &request, ctx).await
    }
}
