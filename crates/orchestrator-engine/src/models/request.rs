//! What a model step asks for, read from its rendered parameters; the
//! structured-output loop; usage and worst-case cost; AUTO tag answers.

use orchestrator_tools::models::providers::{self, ChatRequest, Message};
use orchestrator_tools::models::{ModelSpec, Requirements};
use orchestrator_tools::{ErrorKind, ToolError};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{Answer, CallSite, Models, SelectError};

/// What a model step asks for, read from its rendered parameters.
#[derive(Debug, Clone)]
pub struct ModelStepRequest {
    pub chat: ChatRequest,
    /// `generate_structured`: the schema the answer must meet.
    pub schema: Option<Value>,
    /// A model named in the parameters.
    pub model: Option<String>,
    pub requirements: Option<Requirements>,
}

fn text_param(params: &Map<String, Value>, name: &str) -> Result<Option<String>, ToolError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Ok(Some(other.to_string())),
    }
}

/// Reads requirements given as a step's `requires_model` or a parameter.
pub fn requirements_from(value: &Value) -> Result<Requirements, ToolError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ToolError::invalid(format!("requires_model is not valid: {e}")))
}

impl ModelStepRequest {
    /// Builds the request for `action` from its parameters.
    pub fn from_parameters(action: &str, params: &Map<String, Value>) -> Result<Self, ToolError> {
        let system = text_param(params, "system")?;
        let mut messages = Vec::new();
        if let Some(Value::Array(items)) = params.get("messages") {
            for (i, m) in items.iter().enumerate() {
                let role = m["role"].as_str().unwrap_or("user");
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    Value::Null => {
                        return Err(ToolError::invalid(format!("messages[{i}] has no content")));
                    }
                    other => other.to_string(),
                };
                match role {
                    "system" => {}
                    "user" | "assistant" => messages.push(Message::text(role, content)),
                    other => {
                        return Err(ToolError::invalid(format!(
                            "messages[{i}] has role '{other}' (user, assistant or system)"
                        )));
                    }
                }
            }
        }
        let system = system.or_else(|| {
            params
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items
                        .iter()
                        .find(|m| m["role"] == "system")
                        .and_then(|m| m["content"].as_str().map(str::to_string))
                })
        });
        let prompt = match action {
            "analyze_text" => {
                let text = text_param(params, "text")?
                    .or(text_param(params, "prompt")?)
                    .ok_or_else(|| ToolError::invalid("analyze_text needs 'text'"))?;
                let kind = text_param(params, "analysis_type")?.unwrap_or_else(|| "general".into());
                let instructions = text_param(params, "instructions")?
                    .unwrap_or_else(|| format!("Give a {kind} analysis of the text below."));
                Some(format!("{instructions}\n\nText:\n{text}"))
            }
            "extract_structured" => {
                let text = text_param(params, "text")?
                    .ok_or_else(|| ToolError::invalid("extract_structured needs 'text'"))?;
                let instructions = text_param(params, "instructions")?.unwrap_or_else(|| {
                    "Extract from the text below the data the JSON Schema describes. \
                     Leave out what the text does not say."
                        .into()
                });
                Some(format!("{instructions}\n\nText:\n{text}"))
            }
            _ => text_param(params, "prompt")?,
        };
        if let Some(p) = prompt {
            messages.push(Message::text("user", p));
        }
        if messages.is_empty() {
            return Err(ToolError::invalid("give 'prompt' or 'messages'"));
        }
        let number = |name: &str| -> Result<Option<f64>, ToolError> {
            match params.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| ToolError::invalid(format!("'{name}' must be a number"))),
            }
        };
        let max_tokens = match number("max_tokens")? {
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Some(n as u64),
            Some(_) => {
                return Err(ToolError::invalid(
                    "'max_tokens' must be a whole number, at least 1",
                ));
            }
            None => None,
        };
        let schema = match action {
            "generate_structured" | "extract_structured" => Some(
                params
                    .get("schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .ok_or_else(|| {
                        ToolError::invalid(format!("{action} needs a JSON Schema in 'schema'"))
                    })?,
            ),
            _ => None,
        };
        let requirements = match params
            .get("requires_model")
            .or_else(|| params.get("requirements"))
        {
            Some(v) if !v.is_null() => Some(requirements_from(v)?),
            _ => None,
        };
        Ok(ModelStepRequest {
            chat: ChatRequest {
                system,
                messages,
                temperature: number("temperature")?,
                max_tokens,
                json: schema.is_some(),
            },
            schema,
            model: text_param(params, "model")?,
            requirements,
        })
    }
}

