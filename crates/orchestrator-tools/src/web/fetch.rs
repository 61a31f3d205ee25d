//! Fetching pages for both tools: through the `http` tool's outbound
//! policy, with its limits, redirects checked hop by hop, bodies read up to
//! a cap (a long page is truncated, as the seed does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::page::{Parts, read_page};
use crate::http::HttpSettings;
use crate::net::{OutboundPolicy, request_error, status_error};
use crate::{ErrorKind, ToolContext, ToolError, optional_bool, required_str};

/// What a page read keeps when the step does not say (the seed's 1 MB).
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Links and images listed when the step does not say.
pub const DEFAULT_MAX_LINKS: usize = 500;
const USER_AGENT: &str = concat!("orchestrator/", env!("CARGO_PKG_VERSION"), " (page reader)");

/// Fetches and reads pages for both tools.
#[derive(Debug, Clone)]
pub struct PageReader {
    settings: HttpSettings,
    policy: Arc<OutboundPolicy>,
    client: reqwest::Client,
}

impl PageReader {
    pub fn new(settings: HttpSettings) -> Self {
        let policy = Arc::new(settings.policy.clone());
        PageReader {
            client: policy.client(settings.max_redirects),
            policy,
            settings,
        }
    }

    fn url(&self, p: &Map<String, Value>) -> Result<reqwest::Url, ToolError> {
        let raw = required_str(p, "url")?.trim();
        if raw.is_empty() {
            return Err(ToolError::invalid("parameter 'url' is empty"));
        }
        let url = reqwest::Url::parse(raw).map_err(|e| {
            ToolError::invalid(format!("parameter 'url': '{raw}' is not a valid URL: {e}"))
        })?;
        self.policy.check_url(&url).map_err(|e| {
            ToolError::new(
                ErrorKind::PermissionError,
                format!("parameter 'url': {url} refused: {e}"),
            )
        })?;
        Ok(url)
    }

