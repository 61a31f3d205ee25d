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
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::http::HttpSettings;
use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action};

mod fetch;
mod page;

pub use fetch::*;
pub use page::*;

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