pub use orchestrator_tools::models::extract_json;

/// Asks for JSON meeting `schema`; on prose or a schema violation, asks once
/// more saying what was wrong.
pub async fn structured(
    models: &Models,
    spec: &ModelSpec,
    request: &ChatRequest,
    schema: &Value,
    site: &CallSite,
    cancel: &CancellationToken,
) -> Result<(Value, Vec<Answer>), ToolError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ToolError::invalid(format!("'schema' is not a valid JSON Schema: {e}")))?;
    let mut req = request.clone();
    let instruction =
        format!("Answer with only a JSON value that meets this JSON Schema, no prose:\n{schema}");
    req.system = Some(match &req.system {
        Some(s) => format!("{s}\n\n{instruction}"),
        None => instruction,
    });
    let mut answers = Vec::new();
    for round in 0..2 {
        let answer = models.call(spec, &req, site, cancel).await?;
        let text = answer.response.text.clone();
        answers.push(answer);
        let problem = match extract_json(&text) {
            None => "the answer was not JSON".to_string(),
            Some(value) => {
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| format!("{} at '{}'", e, e.instance_path()))
                    .collect();
                if errors.is_empty() {
                    return Ok((value, answers));
                }
                format!("the JSON does not meet the schema: {}", errors.join("; "))
            }
        };
        if round == 1 {
            return Err(ToolError::new(
                ErrorKind::StructuredOutputError,
                format!(
                    "model '{}' gave no valid JSON after a second try: {problem}",
                    spec.id
                ),
            ));
        }
        req.messages.push(Message::text("assistant", text));
        req.messages.push(Message::text(
            "user",
            format!("That answer cannot be used: {problem}. Answer again with only the JSON."),
        ));
    }
    Err(ToolError::new(
        ErrorKind::StructuredOutputError,
        "no answer",
    ))
}

/// A model step's result: the text (or the JSON of `generate_structured`),
/// and what the calls used.
pub fn usage_of(answers: &[Answer]) -> Value {
    let input: u64 = answers.iter().map(|a| a.response.input_tokens).sum();
    let output: u64 = answers.iter().map(|a| a.response.output_tokens).sum();
    let cost: f64 = answers.iter().map(|a| a.cost).sum();
    json!({
        "model": answers.last().map(|a| a.model.id.clone()),
        "input_tokens": input,
        "output_tokens": output,
        "cost": cost,
    })
}

/// The largest a call to `spec` may cost: its prompt (about four characters
/// a token) and the most it may answer.
pub fn worst_case_cost(spec: &ModelSpec, request: &ChatRequest) -> f64 {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.len())
        .sum::<usize>()
        + request.system.as_ref().map_or(0, String::len);
    let input = (chars as u64).div_ceil(4);
    let output = request
        .max_tokens
        .or(spec.max_output_tokens)
        .unwrap_or(providers::DEFAULT_MAX_TOKENS);
    spec.cost_per_1k_tokens.of(input, output)
}

/// Whether a tag stands for a model: the whole value of a `model` key (a
/// step's, the pipeline's, or a model step's parameter).
pub fn is_model_slot(tag: &orchestrator_core::AutoTag) -> bool {
    tag.whole_value && (tag.pointer == "/model" || tag.pointer.ends_with("/model"))
}

/// The task a model slot's tag asks for, read from its words
/// (`<AUTO>Select a model for code optimization</AUTO>` → `code`), or its
/// `task` attribute.
pub fn slot_task(tag: &orchestrator_core::AutoTag) -> String {
    if let Some(task) = tag.attributes.get("task") {
        return task.clone();
    }
    let q = tag.question.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| q.contains(w));
    if has(&["code", "program", "optimiz", "refactor"]) {
        "code"
    } else if has(&["summar"]) {
        "summarization"
    } else if has(&["structur", "json", "extract", "pars", "schema"]) {
        "structured"
    } else if has(&[
        "analy", "reason", "statist", "evaluat", "validat", "assess", "fact",
    ]) {
        "reasoning"
    } else {
        "generate"
    }
    .to_string()
}

