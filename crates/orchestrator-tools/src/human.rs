//! Tools that ask a person and wait: `user-prompt`, `approval-gate` and
//! `feedback-collection` (the seed's names, parameters and results).
//!
//! On a server nobody types at a terminal: the step asks (its question and
//! the answer's schema are stored, the step is `waiting` and holds nothing),
//! someone answers over the API, and the step goes on with the answer as its
//! result. The engine does the waiting; these tools say what to ask
//! ([`Human::ask`]), check an answer ([`Human::check`]) and make the result
//! ([`Human::result`]).

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{
    ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, optional_bool, required_str,
};

/// What asking gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Asking {
    /// No question: the result at once (`auto_approve`).
    Now(Value),
    /// A question: `request` is stored and shown to whoever answers (with
    /// the answer's `schema`); after `timeout_secs` the step goes on without.
    Question {
        request: Value,
        timeout_secs: Option<f64>,
    },
}

/// How the question ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// The checked answer; `None` when the deadline passed first.
    pub answer: Option<Value>,
    /// The name of the token that answered.
    pub by: Option<String>,
    /// Seconds from the question to the answer.
    pub response_secs: f64,
}

/// A tool that asks a person.
#[async_trait]
pub trait Human: Send + Sync {
    fn ask(&self, parameters: &Map<String, Value>) -> Result<Asking, ToolError>;
    /// Checks an answer against the stored request; returns it as kept.
    fn check(&self, request: &Value, answer: &Value) -> Result<Value, String>;
    /// The step's result.
    async fn result(
        &self,
        parameters: &Map<String, Value>,
        request: &Value,
        answered: &Answered,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError>;
}

/// The tool ids that ask a person.
pub const HUMAN_TOOLS: &[&str] = &["user-prompt", "approval-gate", "feedback-collection"];

fn not_here(tool: &str) -> ToolError {
    ToolError::new(
        ErrorKind::ExecutionError,
        format!(
            "'{tool}' asks a person; it runs as a pipeline step, where it waits for the answer"
        ),
    )
}

/// `timeout` (seconds, 0 or absent: no deadline).
fn timeout(parameters: &Map<String, Value>) -> Result<Option<f64>, ToolError> {
    match parameters.get("timeout") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t.is_finite() => Ok(Some(t)),
            Some(0.0) => Ok(None),
            _ => Err(ToolError::invalid(
                "parameter 'timeout' is a number of seconds (0: no deadline)",
            )),
        },
    }
}

/// A list given as a list, as JSON text, or one item per line.
fn list(value: Option<&Value>) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match value {
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(Value::Array(items)) => items.iter().map(text).collect(),
            _ => s
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        },
        _ => Vec::new(),
    }
}

fn timed_out(answered: &Answered) -> ToolError {
    ToolError::new(
        ErrorKind::TimeoutError,
        format!(
            "nobody answered within {:.0} s, and there is no default",
            answered.response_secs
        ),
    )
}

/// `user-prompt`: one value from a person.
#[derive(Debug, Default)]
pub struct UserPrompt;

#[async_trait]
impl Tool for UserPrompt {
    fn id(&self) -> &str {
        "user-prompt"
    }

