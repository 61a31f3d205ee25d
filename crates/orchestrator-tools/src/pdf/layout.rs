//! Markdown laid out on A4 pages: its blocks ([`super::blocks`]) set line by line
//! in the embedded font with greedy word wrapping, and cut into pages with
//! a title block, a table of contents and page numbers.

use super::blocks::{Block, Span, Style, blocks, headings_of, plain};

pub(super) const PAGE_W: f32 = 595.0;
pub(super) const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 72.0;
const BOTTOM: f32 = MARGIN + 14.0;
const BODY: f32 = 11.0;
const CODE: f32 = 9.5;
const LEADING: f32 = 1.4;
const INDENT: f32 = 18.0;
/// Columns of a table shown; the others are named in a note.
const MAX_COLUMNS: usize = 16;
/// A document longer than this is refused.
pub(super) const MAX_PAGES: usize = 5000;

/// What is drawn on a page. `y` is a baseline (text) or a bottom edge,
/// from the page's bottom.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        style: Style,
        text: String,
    },
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        width: f32,
        gray: f32,
    },
    Fill {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        gray: f32,
    },
    Link {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        uri: String,
    },
}

/// A heading, where it landed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    pub level: u8,
    pub text: String,
    /// Page index, from 0.
    pub page: usize,
    /// Its top, from the page's bottom.
    pub top: f32,
}

/// How wide text is: the embedded font's advances; code in Courier
/// (600/1000 em) where it is printable ASCII.
pub(super) struct Metrics<'a> {
    face: ttf_parser::Face<'a>,
    per_em: f32,
}

impl<'a> Metrics<'a> {
    pub fn new(face: ttf_parser::Face<'a>) -> Self {
        let per_em = f32::from(face.units_per_em());
        Metrics { face, per_em }
    }

    /// Whether `c` is set in Courier when `style` is code.
    pub fn courier(c: char, style: Style) -> bool {
        style.code && (' '..='~').contains(&c)
    }

    /// The advance of `c` as laid out: inline code is set smaller.
    pub fn char_width(&self, c: char, style: Style, size: f32) -> f32 {
        let size = if style.code { size * CODE / BODY } else { size };
        self.set_width(c, style, size)
    }

    /// The advance of `c` set at exactly `size`.
    pub fn set_width(&self, c: char, style: Style, size: f32) -> f32 {
        if Self::courier(c, style) {
            return 0.6 * size;
        }
        let gid = self.face.glyph_index(c).unwrap_or(ttf_parser::GlyphId(0));
        let advance = self.face.glyph_hor_advance(gid).unwrap_or(0);
        f32::from(advance) / self.per_em * size
    }

    pub fn width(&self, text: &str, style: Style, size: f32) -> f32 {
        text.chars().map(|c| self.char_width(c, style, size)).sum()
    }
}

/// A piece of a line: text in one style.
#[derive(Debug, Clone)]
struct Run {
    text: String,
    style: Style,
    link: Option<String>,
    width: f32,
}

/// Breaks spans into lines at most `max` wide.
fn wrap(spans: &[Span], max: f32, size: f32, m: &Metrics) -> Vec<Vec<Run>> {
    wrap_with(spans, max, size, m, false)
}

