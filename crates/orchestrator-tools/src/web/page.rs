//! Reading a page: parsed with a browser-grade HTML parser (deep nesting
//! cut first), its readable text, title, metadata, links and images.

use serde_json::{Map, Value, json};

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
