//! `data-processing`: filter, convert, aggregate, transform and profile tabular data —
//! a list of objects, CSV text, JSON (a list, or an object holding one, as
//! `{"records": [...]}`), or a workspace `.csv` / `.json` file.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Number, Value, json};

use crate::ErrorKind;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, type_name};

mod profile;
mod reshape;
mod transform;
use profile::profile;

#[derive(Debug, Clone, Copy, Default)]
pub struct DataProcessing;

/// Largest input read from a file, in bytes.
const MAX_INPUT_BYTES: u64 = 50 * 1024 * 1024;

/// Parses CSV text (first row: headers) into objects of strings.
pub fn parse_csv(text: &str) -> Result<Vec<Value>, ToolError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| bad_csv(&e))?.clone();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad_csv(&e))?;
        let row: Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        rows.push(Value::Object(row));
    }
    Ok(rows)
}

fn bad_csv(e: &csv::Error) -> ToolError {
    ToolError::new(ErrorKind::DataFormatError, format!("invalid CSV: {e}"))
}

/// Writes objects as CSV; the columns are every key in first-seen order.
pub fn to_csv(rows: &[Value]) -> Result<String, ToolError> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        let obj = row
            .as_object()
            .ok_or_else(|| ToolError::invalid("CSV rows must be objects"))?;
        for k in obj.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&columns).map_err(|e| bad_csv(&e))?;
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        writer.write_record(&cells).map_err(|e| bad_csv(&e))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))
}

/// The rows to work on, and the format they came in.
pub(crate) async fn rows_of(
    params: &Map<String, Value>,
    ctx: &ToolContext,
) -> Result<(Vec<Value>, &'static str), ToolError> {
    let format = params.get("format").and_then(Value::as_str);
    let (text, fmt) = match (params.get("data"), params.get("path")) {
        (Some(Value::Array(rows)), _) => return Ok((rows.clone(), "json")),
        (Some(Value::Object(doc)), _) => return Ok((rows_in(doc.clone()), "json")),
        (Some(Value::String(text)), _) => (
            text.clone(),
            format
                .unwrap_or(if text.trim_start().starts_with(['[', '{']) {
                    "json"
                } else {
                    "csv"
                })
                .to_string(),
        ),
        (Some(other), _) => {
            return Err(ToolError::invalid(format!(
                "'data' must be a list of objects or CSV/JSON text, got {}",
                type_name(other)
            )));
        }
        (None, Some(Value::String(path))) => {
            let file = crate::filesystem::resolve(&ctx.workspace, path)?;
            let meta = tokio::fs::metadata(&file.full).await.map_err(|_| {
                ToolError::new(
                    ErrorKind::FileNotFoundError,
                    format!("'{}' does not exist", file.relative),
                )
            })?;
            if meta.len() > MAX_INPUT_BYTES {
                return Err(ToolError::new(
                    ErrorKind::FileTooLargeError,
                    format!("'{}' is larger than {MAX_INPUT_BYTES} bytes", file.relative),
                ));
            }
            let text = tokio::fs::read_to_string(&file.full)
                .await
                .map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))?;
            let fmt = format.map(str::to_string).unwrap_or_else(|| {
                if file.relative.ends_with(".json") {
                    "json".into()
                } else {
                    "csv".into()
                }
            });
            (text, fmt)
        }
        _ => {
            return Err(ToolError::invalid(
                "give 'data' (rows or CSV/JSON text) or a workspace 'path'",
            ));
        }
    };
    match fmt.as_str() {
        "csv" => Ok((parse_csv(&text)?, "csv")),
        "json" => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(rows)) => Ok((rows, "json")),
            Ok(Value::Object(doc)) => Ok((rows_in(doc), "json")),
            Ok(other) => Err(ToolError::new(
                ErrorKind::DataFormatError,
                format!(
                    "JSON data must be a list of objects or an object, got {}",
                    type_name(&other)
                ),
            )),
            Err(e) => Err(ToolError::new(
                ErrorKind::DataFormatError,
                format!("invalid JSON: {e}"),
            )),
        },
        other => Err(ToolError::invalid(format!(
            "format '{other}' is not csv or json"
        ))),
    }
}

