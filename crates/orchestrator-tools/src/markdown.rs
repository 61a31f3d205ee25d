//! `markdown-to-html`: Markdown (CommonMark with tables, footnotes,
//! strikethrough and task lists) to an HTML document or fragment, optionally
//! written to the workspace, with the seed examples' parameter names
//! (`markdown_content` or `content`, `output_path`, `title`, `css_theme`,
//! `include_toc`).

use async_trait::async_trait;
use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde_json::{Map, Value, json};

use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, as_text};

/// The largest Markdown text converted, in bytes.
pub const MAX_MARKDOWN_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownToHtml;

/// One heading of the document, for the table of contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Heading {
    pub level: u8,
    pub text: String,
    pub id: String,
}

/// The rendered body and what was learnt on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub body: String,
    pub headings: Vec<Heading>,
}

/// Markdown to an HTML body. Unless `keep_html`, raw HTML in the text is
/// shown as text rather than passed through (no script reaches the page).
pub fn render(markdown: &str, keep_html: bool) -> Rendered {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_SMART_PUNCTUATION;
    let mut events: Vec<Event> = Parser::new_ext(markdown, options).collect();
    // Headings get ids (a slug of their text, unique in the document).
    let mut headings = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { level, id, .. }) = &events[i] {
            let level = heading_level(*level);
            let given = id.as_ref().map(|s| s.to_string());
            let mut text = String::new();
            let mut j = i + 1;
            while j < events.len() && !matches!(events[j], Event::End(TagEnd::Heading(_))) {
                if let Event::Text(t) | Event::Code(t) = &events[j] {
                    text.push_str(t);
                }
                j += 1;
            }
            let base = given.unwrap_or_else(|| slug(&text));
            let mut unique = base.clone();
            let mut n = 1;
            while !used.insert(unique.clone()) {
                unique = format!("{base}-{n}");
                n += 1;
            }
            if let Event::Start(Tag::Heading { id, .. }) = &mut events[i] {
                *id = Some(CowStr::from(unique.clone()));
            }
            headings.push(Heading {
                level,
                text: text.trim().to_string(),
                id: unique,
            });
            i = j;
        }
        i += 1;
    }
    let events = events.into_iter().map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) if !keep_html => Event::Text(h),
        other => other,
    });
    let mut body = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut body, events);
    Rendered { body, headings }
}

/// A heading's level as a number (1–6).
pub(crate) fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Lower-case words joined by `-` (`Results & Next steps` → `results-next-steps`).
fn slug(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        "section".to_string()
    } else {
        words.join("-")
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Style sheets by theme name.
fn theme(name: &str) -> Option<&'static str> {
    Some(match name {
        "default" | "github" => {
            "body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;line-height:1.6;max-width:50em;margin:2em auto;padding:0 1em;color:#1f2328}\
             h1,h2{border-bottom:1px solid #d1d9e0;padding-bottom:.3em}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;background:#f6f8fa}\
             pre{padding:1em;overflow:auto}code{padding:.1em .3em}table{border-collapse:collapse}th,td{border:1px solid #d1d9e0;padding:.3em .7em}\
             blockquote{color:#59636e;border-left:.25em solid #d1d9e0;margin:0;padding:0 1em}img{max-width:100%}"
        }
        "academic" => {
            "body{font-family:Georgia,'Times New Roman',serif;line-height:1.7;max-width:42em;margin:3em auto;padding:0 1em;color:#111;text-align:justify}\
             h1{text-align:center;font-size:1.9em}h2{font-size:1.4em;margin-top:2em}h3{font-style:italic}\
             code,pre{font-family:'Courier New',monospace;font-size:.9em}pre{background:#f4f4f4;padding:1em;overflow:auto}\
             table{border-collapse:collapse;margin:1em auto}th{border-bottom:2px solid #111}td,th{padding:.3em .8em}\
             blockquote{font-style:italic;margin:1em 2em}.toc{border:1px solid #ccc;padding:.5em 1.5em}img{max-width:100%}"
        }
        "minimal" => {
            "body{font-family:system-ui,sans-serif;max-width:45em;margin:2em auto;padding:0 1em;line-height:1.5}pre{overflow:auto}img{max-width:100%}"
        }
        "none" => "",
        _ => return None,
    })
}

const THEMES: &str = "default, github, academic, minimal, none";

fn toc(headings: &[Heading]) -> String {
    let mut out = String::from("<nav class=\"toc\">\n<ul>\n");
    for h in headings.iter().filter(|h| h.level <= 3) {
        out.push_str(&format!(
            "<li class=\"toc-{}\"><a href=\"#{}\">{}</a></li>\n",
            h.level,
            escape(&h.id),
            escape(&h.text)
        ));
    }
    out.push_str("</ul>\n</nav>\n");
    out
}

