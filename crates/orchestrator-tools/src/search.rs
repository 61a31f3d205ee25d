//! `web-search`: `search` through the configured backends, tried in order:
//! a SearXNG instance (its JSON API), the Brave Search API, Tavily, and
//! DuckDuckGo's HTML page (no key: the default when nothing is configured).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::net::{read_capped, request_error};
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, required_str};

/// Where searches go.
#[derive(Clone, PartialEq)]
pub enum SearchBackend {
    /// `GET {url}/search?q=…&format=json` (the instance must allow the json format).
    Searxng { url: String },
    /// `GET {url}?q=…&count=…` with `X-Subscription-Token`.
    Brave { url: String, api_key: String },
    /// `POST {url}` with a bearer token and `{query, max_results}`.
    Tavily { url: String, api_key: String },
    /// `GET {url}?q=…`: DuckDuckGo's HTML results page, read from its markup
    /// (no key, no account).
    DuckDuckGo { url: String },
}

/// Keys stay out of logs and debug output.
impl std::fmt::Debug for SearchBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name(), self.url())
    }
}

pub const BRAVE_URL: &str = "https://api.search.brave.com/res/v1/web/search";
pub const TAVILY_URL: &str = "https://api.tavily.com/search";
pub const DUCKDUCKGO_URL: &str = "https://html.duckduckgo.com/html/";

impl SearchBackend {
    pub fn name(&self) -> &'static str {
        match self {
            SearchBackend::Searxng { .. } => "searxng",
            SearchBackend::Brave { .. } => "brave",
            SearchBackend::Tavily { .. } => "tavily",
            SearchBackend::DuckDuckGo { .. } => "duckduckgo",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            SearchBackend::Searxng { url }
            | SearchBackend::DuckDuckGo { url }
            | SearchBackend::Brave { url, .. }
            | SearchBackend::Tavily { url, .. } => url,
        }
    }

    async fn search(
        &self,
        client: &reqwest::Client,
        query: &str,
        max_results: usize,
        ctx: &ToolContext,
        timeout: Duration,
    ) -> Result<Vec<Value>, ToolError> {
        let what = format!("{} search", self.name());
        let request = match self {
            SearchBackend::Searxng { url } => client
                .get(format!("{}/search", url.trim_end_matches('/')))
                .query(&[("q", query), ("format", "json")]),
            SearchBackend::Brave { url, api_key } => client
                .get(url)
                .header("Accept", "application/json")
                .header("X-Subscription-Token", api_key)
                .query(&[("q", query), ("count", &max_results.min(20).to_string())]),
            SearchBackend::Tavily { url, api_key } => client
                .post(url)
                .bearer_auth(api_key)
                .json(&json!({"query": query, "max_results": max_results.min(20), "search_depth": "basic"})),
            SearchBackend::DuckDuckGo { url } => client
                .get(url)
                .header("Accept", "text/html")
                .query(&[("q", query)]),
        };
        let response = tokio::select! {
            r = request.timeout(timeout).send() => r.map_err(|e| request_error(&e, &what))?,
            _ = ctx.cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_capped(response, 5 * 1024 * 1024, &ctx.cancel, &what).await?;
        if matches!(self, SearchBackend::DuckDuckGo { .. }) && status.is_success() {
            let page = String::from_utf8_lossy(&bytes);
            let results = duckduckgo_results(&page, max_results);
            // A challenge page instead of results: asked too often.
            if results.is_empty() && page.contains("anomaly") {
                return Err(ToolError::new(
                    ErrorKind::SearchError,
                    format!(
                        "{what} asked for a challenge instead of answering (too many searches)"
                    ),
                ));
            }
            return Ok(results);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = error_detail(&body)
                .unwrap_or_else(|| crate::net::excerpt(&String::from_utf8_lossy(&bytes)));
            let mut message = format!("{what} answered {status}: {detail}");
            if let Some(after) = retry_after {
                message.push_str(&format!(" (retry after {after}s)"));
            }
            if matches!(self, SearchBackend::Searxng { .. }) && status == 403 {
                message.push_str(
                    " — allow the json format in the instance's settings.yml (search.formats)",
                );
            }
            let kind = if status.is_server_error() || status == 429 {
                ErrorKind::SearchError
            } else {
                ErrorKind::SearchRejectedError
            };
            return Err(ToolError::new(kind, message));
        }
        if body.is_null() {
            return Err(ToolError::new(
                ErrorKind::SearchError,
                format!("{what} answered with something that is not JSON"),
            ));
        }
        let items = match self {
            SearchBackend::Brave { .. } => body.pointer("/web/results"),
            _ => body.get("results"),
        };
        let items = match items {
            Some(Value::Array(items)) => items.as_slice(),
            // Brave leaves `web` out when nothing was found.
            None if matches!(self, SearchBackend::Brave { .. }) => &[],
            _ => {
                return Err(ToolError::new(
                    ErrorKind::SearchError,
                    format!("{what} answered without a list of results"),
                ));
            }
        };
        let snippet_key = match self {
            SearchBackend::Brave { .. } => "description",
            _ => "content",
        };
        Ok(items
            .iter()
            .filter_map(|r| {
                let url = r.get("url")?.as_str()?;
                let text = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_str)
                        .map(plain_text)
                        .unwrap_or_default()
                };
                Some(json!({"title": text("title"), "url": url, "snippet": text(snippet_key)}))
            })
            .take(max_results)
            .collect())
    }
}

