//! Tools over HTTP: a tool declared in configuration whose actions run in
//! another service, written in any language.
//!
//! The server sends `POST {url}` with
//! `{"action", "parameters", "execution_id", "step_id", "attempt"}` and
//! expects `{"result": <any JSON>}` (status 2xx) or
//! `{"error": {"type": "...", "message": "..."}}` (any status). Other 4xx
//! answers fail the step for good; 5xx, 408 and 429 answers, timeouts and
//! connection errors fail it with an error the step's retries apply to.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::net::{excerpt, read_capped, request_error, status_error};
use crate::{ActionSpec, Tool, ToolContext, ToolError};

/// A tool over HTTP, as configured.
#[derive(Clone)]
pub struct RemoteTool {
    pub id: String,
    pub description: String,
    pub url: String,
    pub actions: Vec<ActionSpec>,
    /// Extra request headers (for example an authorization token).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

/// Header values may hold credentials: only names are shown.
impl std::fmt::Debug for RemoteTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTool")
            .field("id", &self.id)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Tool for RemoteTool {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn actions(&self) -> Vec<ActionSpec> {
        self.actions.clone()
    }

    async fn execute(
        &self,
        action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let what = format!("tool '{}' at {}", self.id, self.url);
        let mut request = ctx.http.post(&self.url).timeout(self.timeout).json(&json!({
            "action": action,
            "parameters": params,
            "execution_id": ctx.execution_id,
            "step_id": ctx.step_id,
            "attempt": ctx.attempt,
        }));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = tokio::select! {
            r = request.send() => r.map_err(|e| request_error(&e, &what))?,
            _ = ctx.cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        let status = response.status();
        let bytes = read_capped(response, self.max_response_bytes, &ctx.cancel, &what).await?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(Value::Object(mut envelope)) = body {
            if let Some(error) = envelope.remove("error").filter(|e| !e.is_null()) {
                let (kind, message) = match &error {
                    Value::Object(e) => (
                        e.get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("ToolError")
                            .to_string(),
                        e.get("message")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| error.to_string()),
                    ),
                    Value::String(s) => ("ToolError".to_string(), s.clone()),
                    other => ("ToolError".to_string(), other.to_string()),
                };
                return Err(ToolError::new(ErrorKind::parse(&kind), message));
            }
            if status.is_success() {
                return envelope.remove("result").ok_or_else(|| {
                    ToolError::new(
                        ErrorKind::ToolProtocolError,
                        format!("{what} answered {status} without 'result' or 'error'"),
                    )
                });
            }
        } else if status.is_success() {
            return Err(ToolError::new(
                ErrorKind::ToolProtocolError,
                format!(
                    "{what} answered {status} with something that is not a JSON object: {}",
                    excerpt(&String::from_utf8_lossy(&bytes))
                ),
            ));
        }
        Err(status_error(
            status,
            &what,
            &String::from_utf8_lossy(&bytes),
        ))
    }
}
