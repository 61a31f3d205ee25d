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
}

/// Answers (or why there is none) found ahead of compilation, by a model,
/// asynchronously; looked up by the tag's place and question.
#[derive(Debug, Clone, Default)]
pub struct Answers(pub BTreeMap<(String, String), Result<Value, String>>);

impl Answers {
    pub fn insert(&mut self, tag: &AutoTag, answer: Result<Value, String>) {
        self.0
            .insert((tag.pointer.clone(), tag.question.clone()), answer);
    }

    pub fn contains(&self, tag: &AutoTag) -> bool {
        self.0
            .contains_key(&(tag.pointer.clone(), tag.question.clone()))
    }
}

impl AutoResolver for Answers {
    fn resolve(&self, tag: &AutoTag) -> Result<Value, String> {
        self.0
            .get(&(tag.pointer.clone(), tag.question.clone()))
            .cloned()
            .unwrap_or_else(|| Err("it has no answer".to_string()))
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
