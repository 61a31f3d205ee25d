//! Web pages as the seed's `headless-browser` and `web-scraper` read them:
//! fetched through the `http` tool's outbound policy, parsed with a browser-
//! grade HTML parser, and returned as readable text, title, metadata, links
//! and images.
//!
//! `headless-browser`: `scrape` (also `extract`, `extract_text`), `verify`,
//! `search` (through the configured `web-search` backends), `scrape_js`
//! (refused: this server runs no JavaScript). `web-scraper`: `scrape`,
//! `extract_text`, `extract_links`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::http::HttpSettings;
use crate::net::{OutboundPolicy, request_error, status_error};
use crate::{
    ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, optional_bool, required_str,
};

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

/// Which parts of a page a read returns.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub text: bool,
    pub metadata: bool,
    pub links: bool,
    pub images: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        text: true,
        metadata: true,
        links: true,
        images: true,
    };
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
        let chunk = tokio::select! {
            c = response.chunk() => c.map_err(|e| request_error(&e, what))?,
            _ = cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        let Some(chunk) = chunk else {
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

/// Elements whose text is not the page's text.
const HIDDEN: &[&str] = &[
    "script", "style", "noscript", "template", "head", "svg", "iframe",
];

/// How deep elements may nest before the rest of a page is dropped. The
/// HTML5 tree builder looks through the open elements for many tags, so a
/// page of 100,000 nested `<div>`s would take it minutes; browsers stop
/// laying out at a few hundred levels too.
pub const MAX_NESTING: usize = 512;

/// Elements that never hold others, or that the next of their kind closes:
/// they do not deepen the page.
const FLAT: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "option", "tbody", "thead", "tfoot",
    "colgroup", "rp", "rt", "!doctype",
];

/// Where a page nests deeper than [`MAX_NESTING`] (by a tag-level scan
/// that skips comments, scripts and styles), if it does.
pub fn nesting_cut(html: &str) -> Option<usize> {
    let bytes = html.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr(b'<', &bytes[i..]) {
        let at = i + off;
        let rest = &html[at..];
        if rest.starts_with("<!--") {
            i = rest.find("-->").map_or(bytes.len(), |e| at + e + 3);
            continue;
        }
        let closing = rest.as_bytes().get(1) == Some(&b'/');
        let name_start = at + 1 + usize::from(closing);
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'!' || **b == b'-')
            .count();
        if name_len == 0 {
            i = at + 1;
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let end = memchr(b'>', &bytes[name_start..]).map_or(bytes.len(), |e| name_start + e);
        let self_closing = end > 0 && bytes.get(end - 1) == Some(&b'/');
        i = (end + 1).min(bytes.len());
        if closing {
            if !FLAT.contains(&name.as_str()) {
                depth = depth.saturating_sub(1);
            }
            continue;
        }
        if matches!(name.as_str(), "script" | "style" | "textarea" | "title") {
            i = find_close(bytes, i, name.as_bytes());
            continue;
        }
        if self_closing || FLAT.contains(&name.as_str()) {
            continue;
        }
        depth += 1;
        if depth > MAX_NESTING {
            return Some(at);
        }
    }
    None
}

/// Where `</name` (any case) starts at or after `from`, else the end.
fn find_close(bytes: &[u8], from: usize, name: &[u8]) -> usize {
    let mut i = from;
    while let Some(off) = memchr(b'<', &bytes[i..]) {
        let at = i + off;
        let tag = &bytes[at + 1..];
        if tag.first() == Some(&b'/')
            && tag.len() > name.len()
            && tag[1..=name.len()].eq_ignore_ascii_case(name)
        {
            return at;
        }
        i = at + 1;
    }
    bytes.len()
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// The readable parts of a page. `selector` limits the text to the
/// elements it matches. A page nested deeper than [`MAX_NESTING`] is read
/// up to that point (`nesting_truncated: true`).
pub fn read_page(
    html: &str,
    base: &reqwest::Url,
    selector: Option<&str>,
    what: Parts,
    max_links: usize,
) -> Value {
    let cut = nesting_cut(html);
    let doc = scraper::Html::parse_document(&html[..cut.unwrap_or(html.len())]);
    let mut out = Map::new();
    if cut.is_some() {
        out.insert("nesting_truncated".into(), json!(true));
    }
    let sel = |s: &str| scraper::Selector::parse(s).ok();
    if what.metadata {
        let title = sel("title")
            .and_then(|s| doc.select(&s).next())
            .map(|t| collapse(&t.text().collect::<String>()))
            .unwrap_or_default();
        out.insert("title".into(), json!(title));
        let mut meta = Map::new();
        if let Some(s) = sel("meta") {
            for m in doc.select(&s) {
                let el = m.value();
                if let (Some(name), Some(content)) =
                    (el.attr("name").or(el.attr("property")), el.attr("content"))
                    && meta.len() < 200
                {
                    meta.insert(name.to_string(), json!(content));
                }
            }
        }
        if let Some(d) = meta.get("description").or(meta.get("og:description")) {
            out.insert("description".into(), d.clone());
        }
        out.insert("meta_tags".into(), Value::Object(meta));
        let lang = sel("html")
            .and_then(|s| doc.select(&s).next())
            .and_then(|h| h.value().attr("lang").map(str::to_string));
        if let Some(lang) = lang {
            out.insert("language".into(), json!(lang));
        }
    }
    if what.text {
        let mut raw = String::new();
        let roots: Vec<scraper::ElementRef> = match selector.and_then(sel) {
            Some(s) => doc.select(&s).collect(),
            None => sel("body")
                .and_then(|s| doc.select(&s).next())
                .into_iter()
                .collect(),
        };
        let roots = if roots.is_empty() && selector.is_none() {
            vec![doc.root_element()]
        } else {
            roots
        };
        for root in roots {
            text_of(&root, &mut raw);
            raw.push(' ');
        }
        let text = collapse(&raw);
        out.insert("word_count".into(), json!(text.split_whitespace().count()));
        out.insert("text".into(), json!(text));
    }
    let absolute = |href: &str| base.join(href.trim()).map(|u| u.to_string()).ok();
    if what.links {
        let mut links = Vec::new();
        let mut more = false;
        if let Some(s) = sel("a[href]") {
            for a in doc.select(&s) {
                let Some(url) = a.value().attr("href").and_then(absolute) else {
                    continue;
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    continue;
                }
                if links.len() == max_links {
                    more = true;
                    break;
                }
                links.push(json!({
                    "url": url,
                    "text": collapse(&a.text().collect::<String>()),
                    "title": a.value().attr("title").unwrap_or(""),
                }));
            }
        }
        out.insert("links".into(), Value::Array(links));
        if more {
            out.insert("links_truncated".into(), json!(true));
        }
    }
    if what.images {
        let mut images = Vec::new();
        if let Some(s) = sel("img[src]") {
            for img in doc.select(&s).take(max_links) {
                if let Some(url) = img.value().attr("src").and_then(absolute) {
                    images.push(json!({
                        "url": url,
                        "alt": img.value().attr("alt").unwrap_or(""),
                        "title": img.value().attr("title").unwrap_or(""),
                    }));
                }
            }
        }
        out.insert("images".into(), Value::Array(images));
    }
    Value::Object(out)
}

/// Elements that break the text flow (their text is set apart by a space).
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// The visible text under `root`, text runs kept together and blocks set
/// apart, as a reader sees it.
fn text_of(root: &scraper::ElementRef, out: &mut String) {
    use ego_tree::iter::Edge;
    let mut hidden = 0usize;
    for edge in root.traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                scraper::Node::Element(e) if HIDDEN.contains(&e.name()) => hidden += 1,
                scraper::Node::Element(e) if BLOCKS.contains(&e.name()) => out.push(' '),
                scraper::Node::Text(t) if hidden == 0 => out.push_str(t),
                _ => {}
            },
            Edge::Close(node) => match node.value() {
                scraper::Node::Element(e) if HIDDEN.contains(&e.name()) => {
                    hidden = hidden.saturating_sub(1);
                }
                scraper::Node::Element(e) if BLOCKS.contains(&e.name()) => out.push(' '),
                _ => {}
            },
        }
    }
}

