//! `report-generator`: a report from `content`, or from `title` + `sections`,
//! as Markdown or HTML, optionally written to a workspace file.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, as_text};

#[derive(Debug, Clone, Copy, Default)]
pub struct ReportGenerator;

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn build(params: &Map<String, Value>, html: bool) -> Result<String, ToolError> {
    if let Some(content) = params.get("content").filter(|c| !c.is_null()) {
        return Ok(as_text(content));
    }
    let title = params.get("title").map(as_text);
    let sections = match params.get("sections") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(ToolError::invalid(
                "'sections' must be a list of {title, content}",
            ));
        }
    };
    if title.is_none() && sections.is_empty() {
        return Err(ToolError::invalid(
            "give 'content', or 'title' and 'sections'",
        ));
    }
    let mut out = String::new();
    if html {
        let t = escape_html(title.as_deref().unwrap_or("Report"));
        out.push_str(&format!("<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body>\n"));
        if title.is_some() {
            out.push_str(&format!("<h1>{t}</h1>\n"));
        }
    } else if let Some(t) = &title {
        out.push_str(&format!("# {t}\n\n"));
    }
    for (i, section) in sections.iter().enumerate() {
        let (heading, body) = match section {
            Value::Object(m) => (
                m.get("title").map(as_text),
                m.get("content").map(as_text).unwrap_or_default(),
            ),
            Value::String(s) => (None, s.clone()),
            _ => {
                return Err(ToolError::invalid(format!(
                    "section {i} must be {{title, content}} or text"
                )));
            }
        };
        if html {
            if let Some(h) = heading {
                out.push_str(&format!("<h2>{}</h2>\n", escape_html(&h)));
            }
            for para in body.split("\n\n").filter(|p| !p.trim().is_empty()) {
                out.push_str(&format!("<p>{}</p>\n", escape_html(para.trim())));
            }
        } else {
            if let Some(h) = heading {
                out.push_str(&format!("## {h}\n\n"));
            }
            out.push_str(body.trim_end());
            out.push_str("\n\n");
        }
    }
    if html {
        out.push_str("</body>\n</html>\n");
    } else {
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    }
    Ok(out)
}

#[async_trait]
impl Tool for ReportGenerator {
    fn id(&self) -> &str {
        "report-generator"
    }

    fn description(&self) -> &str {
        "Builds a Markdown or HTML report, optionally written to the workspace"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "generate",
            "Report from content, or title + sections: {content, path?}",
            json!({"type": "object", "properties": {
                "content": {"description": "the report; other values are written as JSON"},
                "title": {},
                "sections": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"title": {}, "content": {}}}]}},
                "format": {"type": "string", "enum": ["markdown", "md", "html"]},
                "path": {"type": "string", "description": "workspace file to write the report to"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let html = match params.get("format").and_then(Value::as_str) {
            None | Some("markdown") | Some("md") => false,
            Some("html") => true,
            Some(other) => {
                return Err(ToolError::invalid(format!(
                    "format '{other}' is not markdown or html"
                )));
            }
        };
        let content = build(params, html)?;
        let Some(path) = params.get("path").filter(|p| !p.is_null()) else {
            return Ok(json!({"content": content}));
        };
        let path = path
            .as_str()
            .ok_or_else(|| ToolError::invalid("'path' must be a string"))?;
        tokio::fs::create_dir_all(&ctx.workspace)
            .await
            .map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))?;
        let mut write = Map::new();
        write.insert("path".into(), Value::String(path.to_string()));
        write.insert("content".into(), Value::String(content.clone()));
        let written = crate::filesystem::Filesystem::default()
            .execute("write", &write, ctx)
            .await?;
        Ok(json!({"content": content, "path": written["path"]}))
    }
}
