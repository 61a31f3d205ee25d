//! `pivot`, `clean` and `merge`: the seed's data-processing actions that
//! change the shape of the rows.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::{aggregate, loosely_equal, number, strings};
use crate::ToolError;

/// A column's text, for keys and pivot column names.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `pivot`: one row per `index` value, one column per `columns` value (per
/// `values` field when there are several: `{value}_{column}`), cells
/// aggregated by `aggfunc` (sum, mean, count, min, max), empty cells
/// `fill_value` (default 0).
pub(super) fn pivot(rows: &[Value], params: &Map<String, Value>) -> Result<Value, ToolError> {
    let index = strings(params.get("index"), "index")?;
    let columns = strings(params.get("columns"), "columns")?;
    let values = strings(params.get("values"), "values")?;
    if index.is_empty() || columns.is_empty() || values.is_empty() {
        return Err(ToolError::invalid(
            "pivot needs 'index', 'columns' and 'values'",
        ));
    }
    let op = match params
        .get("aggfunc")
        .and_then(Value::as_str)
        .unwrap_or("sum")
    {
        "mean" | "avg" | "average" => "avg",
        op @ ("sum" | "count" | "min" | "max") => op,
        other => {
            return Err(ToolError::invalid(format!(
                "aggfunc '{other}' is not sum, mean, count, min or max"
            )));
        }
    };
    let fill = params.get("fill_value").cloned().unwrap_or(json!(0));
    let mut group_by = index.clone();
    group_by.extend(columns.iter().cloned());
    let aggs: Map<String, Value> = values
        .iter()
        .map(|v| (v.clone(), json!({"op": op, "field": v})))
        .collect();
    let cells = aggregate(rows, &group_by, &aggs)?;
    let mut out: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for cell in &cells {
        let key_values: Map<String, Value> = index
            .iter()
            .map(|i| (i.clone(), cell.get(i).cloned().unwrap_or(Value::Null)))
            .collect();
        let key = Value::Object(key_values.clone()).to_string();
        let column = columns
            .iter()
            .map(|c| text(cell.get(c).unwrap_or(&Value::Null)))
            .collect::<Vec<_>>()
            .join("_");
        let row = out.entry(key).or_insert(key_values);
        for v in &values {
            let name = if values.len() == 1 {
                column.clone()
            } else {
                format!("{v}_{column}")
            };
            names.insert(name.clone());
            row.insert(name, cell.get(v).cloned().unwrap_or(Value::Null));
        }
    }
    let data: Vec<Value> = out
        .into_values()
        .map(|mut row| {
            for name in &names {
                let cell = row.entry(name.clone()).or_insert(Value::Null);
                if cell.is_null() {
                    *cell = fill.clone();
                }
            }
            Value::Object(row)
        })
        .collect();
    Ok(json!({"count": data.len(), "data": data, "columns": names}))
}

/// `clean`: duplicate rows removed (`remove_duplicates`, default true),
/// missing values handled (`handle_missing`: drop (default), forward_fill,
/// backward_fill, mean, zero, or keep), numeric outliers removed
/// (`remove_outliers`, by the 1.5 IQR rule).
pub(super) fn clean(rows: Vec<Value>, params: &Map<String, Value>) -> Result<Value, ToolError> {
    let flag =
        |key: &str, default: bool| params.get(key).and_then(Value::as_bool).unwrap_or(default);
    let missing = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
    let before = rows.len();
    let mut data = rows;
    let mut removed_duplicates = 0;
    if flag("remove_duplicates", true) {
        let mut seen = BTreeSet::new();
        data.retain(|r| seen.insert(r.to_string()));
        removed_duplicates = before - data.len();
    }
    let fields: Vec<String> = {
        let mut f = Vec::new();
        for row in &data {
            for k in row.as_object().into_iter().flatten().map(|(k, _)| k) {
                if !f.contains(k) {
                    f.push(k.clone());
                }
            }
        }
        f
    };
    let mut removed_missing = 0;
    let mut filled = 0;
    match params
        .get("handle_missing")
        .and_then(Value::as_str)
        .unwrap_or("drop")
    {
        "drop" => {
            let n = data.len();
            data.retain(|r| {
                !fields
                    .iter()
                    .any(|f| missing(r.get(f).unwrap_or(&Value::Null)))
            });
            removed_missing = n - data.len();
        }
        how @ ("forward_fill" | "ffill" | "backward_fill" | "bfill") => {
            let backward = how.starts_with('b');
            let order: Vec<usize> = if backward {
                (0..data.len()).rev().collect()
            } else {
                (0..data.len()).collect()
            };
            for f in &fields {
                let mut last: Option<Value> = None;
                for &i in &order {
                    let Some(row) = data[i].as_object_mut() else {
                        continue;
                    };
                    let cell = row.entry(f.clone()).or_insert(Value::Null);
                    if missing(cell) {
                        if let Some(v) = &last {
                            *cell = v.clone();
                            filled += 1;
                        }
                    } else {
                        last = Some(cell.clone());
                    }
                }
            }
        }
        how @ ("mean" | "zero") => {
            for f in &fields {
                let nums: Vec<f64> = data
                    .iter()
                    .filter_map(|r| r.get(f).and_then(number))
                    .collect();
                let fill = match how {
                    "zero" => Some(json!(0)),
                    _ if nums.is_empty() => None,
                    _ => Some(json!(nums.iter().sum::<f64>() / nums.len() as f64)),
                };
                let Some(fill) = fill else { continue };
                for row in data.iter_mut().filter_map(Value::as_object_mut) {
                    let cell = row.entry(f.clone()).or_insert(Value::Null);
                    if missing(cell) {
                        *cell = fill.clone();
                        filled += 1;
                    }
                }
            }
        }
        "keep" | "none" => {}
        other => {
            return Err(ToolError::invalid(format!(
                "handle_missing '{other}' is not drop, forward_fill, backward_fill, mean, zero or keep"
            )));
        }
    }
    let mut removed_outliers = 0;
    if flag("remove_outliers", false) {
        for f in &fields {
            let mut nums: Vec<f64> = data
                .iter()
                .filter_map(|r| r.get(f).and_then(number))
                .collect();
            if nums.len() < 4 {
                continue;
            }
            nums.sort_by(f64::total_cmp);
            let q = |p: f64| {
                let pos = p * (nums.len() - 1) as f64;
                let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                nums[lo] + (nums[hi] - nums[lo]) * (pos - lo as f64)
            };
            let (q1, q3) = (q(0.25), q(0.75));
            let (low, high) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
            let n = data.len();
            data.retain(|r| {
                r.get(f)
                    .and_then(number)
                    .is_none_or(|x| x >= low && x <= high)
            });
            removed_outliers += n - data.len();
        }
    }
    Ok(json!({
        "count": data.len(),
        "data": data,
        "original_count": before,
        "removed_duplicates": removed_duplicates,
        "removed_missing": removed_missing,
        "filled_missing": filled,
        "removed_outliers": removed_outliers,
    }))
}

