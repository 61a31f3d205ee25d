//! `data-processing` `profile`: what each column holds, and duplicate rows.

use serde_json::{Map, Value, json};

/// A number a cell holds (numbers, or text that reads as one).
fn number_in(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Profiles rows column by column (the columns of the first row), with the
/// seed's measures; `options` picks among them (all when empty).
pub(super) fn profile(rows: &[Value], options: &[String]) -> Value {
    let all = options.is_empty();
    let wants = |o: &str| all || options.iter().any(|x| x == o);
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return json!({"row_count": 0, "column_count": 0, "columns": {}, "message": "No data to profile"});
    };
    let n = rows.len() as f64;
    let mut columns = Map::new();
    for column in first.keys() {
        let values: Vec<&Value> = rows
            .iter()
            .map(|r| r.get(column).unwrap_or(&Value::Null))
            .collect();
        let blank =
            |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.is_empty() || s == "null");
        let mut col = Map::new();
        col.insert("name".into(), json!(column));
        if wants("missing_values") {
            let missing = values.iter().filter(|v| blank(v)).count();
            col.insert("missing_count".into(), json!(missing));
            col.insert(
                "missing_percentage".into(),
                json!(missing as f64 / n * 100.0),
            );
        }
        if wants("data_types") {
            let numbers: Vec<f64> = values.iter().filter_map(|v| number_in(v)).collect();
            let dates = values
                .iter()
                .filter(|v| {
                    v.as_str()
                        .is_some_and(|s| s.contains('-') || s.contains('/'))
                })
                .count();
            let kind = if numbers.len() as f64 > n * 0.8 {
                "numeric"
            } else if dates as f64 > n * 0.8 {
                "date"
            } else {
                "string"
            };
            col.insert("data_type".into(), json!(kind));
            if wants("statistical_summary") && !numbers.is_empty() {
                let mut sorted = numbers.clone();
                sorted.sort_by(f64::total_cmp);
                let mean = numbers.iter().sum::<f64>() / numbers.len() as f64;
                col.insert("min".into(), json!(sorted[0]));
                col.insert("max".into(), json!(sorted[sorted.len() - 1]));
                col.insert("mean".into(), json!(mean));
                if sorted.len() > 1 {
                    let mid = sorted.len() / 2;
                    let median = if sorted.len().is_multiple_of(2) {
                        (sorted[mid - 1] + sorted[mid]) / 2.0
                    } else {
                        sorted[mid]
                    };
                    let var = numbers.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                        / (numbers.len() - 1) as f64;
                    col.insert("median".into(), json!(median));
                    col.insert("std_dev".into(), json!(var.sqrt()));
                }
                if wants("outlier_detection") && sorted.len() > 3 {
                    let q1 = sorted[sorted.len() / 4];
                    let q3 = sorted[3 * sorted.len() / 4];
                    let (low, high) = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1));
                    let outliers = numbers.iter().filter(|x| **x < low || **x > high).count();
                    col.insert("outlier_count".into(), json!(outliers));
                    col.insert(
                        "outlier_percentage".into(),
                        json!(outliers as f64 / numbers.len() as f64 * 100.0),
                    );
                }
            }
        }
        let unique: std::collections::HashSet<String> = values
            .iter()
            .filter(|v| !blank(v))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        col.insert("unique_count".into(), json!(unique.len()));
        col.insert(
            "unique_percentage".into(),
            json!(unique.len() as f64 / n * 100.0),
        );
        columns.insert(column.clone(), Value::Object(col));
    }
    let mut out = json!({"row_count": rows.len(), "column_count": first.len(), "columns": columns});
    if wants("duplicate_detection") {
        let distinct: std::collections::HashSet<String> =
            rows.iter().map(Value::to_string).collect();
        let duplicates = rows.len() - distinct.len();
        out["duplicate_rows"] = json!(duplicates);
        out["duplicate_percentage"] = json!(duplicates as f64 / n * 100.0);
    }
    out
}
