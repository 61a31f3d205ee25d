//! `validation`: JSON Schema validation (draft 2020-12 unless the schema says
//! otherwise) with every error's path, and schema inference from data.
//! Schemas cannot fetch remote `$ref`s or read files.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, optional_bool};

#[derive(Debug, Clone, Copy, Default)]
pub struct Validation;

/// Whether a schema describes text (then a string is checked as text, not
/// read as JSON or CSV).
fn wants_text(schema: Option<&Value>) -> bool {
    match schema.and_then(|s| s.get("type")) {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// The data to check: `data`, or the JSON in a workspace file `path`. Text
/// is read, as the seed reads it, as JSON, else as CSV (a header row and
/// commas), unless the schema describes text or `parse: false` says not to.
async fn data_of(params: &Map<String, Value>, ctx: &ToolContext) -> Result<Value, ToolError> {
    if let Some(data) = params.get("data") {
        let parse = optional_bool(params, "parse")?;
        if let Value::String(text) = data
            && parse != Some(false)
            && (parse == Some(true) || !wants_text(params.get("schema")))
        {
            if let Ok(v) = serde_json::from_str(text) {
                return Ok(v);
            }
            if parse == Some(true) {
                return Err(ToolError::invalid("'data' is not JSON"));
            }
            if text.contains(',') && text.contains('\n') {
                return crate::data::parse_csv(text).map(Value::Array);
            }
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

/// How strictly `validate` judges (the seed's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every mismatch is an error.
    Strict,
    /// Text that reads as the number or boolean the schema wants is taken as
    /// one (each such change a warning) before checking.
    Lenient,
    /// Mismatches are reported as warnings; the data counts as valid.
    ReportOnly,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "strict" => Some(Mode::Strict),
            "lenient" | "permissive" => Some(Mode::Lenient),
            "report_only" | "report" => Some(Mode::ReportOnly),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Lenient => "lenient",
            Mode::ReportOnly => "report_only",
        }
    }
}

/// Lenient mode: strings where the schema (its `properties`, nested) wants
/// an integer, a number or a boolean become one when they read as one.
fn coerce(schema: &Value, value: &mut Value, path: &str, warnings: &mut Vec<Value>) {
    match value {
        Value::Object(fields) => {
            let Some(Value::Object(props)) = schema.get("properties") else {
                return;
            };
            for (name, field) in fields.iter_mut() {
                if let Some(sub) = props.get(name) {
                    coerce(sub, field, &format!("{path}/{name}"), warnings);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    coerce(sub, item, &format!("{path}/{i}"), warnings);
                }
            }
        }
        Value::String(text) => {
            let t = text.trim();
            let new = match schema.get("type").and_then(Value::as_str) {
                Some("integer") => t.parse::<i64>().ok().map(Value::from),
                Some("number") => t
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number),
                Some("boolean") => match t.to_ascii_lowercase().as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(new) = new {
                warnings.push(json!({
                    "path": if path.is_empty() { "/" } else { path },
                    "message": format!("\"{t}\" taken as {new}"),
                }));
                *value = new;
            }
        }
        _ => {}
    }
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
                "Validate data (or a workspace JSON file) against a JSON Schema: {valid, errors: [{path, message}], warnings, data, mode}; rows (a list of objects) against an object schema are checked one by one (errors carry `row`)",
                json!({"type": "object", "required": ["schema"], "properties": {
                    "schema": {"type": "object"},
                    "data": {},
                    "path": {"type": "string"},
                    "parse": {"type": "boolean", "description": "read a string 'data' as JSON (default: text is read as JSON, else CSV, unless the schema describes text)"},
                    "mode": {"type": "string", "description": "strict (default), lenient (text read as the numbers and booleans the schema wants, each a warning), report_only (mismatches as warnings)"},
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
                let mode = match params
                    .get("mode")
                    .or_else(|| params.get("validation_level"))
                {
                    None | Some(Value::Null) => Mode::Strict,
                    Some(Value::String(m)) => Mode::parse(m).ok_or_else(|| {
                        ToolError::invalid(format!(
                            "mode '{m}' is not strict, lenient or report_only"
                        ))
                    })?,
                    Some(other) => {
                        return Err(ToolError::invalid(format!(
                            "'mode' must be text, got {other}"
                        )));
                    }
                };
                let mut data = data;
                let mut warnings = Vec::new();
                // Rows (a list of objects, as CSV gives) against an object
                // schema: each row is checked, as the seed does.
                let rows = schema.get("type") == Some(&json!("object"))
                    && data
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_object));
                let mut errors = Vec::new();
                if rows {
                    for (i, row) in data.as_array_mut().into_iter().flatten().enumerate() {
                        if mode == Mode::Lenient {
                            coerce(schema, row, &format!("/{i}"), &mut warnings);
                        }
                        for mut e in validate(schema, row)? {
                            e["row"] = json!(i + 1);
                            e["path"] = json!(format!(
                                "/{i}{}",
                                e["path"].as_str().unwrap_or("").trim_end_matches('/')
                            ));
                            errors.push(e);
                        }
                    }
                } else {
                    if mode == Mode::Lenient {
                        coerce(schema, &mut data, "", &mut warnings);
                    }
                    errors = validate(schema, &data)?;
                }
                if mode == Mode::ReportOnly {
                    warnings.append(&mut errors);
                }
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
                let mut out = json!({
                    "valid": errors.is_empty(),
                    "errors": errors,
                    "warnings": warnings,
                    "mode": mode.as_str(),
                });
                if rows {
                    out["rows_validated"] = json!(data.as_array().map_or(0, Vec::len));
                }
                out["data"] = data;
                Ok(out)
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
