//! `transform`'s list of operations, as the seed's pipelines write them:
//! `transformations:` (or `operations:`) of `{type: …}` entries applied in
//! order to the rows, or one `operation: {type: …}`.
//!
//! Expressions (`calculate`, `filter` with a `condition`) are sandboxed
//! template expressions over the row's fields (`quantity * unit_price`,
//! `status != 'cancelled'`); the seed's `DATE_FORMAT(column, '%Y-%m')`
//! reads as the `date` filter.

use std::collections::HashSet;
use std::sync::OnceLock;

use orchestrator_core::template::{self, Scope};
use regex::Regex;
use serde_json::{Map, Value, json};

use super::{matches, number};
use crate::ToolError;

const KINDS: &str = "filter, aggregate, rename_fields, add_field, deduplicate, cast, fill_missing, calculate, normalize, sort";

/// The operations a `transform` step asks for, in order.
pub(super) fn operations(
    params: &Map<String, Value>,
) -> Result<Vec<Map<String, Value>>, ToolError> {
    let list = params
        .get("transformations")
        .or_else(|| params.get("operations"))
        .filter(|v| !v.is_null());
    let items = match list {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Object(one)) => vec![Value::Object(one.clone())],
        Some(other) => {
            return Err(ToolError::invalid(format!(
                "'transformations' must be a list of {{type: …}} entries, got {other}"
            )));
        }
        // `operation: {type: normalize, …}` was merged into the parameters.
        None if params.get("type").is_some_and(Value::is_string) => {
            vec![Value::Object(params.clone())]
        }
        None => Vec::new(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(m) if m.get("type").is_some_and(Value::is_string) => Ok(m),
            other => Err(ToolError::invalid(format!(
                "transformation {} must be an object with a 'type' ({KINDS}), got {other}",
                i + 1
            ))),
        })
        .collect()
}

/// What the operations made: the rows, and an aggregate if one was asked.
pub(super) struct Transformed {
    pub rows: Vec<Value>,
    pub aggregation: Option<Value>,
}

pub(super) fn apply(
    mut rows: Vec<Value>,
    ops: &[Map<String, Value>],
) -> Result<Transformed, ToolError> {
    let mut aggregation = None;
    for (i, op) in ops.iter().enumerate() {
        let kind = op.get("type").and_then(Value::as_str).unwrap_or_default();
        let at = |message: String| {
            ToolError::invalid(format!("transformation {} ({kind}): {message}", i + 1))
        };
        match kind {
            "filter" => rows = filter(rows, op).map_err(at)?,
            "aggregate" => aggregation = Some(aggregate(&rows, op).map_err(at)?),
            "rename_fields" => {
                let mapping = object(op, "mapping").map_err(at)?;
                for row in &mut rows {
                    if let Value::Object(m) = row {
                        *m = std::mem::take(m)
                            .into_iter()
                            .map(|(k, v)| {
                                let k = mapping
                                    .get(&k)
                                    .and_then(Value::as_str)
                                    .map_or(k, str::to_string);
                                (k, v)
                            })
                            .collect();
                    }
                }
            }
            "add_field" => {
                let field = text(op, "field").map_err(at)?;
                let value = op.get("value").cloned().unwrap_or(Value::Null);
                for row in &mut rows {
                    if let Value::Object(m) = row {
                        m.insert(field.clone(), value.clone());
                    }
                }
            }
            "deduplicate" => rows = deduplicate(rows, op),
            "cast" => {
                let columns = object(op, "columns").map_err(at)?;
                for row in &mut rows {
                    if let Value::Object(m) = row {
                        for (col, to) in &columns {
                            if let Some(v) = m.get_mut(col) {
                                *v = cast(v, to.as_str().unwrap_or("string"));
                            }
                        }
                    }
                }
            }
            "fill_missing" => {
                let strategy = object(op, "strategy").map_err(at)?;
                for row in &mut rows {
                    if let Value::Object(m) = row {
                        for (col, fill) in &strategy {
                            let missing = match m.get(col) {
                                None | Some(Value::Null) => true,
                                Some(Value::String(s)) => s.is_empty(),
                                _ => false,
                            };
                            if missing {
                                m.insert(col.clone(), fill.clone());
                            }
                        }
                    }
                }
            }
            "calculate" => {
                let expressions = object(op, "expressions").map_err(at)?;
                for (name, expr) in &expressions {
                    let expr = expr
                        .as_str()
                        .ok_or_else(|| at(format!("expression '{name}' must be text")))?;
                    let expr = seed_functions(expr);
                    check_expression(&expr).map_err(&at)?;
                    for row in &mut rows {
                        let value = evaluate(&expr, row);
                        if let Value::Object(m) = row {
                            m.insert(name.clone(), value);
                        }
                    }
                }
            }
            "normalize" => normalize(&mut rows, op).map_err(at)?,
            "sort" => sort(&mut rows, op),
            other => {
                return Err(ToolError::invalid(format!(
                    "transformation {} has unknown type '{other}'; known: {KINDS}",
                    i + 1
                )));
            }
        }
    }
    Ok(Transformed { rows, aggregation })
}