/// The rows of a JSON object, as the seed's data files hold them: the list
/// under `records` (or `data`, `rows`, `items`), else the one list of
/// objects it has, else the object itself as one row.
fn rows_in(mut doc: Map<String, Value>) -> Vec<Value> {
    for key in ["records", "data", "rows", "items"] {
        if let Some(Value::Array(rows)) = doc.get(key) {
            return rows.clone();
        }
    }
    let lists: Vec<&String> = doc
        .iter()
        .filter(|(_, v)| {
            v.as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_object))
        })
        .map(|(k, _)| k)
        .collect();
    if let [only] = lists.as_slice() {
        let key = (*only).clone();
        if let Some(Value::Array(rows)) = doc.remove(&key) {
            return rows;
        }
    }
    vec![Value::Object(doc)]
}

/// A number, if the value is one or is text that reads as one.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y),
        _ => match (a, b) {
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        },
    }
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    a == b || compare(a, b) == Some(Ordering::Equal)
}

/// Whether a row matches every criterion: `field: value` or `field: {op: value}`
/// with ops eq, ne, gt, gte, lt, lte, contains, in.
fn matches(row: &Value, criteria: &Map<String, Value>) -> Result<bool, ToolError> {
    for (field, test) in criteria {
        let value = row.get(field).unwrap_or(&Value::Null);
        let ok = match test {
            Value::Object(ops) => {
                let mut all = true;
                for (op, expected) in ops {
                    let ord = compare(value, expected);
                    all &= match op.as_str() {
                        "eq" => loosely_equal(value, expected),
                        "ne" => !loosely_equal(value, expected),
                        "gt" => ord == Some(Ordering::Greater),
                        "gte" => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                        "lt" => ord == Some(Ordering::Less),
                        "lte" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                        "contains" => match (value, expected) {
                            (Value::String(s), Value::String(t)) => s.contains(t.as_str()),
                            (Value::Array(items), x) => items.iter().any(|i| loosely_equal(i, x)),
                            _ => false,
                        },
                        "in" => expected
                            .as_array()
                            .is_some_and(|opts| opts.iter().any(|o| loosely_equal(value, o))),
                        other => {
                            return Err(ToolError::invalid(format!(
                                "unknown operator '{other}' for '{field}'; use eq, ne, gt, gte, lt, lte, contains, in"
                            )));
                        }
                    };
                }
                all
            }
            expected => loosely_equal(value, expected),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn to_number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn aggregate(
    rows: &[Value],
    group_by: &[String],
    aggs: &Map<String, Value>,
) -> Result<Vec<Value>, ToolError> {
    let mut groups: BTreeMap<String, (Map<String, Value>, Vec<&Value>)> = BTreeMap::new();
    for row in rows {
        let key_values: Map<String, Value> = group_by
            .iter()
            .map(|g| (g.clone(), row.get(g).cloned().unwrap_or(Value::Null)))
            .collect();
        let key = Value::Object(key_values.clone()).to_string();
        groups
            .entry(key)
            .or_insert_with(|| (key_values, Vec::new()))
            .1
            .push(row);
    }
    let mut out = Vec::new();
    for (_, (mut result, members)) in groups {
        for (name, spec) in aggs {
            let (op, field) = match spec {
                Value::String(op) => (op.as_str(), None),
                Value::Object(m) => (
                    m.get("op").and_then(Value::as_str).ok_or_else(|| {
                        ToolError::invalid(format!("aggregation '{name}' needs an 'op'"))
                    })?,
                    m.get("field").and_then(Value::as_str),
                ),
                _ => {
                    return Err(ToolError::invalid(format!(
                        "aggregation '{name}' must be {{op, field}}"
                    )));
                }
            };
            let values: Vec<f64> = match field {
                Some(f) => members
                    .iter()
                    .filter_map(|r| r.get(f).and_then(number))
                    .collect(),
                None => Vec::new(),
            };
            let value = match op {
                "count" => Value::from(match field {
                    Some(f) => members
                        .iter()
                        .filter(|r| r.get(f).is_some_and(|v| !v.is_null()))
                        .count(),
                    None => members.len(),
                }),
                "sum" => to_number(values.iter().sum()),
                "avg" | "mean" if values.is_empty() => Value::Null,
                "avg" | "mean" => to_number(values.iter().sum::<f64>() / values.len() as f64),
                "min" => values
                    .iter()
                    .copied()
                    .reduce(f64::min)
                    .map(to_number)
                    .unwrap_or(Value::Null),
                "max" => values
                    .iter()
                    .copied()
                    .reduce(f64::max)
                    .map(to_number)
                    .unwrap_or(Value::Null),
                other => {
                    return Err(ToolError::invalid(format!(
                        "unknown aggregation '{other}'; use count, sum, avg, min, max"
                    )));
                }
            };
            if field.is_none() && op != "count" {
                return Err(ToolError::invalid(format!(
                    "aggregation '{name}' ({op}) needs a 'field'"
                )));
            }
            result.insert(name.clone(), value);
        }
        out.push(Value::Object(result));
    }
    Ok(out)
}

fn strings(v: Option<&Value>, name: &str) -> Result<Vec<String>, ToolError> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ToolError::invalid(format!("'{name}' must list field names")))
            })
            .collect(),
        Some(other) => Err(ToolError::invalid(format!(
            "'{name}' must be a field name or a list, got {}",
            type_name(other)
        ))),
    }
}

