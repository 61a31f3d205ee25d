//! `<AUTO>` tags: values a model fills in when the pipeline is compiled.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One `<AUTO …>question</AUTO>` found in a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTag {
    /// The step it belongs to, if any.
    pub step: Option<String>,
    /// JSON pointer to the value holding the tag.
    pub pointer: String,
    /// The text between the tags.
    pub question: String,
    /// Attributes such as `type="integer"` or `task="analyze"`.
    pub attributes: BTreeMap<String, String>,
    /// Whether the tag is the whole value (then the answer may be typed).
    pub whole_value: bool,
}

/// Answers AUTO tags. The engine implements this with a model; the compiler
/// stays pure and only calls it.
pub trait AutoResolver {
    /// Returns the value to put in place of the tag, or why it could not.
    fn resolve(&self, tag: &AutoTag) -> Result<Value, String>;

    /// Whether tags are left in place, unanswered and unreported: the
    /// pipeline is checked now and its tags answered later (see [`Deferred`]).
    fn defers(&self) -> bool {
        false
    }

    /// Whether this tag stays in the plan, to be answered when its step
    /// runs (its question reads what earlier steps produce).
    fn at_run_time(&self, _tag: &AutoTag) -> bool {
        false
    }
}

/// Leaves every tag as it is: compiling with it checks everything but the
/// tags, which are answered later (the engine's resolving phase). Problems
/// at a tag's place may go away once it is answered; see [`Deferred::at_tag`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Deferred;

impl AutoResolver for Deferred {
    fn resolve(&self, _tag: &AutoTag) -> Result<Value, String> {
        Err("it is answered later".to_string())
    }

    fn defers(&self) -> bool {
        true
    }
}

impl Deferred {
    /// Whether a problem lies at (or inside) the value of one of `tags`.
    pub fn at_tag(tags: &[AutoTag], pointer: Option<&str>) -> bool {
        let Some(pointer) = pointer else { return false };
        tags.iter().any(|t| {
            pointer == t.pointer
                || pointer
                    .strip_prefix(t.pointer.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Answers (or why there is none) found ahead of compilation, by a model,
/// asynchronously; looked up by the tag's place and question. Tags marked
/// with [`Answers::later`] stay in the plan for their step to answer.
#[derive(Debug, Clone, Default)]
pub struct Answers(
    pub BTreeMap<(String, String), Result<Value, String>>,
    pub std::collections::BTreeSet<(String, String)>,
);

impl Answers {
    pub fn insert(&mut self, tag: &AutoTag, answer: Result<Value, String>) {
        self.0
            .insert((tag.pointer.clone(), tag.question.clone()), answer);
    }

    /// Leaves a tag for its step to answer when it runs.
    pub fn later(&mut self, tag: &AutoTag) {
        self.1.insert((tag.pointer.clone(), tag.question.clone()));
    }

    pub fn contains(&self, tag: &AutoTag) -> bool {
        let key = (tag.pointer.clone(), tag.question.clone());
        self.0.contains_key(&key) || self.1.contains(&key)
    }
}

impl AutoResolver for Answers {
    fn resolve(&self, tag: &AutoTag) -> Result<Value, String> {
        self.0
            .get(&(tag.pointer.clone(), tag.question.clone()))
            .cloned()
            .unwrap_or_else(|| Err("it has no answer".to_string()))
    }

    fn at_run_time(&self, tag: &AutoTag) -> bool {
        self.1
            .contains(&(tag.pointer.clone(), tag.question.clone()))
    }
}

/// Whether a tag's question reads one of `steps` (`{{ step.result }}`,
/// `{{ step }}`): it can only be asked once those have run.
pub fn reads_steps(tag: &AutoTag, steps: &std::collections::BTreeSet<String>) -> bool {
    crate::template::is_template(&tag.question)
        && crate::template::referenced_names(&tag.question)
            .map(|names| names.iter().any(|n| steps.contains(n)))
            .unwrap_or(false)
}

/// Whether a tag sits where its step answers it when it runs: in a step's
/// `parameters` or its `condition`.
pub fn answerable_by_step(tag: &AutoTag) -> bool {
    let mut parts = tag.pointer.split('/').skip(1);
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (
            Some("steps"),
            Some(_),
            Some("parameters" | "condition" | "if")
        )
    )
}

/// Quotes a one-line `<AUTO>` tag written as a plain YAML value that YAML
/// would misread: with `": "` inside (a mapping) or `" #"` (a comment). The
/// seed's reader accepts those (it hides tags from YAML); here the value
/// becomes a single-quoted scalar on the same line, so lines stay where
/// they were. Anything else is left alone.
pub fn quote_plain_tags(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("</AUTO>") {
        return std::borrow::Cow::Borrowed(text);
    }
    static LEAD: OnceLock<Regex> = OnceLock::new();
    let lead = LEAD.get_or_init(|| {
        Regex::new(r"^(\s*(?:-\s+)?(?:[A-Za-z0-9_.$-]+:\s+)?)(.*?)\s*$").expect("valid regex")
    });
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b) => (b, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        let quoted = lead.captures(body).and_then(|c| {
            let (prefix, value) = (c.get(1)?.as_str(), c.get(2)?.as_str());
            let misread = value.starts_with("<AUTO")
                && value.ends_with("</AUTO>")
                && value.matches("<AUTO").count() == 1
                && (value.contains(": ") || value.contains(" #"));
            misread.then(|| format!("{prefix}'{}'", value.replace('\'', "''")))
        });
        match quoted {
            Some(q) => {
                changed = true;
                out.push_str(&q);
            }
            None => out.push_str(body),
        }
        out.push_str(end);
    }
    if changed {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn tag_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?s)<AUTO((?:\s+[A-Za-z_][A-Za-z0-9_-]*\s*=\s*"[^"]*")*)\s*>(.*?)</AUTO>"#)
            .unwrap_or_else(|e| unreachable!("static regex: {e}"))
    })
}

fn attr_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"]*)""#)
            .unwrap_or_else(|e| unreachable!("static regex: {e}"))
    })
}

