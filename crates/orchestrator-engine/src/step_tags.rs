//! `<AUTO>` tags answered by their step when it runs: those whose question
//! reads what earlier steps produced (`<AUTO>Given {{ analyze.result }},
//! which format?</AUTO>` in `parameters` or `condition`). The resolving
//! phase leaves them in the plan; the step renders them with everything
//! else, then asks a model each rendered question before its tool runs.

use std::sync::Arc;

use orchestrator_core::auto::{self, AutoResolver, AutoTag};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{Inner, models};

/// Answers collected for one step (the rendered text is the question).
struct Asked(std::collections::HashMap<String, Result<Value, String>>);

impl AutoResolver for Asked {
    fn resolve(&self, tag: &AutoTag) -> Result<Value, String> {
        self.0
            .get(&tag.question)
            .cloned()
            .unwrap_or_else(|| Err("it has no answer".to_string()))
    }
}

/// Asks a model every tag in `text` (already rendered) and puts the
/// answers in place (typed when the tag is the whole value).
pub(crate) async fn answer_in_text(
    inner: &Arc<Inner>,
    execution_id: &str,
    step_id: &str,
    text: &str,
    cancel: &CancellationToken,
) -> Result<Value, String> {
    let tags = auto::find_tags(text, Some(step_id), "");
    let mut asked = Asked(Default::default());
    for tag in &tags {
        if asked.0.contains_key(&tag.question) {
            continue;
        }
        let answer = models::answer_tag(&inner.models, tag, &tag.question, execution_id, cancel)
            .await
            .map(|(text, _model)| Value::String(text));
        asked.0.insert(tag.question.clone(), answer);
    }
    auto::resolve_string(text, Some(step_id), "", &asked).map_err(|failure| {
        let (tag, why) = *failure;
        format!("<AUTO> tag '{}' could not be answered: {why}", tag.question)
    })
}

/// Evaluates a condition; one holding an `<AUTO>` question is rendered,
/// asked, and its answer read as a boolean (`true`/`yes`/`1` …).
pub(crate) async fn eval_condition(
    inner: &Arc<Inner>,
    execution_id: &str,
    step_id: &str,
    condition: &str,
    scope: &orchestrator_core::template::Scope,
    cancel: &CancellationToken,
) -> Result<bool, String> {
    use orchestrator_core::template;
    if !auto::contains_tag(condition) {
        return template::eval_condition(condition, scope).map_err(|e| e.message);
    }
    let text = template::render_str(condition, scope).map_err(|e| e.message)?;
    let answer = answer_in_text(inner, execution_id, step_id, &text, cancel).await?;
    let value = match answer {
        Value::String(s) => match s.trim().to_ascii_lowercase().trim_end_matches('.') {
            "yes" | "y" => Value::Bool(true),
            "no" | "n" => Value::Bool(false),
            other => template::parse_literal(other),
        },
        other => other,
    };
    template::truthy(&value).ok_or_else(|| {
        format!("the answer {value} to the condition's <AUTO> question is not true or false")
    })
}

/// Answers the tags left in rendered parameters, in place.
pub(crate) async fn answer_in_parameters(
    inner: &Arc<Inner>,
    execution_id: &str,
    step_id: &str,
    parameters: &mut Map<String, Value>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    // Depth-first over an explicit stack of JSON pointers, so a deep value
    // cannot exhaust the stack.
    let mut pending: Vec<String> = parameters
        .keys()
        .map(|k| format!("/{}", escape(k)))
        .collect();
    let mut root = Value::Object(std::mem::take(parameters));
    while let Some(pointer) = pending.pop() {
        let Some(value) = root.pointer_mut(&pointer) else {
            continue;
        };
        match value {
            Value::String(s) if auto::contains_tag(s) => {
                *value = answer_in_text(inner, execution_id, step_id, s, cancel).await?;
            }
            Value::Array(items) => {
                pending.extend((0..items.len()).map(|i| format!("{pointer}/{i}")));
            }
            Value::Object(m) => {
                pending.extend(m.keys().map(|k| format!("{pointer}/{}", escape(k))));
            }
            _ => {}
        }
    }
    if let Value::Object(m) = root {
        *parameters = m;
    }
    Ok(())
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
