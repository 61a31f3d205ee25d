//! What a chart shows, decided from the rows before anything is drawn:
//! the table's columns, the seed's choice of chart types and of columns.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{ErrorKind, ToolError, type_name};

/// Rows read at most.
pub(super) const MAX_ROWS: usize = 200_000;
/// Bars and slices shown at most (the largest).
pub(super) const MAX_BARS: usize = 20;
pub(super) const MAX_SLICES: usize = 10;
pub(super) const MAX_LINES: usize = 5;
pub(super) const MAX_HEATMAP: usize = 12;
/// Points drawn per scatter plot or line at most: more are thinned evenly
/// (a picture shows no more, and drawing stays quick).
pub(super) const MAX_POINTS: usize = 20_000;
pub(super) const CHART_TYPES: &[&str] = &["bar", "line", "scatter", "histogram", "pie", "heatmap"];

/// Rows as columns: each column's values in row order.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) names: Vec<String>,
    pub(super) rows: Vec<Map<String, Value>>,
}

pub(super) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

pub(super) fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    }
}

impl Table {
    pub(super) fn new(rows: Vec<Value>) -> Result<Table, ToolError> {
        if rows.len() > MAX_ROWS {
            return Err(ToolError::new(
                ErrorKind::LimitExceededError,
                format!(
                    "'data' has {} rows; a chart reads at most {MAX_ROWS}",
                    rows.len()
                ),
            ));
        }
        let mut t = Table::default();
        for (i, row) in rows.into_iter().enumerate() {
            let row = match row {
                Value::Object(m) => m,
                // A list of numbers (or texts) is one column.
                Value::Number(_) | Value::String(_) => {
                    let mut m = Map::new();
                    m.insert("value".into(), row);
                    m
                }
                other => {
                    return Err(ToolError::new(
                        ErrorKind::DataFormatError,
                        format!("'data' row {i} is {}, not an object", type_name(&other)),
                    ));
                }
            };
            for k in row.keys() {
                if !t.names.contains(k) {
                    t.names.push(k.clone());
                }
            }
            t.rows.push(row);
        }
        if t.rows.is_empty() {
            return Err(ToolError::new(
                ErrorKind::DataFormatError,
                "'data' has no rows to chart",
            ));
        }
        Ok(t)
    }

    pub(super) fn column(&self, name: &str) -> impl Iterator<Item = &Value> {
        self.rows
            .iter()
            .map(move |r| r.get(name).unwrap_or(&Value::Null))
    }

    /// Columns whose every present value is a number (text that reads as one
    /// counts), with at least one.
    pub(super) fn numeric(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| {
                let mut any = false;
                for v in self.column(n) {
                    if v.is_null() {
                        continue;
                    }
                    if number(v).is_none() {
                        return false;
                    }
                    any = true;
                }
                any
            })
            .cloned()
            .collect()
    }

    /// Text columns (not numbers), leaving out dates and times as the seed does.
    pub(super) fn categorical(&self) -> Vec<String> {
        let numeric = self.numeric();
        self.names
            .iter()
            .filter(|n| !numeric.contains(n))
            .filter(|n| {
                let l = n.to_lowercase();
                !l.contains("date") && !l.contains("time")
            })
            .filter(|n| self.column(n).any(Value::is_string))
            .cloned()
            .collect()
    }

    pub(super) fn numbers(&self, name: &str) -> Vec<f64> {
        self.column(name).filter_map(number).collect()
    }
}

pub(super) fn pick(candidates: &[String], preferred: &[&str]) -> Option<String> {
    preferred
        .iter()
        .find(|p| candidates.iter().any(|c| c == *p))
        .map(|p| p.to_string())
        .or_else(|| candidates.first().cloned())
}