fn object(op: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match op.get(key) {
        Some(Value::Object(m)) => Ok(m.clone()),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(other) => Err(format!("'{key}' must be an object, got {other}")),
    }
}

fn text(op: &Map<String, Value>, key: &str) -> Result<String, String> {
    match op.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("'{key}' is required")),
    }
}

/// `DATE_FORMAT(col, 'fmt')` → `(col | date('fmt'))`.
fn seed_functions(expr: &str) -> String {
    static DATE_FORMAT: OnceLock<Regex> = OnceLock::new();
    let re = DATE_FORMAT.get_or_init(|| {
        Regex::new(r#"DATE_FORMAT\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,\s*('[^']*'|"[^"]*")\s*\)"#)
            .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
    });
    re.replace_all(expr, "($1 | date($2))").into_owned()
}

fn check_expression(expr: &str) -> Result<(), String> {
    template::expression_names(expr)
        .map(|_| ())
        .map_err(|e| format!("'{expr}' is not an expression: {}", e.message))
}

fn row_scope(row: &Value) -> Scope {
    let mut scope = Scope::new();
    if let Value::Object(m) = row {
        for (k, v) in m {
            // Numbers kept as text (CSV) compute as numbers.
            let v = match v {
                Value::String(s) => s
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| s.trim().parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| v.clone()),
                other => other.clone(),
            };
            scope.set(k.clone(), &v);
        }
        scope.set("row", row);
    }
    scope
}

/// A row's value of an expression; `null` where it reads a missing field
/// or cannot be computed for this row (as the seed leaves such rows be).
fn evaluate(expr: &str, row: &Value) -> Value {
    template::render_string_value(&format!("{{{{ {expr} }}}}"), &row_scope(row))
        .unwrap_or(Value::Null)
}

fn filter(rows: Vec<Value>, op: &Map<String, Value>) -> Result<Vec<Value>, String> {
    if let Some(condition) = op.get("condition").and_then(Value::as_str) {
        let condition = seed_functions(condition);
        check_expression(&condition)?;
        return Ok(rows
            .into_iter()
            .filter(|row| template::eval_condition(&condition, &row_scope(row)).unwrap_or(false))
            .collect());
    }
    let criteria: Map<String, Value> =
        match (op.get("field").and_then(Value::as_str), op.get("criteria")) {
            (Some(field), _) => Map::from_iter([(
                field.to_string(),
                op.get("value").cloned().unwrap_or(Value::Null),
            )]),
            (None, Some(Value::Object(c))) => c.clone(),
            _ => return Err("give 'field' and 'value', 'criteria', or a 'condition'".into()),
        };
    let mut kept = Vec::new();
    for row in rows {
        if matches(&row, &criteria).map_err(|e| e.message)? {
            kept.push(row);
        }
    }
    Ok(kept)
}