    fn description(&self) -> &str {
        "Ask a person for one value (text, number, boolean or a choice) and wait for the answer"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Ask and wait: the step is `waiting` until POST /executions/{id}/steps/{step}/answer with {\"value\": …}, or its timeout (then the default)",
            json!({"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string"},
                "input_type": {"type": "string", "enum": ["text", "number", "boolean", "choice"]},
                "choices": {"type": ["array", "string"], "items": {}},
                "default": {},
                "timeout": {"type": "number", "minimum": 0},
                "validation_pattern": {"type": "string"},
                "context": {"type": "string"},
                "retry_on_invalid": {"type": "boolean"},
                "max_retries": {"type": "integer"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        _: &Map<String, Value>,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        Err(not_here(self.id()))
    }

    fn human(&self) -> Option<&dyn Human> {
        Some(self)
    }
}

#[async_trait]
impl Human for UserPrompt {
    fn ask(&self, p: &Map<String, Value>) -> Result<Asking, ToolError> {
        let prompt = required_str(p, "prompt")?.trim().to_string();
        let input_type = match p.get("input_type") {
            None | Some(Value::Null) => "text".to_string(),
            Some(Value::String(t))
                if ["text", "number", "boolean", "choice"].contains(&t.as_str()) =>
            {
                t.clone()
            }
            Some(other) => {
                return Err(ToolError::invalid(format!(
                    "input_type must be text, number, boolean or choice; found {other}"
                )));
            }
        };
        let choices = list(p.get("choices"));
        if input_type == "choice" && choices.is_empty() {
            return Err(ToolError::invalid("input_type 'choice' needs 'choices'"));
        }
        let pattern = match p.get("validation_pattern") {
            Some(Value::String(s)) if !s.is_empty() => {
                regex::Regex::new(s).map_err(|e| {
                    ToolError::invalid(format!(
                        "validation_pattern is not a regular expression: {e}"
                    ))
                })?;
                Some(s.clone())
            }
            _ => None,
        };
        let default = match p.get("default") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) => Value::String(s.trim().to_string()),
            Some(v) => v.clone(),
        };
        let value_schema = match input_type.as_str() {
            "number" => json!({"type": "number"}),
            "boolean" => json!({"type": "boolean"}),
            "choice" => json!({"enum": choices}),
            _ => match &pattern {
                Some(p) => json!({"type": "string", "pattern": p}),
                None => json!({"type": "string"}),
            },
        };
        Ok(Asking::Question {
            request: json!({
                "prompt": prompt,
                "input_type": input_type,
                "choices": if choices.is_empty() { Value::Null } else { json!(choices) },
                "default": default,
                "validation_pattern": pattern,
                "schema": {"type": "object", "required": ["value"], "properties": {"value": value_schema}},
            }),
            timeout_secs: timeout(p)?,
        })
    }

    fn check(&self, request: &Value, answer: &Value) -> Result<Value, String> {
        let value = answer
            .get("value")
            .ok_or("the answer is an object with 'value'")?;
        let value = match request["input_type"].as_str().unwrap_or("text") {
            "number" => match value {
                Value::Number(_) => value.clone(),
                Value::String(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or(format!("'{s}' is not a number"))?,
                other => return Err(format!("{other} is not a number")),
            },
            "boolean" => match value {
                Value::Bool(_) => value.clone(),
                Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "1" => Value::Bool(true),
                    "false" | "no" | "n" | "0" => Value::Bool(false),
                    _ => return Err(format!("'{s}' is not yes or no")),
                },
                other => return Err(format!("{other} is not true or false")),
            },
            "choice" => {
                let chosen = match value {
                    Value::String(s) => s.trim().to_string(),
                    other => other.to_string(),
                };
                let choices = list(request.get("choices"));
                if !choices.contains(&chosen) {
                    return Err(format!(
                        "'{chosen}' is not one of the choices: {}",
                        choices.join(", ")
                    ));
                }
                Value::String(chosen)
            }
            _ => {
                let Value::String(s) = value else {
                    return Err(format!("{value} is not text"));
                };
                if let Some(p) = request["validation_pattern"].as_str()
                    && !regex::Regex::new(p).is_ok_and(|re| re.is_match(s))
                {
                    return Err(format!("'{s}' does not match the pattern {p}"));
                }
                value.clone()
            }
        };
        Ok(json!({"value": value}))
    }

    async fn result(
        &self,
        _: &Map<String, Value>,
        request: &Value,
        answered: &Answered,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        let (value, skipped) = match &answered.answer {
            Some(a) => (a["value"].clone(), false),
            None if !request["default"].is_null() => (request["default"].clone(), true),
            None => return Err(timed_out(answered)),
        };
        Ok(json!({
            "success": true,
            "value": value,
            "response_time": answered.response_secs,
            "skipped": skipped,
            "used_default": skipped,
            "context": "api",
            "answered_by": answered.by,
            "retries": 0,
        }))
    }
}

/// `approval-gate`: a person approves, rejects or changes content.
#[derive(Debug, Default)]
pub struct ApprovalGate;

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[async_trait]
impl Tool for ApprovalGate {
    fn id(&self) -> &str {
        "approval-gate"
    }