/// [`wrap`]; `keep_spaces` keeps every space (code), else runs of spaces
/// are one and none starts a line.
fn wrap_with(spans: &[Span], max: f32, size: f32, m: &Metrics, keep_spaces: bool) -> Vec<Vec<Run>> {
    let mut lines: Vec<Vec<Run>> = vec![Vec::new()];
    let mut x = 0.0;
    let push = |lines: &mut Vec<Vec<Run>>, text: &str, span: &Span, width: f32| {
        let line = lines.last_mut().expect("a line");
        match line.last_mut() {
            Some(last) if last.style == span.style && last.link == span.link => {
                last.text.push_str(text);
                last.width += width;
            }
            _ => line.push(Run {
                text: text.to_string(),
                style: span.style,
                link: span.link.clone(),
                width,
            }),
        }
    };
    for span in spans {
        let mut rest = span.text.as_str();
        while !rest.is_empty() {
            // The next token: a newline, a run of spaces, or a word.
            let end = if rest.starts_with('\n') {
                1
            } else if rest.starts_with(char::is_whitespace) {
                rest.find(|c: char| !c.is_whitespace() || c == '\n')
                    .unwrap_or(rest.len())
            } else {
                rest.find(char::is_whitespace).unwrap_or(rest.len())
            };
            let (token, after) = rest.split_at(end.max(1).min(rest.len()));
            rest = after;
            if token == "\n" {
                lines.push(Vec::new());
                x = 0.0;
                continue;
            }
            let space = token.starts_with(char::is_whitespace);
            if space && keep_spaces && x + m.width(token, span.style, size) <= max {
                let w = m.width(token, span.style, size);
                push(&mut lines, token, span, w);
                x += w;
                continue;
            }
            if space {
                if x > 0.0 {
                    let w = m.width(" ", span.style, size);
                    push(&mut lines, " ", span, w);
                    x += w;
                }
                continue;
            }
            let w = m.width(token, span.style, size);
            if x + w > max && x > 0.0 {
                // Trailing spaces stay on the line they end.
                if let Some(last) = lines.last_mut().and_then(|l| l.last_mut()) {
                    let trimmed = last.text.trim_end().len();
                    let cut = last.text.len() - trimmed;
                    if cut > 0 {
                        last.width -= m.width(&last.text[trimmed..], last.style, size);
                        last.text.truncate(trimmed);
                    }
                }
                lines.push(Vec::new());
                x = 0.0;
            }
            if w <= max {
                push(&mut lines, token, span, w);
                x += w;
                continue;
            }
            // A word wider than the line is cut where it fills one.
            let mut piece = String::new();
            let mut pw = 0.0;
            for c in token.chars() {
                let cw = m.char_width(c, span.style, size);
                if x + pw + cw > max && !piece.is_empty() {
                    push(&mut lines, &piece, span, pw);
                    lines.push(Vec::new());
                    x = 0.0;
                    piece.clear();
                    pw = 0.0;
                }
                piece.push(c);
                pw += cw;
            }
            push(&mut lines, &piece, span, pw);
            x += pw;
        }
    }
    lines
}

/// Setting blocks onto pages.
struct Setter<'a> {
    m: &'a Metrics<'a>,
    pages: Vec<Vec<Op>>,
    /// The top of free space on the current page.
    y: f32,
    placed: Vec<Placed>,
}

impl<'a> Setter<'a> {
    fn new(m: &'a Metrics<'a>) -> Self {
        Setter {
            m,
            pages: vec![Vec::new()],
            y: PAGE_H - MARGIN,
            placed: Vec::new(),
        }
    }

    fn page(&mut self) -> &mut Vec<Op> {
        self.pages.last_mut().expect("a page")
    }

    fn at_top(&self) -> bool {
        self.y >= PAGE_H - MARGIN - 0.5
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = PAGE_H - MARGIN;
    }

    /// Room for `h` more, or a new page.
    fn need(&mut self, h: f32) {
        if self.y - h < BOTTOM && !self.at_top() {
            self.new_page();
        }
    }

    fn gap(&mut self, h: f32) {
        if !self.at_top() {
            self.y -= h;
        }
    }

    /// Sets one line of runs with its left edge at `x`; a line with a
    /// link gets a link area.
    fn line(&mut self, runs: &[Run], x: f32, size: f32) {
        let lh = size * LEADING;
        self.need(lh);
        let base = self.y - size;
        let mut cx = x;
        for run in runs {
            if !run.text.is_empty() {
                let size = if run.style.code {
                    size * CODE / BODY
                } else {
                    size
                };
                self.page().push(Op::Text {
                    x: cx,
                    y: base,
                    size,
                    style: run.style,
                    text: run.text.clone(),
                });
                if run.style.strike {
                    let y = base + size * 0.3;
                    self.page().push(Op::Line {
                        x1: cx,
                        y1: y,
                        x2: cx + run.width,
                        y2: y,
                        width: 0.6,
                        gray: 0.0,
                    });
                }
                if let Some(uri) = &run.link {
                    let uri = uri.clone();
                    self.page().push(Op::Link {
                        x: cx,
                        y: base - size * 0.25,
                        w: run.width,
                        h: size * 1.2,
                        uri,
                    });
                }
            }
            cx += run.width;
        }
        self.y -= lh;
    }

    fn paragraph(&mut self, spans: &[Span], x: f32, width: f32, size: f32) -> usize {
        let lines = wrap(spans, width, size, self.m);
        for l in &lines {
            self.line(l, x, size);
        }
        lines.len()
    }

