//! `validation`: JSON Schema validation (draft 2020-12 unless the schema says
//! otherwise) with every error's path, and schema inference from data.
//! Schemas cannot fetch remote `$ref`s or read files.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, optional_bool};

#[derive(Debug, Clone, Copy, Default)]
pub struct Validation;

/// The data to check: `data`, or the JSON in a workspace file `path`.
async fn data_of(params: &Map<String, Value>, ctx: &ToolContext) -> Result<Value, ToolError> {
    if let Some(data) = params.get("data") {
        // A string holding JSON is read as that JSON when asked to.
        if let (Value::String(text), Some(true)) = (data, optional_bool(params, "parse")?) {
            return serde_json::from_str(text)
                .map_err(|e| ToolError::invalid(format!("'data' is not JSON: {e}")));
        }
        return Ok(data.clone());
    }
    if let Some(Value::String(path)) = params.get("path") {
        let file = crate::filesystem::resolve(&ctx.workspace, path)?;
        let text = tokio::fs::read_to_string(&file.full).await.map_err(|e| {
            ToolError::new(
                ErrorKind::FileNotFoundError,
                format!("'{}': {e}", file.relative),
            )
        })?;
        return serde_json::from_str(&text)
            .map_err(|e| ToolError::invalid(format!("'{}' is not JSON: {e}", file.relative)));
    }
    Err(ToolError::invalid("give 'data' or a workspace 'path'"))
}

/// Validates `data` against `schema`: every error as `{path, message}`.
pub fn validate(schema: &Value, data: &Value) -> Result<Vec<Value>, ToolError> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ToolError::invalid(format!("'schema' is not a valid JSON Schema: {e}")))?;
    Ok(validator
        .iter_errors(data)
        .map(|e| {
            let path = e.instance_path().to_string();
            json!({"path": if path.is_empty() { "/".to_string() } else { path }, "message": e.to_string()})
        })
        .collect())
}

/// A JSON Schema describing `value` (objects: properties present everywhere
/// are required; arrays: the union of their items' schemas).
pub fn infer(value: &Value) -> Value {
    match value {
        Value::Null => json!({"type": "null"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "integer"}),
        Value::Number(_) => json!({"type": "number"}),
        Value::String(_) => json!({"type": "string"}),
        Value::Array(items) => {
            let mut schema = json!({"type": "array"});
            if let Some(first) = items.first() {
                let merged = items
                    .iter()
                    .skip(1)
                    .fold(infer(first), |acc, item| merge(acc, infer(item)));
                schema["items"] = merged;
            }
            schema
        }
        Value::Object(map) => {
            let properties: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), infer(v))).collect();
            let required: Vec<Value> = map.keys().map(|k| Value::String(k.clone())).collect();
            json!({"type": "object", "properties": properties, "required": required})
        }
    }
}

fn merge(a: Value, b: Value) -> Value {
    if a == b {
        return a;
    }
    let (ta, tb) = (a["type"].clone(), b["type"].clone());
    if ta == "object" && tb == "object" {
        let (pa, pb) = (
            a["properties"].as_object().cloned().unwrap_or_default(),
            b["properties"].as_object().cloned().unwrap_or_default(),
        );
        let mut properties = Map::new();
        for (k, v) in pa.iter() {
            properties.insert(
                k.clone(),
                match pb.get(k) {
                    Some(w) => merge(v.clone(), w.clone()),
                    None => v.clone(),
                },
            );
        }
        for (k, v) in pb.iter() {
            properties.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let required: Vec<Value> = pa
            .keys()
            .filter(|k| pb.contains_key(*k))
            .map(|k| Value::String(k.clone()))
            .collect();
        return json!({"type": "object", "properties": properties, "required": required});
    }
    if (ta == "integer" && tb == "number") || (ta == "number" && tb == "integer") {
        return json!({"type": "number"});
    }
    let mut options = Vec::new();
    for s in [a, b] {
        match s.get("anyOf").and_then(Value::as_array) {
            Some(list) => options.extend(list.iter().cloned()),
            None => options.push(s),
        }
    }
    options.dedup();
    json!({"anyOf": options})
}

#[async_trait]
impl Tool for Validation {
    fn id(&self) -> &str {
        "validation"
    }

    fn description(&self) -> &str {
        "Checks data against a JSON Schema, or infers a schema from data"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![
            action(
                "validate",
                "Validate data (or a workspace JSON file) against a JSON Schema: {valid, errors: [{path, message}]}",
                json!({"type": "object", "required": ["schema"], "properties": {
                    "schema": {"type": "object"},
                    "data": {},
                    "path": {"type": "string"},
                    "parse": {"type": "boolean", "description": "read a string 'data' as JSON"},
                    "fail_on_invalid": {"type": "boolean", "description": "fail the step when the data does not match"}
                }}),
            ),
            action(
                "infer_schema",
                "Infer a JSON Schema from data: {schema}",
                json!({"type": "object", "properties": {"data": {}, "path": {"type": "string"}, "parse": {"type": "boolean"}}}),
            ),
            action(
                "extract_structured",
                "Extract from text, with a model, the data a JSON Schema describes; the answer is checked against the schema: the extracted value",
                json!({"type": "object", "required": ["text", "schema"], "properties": {
                    "text": {"type": "string"},
                    "schema": {"type": "object"},
                    "instructions": {"type": "string"},
                    "model": {"type": "string", "description": "a registered model id (default: chosen by the registry)"},
                    "temperature": {"type": "number"},
                    "max_tokens": {"type": "integer", "minimum": 1}
                }}),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        if action == "extract_structured" {
            // The engine runs it on a model; the tool alone cannot.
            return Err(ToolError::invalid(
                "extract_structured runs on a model: run it in a pipeline step",
            ));
        }
        let data = data_of(params, ctx).await?;
        match action {
            "validate" => {
                let schema = params
                    .get("schema")
                    .ok_or_else(|| ToolError::invalid("missing parameter 'schema'"))?;
                let errors = validate(schema, &data)?;
                if !errors.is_empty() && optional_bool(params, "fail_on_invalid")?.unwrap_or(false)
                {
                    let listed: Vec<String> = errors
                        .iter()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e["path"].as_str().unwrap_or("/"),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    return Err(ToolError::new(
                        ErrorKind::SchemaValidationError,
                        format!("data does not match the schema: {}", listed.join("; ")),
                    ));
                }
                Ok(json!({"valid": errors.is_empty(), "errors": errors}))
            }
            "infer_schema" => {
                let mut schema = infer(&data);
                if let Value::Object(m) = &mut schema {
                    m.insert(
                        "$schema".into(),
                        Value::String("https://json-schema.org/draft/2020-12/schema".into()),
                    );
                }
                Ok(json!({"schema": schema}))
            }
            other => Err(ToolError::invalid(format!(
                "validation has no action '{other}'"
            ))),
        }
    }
}