/// Whitespace runs as one space, trimmed.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn url_params(extra: Value) -> Value {
    let mut properties = json!({
        "url": {"type": "string", "description": "http:// or https:// URL; the http tool's outbound policy applies"},
        "timeout": {"type": ["number", "string"], "description": "seconds (a value over 1000 is read as milliseconds)"},
    });
    if let (Some(p), Value::Object(more)) = (properties.as_object_mut(), extra) {
        p.extend(more);
    }
    json!({"type": "object", "required": ["url"], "properties": properties})
}

fn read_params() -> Value {
    url_params(json!({
        "selector": {"type": "string", "description": "CSS selector: the text of the matching elements only"},
        "max_content_length": {"type": "integer", "minimum": 1, "description": "bytes of the page read (default 1 MiB); the rest is dropped and `truncated` is true"},
        "max_links": {"type": "integer", "minimum": 1, "description": "links and images listed (default 500)"},
        "extract_text": {"type": "boolean"},
        "extract_metadata": {"type": "boolean"},
        "include_metadata": {"type": "boolean"},
        "extract_links": {"type": "boolean"},
        "extract_images": {"type": "boolean"},
        "fail_on_status": {"type": "boolean", "description": "a 4xx/5xx answer fails the step (default true)"}
    }))
}

const READ_RESULT: &str = "{url, final_url, status_code, content_type, content_length, truncated, title, description, meta_tags, text, word_count, links: [{url, text, title}], images: [{url, alt, title}], scrape_time}";