    fn block(&mut self, block: &Block) {
        let width = PAGE_W - 2.0 * MARGIN;
        match block {
            Block::Heading { level, spans } => {
                let size = match level {
                    1 => 20.0,
                    2 => 16.0,
                    3 => 13.5,
                    _ => 12.0,
                };
                self.gap(size * 0.8);
                // A heading is kept with at least two lines after it.
                self.need(size * LEADING + 2.0 * BODY * LEADING);
                let spans: Vec<Span> = spans
                    .iter()
                    .map(|s| Span {
                        style: Style {
                            bold: true,
                            ..s.style
                        },
                        ..s.clone()
                    })
                    .collect();
                self.placed.push(Placed {
                    level: *level,
                    text: plain(&spans).trim().to_string(),
                    page: self.pages.len() - 1,
                    top: self.y,
                });
                self.paragraph(&spans, MARGIN, width, size);
                if *level <= 2 {
                    let y = self.y + size * 0.15;
                    self.page().push(Op::Line {
                        x1: MARGIN,
                        y1: y,
                        x2: PAGE_W - MARGIN,
                        y2: y,
                        width: 0.5,
                        gray: 0.75,
                    });
                }
                self.y -= size * 0.3;
            }
            Block::Para {
                spans,
                depth,
                quote,
                marker,
            } => {
                let left = MARGIN + f32::from(*depth) * INDENT + if *quote { 14.0 } else { 0.0 };
                let top = self.y;
                let first_page = self.pages.len();
                if let Some(marker) = marker {
                    self.need(BODY * LEADING);
                    let style = Style::default();
                    let w = self.m.width(marker, style, BODY);
                    let y = self.y - BODY;
                    self.page().push(Op::Text {
                        x: left - w - 5.0,
                        y,
                        size: BODY,
                        style,
                        text: marker.clone(),
                    });
                }
                self.paragraph(spans, left, PAGE_W - MARGIN - left, BODY);
                if *quote && self.pages.len() == first_page {
                    let x = left - 9.0;
                    let y2 = self.y + 2.0;
                    self.page().push(Op::Line {
                        x1: x,
                        y1: top,
                        x2: x,
                        y2,
                        width: 2.0,
                        gray: 0.8,
                    });
                }
                self.y -= BODY * 0.5;
            }
            Block::Code { text, depth } => {
                let left = MARGIN + f32::from(*depth) * INDENT;
                let style = Style {
                    code: true,
                    ..Style::default()
                };
                self.gap(2.0);
                for raw in text.split('\n') {
                    let span = Span {
                        text: raw.replace('\t', "    "),
                        style,
                        link: None,
                    };
                    for l in wrap_with(
                        std::slice::from_ref(&span),
                        PAGE_W - MARGIN - left - 12.0,
                        BODY,
                        self.m,
                        true,
                    ) {
                        let lh = BODY * LEADING;
                        self.need(lh);
                        let y = self.y - lh;
                        self.page().push(Op::Fill {
                            x: left,
                            y,
                            w: PAGE_W - MARGIN - left,
                            h: lh,
                            gray: 0.95,
                        });
                        self.line(&l, left + 6.0, BODY);
                    }
                }
                self.y -= BODY * 0.6;
            }
            Block::Rule => {
                self.gap(BODY * 0.5);
                self.need(BODY);
                let y = self.y - BODY * 0.5;
                self.page().push(Op::Line {
                    x1: MARGIN,
                    y1: y,
                    x2: PAGE_W - MARGIN,
                    y2: y,
                    width: 0.7,
                    gray: 0.6,
                });
                self.y -= BODY * 1.2;
            }
            Block::Table { rows } => self.table(rows),
        }
    }