/// A model slot's tag answered from the registry, as selection does for a
/// step's requirements (tasks, cost, the routing strategy): no model call.
/// The default model stands in when none has the task.
pub async fn select_for_slot(
    models: &Models,
    tag: &orchestrator_core::AutoTag,
) -> Result<(String, String), String> {
    let wanted = Requirements {
        tasks: vec![slot_task(tag)],
        ..Requirements::default()
    };
    let (spec, why) = match models.resolve(None, Some(&wanted)).await {
        Ok(found) => found,
        Err(SelectError::NoEligible(_)) => models
            .resolve(None, None)
            .await
            .map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    Ok((spec.id, why))
}

/// Asks a model for one `<AUTO>` tag (`question`: its text, rendered): a
/// model with the tag's `task` as a capability when there is one (else
/// any), or the tag's `model`. Returns the answer's text and the model's id.
pub async fn answer_tag(
    models: &Models,
    tag: &orchestrator_core::AutoTag,
    question: &str,
    execution_id: &str,
    cancel: &CancellationToken,
) -> Result<(String, String), String> {
    let named = tag.attributes.get("model").map(String::as_str);
    let wanted = tag.attributes.get("task").map(|t| Requirements {
        tasks: vec![t.clone()],
        ..Requirements::default()
    });
    let (spec, _) = match models.resolve(named, wanted.as_ref()).await {
        Ok(found) => found,
        Err(SelectError::NoEligible(_)) if named.is_none() && wanted.is_some() => models
            .resolve(None, None)
            .await
            .map_err(|e| e.to_string())?,
        Err(e) => return Err(e.to_string()),
    };
    let kind = tag.attributes.get("type").map(String::as_str);
    let mut system = "You fill in one value of a pipeline definition. Answer with the value only: \
        no explanation, no quotes, no code fences."
        .to_string();
    match kind {
        Some("integer" | "int") => system.push_str(" The value is a whole number."),
        Some("number" | "float") => system.push_str(" The value is a number."),
        Some("boolean" | "bool") => system.push_str(" The value is true or false."),
        Some("array" | "list") => system.push_str(" The value is a JSON array."),
        Some("object") => system.push_str(" The value is a JSON object."),
        _ => {}
    }
    let request = ChatRequest {
        system: Some(system),
        messages: vec![Message::text("user", question)],
        temperature: Some(0.0),
        max_tokens: Some(512),
        json: false,
    };
    let site = CallSite {
        execution_id: Some(execution_id.to_string()),
        step_id: tag.step.clone(),
        attempt: 0,
        log: None,
    };
    let answer = models
        .call(&spec, &request, &site, cancel)
        .await
        .map_err(|e| e.message)?;
    let mut text = answer.response.text.trim();
    if let Some(inner) = text.strip_prefix("```") {
        text = inner
            .trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_end_matches("```")
            .trim();
    }
    let text = text.trim_matches(|c| c == '"' || c == '`').trim();
    Ok((text.to_string(), spec.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_found_in_plain_fenced_and_wrapped_answers() {
        assert_eq!(extract_json("{\"a\": 1}"), Some(json!({"a": 1})));
        assert_eq!(
            extract_json("Here:\n```json\n{\"a\": 2}\n```\nDone."),
            Some(json!({"a": 2}))
        );
        assert_eq!(
            extract_json("The answer is {\"a\": 3}."),
            Some(json!({"a": 3}))
        );
        assert_eq!(extract_json("no json here"), None);
    }

    #[test]
    fn parameters_become_a_chat_request() {
        let params =
            json!({"prompt": "hi", "system": "be brief", "temperature": 0.1, "max_tokens": 50});
        let r = ModelStepRequest::from_parameters("generate", params.as_object().expect("obj"))
            .expect("ok");
        assert_eq!(r.chat.messages.len(), 1);
        assert_eq!(r.chat.system.as_deref(), Some("be brief"));
        assert_eq!(r.chat.max_tokens, Some(50));
        let params = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "again"}]});
        let r = ModelStepRequest::from_parameters("chat", params.as_object().expect("obj"))
            .expect("ok");
        assert_eq!(
            (r.chat.messages.len(), r.chat.system.as_deref()),
            (3, Some("s"))
        );
        for bad in [
            json!({}),
            json!({"prompt": "x", "max_tokens": 0}),
            json!({"messages": [{"role": "tool", "content": "x"}]}),
        ] {
            assert!(
                ModelStepRequest::from_parameters("generate", bad.as_object().expect("obj"))
                    .is_err(),
                "{bad}"
            );
        }
        assert!(
            ModelStepRequest::from_parameters(
                "generate_structured",
                json!({"prompt": "x"}).as_object().expect("obj")
            )
            .is_err()
        );
    }
}