#[async_trait]
impl Tool for DataProcessing {
    fn id(&self) -> &str {
        "data-processing"
    }

    fn description(&self) -> &str {
        "Filter, convert (CSV <-> JSON), aggregate and transform tabular data"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let input = json!({
            "data": {"description": "a list of objects, or CSV/JSON text"},
            "path": {"type": "string", "description": "a workspace .csv or .json file"},
            "format": {"type": "string", "enum": ["csv", "json"]}
        });
        let with = |extra: Value| {
            let mut props = input.as_object().cloned().unwrap_or_default();
            if let Value::Object(e) = extra {
                props.extend(e);
            }
            props.insert(
                "operation".to_string(),
                json!({"type": "object", "description": "the action's settings nested in one object (`operation: {criteria: …}`); keys given directly win"}),
            );
            json!({"type": "object", "properties": props})
        };
        vec![
            action(
                "filter",
                "Keep rows matching every criterion: {data, count}",
                with(json!({"criteria": {"type": "object"}})),
            ),
            action(
                "profile",
                "Per column: missing values, type, numeric summary (min, max, mean, median, std_dev), outliers (IQR), unique values; duplicate rows: {row_count, column_count, columns, duplicate_rows}",
                with(
                    json!({"profiling_options": {"type": "array", "items": {"type": "string", "enum": ["missing_values", "data_types", "statistical_summary", "outlier_detection", "duplicate_detection"]}}}),
                ),
            ),
            action(
                "convert",
                "Convert between CSV and JSON: {content, format, count}",
                with(json!({"to": {"type": "string", "enum": ["csv", "json"]}})),
            ),
            action(
                "aggregate",
                "Group rows and compute count/sum/avg/min/max: {data, count}",
                with(json!({"group_by": {}, "aggregations": {"type": "object"}})),
            ),
            action(
                "transform",
                "Apply `transformations` (or `operations`) in order — filter (field/value or a condition), aggregate (sum, count, mean, min, max of a field), rename_fields, add_field, deduplicate, cast, fill_missing, calculate (expressions over a row), normalize (min-max, z-score), sort — then select and rename fields: {data, count, transformations, aggregation}",
                with(json!({
                    "transformations": {"type": "array", "items": {"type": "object", "required": ["type"]}},
                    "operations": {"type": "array", "items": {"type": "object", "required": ["type"]}},
                    "select": {"type": "array", "items": {"type": "string"}},
                    "rename": {"type": "object"}
                })),
            ),
            action(
                "pivot",
                "One row per index value, one column per columns value, cells aggregated (aggfunc sum, mean, count, min, max; fill_value): {data, count, columns}",
                with(
                    json!({"index": {}, "columns": {}, "values": {}, "aggfunc": {"type": "string"}, "fill_value": {}}),
                ),
            ),
            action(
                "clean",
                "Remove duplicate rows, handle missing values (drop, forward_fill, backward_fill, mean, zero, keep), remove outliers (IQR): {data, count, removed_…}",
                with(
                    json!({"remove_duplicates": {"type": "boolean"}, "handle_missing": {"type": "string"}, "remove_outliers": {"type": "boolean"}}),
                ),
            ),
            action(
                "merge",
                "Combine 'datasets' (rows or CSV/JSON text): one after another, or joined on a field (join_on, join_type inner|left|outer): {data, count}",
                json!({"type": "object", "required": ["datasets"], "properties": {"datasets": {"type": "array", "items": {"description": "rows, or CSV/JSON text"}}, "merge_strategy": {"type": "string", "enum": ["combine", "concat", "append", "union", "join"]}, "join_on": {"type": "string"}, "join_type": {"type": "string", "enum": ["inner", "left", "outer"]}, "operation": {"type": "object"}}}),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        if action == "merge" {
            // Its datasets are in its parameters; the rows come back as JSON.
            return with_processed_data(reshape::merge(&with_operation(params)?)?, "json");
        }
        let (rows, input_format) = rows_of(params, ctx).await?;
        // The seed nests an action's settings under `operation`
        // (`operation: {criteria: …}`); keys given directly win.
        let params = &with_operation(params)?;
        let out = match action {
            "filter" => {
                let criteria = match params.get("criteria") {
                    Some(Value::Object(c)) => c.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => return Err(ToolError::invalid("'criteria' must be an object")),
                };
                let mut kept = Vec::new();
                for row in rows {
                    if matches(&row, &criteria)? {
                        kept.push(row);
                    }
                }
                Ok(json!({"count": kept.len(), "data": kept}))
            }
            "convert" => match params.get("to").and_then(Value::as_str) {
                Some("csv") => {
                    Ok(json!({"format": "csv", "count": rows.len(), "content": to_csv(&rows)?}))
                }
                Some("json") => Ok(
                    json!({"format": "json", "count": rows.len(), "content": Value::Array(rows.clone()).to_string(), "data": rows}),
                ),
                _ => Err(ToolError::invalid("'to' must be csv or json")),
            },
            "aggregate" => {
                let group_by = strings(params.get("group_by"), "group_by")?;
                let aggs = match params.get("aggregations") {
                    Some(Value::Object(a)) => a.clone(),
                    None | Some(Value::Null) => {
                        Map::from_iter([("count".to_string(), Value::String("count".into()))])
                    }
                    Some(_) => {
                        return Err(ToolError::invalid(
                            "'aggregations' must be an object {name: {op, field}}",
                        ));
                    }
                };
                let data = aggregate(&rows, &group_by, &aggs)?;
                Ok(json!({"count": data.len(), "data": data}))
            }
            "transform" => {
                let ops = transform::operations(params)?;
                let done = transform::apply(rows, &ops)?;
                let rows = done.rows;
                let select = strings(params.get("select"), "select")?;
                let rename = match params.get("rename") {
                    Some(Value::Object(r)) => r.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        return Err(ToolError::invalid("'rename' must be an object {old: new}"));
                    }
                };
                let data: Vec<Value> = rows
                    .iter()
                    .map(|row| {
                        let obj = row.as_object().cloned().unwrap_or_default();
                        let picked: Vec<(String, Value)> = if select.is_empty() {
                            obj.into_iter().collect()
                        } else {
                            select
                                .iter()
                                .map(|f| (f.clone(), obj.get(f).cloned().unwrap_or(Value::Null)))
                                .collect()
                        };
                        Value::Object(
                            picked
                                .into_iter()
                                .map(|(k, v)| {
                                    (
                                        rename
                                            .get(&k)
                                            .and_then(Value::as_str)
                                            .map(str::to_string)
                                            .unwrap_or(k),
                                        v,
                                    )
                                })
                                .collect(),
                        )
                    })
                    .collect();
                let mut out = json!({"count": data.len(), "data": data});
                if !ops.is_empty() {
                    out["transformations"] =
                        Value::Array(ops.into_iter().map(Value::Object).collect());
                }
                if let Some(a) = done.aggregation {
                    out["aggregation"] = a;
                }
                Ok(out)
            }
            "pivot" => reshape::pivot(&rows, params),
            "clean" => reshape::clean(rows, params),
            "profile" => {
                let options = strings(params.get("profiling_options"), "profiling_options")?;
                let profile = profile(&rows, &options);
                let mut out = profile.clone();
                if let Value::Object(m) = &mut out {
                    m.insert("processed_data".to_string(), profile);
                }
                return Ok(out);
            }
            other => Err(ToolError::invalid(format!(
                "data-processing has no action '{other}'"
            ))),
        }?;
        with_processed_data(out, input_format)
    }
}

/// `params` with the keys of `operation` added where not given directly.
fn with_operation(params: &Map<String, Value>) -> Result<Map<String, Value>, ToolError> {
    let mut merged = params.clone();
    match merged.remove("operation") {
        None | Some(Value::Null) => {}
        Some(Value::Object(op)) => {
            for (k, v) in op {
                merged.entry(k).or_insert(v);
            }
        }
        Some(_) => return Err(ToolError::invalid("'operation' must be an object")),
    }
    Ok(merged)
}

/// Adds `processed_data`, the rows in the format they came in (CSV text
/// for CSV input), as the seed's pipelines read them.
fn with_processed_data(mut out: Value, input_format: &str) -> Result<Value, ToolError> {
    let Some(rows) = out.get("data").and_then(Value::as_array).cloned() else {
        return Ok(out);
    };
    let processed = if input_format == "csv" {
        Value::String(to_csv(&rows)?)
    } else {
        Value::Array(rows)
    };
    if let Value::Object(m) = &mut out {
        m.insert("processed_data".to_string(), processed);
    }
    Ok(out)
}