/// A whole HTML document around a rendered body.
pub fn document(title: &str, css: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{css}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// The Markdown of `markdown_content` (or `content`, `markdown`), at most
/// [`MAX_MARKDOWN_BYTES`].
pub(crate) fn markdown_param(p: &Map<String, Value>) -> Result<String, ToolError> {
    let text = ["markdown_content", "content", "markdown"]
        .iter()
        .find_map(|k| p.get(*k).filter(|v| !v.is_null()))
        .map(as_text)
        .ok_or_else(|| {
            ToolError::invalid("parameter 'markdown_content' (or 'content') is required")
        })?;
    if text.len() > MAX_MARKDOWN_BYTES {
        return Err(ToolError::invalid(format!(
            "parameter 'markdown_content' is {} bytes; at most {MAX_MARKDOWN_BYTES} are converted",
            text.len()
        )));
    }
    Ok(text)
}

#[async_trait]
impl Tool for MarkdownToHtml {
    fn id(&self) -> &str {
        "markdown-to-html"
    }

    fn description(&self) -> &str {
        "Markdown to an HTML page or fragment, optionally written to the workspace"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "convert",
            "Markdown to HTML → {html, title, headings, word_count, output_path?, file_size?}",
            json!({"type": "object", "properties": {
                "markdown_content": {"type": "string", "description": "the Markdown (also accepted as `content`)"},
                "content": {"type": "string"},
                "output_path": {"type": "string", "description": "workspace file to write the HTML to"},
                "title": {"type": "string", "description": "the page title (default: the first heading)"},
                "css_theme": {"type": "string", "description": format!("one of {THEMES} (default `default`)")},
                "include_toc": {"type": "boolean", "description": "a table of contents of the headings (levels 1–3) first"},
                "standalone": {"type": "boolean", "description": "a whole document (default) or only the body's HTML"},
                "allow_raw_html": {"type": "boolean", "description": "pass HTML written in the Markdown through (default false: it is shown as text)"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let markdown = markdown_param(p)?;
        let keep_html = crate::optional_bool(p, "allow_raw_html")?.unwrap_or(false);
        let standalone = crate::optional_bool(p, "standalone")?.unwrap_or(true);
        let with_toc = crate::optional_bool(p, "include_toc")?.unwrap_or(false);
        let theme_name = match p.get("css_theme") {
            None | Some(Value::Null) => "default".to_string(),
            Some(v) => as_text(v),
        };
        let css = theme(&theme_name).ok_or_else(|| {
            ToolError::invalid(format!(
                "parameter 'css_theme': '{theme_name}' is not one of {THEMES}"
            ))
        })?;
        let word_count = markdown.split_whitespace().count();
        let rendered = tokio::task::spawn_blocking(move || render(&markdown, keep_html))
            .await
            .map_err(|e| {
                ToolError::new(ErrorKind::ExecutionError, format!("conversion failed: {e}"))
            })?;
        let title = match p.get("title") {
            Some(v) if !v.is_null() => as_text(v),
            _ => rendered
                .headings
                .first()
                .map_or_else(|| "Document".to_string(), |h| h.text.clone()),
        };
        let mut body = String::new();
        if with_toc && !rendered.headings.is_empty() {
            body.push_str(&toc(&rendered.headings));
        }
        body.push_str(&rendered.body);
        let html = if standalone {
            document(&title, css, &body)
        } else {
            body
        };
        let headings: Vec<Value> = rendered
            .headings
            .iter()
            .map(|h| json!({"level": h.level, "text": h.text, "id": h.id}))
            .collect();
        let mut result = json!({
            "html": html,
            "title": title,
            "headings": headings,
            "word_count": word_count,
        });
        if let Some(path) = p.get("output_path").filter(|v| !v.is_null()) {
            let path = path
                .as_str()
                .ok_or_else(|| ToolError::invalid("parameter 'output_path' must be a string"))?;
            let mut write = Map::new();
            write.insert("path".into(), json!(path));
            write.insert("content".into(), json!(html));
            let written = crate::filesystem::Filesystem::default()
                .execute("write", &write, ctx)
                .await?;
            result["output_path"] = written["path"].clone();
            result["file_size"] = written["size"].clone();
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_with_tables_ids_and_escaped_raw_html() {
        let md = "# Results & Next steps\n\nSome *text* with `code`.\n\n## Data\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Data\n\n- [x] done\n\n<script>alert(1)</script>\n\nInline <b>bold</b>.\n";
        let r = render(md, false);
        assert!(
            r.body.contains("<h1 id=\"results-next-steps\">"),
            "{}",
            r.body
        );
        assert!(r.body.contains("<h2 id=\"data\">") && r.body.contains("<h2 id=\"data-1\">"));
        assert!(r.body.contains("<table>") && r.body.contains("<td>1</td>"));
        assert!(r.body.contains("checked=\"\""));
        assert!(!r.body.contains("<script>"), "{}", r.body);
        assert!(r.body.contains("&lt;script&gt;") && r.body.contains("&lt;b&gt;"));
        assert_eq!(
            r.headings
                .iter()
                .map(|h| h.text.as_str())
                .collect::<Vec<_>>(),
            vec!["Results & Next steps", "Data", "Data"]
        );
        let kept = render("<b>bold</b>\n", true);
        assert!(kept.body.contains("<b>bold</b>"));
    }

    #[test]
    fn hostile_markdown_renders_without_blowing_the_stack() {
        for text in [
            ">".repeat(200_000),
            "[".repeat(200_000),
            "*".repeat(200_000),
            "- ".repeat(100_000),
            format!("{}x{}", "<div>".repeat(50_000), "`".repeat(50_000)),
        ] {
            let started = std::time::Instant::now();
            let r = render(&text, false);
            assert!(!r.body.is_empty());
            assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        }
    }

    #[test]
    fn a_document_escapes_its_title() {
        let d = document("<x> & \"y\"", "", "<p>hi</p>\n");
        assert!(d.contains("<title>&lt;x&gt; &amp; &quot;y&quot;</title>"));
        assert!(theme("galaxy").is_none());
    }
}