    fn table(&mut self, rows: &[(bool, Vec<Vec<Span>>)]) {
        let all = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0).max(1);
        // A table wider than the page can hold shows its first columns.
        let cols = all.min(MAX_COLUMNS);
        let width = PAGE_W - 2.0 * MARGIN;
        let colw = width / cols as f32;
        let size = BODY * 0.9;
        let lh = size * LEADING;
        let most = ((PAGE_H - MARGIN - BOTTOM - 6.0) / lh).floor().max(1.0) as usize;
        self.gap(4.0);
        for (head, cells) in rows {
            let wrapped: Vec<Vec<Vec<Run>>> = (0..cols)
                .map(|i| {
                    let spans: Vec<Span> = cells
                        .get(i)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| Span {
                            style: Style {
                                bold: s.style.bold || *head,
                                ..s.style
                            },
                            ..s
                        })
                        .collect();
                    let mut lines = wrap(&spans, colw - 8.0, size, self.m);
                    // A row never outgrows a page: what does not fit is cut.
                    lines.truncate(most);
                    lines
                })
                .collect();
            let n = wrapped.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let h = n as f32 * lh + 6.0;
            self.need(h);
            let top = self.y;
            if *head {
                self.page().push(Op::Fill {
                    x: MARGIN,
                    y: top - h,
                    w: width,
                    h,
                    gray: 0.92,
                });
            }
            for (i, lines) in wrapped.iter().enumerate() {
                self.y = top - 3.0;
                for l in lines {
                    self.line(l, MARGIN + i as f32 * colw + 4.0, size);
                }
            }
            self.y = top - h;
            let grid = |s: &mut Self, x1: f32, y1: f32, x2: f32, y2: f32| {
                s.page().push(Op::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    width: 0.5,
                    gray: 0.6,
                });
            };
            grid(self, MARGIN, top, PAGE_W - MARGIN, top);
            grid(self, MARGIN, top - h, PAGE_W - MARGIN, top - h);
            for i in 0..=cols {
                let x = MARGIN + i as f32 * colw;
                grid(self, x, top, x, top - h);
            }
        }
        if all > cols {
            let note = Span {
                text: format!("({} more columns are not shown)", all - cols),
                style: Style {
                    italic: true,
                    gray: true,
                    ..Style::default()
                },
                link: None,
            };
            self.paragraph(&[note], MARGIN, width, size);
        }
        self.y -= BODY * 0.6;
    }
}

/// What goes before the body.
#[derive(Debug, Clone, Default)]
pub(super) struct Front {
    pub title: Option<String>,
    pub author: Option<String>,
    pub date: Option<String>,
    pub toc: bool,
}

/// The laid-out document.
pub(super) struct Laid {
    pub pages: Vec<Vec<Op>>,
    pub headings: Vec<Placed>,
}

/// Lays out `markdown` with `front` before it; `Err` when it would take
/// more than [`MAX_PAGES`] pages.
pub(super) fn lay_out(markdown: &str, front: &Front, m: &Metrics) -> Result<Laid, usize> {
    let body = blocks(markdown);
    // Twice when there is a table of contents: first to learn the pages
    // headings land on (the contents take as many lines either way).
    let first = set(&body, front, None, m)?;
    if !front.toc || first.headings.is_empty() {
        return Ok(first);
    }
    let numbers: Vec<usize> = first.headings.iter().map(|h| h.page + 1).collect();
    set(&body, front, Some(&numbers), m)
}

