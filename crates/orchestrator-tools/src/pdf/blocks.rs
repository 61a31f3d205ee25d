//! Markdown read into blocks for the PDF layout: headings, paragraphs
//! (list items and footnotes with their markers), quotes, code, rules and
//! tables, each paragraph as spans of styled text.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Deeper lists and quotes than this are drawn at this depth.
const MAX_DEPTH: u8 = 8;

/// How a piece of text is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Style {
    pub bold: bool,
    pub italic: bool,
    pub code: bool,
    pub link: bool,
    pub gray: bool,
    pub strike: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Span {
    pub(super) text: String,
    pub(super) style: Style,
    pub(super) link: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Block {
    Heading {
        level: u8,
        spans: Vec<Span>,
    },
    Para {
        spans: Vec<Span>,
        depth: u8,
        quote: bool,
        marker: Option<String>,
    },
    Code {
        text: String,
        depth: u8,
    },
    Rule,
    Table {
        rows: Vec<(bool, Vec<Vec<Span>>)>,
    },
}

/// Reads Markdown into blocks.
pub(super) fn blocks(markdown: &str) -> Vec<Block> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_SMART_PUNCTUATION;
    let mut out = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    let (mut bold, mut italic, mut strike) = (0u32, 0u32, 0u32);
    let mut links: Vec<String> = Vec::new();
    let mut lists: Vec<Option<u64>> = Vec::new();
    let mut quote = 0u32;
    let mut marker: Option<String> = None;
    let mut code: Option<String> = None;
    let mut image: Option<String> = None;
    let mut table: Option<Vec<(bool, Vec<Vec<Span>>)>> = None;
    let mut row: Vec<Vec<Span>> = Vec::new();
    let mut in_head = false;
    let depth =
        |lists: &Vec<Option<u64>>| u8::try_from(lists.len()).unwrap_or(u8::MAX).min(MAX_DEPTH);
    let flush = |spans: &mut Vec<Span>,
                 marker: &mut Option<String>,
                 out: &mut Vec<Block>,
                 depth: u8,
                 quote: bool| {
        if spans.iter().any(|s| !s.text.trim().is_empty()) || marker.is_some() {
            out.push(Block::Para {
                spans: std::mem::take(spans),
                depth,
                quote,
                marker: marker.take(),
            });
        }
        spans.clear();
    };
    for event in Parser::new_ext(markdown, options) {
        let style = Style {
            bold: bold > 0,
            italic: italic > 0,
            code: false,
            link: !links.is_empty(),
            gray: quote > 0,
            strike: strike > 0,
        };
        let mut text = |t: String, style: Style, spans: &mut Vec<Span>| {
            if let Some(alt) = image.as_mut() {
                alt.push_str(&t);
            } else if let Some(c) = code.as_mut() {
                c.push_str(&t);
            } else {
                spans.push(Span {
                    text: t,
                    style,
                    link: links.last().cloned(),
                });
            }
        };
        match event {
            Event::Start(tag) => match tag {
                Tag::Heading { .. } | Tag::BlockQuote(_) | Tag::CodeBlock(_) | Tag::Item => {
                    if table.is_none() {
                        flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    }
                    match tag {
                        Tag::BlockQuote(_) => quote += 1,
                        Tag::CodeBlock(_) => code = Some(String::new()),
                        Tag::Item => {
                            marker = Some(match lists.last_mut() {
                                Some(Some(n)) => {
                                    let m = format!("{n}.");
                                    *n += 1;
                                    m
                                }
                                _ => ["•", "◦", "▪"][(lists.len().max(1) - 1) % 3].to_string(),
                            });
                        }
                        _ => {}
                    }
                }
                Tag::List(first) => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    lists.push(first);
                }
                Tag::FootnoteDefinition(label) => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    marker = Some(format!("[{label}]"));
                }
                Tag::Emphasis => italic += 1,
                Tag::Strong => bold += 1,
                Tag::Strikethrough => strike += 1,
                Tag::Link { dest_url, .. } => links.push(dest_url.to_string()),
                Tag::Image { .. } => image = Some(String::new()),
                Tag::Table(_) => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    table = Some(Vec::new());
                }
                Tag::TableHead => {
                    in_head = true;
                    row.clear();
                }
                Tag::TableRow => row.clear(),
                Tag::TableCell => spans.clear(),
                _ => {}
            },
            Event::End(end) => match end {
                TagEnd::Paragraph | TagEnd::Item if table.is_none() => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                }
                TagEnd::FootnoteDefinition => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                }
                TagEnd::Heading(level) => {
                    let level = crate::markdown::heading_level(level);
                    out.push(Block::Heading {
                        level,
                        spans: std::mem::take(&mut spans),
                    });
                }
                TagEnd::BlockQuote(_) => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    quote = quote.saturating_sub(1);
                }
                TagEnd::CodeBlock => {
                    if let Some(text) = code.take() {
                        out.push(Block::Code {
                            text: text.trim_end_matches('\n').to_string(),
                            depth: depth(&lists),
                        });
                    }
                }
                TagEnd::List(_) => {
                    flush(&mut spans, &mut marker, &mut out, depth(&lists), quote > 0);
                    lists.pop();
                }
                TagEnd::Emphasis => italic = italic.saturating_sub(1),
                TagEnd::Strong => bold = bold.saturating_sub(1),
                TagEnd::Strikethrough => strike = strike.saturating_sub(1),
                TagEnd::Link => {
                    links.pop();
                }
                TagEnd::Image => {
                    if let Some(alt) = image.take() {
                        let alt = if alt.trim().is_empty() {
                            "image".to_string()
                        } else {
                            alt
                        };
                        spans.push(Span {
                            text: format!("[image: {alt}]"),
                            style: Style {
                                italic: true,
                                gray: true,
                                ..Style::default()
                            },
                            link: None,
                        });
                    }
                }
                TagEnd::TableCell => row.push(std::mem::take(&mut spans)),
                TagEnd::TableHead | TagEnd::TableRow => {
                    if let Some(t) = table.as_mut() {
                        t.push((in_head, std::mem::take(&mut row)));
                    }
                    in_head = false;
                }
                TagEnd::Table => {
                    if let Some(rows) = table.take() {
                        out.push(Block::Table { rows });
                    }
                }
                _ => {}
            },
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => {
                text(t.to_string(), style, &mut spans);
            }
            Event::Code(t) => text(
                t.to_string(),
                Style {
                    code: true,
                    ..style
                },
                &mut spans,
            ),
            Event::SoftBreak => text(" ".into(), style, &mut spans),
            Event::HardBreak => text("\n".into(), style, &mut spans),
            Event::FootnoteReference(label) => text(format!("[{label}]"), style, &mut spans),
            Event::TaskListMarker(done) => {
                marker = Some(if done { "☑" } else { "☐" }.to_string());
            }
            Event::Rule => out.push(Block::Rule),
            _ => {}
        }
    }
    flush(&mut spans, &mut marker, &mut out, 0, false);
    out
}