fn aggregate(rows: &[Value], op: &Map<String, Value>) -> Result<Value, String> {
    let how = op
        .get("operation")
        .or_else(|| op.get("function"))
        .and_then(Value::as_str)
        .unwrap_or("sum");
    let field = op
        .get("field")
        .or_else(|| op.get("column"))
        .and_then(Value::as_str);
    let values: Vec<f64> = match field {
        Some(f) => rows
            .iter()
            .filter_map(|r| r.get(f).and_then(number))
            .collect(),
        None if how == "count" => Vec::new(),
        None => return Err("'field' is required".into()),
    };
    let result = match how {
        "sum" => super::to_number(values.iter().sum::<f64>()),
        "count" => json!(if field.is_some() {
            values.len()
        } else {
            rows.len()
        }),
        "mean" | "avg" | "average" => {
            if values.is_empty() {
                Value::Null
            } else {
                super::to_number(values.iter().sum::<f64>() / values.len() as f64)
            }
        }
        "min" => values
            .iter()
            .copied()
            .reduce(f64::min)
            .map_or(Value::Null, super::to_number),
        "max" => values
            .iter()
            .copied()
            .reduce(f64::max)
            .map_or(Value::Null, super::to_number),
        other => {
            return Err(format!(
                "operation '{other}' is not sum, count, mean, min or max"
            ));
        }
    };
    Ok(json!({"operation": how, "field": field, "result": result}))
}

fn deduplicate(rows: Vec<Value>, op: &Map<String, Value>) -> Vec<Value> {
    let columns: Vec<String> = match op.get("columns") {
        Some(Value::Array(c)) => c
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(c)) => vec![c.clone()],
        _ => Vec::new(),
    };
    let key = |row: &Value| -> String {
        if columns.is_empty() {
            row.to_string()
        } else {
            Value::Array(
                columns
                    .iter()
                    .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
            .to_string()
        }
    };
    let keep_last = op.get("keep").and_then(Value::as_str) == Some("last");
    let mut seen = HashSet::new();
    if keep_last {
        let mut kept: Vec<Value> = rows
            .into_iter()
            .rev()
            .filter(|r| seen.insert(key(r)))
            .collect();
        kept.reverse();
        kept
    } else {
        rows.into_iter().filter(|r| seen.insert(key(r))).collect()
    }
}

/// A value as `integer`, `float`/`number`, `string`, `boolean`; dates stay
/// text, and what cannot be read is left as it was (as the seed does).
fn cast(v: &Value, to: &str) -> Value {
    let as_text = || match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match to {
        "integer" | "int" => match number(v) {
            Some(n) if n.is_finite() => json!(n.trunc() as i64),
            _ if as_text().is_empty() => json!(0),
            _ => v.clone(),
        },
        "float" | "number" | "double" => match number(v) {
            Some(n) => json!(n),
            _ if as_text().is_empty() => json!(0.0),
            _ => v.clone(),
        },
        "boolean" | "bool" => match as_text().trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" => json!(true),
            "false" | "0" | "no" | "n" | "" => json!(false),
            _ => v.clone(),
        },
        "string" | "str" | "datetime" | "date" => Value::String(as_text()),
        _ => v.clone(),
    }
}

/// Scales numeric columns: `min-max` (default) to 0–1, `z-score` to mean 0
/// and standard deviation 1.
fn normalize(rows: &mut [Value], op: &Map<String, Value>) -> Result<(), String> {
    let method = op
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("min-max");
    if !matches!(
        method,
        "min-max" | "minmax" | "z-score" | "zscore" | "standard"
    ) {
        return Err(format!("method '{method}' is not min-max or z-score"));
    }
    let columns: Vec<String> = match op.get("columns").or_else(|| op.get("fields")) {
        Some(Value::Array(c)) => c
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => {
            // Every column whose values are all numbers.
            let mut names: Vec<String> = Vec::new();
            for row in rows.iter() {
                for k in row.as_object().into_iter().flat_map(Map::keys) {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
            }
            names
                .into_iter()
                .filter(|c| {
                    rows.iter()
                        .all(|r| r.get(c).is_none_or(|v| matches!(v, Value::Number(_))))
                })
                .collect()
        }
    };
    for col in columns {
        let values: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.get(&col).and_then(number))
            .collect();
        if values.is_empty() {
            continue;
        }
        let n = values.len() as f64;
        let (min, max) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        for row in rows.iter_mut() {
            let Some(v) = row.get(&col).and_then(number) else {
                continue;
            };
            let scaled = if method.starts_with('m') {
                if max > min {
                    (v - min) / (max - min)
                } else {
                    0.0
                }
            } else if sd > 0.0 {
                (v - mean) / sd
            } else {
                0.0
            };
            if let Value::Object(m) = row {
                m.insert(col.clone(), json!(scaled));
            }
        }
    }
    Ok(())
}