pub(super) fn title_case(name: &str) -> String {
    name.split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one chart draws, decided from the data before drawing.
#[derive(Debug, Clone)]
pub(super) enum Plot {
    Bars {
        labels: Vec<String>,
        values: Vec<f64>,
        x: String,
        y: String,
    },
    Pie {
        labels: Vec<String>,
        values: Vec<f64>,
    },
    Lines {
        /// (row, value) of each line.
        series: Vec<(String, Vec<(f64, f64)>)>,
        rows: usize,
        x: String,
    },
    Scatter {
        points: Vec<(f64, f64)>,
        x: String,
        y: String,
    },
    Histogram {
        edges: Vec<f64>,
        counts: Vec<u64>,
        x: String,
    },
    Heatmap {
        names: Vec<String>,
        matrix: Vec<Vec<f64>>,
    },
}

/// Sums `num` by `cat` (or counts `cat`'s values), largest first.
pub(super) fn grouped(
    t: &Table,
    cat: &str,
    num: Option<&str>,
    keep: usize,
) -> (Vec<String>, Vec<f64>) {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for row in &t.rows {
        let key = label(row.get(cat).unwrap_or(&Value::Null));
        let add = match num {
            Some(n) => row.get(n).and_then(number).unwrap_or(0.0),
            None => 1.0,
        };
        if !sums.contains_key(&key) {
            order.push(key.clone());
        }
        *sums.entry(key).or_insert(0.0) += add;
    }
    let mut pairs: Vec<(String, f64)> = order
        .into_iter()
        .map(|k| {
            let v = sums.get(&k).copied().unwrap_or(0.0);
            (k, v)
        })
        .collect();
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    pairs.truncate(keep);
    pairs.into_iter().unzip()
}

pub(super) struct Columns<'a> {
    pub(super) x: Option<&'a str>,
    pub(super) y: Option<&'a str>,
}

pub(super) fn plan(
    kind: &str,
    t: &Table,
    cols: &Columns,
    bins: usize,
) -> Result<(Plot, String), String> {
    let numeric = t.numeric();
    let categorical = t.categorical();
    let num = cols.y.map(str::to_string).or_else(|| {
        pick(
            &numeric,
            &["revenue", "sales", "units_sold", "amount", "value", "count"],
        )
    });
    let cat = cols.x.map(str::to_string).or_else(|| {
        pick(
            &categorical,
            &[
                "product_category",
                "region",
                "product_type",
                "category",
                "type",
                "status",
            ],
        )
    });
    match kind {
        "bar" | "pie" => {
            let keep = if kind == "bar" { MAX_BARS } else { MAX_SLICES };
            let (labels, values, x, y) = match (&cat, &num) {
                (Some(c), Some(n)) => {
                    let (l, v) = grouped(t, c, Some(n), keep);
                    (l, v, title_case(c), format!("Total {}", title_case(n)))
                }
                (Some(c), None) => {
                    let (l, v) = grouped(t, c, None, keep);
                    (l, v, title_case(c), "Count".to_string())
                }
                (None, Some(n)) => {
                    let values: Vec<f64> = t
                        .column(n)
                        .map(|v| number(v).unwrap_or(0.0))
                        .take(keep)
                        .collect();
                    let labels = (0..values.len()).map(|i| i.to_string()).collect();
                    (labels, values, "Index".to_string(), title_case(n))
                }
                (None, None) => {
                    let first = t.names.first().cloned().unwrap_or_default();
                    let (l, v) = grouped(t, &first, None, keep);
                    (l, v, "Values".to_string(), "Count".to_string())
                }
            };
            let title = if cat.is_some() && num.is_some() {
                format!("{y} by {x}")
            } else {
                "Category Distribution".to_string()
            };
            if kind == "bar" {
                Ok((
                    Plot::Bars {
                        labels,
                        values,
                        x,
                        y,
                    },
                    title,
                ))
            } else {
                if values.iter().any(|v| *v < 0.0) {
                    return Err("a pie chart needs values that are not negative".into());
                }
                if values.iter().sum::<f64>() <= 0.0 {
                    return Err("a pie chart needs values that add up to more than 0".into());
                }
                let title = if title == "Category Distribution" {
                    title
                } else {
                    format!("Share of {title}")
                };
                Ok((Plot::Pie { labels, values }, title))
            }
        }
        "line" => {
            let mut names: Vec<String> = match cols.y {
                Some(y) => vec![y.to_string()],
                None => numeric.iter().take(MAX_LINES).cloned().collect(),
            };
            names.retain(|n| !t.numbers(n).is_empty());
            if names.is_empty() {
                return Err("a line chart needs a numeric column".into());
            }
            let series = names
                .iter()
                .map(|n| {
                    let points: Vec<(f64, f64)> = t
                        .column(n)
                        .enumerate()
                        .filter_map(|(i, v)| Some((i as f64, number(v)?)))
                        .collect();
                    (title_case(n), thin(points))
                })
                .collect();
            Ok((
                Plot::Lines {
                    series,
                    rows: t.rows.len(),
                    x: cols.x.map(title_case).unwrap_or_else(|| "Row".into()),
                },
                "Trends".to_string(),
            ))
        }
        "scatter" => {
            let (x, y) = match (cols.x, cols.y) {
                (Some(x), Some(y)) => (x.to_string(), y.to_string()),
                _ if numeric.len() >= 2 => (numeric[0].clone(), numeric[1].clone()),
                _ => return Err("a scatter plot needs two numeric columns".into()),
            };
            let points: Vec<(f64, f64)> = t
                .rows
                .iter()
                .filter_map(|r| Some((number(r.get(&x)?)?, number(r.get(&y)?)?)))
                .collect();
            if points.is_empty() {
                return Err(format!("no row has numbers in both '{x}' and '{y}'"));
            }
            let points = thin(points);
            let title = format!("{} vs {}", title_case(&y), title_case(&x));
            Ok((
                Plot::Scatter {
                    points,
                    x: title_case(&x),
                    y: title_case(&y),
                },
                title,
            ))
        }
        "histogram" => {
            let Some(n) = num else {
                return Err("a histogram needs a numeric column".into());
            };
            let values = t.numbers(&n);
            if values.is_empty() {
                return Err(format!("column '{n}' has no numbers"));
            }
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if hi <= lo {
                hi = lo + 1.0;
            }
            let width = (hi - lo) / bins as f64;
            let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
            let mut counts = vec![0u64; bins];
            for v in values {
                let i = (((v - lo) / width) as usize).min(bins - 1);
                counts[i] += 1;
            }
            let title = format!("Distribution of {}", title_case(&n));
            Ok((
                Plot::Histogram {
                    edges,
                    counts,
                    x: title_case(&n),
                },
                title,
            ))
        }
        "heatmap" => {
            let names: Vec<String> = numeric.into_iter().take(MAX_HEATMAP).collect();
            if names.len() < 2 {
                return Err("a heatmap needs two numeric columns or more".into());
            }
            let cols: Vec<Vec<Option<f64>>> = names
                .iter()
                .map(|n| t.column(n).map(number).collect())
                .collect();
            let matrix = cols
                .iter()
                .map(|a| cols.iter().map(|b| correlation(a, b)).collect())
                .collect();
            Ok((
                Plot::Heatmap {
                    names: names.iter().map(|n| title_case(n)).collect(),
                    matrix,
                },
                "Correlation Matrix".to_string(),
            ))
        }
        other => Err(format!("unknown chart type '{other}'")),
    }
}