/// `merge`: `datasets` (each rows, or CSV/JSON text) combined by
/// `merge_strategy`: `combine`/`concat`/`append` (one after another) or
/// `join` on `join_on` (`join_type`: inner, left, outer).
pub(super) fn merge(params: &Map<String, Value>) -> Result<Value, ToolError> {
    let Some(Value::Array(sets)) = params.get("datasets") else {
        return Err(ToolError::invalid(
            "merge needs 'datasets': a list of datasets",
        ));
    };
    let mut tables = Vec::with_capacity(sets.len());
    for (i, set) in sets.iter().enumerate() {
        tables.push(match set {
            Value::Array(rows) => rows.clone(),
            Value::String(text) => match serde_json::from_str::<Value>(text.trim()) {
                Ok(Value::Array(rows)) => rows,
                _ => super::parse_csv(text)?,
            },
            Value::Object(m) => match m.get("data") {
                Some(Value::Array(rows)) => rows.clone(),
                _ => vec![set.clone()],
            },
            _ => {
                return Err(ToolError::invalid(format!(
                    "dataset {i} must be rows, or CSV/JSON text"
                )));
            }
        });
    }
    let strategy = params
        .get("merge_strategy")
        .and_then(Value::as_str)
        .unwrap_or("combine");
    let data: Vec<Value> = match strategy {
        "combine" | "concat" | "append" | "union" => tables.into_iter().flatten().collect(),
        "join" => {
            let key = params
                .get("join_on")
                .and_then(Value::as_str)
                .ok_or_else(|| ToolError::invalid("a join needs 'join_on' (a field)"))?;
            let how = params
                .get("join_type")
                .and_then(Value::as_str)
                .unwrap_or("inner");
            if !["inner", "left", "outer"].contains(&how) {
                return Err(ToolError::invalid(format!(
                    "join_type '{how}' is not inner, left or outer"
                )));
            }
            let mut tables = tables.into_iter();
            let mut joined = tables.next().unwrap_or_default();
            for right in tables {
                let mut next = Vec::new();
                let mut used = vec![false; right.len()];
                for l in &joined {
                    let lk = l.get(key).unwrap_or(&Value::Null);
                    let mut matched = false;
                    for (j, r) in right.iter().enumerate() {
                        if !lk.is_null() && loosely_equal(lk, r.get(key).unwrap_or(&Value::Null)) {
                            let mut row = l.as_object().cloned().unwrap_or_default();
                            for (k, v) in r.as_object().into_iter().flatten() {
                                row.entry(k.clone()).or_insert(v.clone());
                            }
                            next.push(Value::Object(row));
                            used[j] = true;
                            matched = true;
                        }
                    }
                    if !matched && how != "inner" {
                        next.push(l.clone());
                    }
                }
                if how == "outer" {
                    next.extend(
                        right
                            .into_iter()
                            .zip(used)
                            .filter(|(_, u)| !u)
                            .map(|(r, _)| r),
                    );
                }
                joined = next;
            }
            joined
        }
        other => {
            return Err(ToolError::invalid(format!(
                "merge_strategy '{other}' is not combine or join"
            )));
        }
    };
    Ok(json!({"count": data.len(), "data": data}))
}
