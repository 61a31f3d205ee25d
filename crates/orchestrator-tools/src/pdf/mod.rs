//! `pdf-compiler`: the seed's Markdown-to-PDF tool without pandoc or LaTeX.
//! The Markdown (CommonMark with tables, footnotes, strikethrough and task
//! lists) is laid out here on A4 pages in the embedded font ([`layout`])
//! and written as a PDF with the font subset into it ([`write`]): headings,
//! paragraphs with bold, italic, code and links, nested lists, quotes, code
//! blocks, rules and tables, a title block, a table of contents with page
//! numbers, bookmarks and page numbers. Text is shaped glyph by glyph (no
//! ligatures or complex scripts); images are shown as their alt text.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, optional_str};

mod blocks;
mod layout;
mod write;

#[derive(Debug, Clone, Copy, Default)]
pub struct PdfCompiler;

/// Renders `markdown` as PDF bytes and the number of pages.
fn render(
    markdown: &str,
    front: &layout::Front,
    info: &write::Info,
) -> Result<(Vec<u8>, usize), ToolError> {
    let font = crate::fonts::DEJAVU_SANS;
    let face = ttf_parser::Face::parse(font, 0).map_err(|e| {
        ToolError::new(
            ErrorKind::InternalError,
            format!("the embedded font cannot be read: {e}"),
        )
    })?;
    let metrics = layout::Metrics::new(face);
    let laid = layout::lay_out(markdown, front, &metrics).map_err(|pages| {
        ToolError::new(
            ErrorKind::LimitExceededError,
            format!(
                "the document would take more than {} pages (at {pages}, layout stopped)",
                layout::MAX_PAGES
            ),
        )
    })?;
    let pages = laid.pages.len();
    let bytes = write::write(&laid.pages, &laid.headings, info, font, &metrics)
        .map_err(|e| ToolError::new(ErrorKind::InternalError, e))?;
    Ok((bytes, pages))
}

#[async_trait]
impl Tool for PdfCompiler {
    fn id(&self) -> &str {
        "pdf-compiler"
    }

    fn description(&self) -> &str {
        "Markdown to a PDF file in the workspace, typeset here with an embedded font (no pandoc or LaTeX): {output_path, file_size, pages, title, message}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "compile",
            "Typeset the Markdown as an A4 PDF (or write it as HTML or Markdown with `format`)",
            json!({"type": "object", "properties": {
                "markdown_content": {"type": "string", "description": "the Markdown (also accepted as `content`); at most 8 MiB"},
                "content": {"type": "string"},
                "output_path": {"type": "string", "description": "workspace file to write (default report.pdf)"},
                "title": {"type": "string", "description": "a title block on the first page, and the document's title"},
                "author": {"type": "string", "description": "under the title, and the document's author"},
                "include_toc": {"type": "boolean", "description": "a table of contents of the level 1 and 2 headings, with page numbers (default true, as the seed's)"},
                "include_timestamp": {"type": "boolean", "description": "the date under the title (default true)"},
                "format": {"enum": ["pdf", "html", "markdown", "md"], "description": "pdf (default); html writes an HTML page as markdown-to-html does; markdown writes the text as it is"},
                "install_if_missing": {"type": "boolean", "description": "accepted for the seed's pipelines; nothing is installed (nothing needs to be)"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let markdown = crate::markdown::markdown_param(p)?;
        if markdown.trim().is_empty() {
            return Err(ToolError::invalid("parameter 'markdown_content' is empty"));
        }
        let format = optional_str(p, "format")?
            .unwrap_or("pdf")
            .to_ascii_lowercase();
        let output_path = optional_str(p, "output_path")?
            .filter(|s| !s.trim().is_empty())
            .unwrap_or("report.pdf")
            .to_string();
        let title = optional_str(p, "title")?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let author = optional_str(p, "author")?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let toc = crate::optional_bool(p, "include_toc")?.unwrap_or(true);
        let stamp = crate::optional_bool(p, "include_timestamp")?.unwrap_or(true);
        let bytes_and_pages: (Vec<u8>, Option<usize>) = match format.as_str() {
            "pdf" => {
                let now = chrono::Utc::now();
                let front = layout::Front {
                    title: title.clone(),
                    author: author.clone(),
                    date: (stamp && title.is_some()).then(|| now.format("%B %d, %Y").to_string()),
                    toc,
                };
                let info = write::Info {
                    title: title.clone(),
                    author: author.clone(),
                    created: Some(now),
                };
                let (bytes, pages) =
                    tokio::task::spawn_blocking(move || render(&markdown, &front, &info))
                        .await
                        .map_err(|e| {
                            ToolError::new(
                                ErrorKind::InternalError,
                                format!("typesetting failed: {e}"),
                            )
                        })??;
                (bytes, Some(pages))
            }
            "html" => {
                let mut q = p.clone();
                q.remove("output_path");
                q.insert("include_toc".into(), json!(toc));
                let page = crate::markdown::MarkdownToHtml
                    .execute("convert", &q, ctx)
                    .await?;
                (
                    page["html"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec(),
                    None,
                )
            }
            "markdown" | "md" => (markdown.into_bytes(), None),
            other => {
                return Err(ToolError::invalid(format!(
                    "parameter 'format' is '{other}'; one of pdf, html, markdown"
                )));
            }
        };
        let (bytes, pages) = bytes_and_pages;
        let size = bytes.len();
        crate::filesystem::write_bytes(ctx, &output_path, &bytes).await?;
        let mut result = json!({
            "output_path": output_path,
            "file_size": size,
            "format": format,
            "title": title,
            "message": format!("{} generated successfully: {output_path}", format.to_ascii_uppercase()),
        });
        if let Some(n) = pages {
            result["pages"] = json!(n);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const SAMPLE: &str = "# Renewable Energy — a Report\n\nSolar and **wind** grew *fast* in 2024; see [the data](https://example.org/data) and `config.yaml`.\n\n## Findings\n\n1. Solar: +30 %\n2. Wind: +12 %\n   - offshore\n   - onshore\n\n> Prices fell; Ünïcödé, ελληνικά, кириллица.\n\n```python\ndef total(xs):\n    return sum(xs)  # ≈ fast\n```\n\n| Source | Share | Note |\n|---|---|---|\n| Solar | 30 % | growing quickly across every region of the world |\n| Wind | 12 % | steady |\n\n---\n\n## Outlook\n\n- [x] measured\n- [ ] forecast\n\nEnd.[^1]\n\n[^1]: A footnote.\n";

    #[test]
    fn a_document_is_typeset() {
        let front = layout::Front {
            title: Some("Research Report: Energy".into()),
            author: Some("Orchestrator".into()),
            date: Some("December 06, 2026".into()),
            toc: true,
        };
        let (bytes, pages) = render(SAMPLE, &front, &write::Info::default()).expect("pdf");
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(pages >= 1);
        if let Ok(path) = std::env::var("PDF_SAMPLE_OUT") {
            std::fs::write(path, &bytes).expect("write");
        }
    }
}
