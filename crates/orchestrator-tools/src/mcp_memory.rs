//! `mcp-memory`: named namespaces of keys and JSON values with an optional
//! time to live, as the seed's tool has them (actions `store`, `retrieve`,
//! `list`, `clear`; parameters `namespace` (default `default`), `key`,
//! `value`, `ttl` in seconds, 0 for none).
//!
//! Entries are durable, in the database, shared by every process. By
//! default a namespace belongs to the execution tree (the root execution and
//! every child it starts), which is what one run of a seed pipeline sees;
//! `scope: server` shares it with every execution on the server.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::memory::{Entry, Memory, Reach};
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, type_name};

/// The largest value one entry holds, as JSON.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
const MAX_NAME_CHARS: usize = 256;
/// Ten years: a longer `ttl` is refused rather than overflowing.
const MAX_TTL_SECONDS: i64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Clone, Copy, Default)]
pub struct McpMemory;

fn schema(required: &[&str], extra: Value) -> Value {
    crate::object_schema(
        required,
        json!({
            "namespace": {"type": "string", "description": "default `default`"},
            "scope": {"type": "string", "enum": ["execution", "server"], "description": "`execution` (default): the execution tree sees the namespace; `server`: every execution does"}
        }),
        extra,
    )
}

#[async_trait]
impl Tool for McpMemory {
    fn id(&self) -> &str {
        "mcp-memory"
    }

