//! Laid-out pages to PDF bytes: the embedded font subset to the glyphs
//! used (a CID font with its widths and a ToUnicode map, so text can be
//! searched and copied), Courier for code, compressed content streams, link
//! annotations, bookmarks for the headings and the document's information.

use std::collections::BTreeMap;

use pdf_writer::types::{
    ActionType, AnnotationType, CidFontType, FontFlags, SystemInfo, TextRenderingMode,
};
use pdf_writer::{Content, Filter, Name, Pdf, Rect, Ref, Str, TextStr};

use super::blocks::Style;
use super::layout::{Metrics, Op, PAGE_H, PAGE_W, Placed};

const SANS: Name = Name(b"F1");
const MONO: Name = Name(b"F2");

/// What the document says about itself.
#[derive(Debug, Clone, Default)]
pub(super) struct Info {
    pub title: Option<String>,
    pub author: Option<String>,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

fn compress(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
}

fn color(style: Style) -> (f32, f32, f32) {
    if style.link {
        (0.05, 0.25, 0.65)
    } else if style.gray {
        (0.35, 0.35, 0.35)
    } else {
        (0.0, 0.0, 0.0)
    }
}

/// Writes the PDF. `font` is the embedded font's file.
pub(super) fn write(
    pages: &[Vec<Op>],
    headings: &[Placed],
    info: &Info,
    font: &[u8],
    m: &Metrics,
) -> Result<Vec<u8>, String> {
    let face =
        ttf_parser::Face::parse(font, 0).map_err(|e| format!("the font cannot be read: {e}"))?;
    let per_em = f32::from(face.units_per_em());
    // The glyphs used, renumbered from 1 (0 stays the missing glyph).
    let mut remapper = subsetter::GlyphRemapper::new();
    let mut unicode: BTreeMap<u16, char> = BTreeMap::new();
    for op in pages.iter().flatten() {
        if let Op::Text { text, style, .. } = op {
            for c in text.chars().filter(|c| !Metrics::courier(*c, *style)) {
                let old = face.glyph_index(c).map_or(0, |g| g.0);
                let new = remapper.remap(old);
                if old != 0 {
                    unicode.entry(new).or_insert(c);
                }
            }
        }
    }
    let subset = subsetter::subset(font, 0, &remapper)
        .map_err(|e| format!("the font cannot be subset: {e}"))?;

    let mut next = 1;
    let mut id = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let catalog = id();
    let tree = id();
    let outline = id();
    let info_id = id();
    let (type0, cid, descriptor, file, cmap, mono) = (id(), id(), id(), id(), id(), id());
    let page_ids: Vec<(Ref, Ref)> = pages.iter().map(|_| (id(), id())).collect();

    let mut pdf = Pdf::new();
    {
        let mut cat = pdf.catalog(catalog);
        cat.pages(tree);
        if !headings.is_empty() {
            cat.outlines(outline);
        }
    }
    pdf.pages(tree)
        .kids(page_ids.iter().map(|(p, _)| *p))
        .count(i32::try_from(pages.len()).unwrap_or(i32::MAX));

    // Fonts.
    let base = Name(b"AAAAAA+DejaVuSans");
    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };
    pdf.type0_font(type0)
        .base_font(base)
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid)
        .to_unicode(cmap);
    {
        let mut c = pdf.cid_font(cid);
        c.subtype(CidFontType::Type2)
            .base_font(base)
            .system_info(system)
            .font_descriptor(descriptor)
            .default_width(0.0)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        let widths: Vec<f32> = remapper
            .remapped_gids()
            .map(|old| {
                f32::from(
                    face.glyph_hor_advance(ttf_parser::GlyphId(old))
                        .unwrap_or(0),
                ) * 1000.0
                    / per_em
            })
            .collect();
        c.widths().consecutive(0, widths);
    }
    let scale = |v: i16| f32::from(v) * 1000.0 / per_em;
    let bbox = face.global_bounding_box();
    pdf.font_descriptor(descriptor)
        .name(base)
        .flags(FontFlags::NON_SYMBOLIC)
        .bbox(Rect::new(
            scale(bbox.x_min),
            scale(bbox.y_min),
            scale(bbox.x_max),
            scale(bbox.y_max),
        ))
        .italic_angle(0.0)
        .ascent(scale(face.ascender()))
        .descent(scale(face.descender()))
        .cap_height(scale(face.capital_height().unwrap_or(face.ascender())))
        .stem_v(80.0)
        .font_file2(file);
    let packed = compress(&subset);
    pdf.stream(file, &packed).filter(Filter::FlateDecode);
    let mut map = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), system);
    for (gid, c) in &unicode {
        map.pair(*gid, *c);
    }
    pdf.cmap(cmap, &map.finish());
    pdf.type1_font(mono)
        .base_font(Name(b"Courier"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));

    // Pages.
    let mut annotations_next = next;
    for ((page_id, content_id), ops) in page_ids.iter().zip(pages) {
        let mut content = Content::new();
        let mut links = Vec::new();
        for op in ops {
            match op {
                Op::Fill { x, y, w, h, gray } => {
                    content.set_fill_rgb(*gray, *gray, *gray);
                    content.rect(*x, *y, *w, *h).fill_nonzero();
                }
                Op::Line {
                    x1,
                    y1,
                    x2,
                    y2,
                    width,
                    gray,
                } => {
                    content.set_stroke_rgb(*gray, *gray, *gray);
                    content.set_line_width(*width);
                    content.move_to(*x1, *y1).line_to(*x2, *y2).stroke();
                }
                Op::Link { x, y, w, h, uri } => {
                    links.push((Rect::new(*x, *y, x + w, y + h), uri.clone()))
                }
                Op::Text {
                    x,
                    y,
                    size,
                    style,
                    text,
                } => {
                    let (r, g, b) = color(*style);
                    content.begin_text();
                    content.set_fill_rgb(r, g, b);
                    if style.bold {
                        // Bold is drawn: the outline stroked as well as filled.
                        content.set_text_rendering_mode(TextRenderingMode::FillStroke);
                        content.set_stroke_rgb(r, g, b);
                        content.set_line_width(size * 0.035);
                    } else {
                        content.set_text_rendering_mode(TextRenderingMode::Fill);
                    }
                    let skew = if style.italic { 0.2 } else { 0.0 };
                    let mut cx = *x;
                    // Runs of one font each.
                    let mut chars = text.chars().peekable();
                    while let Some(&first) = chars.peek() {
                        let courier = Metrics::courier(first, *style);
                        let mut bytes = Vec::new();
                        let mut width = 0.0;
                        while let Some(&c) = chars.peek() {
                            if Metrics::courier(c, *style) != courier {
                                break;
                            }
                            chars.next();
                            width += m.set_width(c, *style, *size);
                            if courier {
                                bytes.push(c as u8);
                            } else {
                                let old = face.glyph_index(c).map_or(0, |g| g.0);
                                let new = remapper.get(old).unwrap_or(0);
                                bytes.extend_from_slice(&new.to_be_bytes());
                            }
                        }
                        content.set_font(if courier { MONO } else { SANS }, *size);
                        content.set_text_matrix([1.0, 0.0, skew, 1.0, cx, *y]);
                        content.show(Str(&bytes));
                        cx += width;
                    }
                    content.end_text();
                }
            }
        }
        let annotation_ids: Vec<Ref> = links
            .iter()
            .map(|_| {
                let r = Ref::new(annotations_next);
                annotations_next += 1;
                r
            })
            .collect();
        {
            let mut page = pdf.page(*page_id);
            page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
            page.parent(tree);
            page.contents(*content_id);
            if !annotation_ids.is_empty() {
                page.annotations(annotation_ids.iter().copied());
            }
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(SANS, type0);
            fonts.pair(MONO, mono);
        }
        for (aid, (rect, uri)) in annotation_ids.iter().zip(&links) {
            let mut a = pdf.annotation(*aid);
            a.subtype(AnnotationType::Link)
                .rect(*rect)
                .border(0.0, 0.0, 0.0, None);
            a.action()
                .action_type(ActionType::Uri)
                .uri(Str(uri.as_bytes()));
        }
        let packed = compress(&content.finish());
        pdf.stream(*content_id, &packed).filter(Filter::FlateDecode);
    }

    // Bookmarks: every heading, flat, in order.
    if !headings.is_empty() {
        let items: Vec<Ref> = headings
            .iter()
            .map(|_| {
                let r = Ref::new(annotations_next);
                annotations_next += 1;
                r
            })
            .collect();
        pdf.outline(outline)
            .first(items[0])
            .last(items[items.len() - 1])
            .count(i32::try_from(items.len()).unwrap_or(i32::MAX));
        for (i, (item, h)) in items.iter().zip(headings).enumerate() {
            let mut o = pdf.outline_item(*item);
            o.title(TextStr(&h.text)).parent(outline);
            if i > 0 {
                o.prev(items[i - 1]);
            }
            if let Some(n) = items.get(i + 1) {
                o.next(*n);
            }
            if let Some((page, _)) = page_ids.get(h.page) {
                o.dest().page(*page).xyz(0.0, h.top, None);
            }
        }
    }

    {
        let mut d = pdf.document_info(info_id);
        if let Some(t) = &info.title {
            d.title(TextStr(t));
        }
        if let Some(a) = &info.author {
            d.author(TextStr(a));
        }
        d.creator(TextStr("Orchestrator pdf-compiler"));
        if let Some(t) = info.created {
            use chrono::{Datelike, Timelike};
            d.creation_date(
                pdf_writer::Date::new(u16::try_from(t.year()).unwrap_or(2000))
                    .month(t.month() as u8)
                    .day(t.day() as u8)
                    .hour(t.hour() as u8)
                    .minute(t.minute() as u8)
                    .second(t.second() as u8),
            );
        }
    }
    Ok(pdf.finish())
}