/// Whether a string holds an AUTO tag.
pub fn contains_tag(text: &str) -> bool {
    text.contains("<AUTO")
}

/// Finds the tags in one string.
pub fn find_tags(text: &str, step: Option<&str>, pointer: &str) -> Vec<AutoTag> {
    let whole = |m: &regex::Match<'_>| m.start() == 0 && m.end() == text.len();
    tag_regex()
        .captures_iter(text.trim())
        .filter_map(|caps| {
            let all = caps.get(0)?;
            let attributes = attr_regex()
                .captures_iter(caps.get(1).map_or("", |m| m.as_str()))
                .filter_map(|a| {
                    Some((
                        a.get(1)?.as_str().to_string(),
                        a.get(2)?.as_str().to_string(),
                    ))
                })
                .collect();
            Some(AutoTag {
                step: step.map(str::to_string),
                pointer: pointer.to_string(),
                question: caps.get(2)?.as_str().trim().to_string(),
                attributes,
                whole_value: whole(&all) && text.trim().len() == text.len(),
            })
        })
        .collect()
}

/// Replaces every tag in `text` using `resolver`. A whole-value tag becomes the
/// resolver's value as it is (typed by its `type` attribute); embedded tags
/// are replaced by text.
pub fn resolve_string(
    text: &str,
    step: Option<&str>,
    pointer: &str,
    resolver: &dyn AutoResolver,
) -> Result<Value, Box<(AutoTag, String)>> {
    let tags = find_tags(text, step, pointer);
    if tags.len() == 1 && tags[0].whole_value {
        let tag = &tags[0];
        let value = resolver
            .resolve(tag)
            .map_err(|e| Box::new((tag.clone(), e)))?;
        return coerce(value, tag.attributes.get("type").map(String::as_str))
            .map_err(|e| Box::new((tag.clone(), e)));
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (caps, tag) in tag_regex().captures_iter(text).zip(tags) {
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&text[last..m.start()]);
        let value = resolver
            .resolve(&tag)
            .map_err(|e| Box::new((tag.clone(), e)))?;
        match value {
            Value::String(s) => out.push_str(&s),
            other => out.push_str(&other.to_string()),
        }
        last = m.end();
    }
    out.push_str(&text[last..]);
    Ok(Value::String(out))
}

fn coerce(value: Value, kind: Option<&str>) -> Result<Value, String> {
    let text = match &value {
        Value::String(s) => s.trim().to_string(),
        _ => return Ok(value),
    };
    let parsed = match kind {
        Some("integer" | "int") => text.parse::<i64>().ok().map(Value::from),
        Some("number" | "float") => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some("boolean" | "bool") => {
            crate::template::truthy(&Value::String(text.clone())).map(Value::Bool)
        }
        Some("array" | "list" | "object") => serde_json::from_str(&text).ok(),
        Some(_) | None => return Ok(value),
    };
    parsed.ok_or_else(|| {
        format!(
            "the answer '{text}' is not a valid {}",
            kind.unwrap_or("value")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl AutoResolver for Fixed {
        fn resolve(&self, tag: &AutoTag) -> Result<Value, String> {
            Ok(Value::String(if tag.attributes.contains_key("type") {
                "7".into()
            } else {
                format!("[{}]", tag.question)
            }))
        }
    }

    #[test]
    fn plain_tags_that_yaml_would_misread_are_quoted() {
        let text = "steps:\n  - id: a\n    parameters:\n      pick: <AUTO>choose: \"x\" or 'y'</AUTO>\n      kept: <AUTO>plain</AUTO>\n      note: '<AUTO>a: b</AUTO>'\n      - <AUTO>list: item</AUTO>\r\n";
        assert_eq!(
            quote_plain_tags(text),
            "steps:\n  - id: a\n    parameters:\n      pick: '<AUTO>choose: \"x\" or ''y''</AUTO>'\n      kept: <AUTO>plain</AUTO>\n      note: '<AUTO>a: b</AUTO>'\n      - '<AUTO>list: item</AUTO>'\r\n"
        );
        assert!(matches!(
            quote_plain_tags("a: b\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn tags_are_found_with_attributes() {
        let tags = find_tags(
            r#"<AUTO type="integer" task="count">how many?</AUTO>"#,
            Some("s"),
            "/p",
        );
        assert_eq!(tags.len(), 1);
        assert!(tags[0].whole_value);
        assert_eq!(
            tags[0].attributes.get("type").map(String::as_str),
            Some("integer")
        );
        assert_eq!(tags[0].question, "how many?");
    }

    #[test]
    fn whole_tags_become_typed_and_embedded_tags_text() {
        let v = resolve_string(r#"<AUTO type="integer">n</AUTO>"#, None, "", &Fixed).ok();
        assert_eq!(v, Some(serde_json::json!(7)));
        let v = resolve_string("a <AUTO>x</AUTO> b <AUTO>y</AUTO>", None, "", &Fixed).ok();
        assert_eq!(v, Some(serde_json::json!("a [x] b [y]")));
    }
}