fn sort(rows: &mut [Value], op: &Map<String, Value>) {
    let fields: Vec<String> = match op
        .get("by")
        .or_else(|| op.get("fields"))
        .or_else(|| op.get("field"))
    {
        Some(Value::Array(c)) => c
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(c)) => vec![c.clone()],
        _ => Vec::new(),
    };
    let descending = matches!(
        op.get("order").and_then(Value::as_str),
        Some("desc" | "descending")
    ) || op.get("descending").and_then(Value::as_bool) == Some(true);
    rows.sort_by(|a, b| {
        let ord = fields
            .iter()
            .map(|f| {
                let (x, y) = (
                    a.get(f).unwrap_or(&Value::Null),
                    b.get(f).unwrap_or(&Value::Null),
                );
                super::compare(x, y).unwrap_or(std::cmp::Ordering::Equal)
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal);
        if descending { ord.reverse() } else { ord }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(v: Value) -> Vec<Map<String, Value>> {
        operations(v.as_object().expect("object")).expect("operations")
    }

    #[test]
    fn the_seeds_cleaning_steps_apply_in_order() {
        let rows = vec![
            json!({"order_id": "1", "quantity": "2", "unit_price": "2.5", "order_date": "2024-03-05", "status": "shipped"}),
            json!({"order_id": "1", "quantity": "9", "unit_price": "1", "order_date": "2024-03-06", "status": "shipped"}),
            json!({"order_id": "2", "quantity": "", "unit_price": "4", "order_date": "2024-04-01", "status": ""}),
            json!({"order_id": "3", "quantity": "1", "unit_price": "7", "order_date": "2024-04-02", "status": "cancelled"}),
        ];
        let list = ops(json!({"operations": [
            {"type": "deduplicate", "columns": ["order_id"], "keep": "first"},
            {"type": "cast", "columns": {"quantity": "integer", "unit_price": "float"}},
            {"type": "fill_missing", "strategy": {"status": "pending", "quantity": 1}},
            {"type": "calculate", "expressions": {"total": "quantity * unit_price", "month": "DATE_FORMAT(order_date, '%Y-%m')"}},
            {"type": "filter", "condition": "status != 'cancelled'"},
        ]}));
        let out = apply(rows, &list).expect("applies");
        assert_eq!(out.rows.len(), 2);
        assert_eq!(out.rows[0]["total"], json!(5.0));
        assert_eq!(out.rows[0]["month"], json!("2024-03"));
        // The empty quantity was cast to 0 first (as the seed does), so it
        // is not missing any more; the empty status was filled.
        assert_eq!(out.rows[1]["quantity"], json!(0));
        assert_eq!(out.rows[1]["status"], json!("pending"));
    }

    #[test]
    fn filter_then_aggregate_as_the_seed_writes_it() {
        let rows = vec![
            json!({"active": true, "value": 10}),
            json!({"active": false, "value": 5}),
            json!({"active": true, "value": 2.5}),
        ];
        let list = ops(json!({"transformations": [
            {"type": "filter", "field": "active", "value": true},
            {"type": "aggregate", "operation": "sum", "field": "value"},
        ]}));
        let out = apply(rows, &list).expect("applies");
        assert_eq!(out.rows.len(), 2);
        assert_eq!(
            out.aggregation,
            Some(json!({"operation": "sum", "field": "value", "result": 12.5}))
        );
    }

    #[test]
    fn normalize_and_unknown_types() {
        let mut rows = vec![json!({"x": 0}), json!({"x": 5}), json!({"x": 10})];
        normalize(&mut rows, &Map::new()).expect("normalizes");
        assert_eq!(rows[1]["x"], json!(0.5));
        let list = ops(json!({"transformations": [{"type": "explode"}]}));
        let err = apply(vec![], &list).err().expect("refused");
        assert!(
            err.message.contains("unknown type 'explode'"),
            "{}",
            err.message
        );
        let err = apply(
            vec![],
            &ops(json!({"operations": [{"type": "calculate", "expressions": {"y": "x *"}}]})),
        )
        .err()
        .expect("refused");
        assert!(err.message.contains("not an expression"), "{}", err.message);
    }
}