    fn description(&self) -> &str {
        "Durable key/value memory in namespaces, with a time to live, shared by every process"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let key = json!({"type": ["string", "number"], "description": "the entry's key"});
        vec![
            action(
                "store",
                "Store a value under a key (replacing what was there)",
                schema(
                    &["key"],
                    json!({
                        "key": key,
                        "value": {"description": "any JSON value (at most 1 MiB)"},
                        "ttl": {"type": ["integer", "string"], "description": "seconds the entry lives; 0 (default): until cleared"}
                    }),
                ),
            ),
            action(
                "retrieve",
                "The value under a key: `found`, `value` and `metadata`",
                schema(&["key"], json!({"key": key})),
            ),
            action(
                "list",
                "The namespace's live keys and their count",
                schema(&[], json!({})),
            ),
            action(
                "clear",
                "Remove every entry of the namespace",
                schema(&[], json!({})),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let memory = ctx.memory("mcp-memory")?;
        let namespace = name(p, "namespace")?.unwrap_or_else(|| "default".to_string());
        // Apart from the namespaces other tools keep their state in.
        let stored = format!("mcp-memory/{namespace}");
        let reach = reach(p)?;
        match action {
            "store" => store(memory, reach, &stored, &namespace, p).await,
            "retrieve" => {
                let key = required_key(p, action)?;
                Ok(match memory.get(reach, &stored, &key).await? {
                    Some(entry) => json!({
                        "namespace": namespace,
                        "key": key,
                        "found": true,
                        "metadata": metadata(&entry),
                        "value": entry.value,
                    }),
                    None => json!({
                        "namespace": namespace,
                        "key": key,
                        "found": false,
                        "value": null,
                    }),
                })
            }
            "list" => {
                let keys: Vec<String> = memory
                    .list(reach, &stored)
                    .await?
                    .into_iter()
                    .map(|e| e.key)
                    .collect();
                Ok(json!({"namespace": namespace, "count": keys.len(), "keys": keys}))
            }
            "clear" => {
                let removed = memory.clear(reach, &stored, None).await?;
                Ok(json!({"namespace": namespace, "cleared": true, "removed": removed}))
            }
            other => Err(ToolError::invalid(format!(
                "unknown action '{other}': use store, retrieve, list or clear"
            ))),
        }
    }
}

async fn store(
    memory: &dyn Memory,
    reach: Reach,
    stored: &str,
    namespace: &str,
    p: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let key = required_key(p, "store")?;
    let value = p.get("value").cloned().unwrap_or(Value::Null);
    let size = value.to_string().len();
    if size > MAX_VALUE_BYTES {
        return Err(ToolError::invalid(format!(
            "parameter 'value' is {size} bytes as JSON; an entry holds at most {MAX_VALUE_BYTES}"
        )));
    }
    let ttl = ttl(p)?;
    let expires_at = (ttl > 0).then(|| now_ms() + ttl * 1000);
    memory.put(reach, stored, &key, &value, expires_at).await?;
    Ok(json!({
        "namespace": namespace,
        "key": key,
        "stored": true,
        "ttl": ttl,
    }))
}

/// What the seed reports about an entry: when it was stored, its time to
/// live in seconds (0: none) and the value's Python type name.
fn metadata(e: &Entry) -> Value {
    let stored_at = chrono::DateTime::from_timestamp_millis(e.updated_at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let ttl = e
        .expires_at
        .map_or(0, |at| ((at - e.updated_at) as f64 / 1000.0).round() as i64);
    let kind = match &e.value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    };
    json!({"stored_at": stored_at, "ttl": ttl, "type": kind})
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn reach(p: &Map<String, Value>) -> Result<Reach, ToolError> {
    match p.get("scope") {
        None | Some(Value::Null) => Ok(Reach::Tree),
        Some(Value::String(s)) if s == "execution" => Ok(Reach::Tree),
        Some(Value::String(s)) if s == "server" => Ok(Reach::Server),
        Some(other) => Err(ToolError::invalid(format!(
            "parameter 'scope' must be 'execution' or 'server', got {other}"
        ))),
    }
}

/// A namespace or key: text or a number, not empty, at most 256 characters.
fn name(p: &Map<String, Value>, param: &str) -> Result<Option<String>, ToolError> {
    let text = match p.get(param) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(ToolError::invalid(format!(
                "parameter '{param}' must be a string, got {}",
                type_name(other)
            )));
        }
    };
    if text.is_empty() {
        return Err(ToolError::invalid(format!(
            "parameter '{param}' must not be empty"
        )));
    }
    if text.chars().count() > MAX_NAME_CHARS {
        return Err(ToolError::invalid(format!(
            "parameter '{param}' is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(Some(text))
}

fn required_key(p: &Map<String, Value>, action: &str) -> Result<String, ToolError> {
    name(p, "key")?
        .ok_or_else(|| ToolError::invalid(format!("parameter 'key' is required for {action}")))
}

/// `ttl` in whole seconds: a number or numeric text, 0 for none.
fn ttl(p: &Map<String, Value>) -> Result<i64, ToolError> {
    let bad = |v: &dyn std::fmt::Display| {
        ToolError::invalid(format!(
            "parameter 'ttl' must be whole seconds from 0 to {MAX_TTL_SECONDS}, got {v}"
        ))
    };
    let seconds = match p.get("ttl") {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => i,
            None => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
                .ok_or_else(|| bad(n))?,
        },
        Some(Value::String(s)) => s.trim().parse::<i64>().map_err(|_| bad(s))?,
        Some(other) => return Err(bad(other)),
    };
    if !(0..=MAX_TTL_SECONDS).contains(&seconds) {
        return Err(bad(&seconds));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn ttl_reads_numbers_and_numeric_text_and_refuses_the_rest() {
        assert_eq!(ttl(&params(json!({}))).ok(), Some(0));
        assert_eq!(ttl(&params(json!({"ttl": 3600}))).ok(), Some(3600));
        assert_eq!(ttl(&params(json!({"ttl": " 60 "}))).ok(), Some(60));
        assert_eq!(ttl(&params(json!({"ttl": 5.0}))).ok(), Some(5));
        for bad in [
            json!(-1),
            json!(1.5),
            json!("soon"),
            json!(1e300),
            json!([1]),
        ] {
            let e = ttl(&params(json!({ "ttl": bad }))).expect_err("refused");
            assert!(e.message.contains("'ttl'"), "{}", e.message);
        }
    }

    #[test]
    fn names_are_text_or_numbers_and_bounded() {
        assert_eq!(
            name(&params(json!({"key": 7})), "key").ok(),
            Some(Some("7".into()))
        );
        assert!(name(&params(json!({"key": ""})), "key").is_err());
        assert!(name(&params(json!({"key": {"a": 1}})), "key").is_err());
        let long = "k".repeat(MAX_NAME_CHARS + 1);
        let e = name(&params(json!({ "key": long })), "key").expect_err("refused");
        assert!(e.message.contains("longer than"), "{}", e.message);
        assert!(reach(&params(json!({"scope": "galaxy"}))).is_err());
        assert_eq!(
            reach(&params(json!({"scope": "server"}))).ok(),
            Some(Reach::Server)
        );
    }

    #[test]
    fn metadata_names_python_types_and_the_ttl() {
        let e = Entry {
            key: "k".into(),
            value: json!({"a": 1}),
            updated_at: 1_700_000_000_000,
            expires_at: Some(1_700_000_060_000),
        };
        let m = metadata(&e);
        assert_eq!(m["type"], "dict");
        assert_eq!(m["ttl"], 60);
        assert_eq!(m["stored_at"], "2023-11-14T22:13:20.000Z");
    }
}