fn scrape_action() -> ActionSpec {
    action(
        "scrape",
        &format!("Fetch a page and read it → {READ_RESULT}"),
        read_params(),
    )
}

/// The seed's `headless-browser`.
#[derive(Debug, Clone)]
pub struct HeadlessBrowser {
    pages: PageReader,
    /// The configured `web-search`, for `search`.
    search: Option<Arc<dyn Tool>>,
}

impl HeadlessBrowser {
    pub fn new(settings: HttpSettings, search: Option<Arc<dyn Tool>>) -> Self {
        HeadlessBrowser {
            pages: PageReader::new(settings),
            search,
        }
    }
}

impl Default for HeadlessBrowser {
    fn default() -> Self {
        Self::new(HttpSettings::default(), None)
    }
}

#[async_trait]
impl Tool for HeadlessBrowser {
    fn id(&self) -> &str {
        "headless-browser"
    }

    fn description(&self) -> &str {
        "Read web pages (text, title, metadata, links), check that URLs answer, and search the web"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            scrape_action(),
            action(
                "verify",
                "Whether a URL answers → {url, accessible, status_code, content_type, content_length, last_modified, verification_time}",
                url_params(json!({})),
            ),
            action(
                "search",
                "Search the web through the configured web-search backends → {query, results, total_results, backend, search_time}",
                json!({"type": "object", "required": ["query"], "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": crate::search::MAX_RESULTS, "default": 10}
                }}),
            ),
            action(
                "scrape_js",
                "Read a page after running its JavaScript: not available (this server runs no browser engine); use scrape",
                url_params(json!({})),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        match action {
            "scrape" => self.pages.read(p, ctx, Parts::ALL).await,
            "verify" => self.pages.verify(p, ctx).await,
            "search" => {
                let Some(search) = &self.search else {
                    return Err(ToolError::new(
                        ErrorKind::ExecutionError,
                        "search needs a web-search backend, and none is configured on this server (tools.web_search.backends)",
                    ));
                };
                let mut params = Map::new();
                for key in ["query", "max_results"] {
                    if let Some(v) = p.get(key) {
                        params.insert(key.to_string(), v.clone());
                    }
                }
                let started = Instant::now();
                let mut found = search.execute("search", &params, ctx).await?;
                if let Value::Object(m) = &mut found {
                    let n = m
                        .get("results")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    m.insert("total_results".into(), json!(n));
                    m.insert("search_time".into(), json!(started.elapsed().as_secs_f64()));
                }
                Ok(found)
            }
            "scrape_js" => Err(ToolError::new(
                ErrorKind::ExecutionError,
                "scrape_js needs a JavaScript-capable browser, which this server does not run; use scrape (the page as served)",
            )),
            other => Err(ToolError::invalid(format!(
                "unknown action '{other}': use scrape, verify, search or scrape_js"
            ))),
        }
    }
}

/// `web-scraper`: the page reader on its own.
#[derive(Debug, Clone)]
pub struct WebScraper {
    pages: PageReader,
}

impl WebScraper {
    pub fn new(settings: HttpSettings) -> Self {
        WebScraper {
            pages: PageReader::new(settings),
        }
    }
}

impl Default for WebScraper {
    fn default() -> Self {
        Self::new(HttpSettings::default())
    }
}

#[async_trait]
impl Tool for WebScraper {
    fn id(&self) -> &str {
        "web-scraper"
    }