    /// Seconds the request may take: `timeout` in seconds (a value over
    /// 1,000 is read as milliseconds, as some seed pipelines write it).
    fn timeout(&self, p: &Map<String, Value>) -> Result<Duration, ToolError> {
        let seconds = match p.get("timeout") {
            None | Some(Value::Null) => self.settings.default_timeout_seconds,
            Some(v) => {
                let t = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|t| *t > 0.0 && t.is_finite())
                    .ok_or_else(|| {
                        ToolError::invalid(
                            "parameter 'timeout' must be a positive number of seconds",
                        )
                    })?;
                if t > 1_000.0 { t / 1_000.0 } else { t }
            }
        };
        Ok(Duration::from_secs_f64(seconds.min(3_600.0)))
    }

    fn limit(
        p: &Map<String, Value>,
        name: &str,
        default: usize,
        max: usize,
    ) -> Result<usize, ToolError> {
        match p.get(name) {
            None | Some(Value::Null) => Ok(default.min(max)),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(|n| n.min(max))
                .ok_or_else(|| {
                    ToolError::invalid(format!(
                        "parameter '{name}' must be a positive whole number"
                    ))
                }),
        }
    }

    /// GETs a page and reads it: `what` chooses the parts of the result.
    pub async fn read(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
        what: Parts,
    ) -> Result<Value, ToolError> {
        let url = self.url(p)?;
        let timeout = self.timeout(p)?;
        let max_bytes = Self::limit(
            p,
            "max_content_length",
            DEFAULT_MAX_BYTES,
            self.settings.max_response_bytes,
        )?;
        let max_links = Self::limit(p, "max_links", DEFAULT_MAX_LINKS, 10_000)?;
        let selector = match p.get("selector") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => {
                scraper::Selector::parse(s).map_err(|e| {
                    ToolError::invalid(format!(
                        "parameter 'selector': '{s}' is not a CSS selector: {e}"
                    ))
                })?;
                Some(s.clone())
            }
            Some(_) => {
                return Err(ToolError::invalid(
                    "parameter 'selector' must be a CSS selector",
                ));
            }
        };
        let fail_on_status = optional_bool(p, "fail_on_status")?.unwrap_or(true);
        let what = Parts {
            links: what.links && optional_bool(p, "extract_links")?.unwrap_or(true),
            images: what.images && optional_bool(p, "extract_images")?.unwrap_or(true),
            text: what.text && optional_bool(p, "extract_text")?.unwrap_or(true),
            metadata: what.metadata
                && optional_bool(p, "extract_metadata")?
                    .or(optional_bool(p, "include_metadata")?)
                    .unwrap_or(true),
        };

        let shown = format!(
            "GET {}",
            url.as_str().split(['?', '#']).next().unwrap_or("")
        );
        let started = Instant::now();
        let request = self
            .client
            .get(url.clone())
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header(
                reqwest::header::ACCEPT,
                "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
            )
            .timeout(timeout);
        let response = tokio::select! {
            r = request.send() => r.map_err(|e| send_error(&e, &url, &shown))?,
            _ = ctx.cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{shown} was cancelled")));
            }
        };
        let status = response.status();
        let final_url = response.url().clone();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/html")
            .to_string();
        let (bytes, truncated) = read_truncated(response, max_bytes, &ctx.cancel, &shown).await?;
        ctx.log(
            crate::log::Stream::Log,
            &format!(
                "{shown}: {status}, {} bytes{} in {} ms",
                bytes.len(),
                if truncated { " (truncated)" } else { "" },
                started.elapsed().as_millis()
            ),
        );
        let html = String::from_utf8_lossy(&bytes).into_owned();
        if fail_on_status && (status.is_client_error() || status.is_server_error()) {
            return Err(status_error(status, &shown, &html));
        }
        let base = final_url.clone();
        let mut page = tokio::task::spawn_blocking(move || {
            read_page(&html, &base, selector.as_deref(), what, max_links)
        })
        .await
        .map_err(|e| {
            ToolError::new(
                ErrorKind::ExecutionError,
                format!("reading the page failed: {e}"),
            )
        })?;
        if let Value::Object(m) = &mut page {
            let mut head = Map::new();
            head.insert("url".into(), json!(url.as_str()));
            head.insert("final_url".into(), json!(final_url.as_str()));
            head.insert("status_code".into(), json!(status.as_u16()));
            head.insert("content_type".into(), json!(content_type));
            head.insert("content_length".into(), json!(bytes.len()));
            head.insert("truncated".into(), json!(truncated));
            head.insert(
                "scrape_time".into(),
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            );
            head.append(m);
            *m = head;
        }
        Ok(page)
    }

    /// Whether a URL answers: a HEAD (or GET where HEAD is refused) that
    /// reports network failures and error statuses as `accessible: false`.
    pub async fn verify(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let url = self.url(p)?;
        let timeout = self.timeout(p)?;
        let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut answer = None;
        for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
            let request = self
                .client
                .request(method.clone(), url.clone())
                .header(reqwest::header::USER_AGENT, USER_AGENT)
                .timeout(timeout);
            let r = tokio::select! {
                r = request.send() => r,
                _ = ctx.cancel.cancelled() => {
                    return Err(ToolError::new(ErrorKind::CancelledError, format!("verifying {url} was cancelled")));
                }
            };
            match r {
                Ok(r)
                    if method == reqwest::Method::HEAD
                        && matches!(r.status().as_u16(), 405 | 501) =>
                {
                    continue;
                }
                Ok(r) => {
                    answer = Some(Ok(r));
                    break;
                }
                Err(e) => {
                    if let Some(refused) = crate::net::refusal(&e) {
                        return Err(ToolError::new(
                            ErrorKind::PermissionError,
                            format!("parameter 'url': {url} refused: {refused}"),
                        ));
                    }
                    answer = Some(Err(e));
                    break;
                }
            }
        }
        Ok(match answer {
            Some(Ok(r)) => {
                let header = |name: reqwest::header::HeaderName| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                json!({
                    "url": url.as_str(),
                    "final_url": r.url().as_str(),
                    "accessible": r.status().is_success(),
                    "status_code": r.status().as_u16(),
                    "content_type": header(reqwest::header::CONTENT_TYPE),
                    "content_length": header(reqwest::header::CONTENT_LENGTH).parse::<u64>().unwrap_or(0),
                    "last_modified": header(reqwest::header::LAST_MODIFIED),
                    "verification_time": now(),
                })
            }
            Some(Err(e)) => json!({
                "url": url.as_str(),
                "accessible": false,
                "error": crate::net::describe(&e),
                "verification_time": now(),
            }),
            None => {
                json!({"url": url.as_str(), "accessible": false, "error": "no answer", "verification_time": now()})
            }
        })
    }
}

/// A failed request; one the outbound policy refused names the parameter.
fn send_error(e: &reqwest::Error, url: &reqwest::Url, what: &str) -> ToolError {
    match crate::net::refusal(e) {
        Some(refused) => ToolError::new(
            ErrorKind::PermissionError,
            format!("parameter 'url': {url} refused: {refused}"),
        ),
        None => request_error(e, what),
    }
}

/// Reads at most `max` bytes of a body; what is beyond is dropped (the
/// seed truncates long pages rather than failing).
async fn read_truncated(
    mut response: reqwest::Response,
    max: usize,
    cancel: &tokio_util::sync::CancellationToken,
    what: &str,
) -> Result<(Vec<u8>, bool), ToolError> {
    let mut body = Vec::new();
    loop {
        let Some(chunk) = crate::net::next_chunk(&mut response, cancel, what).await? else {
            return Ok((body, false));
        };
        let room = max - body.len();
        if chunk.len() >= room
            && (chunk.len() > room || response.content_length().is_some_and(|l| l > max as u64))
        {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
}