/// Every k-th item, so that at most `MAX_POINTS` are left.
pub(super) fn thin<T: Copy>(items: Vec<T>) -> Vec<T> {
    if items.len() <= MAX_POINTS {
        return items;
    }
    let step = items.len().div_ceil(MAX_POINTS);
    items.into_iter().step_by(step).collect()
}

/// Pearson's correlation over the rows where both have a number.
pub(super) fn correlation(a: &[Option<f64>], b: &[Option<f64>]) -> f64 {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
        .collect();
    let n = pairs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx.sqrt() * syy.sqrt())
    }
}

/// The chart types `auto` stands for, as the seed detects them.
pub(super) fn detect(t: &Table) -> Vec<String> {
    let numeric = t.numeric();
    let categorical = t.categorical();
    let mut out = Vec::new();
    if !categorical.is_empty() && !numeric.is_empty() {
        out.push("bar");
    }
    if numeric.len() >= 2 {
        out.push("scatter");
    }
    if !numeric.is_empty() {
        out.push("histogram");
    }
    if let Some(c) = categorical.first() {
        let distinct: std::collections::BTreeSet<String> = t.column(c).map(label).collect();
        if distinct.len() <= 10 {
            out.push("pie");
        }
    }
    if numeric.len() >= 3 {
        out.push("heatmap");
    }
    if out.is_empty() {
        out.push("bar");
    }
    out.into_iter().map(str::to_string).collect()
}