/// Results read from DuckDuckGo's HTML page: each `result__a` link (its
/// target behind DuckDuckGo's redirect) with the `result__snippet` after it;
/// ads (links back into duckduckgo.com) left out.
pub fn duckduckgo_results(page: &str, max_results: usize) -> Vec<Value> {
    use std::sync::OnceLock;
    static ANCHOR: OnceLock<regex::Regex> = OnceLock::new();
    static HREF: OnceLock<regex::Regex> = OnceLock::new();
    let anchor = ANCHOR.get_or_init(|| {
        regex::Regex::new(r#"(?s)<a\s([^>]*)>(.*?)</a>"#).unwrap_or_else(|e| unreachable!("{e}"))
    });
    let href = HREF.get_or_init(|| {
        regex::Regex::new(r#"href="([^"]*)""#).unwrap_or_else(|e| unreachable!("{e}"))
    });
    let mut results: Vec<Value> = Vec::new();
    let mut pending: Option<(String, String)> = None;
    let flush = |pending: &mut Option<(String, String)>, snippet: String, out: &mut Vec<Value>| {
        if let Some((title, url)) = pending.take() {
            out.push(json!({"title": title, "url": url, "snippet": snippet}));
        }
    };
    for cap in anchor.captures_iter(page) {
        let attrs = &cap[1];
        let class_of = |name: &str| {
            attrs.contains(&format!("class=\"{name}\""))
                || attrs.contains(&format!("class=\"{name} "))
        };
        if class_of("result__a") {
            flush(&mut pending, String::new(), &mut results);
            let Some(link) = href.captures(attrs).map(|h| plain_text(&h[1])) else {
                continue;
            };
            let Some(target) = duckduckgo_target(&link) else {
                continue;
            };
            pending = Some((plain_text(&cap[2]).trim().to_string(), target));
        } else if class_of("result__snippet") {
            flush(
                &mut pending,
                plain_text(&cap[2]).trim().to_string(),
                &mut results,
            );
        }
        if results.len() >= max_results {
            break;
        }
    }
    flush(&mut pending, String::new(), &mut results);
    results.truncate(max_results);
    results
}

/// Where a result link leads: the `uddg` target of DuckDuckGo's redirect, or
/// the link itself; `None` for links into DuckDuckGo (ads).
fn duckduckgo_target(link: &str) -> Option<String> {
    let absolute = if link.starts_with("//") {
        format!("https:{link}")
    } else {
        link.to_string()
    };
    let parsed = url::Url::parse(&absolute).ok()?;
    if let Some((_, target)) = parsed.query_pairs().find(|(k, _)| k == "uddg") {
        return Some(target.into_owned());
    }
    let host = parsed.host_str().unwrap_or_default();
    (host != "duckduckgo.com" && !host.ends_with(".duckduckgo.com")).then_some(absolute)
}

/// The message in a backend's error body: Brave `{error: {detail}}`,
/// Tavily `{detail: {error}}`, or a plain `{error}` / `{message}`.
fn error_detail(body: &Value) -> Option<String> {
    [
        "/error/detail",
        "/detail/error",
        "/detail",
        "/error/message",
        "/error",
        "/message",
    ]
    .iter()
    .find_map(|p| body.pointer(p).and_then(Value::as_str).map(str::to_string))
}

/// Snippets come with markup (`<strong>` around matches): keep the text.
fn plain_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
}

#[derive(Debug, Clone)]
pub struct WebSearch {
    backends: Vec<SearchBackend>,
    timeout: Duration,
}

impl WebSearch {
    pub fn new(backends: Vec<SearchBackend>, timeout: Duration) -> Self {
        WebSearch { backends, timeout }
    }
}

pub const MAX_RESULTS: u64 = 50;

#[async_trait]
impl Tool for WebSearch {
    fn id(&self) -> &str {
        "web-search"
    }

    fn description(&self) -> &str {
        "Search the web through the configured backends (SearXNG, Brave, Tavily)"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "search",
            "Search and return {query, backend, results: [{title, url, snippet}]}. \
             Backends are tried in the configured order; the next one answers when one fails.",
            json!({
                "type": "object",
                "required": ["query"],
                "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS, "default": 10},
                    "backend": {"type": "string", "description": "the configured backend to try first (duckduckgo, searxng, brave, tavily); one not configured here is noted in the step's log and the configured order is used"}
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
        let query = required_str(params, "query")?.trim();
        if query.is_empty() {
            return Err(ToolError::invalid("'query' is empty"));
        }
        let max_results = match params.get("max_results") {
            None | Some(Value::Null) => 10,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=MAX_RESULTS).contains(n))
                .ok_or_else(|| {
                    ToolError::invalid(format!(
                        "'max_results' must be a whole number from 1 to {MAX_RESULTS}"
                    ))
                })?,
        } as usize;
        let wanted = crate::optional_str(params, "backend")?
            .map(|b| b.trim().to_ascii_lowercase())
            .filter(|b| !b.is_empty());
        let mut order: Vec<&_> = self.backends.iter().collect();
        if let Some(wanted) = &wanted {
            match order.iter().position(|b| b.name() == wanted.as_str()) {
                Some(i) => {
                    let first = order.remove(i);
                    order.insert(0, first);
                }
                None => ctx.log(
                    crate::log::Stream::Log,
                    &format!(
                        "search backend '{wanted}' is not configured here; trying {}",
                        self.backends
                            .iter()
                            .map(|b| b.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        let mut failures = Vec::new();
        for backend in order {
            match backend
                .search(&ctx.http, query, max_results, ctx, self.timeout)
                .await
            {
                Ok(results) => {
                    return Ok(json!({
                        "query": query,
                        "backend": backend.name(),
                        "count": results.len(),
                        "results": results,
                    }));
                }
                Err(e) if e.kind == ErrorKind::CancelledError => return Err(e),
                Err(e) => failures.push(e),
            }
        }
        match failures.len() {
            0 => Err(ToolError::new(
                ErrorKind::NoSearchBackendError,
                "no web search backend is configured on this server",
            )),
            1 => Err(failures.remove(0)),
            _ => {
                // Retryable when any backend might answer next time.
                let kind = if failures
                    .iter()
                    .any(|e| e.kind != ErrorKind::SearchRejectedError)
                {
                    ErrorKind::SearchError
                } else {
                    ErrorKind::SearchRejectedError
                };
                let all: Vec<String> = failures.into_iter().map(|e| e.message).collect();
                Err(ToolError::new(
                    kind,
                    format!("every search backend failed: {}", all.join("; ")),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_lose_their_markup() {
        assert_eq!(
            plain_text("The <strong>Rust</strong> book &amp; more"),
            "The Rust book & more"
        );
    }

    #[test]
    fn error_details_come_from_each_backend_shape() {
        let brave = json!({"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "detail": "The provided subscription token is invalid.", "status": 422}});
        assert_eq!(
            error_detail(&brave).as_deref(),
            Some("The provided subscription token is invalid.")
        );
        let tavily = json!({"detail": {"error": "Unauthorized: missing or invalid API key."}});
        assert_eq!(
            error_detail(&tavily).as_deref(),
            Some("Unauthorized: missing or invalid API key.")
        );
    }

    #[test]
    fn keys_do_not_show_in_debug_output() {
        let b = SearchBackend::Brave {
            url: BRAVE_URL.into(),
            api_key: "secret-key".into(),
        };
        assert!(!format!("{b:?}").contains("secret-key"));
    }
}