    fn description(&self) -> &str {
        "Ask a person to approve, reject (with a reason) or modify content, and wait for the decision"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Ask and wait: the step is `waiting` until POST /executions/{id}/steps/{step}/answer with {\"action\": \"approve\"|\"reject\"|\"modify\", \"reason\", \"modified_content\"}, or its timeout (then `default_action`, else it fails)",
            json!({"type": "object", "required": ["title", "content"], "properties": {
                "title": {"type": "string"},
                "content": {"type": "string"},
                "format": {"type": "string", "enum": ["text", "json", "markdown"]},
                "allow_modifications": {"type": "boolean"},
                "require_reason": {"type": "boolean"},
                "auto_approve": {"type": "boolean"},
                "auto_approve_hash": {"type": "string"},
                "timeout": {"type": "number", "minimum": 0},
                "default_action": {"type": "string", "enum": ["approve", "reject"]},
                "context": {"type": "string"},
                "metadata": {"type": "object"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        _: &Map<String, Value>,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        Err(not_here(self.id()))
    }

    fn human(&self) -> Option<&dyn Human> {
        Some(self)
    }
}

#[async_trait]
impl Human for ApprovalGate {
    fn ask(&self, p: &Map<String, Value>) -> Result<Asking, ToolError> {
        let title = required_str(p, "title")?;
        let content = match p.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => {
                return Err(ToolError::invalid("missing parameter 'content'"));
            }
            Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        let hash = sha256(&content);
        let auto = optional_bool(p, "auto_approve")?.unwrap_or(false)
            || p.get("auto_approve_hash").and_then(Value::as_str) == Some(hash.as_str());
        if auto {
            return Ok(Asking::Now(json!({
                "success": true,
                "approved": true,
                "action": "auto_approved",
                "auto_approved": true,
                "modified_content": null,
                "reason": null,
                "content_hash": hash,
            })));
        }
        let allow = optional_bool(p, "allow_modifications")?.unwrap_or(true);
        let require_reason = optional_bool(p, "require_reason")?.unwrap_or(true);
        let default_action = match p.get("default_action") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(a)) if a == "approve" || a == "reject" => Value::String(a.clone()),
            Some(other) => {
                return Err(ToolError::invalid(format!(
                    "default_action is approve or reject; found {other}"
                )));
            }
        };
        let mut options = vec!["approve", "reject"];
        if allow {
            options.push("modify");
        }
        Ok(Asking::Question {
            request: json!({
                "title": title,
                "content": content,
                "format": p.get("format").and_then(Value::as_str).unwrap_or("text"),
                "content_hash": hash,
                "options": options,
                "allow_modifications": allow,
                "require_reason": require_reason,
                "default_action": default_action,
                "schema": {"type": "object", "required": ["action"], "properties": {
                    "action": {"enum": options},
                    "reason": {"type": "string"},
                    "modified_content": {"type": "string"}
                }},
            }),
            timeout_secs: timeout(p)?,
        })
    }

    fn check(&self, request: &Value, answer: &Value) -> Result<Value, String> {
        let action = match (answer.get("action"), answer.get("approved")) {
            (Some(Value::String(a)), _) => a.trim().to_ascii_lowercase(),
            (None, Some(Value::Bool(true))) => "approve".into(),
            (None, Some(Value::Bool(false))) => "reject".into(),
            _ => {
                return Err(
                    "the answer is an object with 'action' (approve, reject or modify)".into(),
                );
            }
        };
        let reason = answer.get("reason").and_then(Value::as_str).map(str::trim);
        let modified = answer.get("modified_content");
        match action.as_str() {
            "approve" => {}
            "reject" => {
                if request["require_reason"].as_bool().unwrap_or(true)
                    && reason.is_none_or(str::is_empty)
                {
                    return Err("a rejection needs a 'reason'".into());
                }
            }
            "modify" => {
                if !request["allow_modifications"].as_bool().unwrap_or(true) {
                    return Err("this approval does not allow modifications".into());
                }
                if !modified.is_some_and(Value::is_string) {
                    return Err("'modify' needs 'modified_content' (text)".into());
                }
            }
            other => return Err(format!("'{other}' is not approve, reject or modify")),
        }
        Ok(json!({
            "action": action,
            "reason": reason,
            "modified_content": if action == "modify" { modified.cloned().unwrap_or(Value::Null) } else { Value::Null },
        }))
    }

    async fn result(
        &self,
        _: &Map<String, Value>,
        request: &Value,
        answered: &Answered,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        let (action, reason, modified, timed) = match &answered.answer {
            Some(a) => (
                a["action"].as_str().unwrap_or("reject").to_string(),
                a["reason"].clone(),
                a["modified_content"].clone(),
                false,
            ),
            None => match request["default_action"].as_str() {
                Some(d) => (
                    d.to_string(),
                    Value::String("nobody answered in time".into()),
                    Value::Null,
                    true,
                ),
                None => return Err(timed_out(answered)),
            },
        };
        Ok(json!({
            "success": true,
            "approved": action != "reject",
            "action": action,
            "modified_content": modified,
            // The seed's name for the reason, which its pipelines read.
            "rejection_reason": reason,
            "reason": reason,
            "content_hash": request["content_hash"],
            "timed_out": timed,
            "answered_by": answered.by,
            "response_time": answered.response_secs,
        }))
    }
}

/// `feedback-collection`: a person answers a small form.
#[derive(Debug, Default)]
pub struct FeedbackCollection;

#[async_trait]
impl Tool for FeedbackCollection {
    fn id(&self) -> &str {
        "feedback-collection"
    }

    fn description(&self) -> &str {
        "Ask a person a form of questions (rating, choice, boolean, text) and wait for the answers"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Ask and wait: the step is `waiting` until POST /executions/{id}/steps/{step}/answer with {\"responses\": {question id: answer}}, or its timeout (then it fails)",
            json!({"type": "object", "required": ["title", "questions"], "properties": {
                "title": {"type": "string"},
                "questions": {"type": "array", "items": {"type": "object"}},
                "required_questions": {"type": "array", "items": {"type": "string"}},
                "anonymous": {"type": "boolean"},
                "save_to_file": {"type": "string"},
                "timeout": {"type": "number", "minimum": 0},
                "context": {"type": "string"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        _: &Map<String, Value>,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        Err(not_here(self.id()))
    }

    fn human(&self) -> Option<&dyn Human> {
        Some(self)
    }
}

#[async_trait]
impl Human for FeedbackCollection {
    fn ask(&self, p: &Map<String, Value>) -> Result<Asking, ToolError> {
        let title = required_str(p, "title")?;
        let Some(Value::Array(items)) = p.get("questions") else {
            return Err(ToolError::invalid("'questions' is a list of questions"));
        };
        if items.is_empty() {
            return Err(ToolError::invalid("No questions provided"));
        }
        let mut questions = Vec::new();
        let mut properties = Map::new();
        for (i, q) in items.iter().enumerate() {
            let id = q["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("q{}", i + 1));
            let kind = q["type"].as_str().unwrap_or("text").to_string();
            let schema = match kind.as_str() {
                "rating" => {
                    let scale = q["scale"].as_u64().unwrap_or(5).clamp(2, 100);
                    json!({"type": "integer", "minimum": 1, "maximum": scale})
                }
                "boolean" => json!({"type": "boolean"}),
                "choice" => {
                    let choices = list(q.get("choices"));
                    if choices.is_empty() {
                        return Err(ToolError::invalid(format!(
                            "question '{id}' is a choice and needs 'choices'"
                        )));
                    }
                    json!({"enum": choices})
                }
                "text" => json!({"type": "string"}),
                other => {
                    return Err(ToolError::invalid(format!(
                        "question '{id}' has type '{other}'; types are rating, choice, boolean and text"
                    )));
                }
            };
            properties.insert(id.clone(), schema);
            questions.push(json!({"id": id, "text": q["text"], "type": kind, "scale": q["scale"], "choices": q["choices"]}));
        }
        let required = list(p.get("required_questions"));
        if let Some(unknown) = required.iter().find(|r| !properties.contains_key(*r)) {
            return Err(ToolError::invalid(format!(
                "required question '{unknown}' is not one of the questions"
            )));
        }
        Ok(Asking::Question {
            request: json!({
                "title": title,
                "questions": questions,
                "required_questions": required,
                "anonymous": optional_bool(p, "anonymous")?.unwrap_or(false),
                "schema": {"type": "object", "required": ["responses"], "properties": {
                    "responses": {"type": "object", "required": required, "properties": properties, "additionalProperties": false}
                }},
            }),
            timeout_secs: timeout(p)?,
        })
    }

    fn check(&self, request: &Value, answer: &Value) -> Result<Value, String> {
        let Some(Value::Object(responses)) = answer.get("responses") else {
            return Err("the answer is an object with 'responses' (question id: answer)".into());
        };
        let props = &request["schema"]["properties"]["responses"]["properties"];
        for (id, value) in responses {
            let Some(schema) = props.get(id) else {
                return Err(format!("'{id}' is not one of the questions"));
            };
            let fits = match schema["type"].as_str() {
                Some("integer") => value.as_i64().is_some_and(|v| {
                    v >= schema["minimum"].as_i64().unwrap_or(1)
                        && v <= schema["maximum"].as_i64().unwrap_or(5)
                }),
                Some("boolean") => value.is_boolean(),
                Some("string") => value.is_string(),
                _ => schema["enum"]
                    .as_array()
                    .is_some_and(|choices| choices.contains(value)),
            };
            if !fits {
                return Err(format!("the answer to '{id}' does not fit {schema}"));
            }
        }
        for id in list(request.get("required_questions")) {
            if responses.get(&id).is_none_or(|v| v.is_null()) {
                return Err(format!("question '{id}' needs an answer"));
            }
        }
        Ok(json!({"responses": responses}))
    }

    async fn result(
        &self,
        p: &Map<String, Value>,
        request: &Value,
        answered: &Answered,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let Some(answer) = &answered.answer else {
            return Err(timed_out(answered));
        };
        let responses = answer["responses"].clone();
        let questions: &[Value] = request["questions"].as_array().map_or(&[], Vec::as_slice);
        // The seed's summary: ratings averaged, yes/no and choice answers by question.
        let mut ratings = Vec::new();
        let mut booleans = Map::new();
        let mut choices = Map::new();
        for q in questions {
            let Some(id) = q["id"].as_str() else { continue };
            let answer = &responses[id];
            if answer.is_null() {
                continue;
            }
            match q["type"].as_str() {
                Some("rating") => ratings.extend(answer.as_f64()),
                Some("boolean") => {
                    booleans.insert(id.to_string(), answer.clone());
                }
                Some("choice") => {
                    choices.insert(id.to_string(), answer.clone());
                }
                _ => {}
            }
        }
        let average = if ratings.is_empty() {
            Value::Null
        } else {
            json!(ratings.iter().sum::<f64>() / ratings.len() as f64)
        };
        let answered_count = responses.as_object().map_or(0, Map::len);
        let anonymous = request["anonymous"].as_bool().unwrap_or(false);
        let mut result = json!({
            "success": true,
            "title": request["title"],
            "responses": responses,
            "response_count": answered_count,
            "completion_rate": if questions.is_empty() { 0.0 } else { answered_count as f64 * 100.0 / questions.len() as f64 },
            "anonymous": anonymous,
            "answered_by": if anonymous { Value::Null } else { json!(answered.by) },
            "response_time": answered.response_secs,
            "summary": {
                "answered": answered_count,
                "average_rating": average,
                "rating_average": average,
                "boolean_summary": booleans,
                "choice_summary": choices,
            },
            "saved_to_file": p.get("save_to_file").is_some_and(Value::is_string),
        });
        if let Some(path) = p.get("save_to_file").and_then(Value::as_str) {
            let mut params = Map::new();
            params.insert("path".into(), Value::String(path.to_string()));
            params.insert(
                "content".into(),
                Value::String(serde_json::to_string_pretty(&result).unwrap_or_default()),
            );
            let written = crate::filesystem::Filesystem::default()
                .execute("write", &params, ctx)
                .await?;
            result["saved_to"] = written["path"].clone();
        }
        Ok(result)
    }
}