fn set(
    body: &[Block],
    front: &Front,
    numbers: Option<&[usize]>,
    m: &Metrics,
) -> Result<Laid, usize> {
    let mut s = Setter::new(m);
    let width = PAGE_W - 2.0 * MARGIN;
    let centered = |s: &mut Setter, text: &str, size: f32, style: Style| {
        for l in wrap(
            &[Span {
                text: text.to_string(),
                style,
                link: None,
            }],
            width,
            size,
            s.m,
        ) {
            let w: f32 = l.iter().map(|r| r.width).sum();
            s.line(&l, MARGIN + (width - w) / 2.0, size);
        }
    };
    if let Some(title) = &front.title {
        centered(
            &mut s,
            title,
            22.0,
            Style {
                bold: true,
                ..Style::default()
            },
        );
        s.y -= 6.0;
        if let Some(author) = &front.author {
            centered(&mut s, author, 12.0, Style::default());
        }
        if let Some(date) = &front.date {
            centered(
                &mut s,
                date,
                11.0,
                Style {
                    gray: true,
                    ..Style::default()
                },
            );
        }
        s.y -= 18.0;
    }
    // The contents list headings of levels 1 and 2, as the seed's did.
    let headings = headings_of(body);
    if front.toc && headings.iter().any(|(level, _)| *level <= 2) {
        s.paragraph(
            &[Span {
                text: "Contents".into(),
                style: Style {
                    bold: true,
                    ..Style::default()
                },
                link: None,
            }],
            MARGIN,
            width,
            14.0,
        );
        s.y -= 4.0;
        for (i, (level, text)) in headings.iter().enumerate() {
            if *level > 2 {
                continue;
            }
            let page = numbers
                .and_then(|n| n.get(i))
                .map_or_else(|| "0".to_string(), usize::to_string);
            let left = MARGIN + f32::from(level - 1) * INDENT;
            let style = Style::default();
            let pw = m.width(&page, style, BODY);
            let room = PAGE_W - MARGIN - left - pw - 12.0;
            let mut shown = String::new();
            let mut w = 0.0;
            for c in text.chars() {
                let cw = m.char_width(c, style, BODY);
                if w + cw > room {
                    shown.push('…');
                    break;
                }
                shown.push(c);
                w += cw;
            }
            s.need(BODY * LEADING);
            let y = s.y - BODY;
            s.page().push(Op::Text {
                x: PAGE_W - MARGIN - pw,
                y,
                size: BODY,
                style,
                text: page,
            });
            s.line(
                &[Run {
                    text: shown,
                    style,
                    link: None,
                    width: w,
                }],
                left,
                BODY,
            );
        }
        s.y -= BODY;
    }
    for block in body {
        s.block(block);
        if s.pages.len() > MAX_PAGES {
            return Err(s.pages.len());
        }
    }
    // Page numbers.
    for (i, page) in s.pages.iter_mut().enumerate() {
        let text = format!("{}", i + 1);
        let w = m.width(&text, Style::default(), 9.0);
        page.push(Op::Text {
            x: (PAGE_W - w) / 2.0,
            y: MARGIN / 2.0,
            size: 9.0,
            style: Style {
                gray: true,
                ..Style::default()
            },
            text,
        });
    }
    Ok(Laid {
        pages: s.pages,
        headings: s.placed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics<'static> {
        Metrics::new(ttf_parser::Face::parse(crate::fonts::DEJAVU_SANS, 0).expect("font"))
    }

    #[test]
    fn lines_wrap_within_the_width_and_long_words_are_cut() {
        let m = metrics();
        let span = Span {
            text: "word ".repeat(60) + &"x".repeat(300),
            style: Style::default(),
            link: None,
        };
        let lines = wrap(&[span], 200.0, BODY, &m);
        assert!(lines.len() > 5);
        for l in &lines {
            let w: f32 = l.iter().map(|r| r.width).sum();
            assert!(w <= 200.0 + 0.01, "{w}");
        }
    }

    #[test]
    fn a_long_document_takes_pages_and_the_contents_know_them() {
        let m = metrics();
        let mut md = String::new();
        for i in 0..30 {
            md.push_str(&format!(
                "## Part {i}\n\n{}\n\n",
                "Lorem ipsum dolor sit amet. ".repeat(40)
            ));
        }
        let front = Front {
            title: Some("T".into()),
            toc: true,
            ..Front::default()
        };
        let laid = lay_out(&md, &front, &m).expect("laid");
        assert!(laid.pages.len() > 10, "{}", laid.pages.len());
        assert_eq!(laid.headings.len(), 30);
        assert!(laid.headings.last().map(|h| h.page) > laid.headings.first().map(|h| h.page));
        // The contents show each heading's page number.
        let last = laid.headings.last().expect("heading");
        let shown = (last.page + 1).to_string();
        assert!(
            laid.pages[0]
                .iter()
                .chain(laid.pages.get(1).into_iter().flatten())
                .any(|op| matches!(op, Op::Text { text, .. } if *text == shown))
        );
    }

    #[test]
    fn a_table_wider_than_the_page_shows_its_first_columns() {
        let m = metrics();
        let header = format!(
            "|{}\n|{}\n|{}\n",
            " a |".repeat(5000),
            "---|".repeat(5000),
            " 1 |".repeat(5000)
        );
        let laid = lay_out(&header, &Front::default(), &m).expect("laid");
        let texts = laid
            .pages
            .iter()
            .flatten()
            .filter(|op| matches!(op, Op::Text { .. }))
            .count();
        assert!(texts < 100, "{texts}");
        assert!(
            laid.pages[0].iter().any(
                |op| matches!(op, Op::Text { text, .. } if text.contains("4984 more columns"))
            )
        );
    }

    #[test]
    fn deep_nesting_stays_on_the_page() {
        let m = metrics();
        let md = "> ".repeat(500) + "deep\n\n" + &"- ".repeat(500) + "deep";
        let laid = lay_out(&md, &Front::default(), &m).expect("laid");
        for op in laid.pages.iter().flatten() {
            if let Op::Text { x, .. } = op {
                assert!(*x < PAGE_W - MARGIN, "{x}");
            }
        }
    }
}