pub(super) fn plain(spans: &[Span]) -> String {
    spans.iter().map(|s| s.text.as_str()).collect()
}

/// Every heading of the body: level and text.
pub(super) fn headings_of(body: &[Block]) -> Vec<(u8, String)> {
    body.iter()
        .filter_map(|b| match b {
            Block::Heading { level, spans } => Some((*level, plain(spans).trim().to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_blocks() {
        let b = blocks(
            "# Title\n\nSome *it* **bold** `code` [link](https://x.y).\n\n- one\n- two\n  1. inner\n\n> quoted\n\n```\nfn x() {}\n```\n\n---\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n",
        );
        assert!(matches!(&b[0], Block::Heading { level: 1, .. }));
        let Block::Para { spans, .. } = &b[1] else {
            panic!("{b:?}")
        };
        assert!(spans.iter().any(|s| s.style.italic && s.text == "it"));
        assert!(spans.iter().any(|s| s.style.bold && s.text == "bold"));
        assert!(spans.iter().any(|s| s.style.code && s.text == "code"));
        assert!(
            spans
                .iter()
                .any(|s| s.link.as_deref() == Some("https://x.y"))
        );
        let markers: Vec<(String, u8)> = b
            .iter()
            .filter_map(|x| match x {
                Block::Para {
                    marker: Some(m),
                    depth,
                    ..
                } => Some((m.clone(), *depth)),
                _ => None,
            })
            .collect();
        assert_eq!(
            markers,
            [
                ("•".into(), 1),
                ("•".into(), 1),
                ("1.".into(), 2),
                ("☑".into(), 1)
            ]
        );
        assert!(
            b.iter()
                .any(|x| matches!(x, Block::Para { quote: true, .. }))
        );
        assert!(b.contains(&Block::Code {
            text: "fn x() {}".into(),
            depth: 0
        }));
        assert!(b.contains(&Block::Rule));
        let Some(Block::Table { rows }) = b.iter().find(|x| matches!(x, Block::Table { .. }))
        else {
            panic!("{b:?}")
        };
        assert_eq!(rows.len(), 2);
        assert!(rows[0].0 && !rows[1].0);
        assert_eq!(plain(&rows[1].1[1]), "2");
    }
}