    fn description(&self) -> &str {
        "Fetch web pages and read their text, title, metadata, links and images"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            scrape_action(),
            action(
                "extract_text",
                "The page's readable text, title and metadata → {url, title, text, word_count, meta_tags, …}",
                read_params(),
            ),
            action(
                "extract_links",
                "The page's links and images → {url, title, links, images, …}",
                read_params(),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let parts = match action {
            "scrape" => Parts::ALL,
            "extract_text" => Parts {
                links: false,
                images: false,
                ..Parts::ALL
            },
            "extract_links" => Parts {
                text: false,
                ..Parts::ALL
            },
            other => {
                return Err(ToolError::invalid(format!(
                    "unknown action '{other}': use scrape, extract_text or extract_links"
                )));
            }
        };
        self.pages.read(p, ctx, parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html><html lang="en"><head>
<title> Rust  &amp; pipelines </title>
<meta name="description" content="A page about pipelines">
<meta property="og:title" content="OG title">
<style>body { color: red }</style><script>var secret = "hidden";</script>
</head><body>
<nav><a href="/docs" title="Docs">Docs</a> <a href="mailto:x@example.com">mail</a></nav>
<article><h1>Hello,   <i>world</i>!</h1><p>First paragraph.</p>
<noscript>Enable JS</noscript><img src="img/a.png" alt="A"></article>
<a href="https://other.example/page?x=1">Elsewhere</a>
</body></html>"#;

    #[test]
    fn a_page_reads_as_text_metadata_links_and_images() {
        let base = reqwest::Url::parse("https://example.com/blog/post").expect("url");
        let page = read_page(PAGE, &base, None, Parts::ALL, 10);
        assert_eq!(page["title"], "Rust & pipelines");
        assert_eq!(page["description"], "A page about pipelines");
        assert_eq!(page["meta_tags"]["og:title"], "OG title");
        assert_eq!(page["language"], "en");
        let text = page["text"].as_str().expect("text");
        assert_eq!(text, "Docs mail Hello, world! First paragraph. Elsewhere");
        assert!(!text.contains("secret") && !text.contains("color"));
        assert_eq!(page["word_count"], 7);
        assert_eq!(
            page["links"],
            json!([
                {"url": "https://example.com/docs", "text": "Docs", "title": "Docs"},
                {"url": "https://other.example/page?x=1", "text": "Elsewhere", "title": ""}
            ])
        );
        assert_eq!(
            page["images"][0]["url"],
            "https://example.com/blog/img/a.png"
        );
    }

    #[test]
    fn hostile_pages_read_without_blowing_the_stack() {
        let base = reqwest::Url::parse("https://example.com/").expect("url");
        for html in [
            format!("{}deep", "<div>".repeat(200_000)),
            format!("{}x", "<a href=x>".repeat(200_000)),
            format!("<table>{}", "<td><table>".repeat(100_000)),
            format!("{}x", "<b><i>".repeat(100_000)),
            format!(
                "<!--{}-->{}",
                "<div>".repeat(100_000),
                "<p>fine".repeat(10_000)
            ),
            "<script>x".repeat(100_000),
            "<div><script>".repeat(100_000),
        ] {
            let started = std::time::Instant::now();
            let page = read_page(&html, &base, None, Parts::ALL, 10);
            assert!(page["text"].is_string());
            assert!(page["links"].as_array().map_or(0, Vec::len) <= 10);
            assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        }
        let deep = format!("{}deep", "<div>".repeat(600));
        assert_eq!(
            read_page(&deep, &base, None, Parts::ALL, 1)["nesting_truncated"],
            true
        );
        // Unclosed paragraphs and list items, as real pages have them, do not count.
        let flat = format!(
            "<ul>{}</ul>{}",
            "<li>item".repeat(5_000),
            "<p>para".repeat(5_000)
        );
        assert_eq!(nesting_cut(&flat), None);
        assert_eq!(
            nesting_cut("<script>if (a<b) { x = '<div>'.repeat(1000) }</script>"),
            None
        );
    }

    #[test]
    fn a_selector_limits_the_text_and_links_are_bounded() {
        let base = reqwest::Url::parse("https://example.com/").expect("url");
        let page = read_page(PAGE, &base, Some("article p"), Parts::ALL, 1);
        assert_eq!(page["text"], "First paragraph.");
        assert_eq!(page["links"].as_array().map(Vec::len), Some(1));
        assert_eq!(page["links_truncated"], true);
        let broken = read_page("<p>unclosed <b>tags", &base, None, Parts::ALL, 5);
        assert_eq!(broken["text"], "unclosed tags");
    }
}
