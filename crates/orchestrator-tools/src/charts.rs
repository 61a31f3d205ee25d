//! `visualization`: charts from rows of data, as PNG or SVG files in the
//! workspace, and an HTML page that shows them — the seed's tool, with its
//! actions (`create_charts`, `create_dashboard`, `export_figures`), its
//! parameters (`data`, `chart_types`, `output_dir`, `title`, `theme`,
//! `width`, `height`, `format`, `charts`, `layout`) and its result shapes.
//!
//! What each chart shows follows the seed: a bar or pie chart sums the first
//! numeric column (preferring `revenue`, `sales`, `amount`, `value`, …) by
//! the first text column (preferring `category`, `region`, …); a line chart
//! draws up to five numeric columns over the rows; a scatter plot the first
//! two numeric columns; a histogram the first numeric column; a heatmap the
//! correlations between numeric columns. `x_column` and `y_column` choose
//! the columns instead. Text is set in an embedded font (DejaVu Sans), so
//! nothing depends on the fonts of the machine.

use std::collections::BTreeMap;
use std::sync::Once;

use async_trait::async_trait;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::filesystem::resolve;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, optional_str, type_name};

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
/// Rows read at most.
const MAX_ROWS: usize = 200_000;
/// Bars and slices shown at most (the largest).
const MAX_BARS: usize = 20;
const MAX_SLICES: usize = 10;
const MAX_LINES: usize = 5;
const MAX_HEATMAP: usize = 12;
/// Points drawn per scatter plot or line at most: more are thinned evenly
/// (a picture shows no more, and drawing stays quick).
const MAX_POINTS: usize = 20_000;
const MIN_SIDE: u32 = 100;
const MAX_SIDE: u32 = 4000;
const CHART_TYPES: &[&str] = &["bar", "line", "scatter", "histogram", "pie", "heatmap"];

static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is compiled in; it parses.
            let _ = plotters::style::register_font(FAMILY, style, FONT);
        }
    });
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Visualization;

/// Colours of a theme.
#[derive(Debug, Clone, Copy)]
struct Theme {
    background: RGBColor,
    plot: RGBColor,
    text: RGBColor,
    grid: RGBColor,
    palette: [RGBColor; 8],
}

const TAB10: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn theme(name: &str) -> Result<Theme, ToolError> {
    Ok(match name {
        "default" => Theme {
            background: WHITE,
            plot: WHITE,
            text: RGBColor(30, 30, 30),
            grid: RGBColor(225, 225, 225),
            palette: TAB10,
        },
        "seaborn" => Theme {
            background: WHITE,
            plot: RGBColor(234, 234, 242),
            text: RGBColor(40, 40, 40),
            grid: WHITE,
            palette: [
                RGBColor(76, 114, 176),
                RGBColor(221, 132, 82),
                RGBColor(85, 168, 104),
                RGBColor(196, 78, 82),
                RGBColor(129, 114, 179),
                RGBColor(147, 120, 96),
                RGBColor(218, 139, 195),
                RGBColor(140, 140, 140),
            ],
        },
        "dark" => Theme {
            background: RGBColor(17, 17, 17),
            plot: RGBColor(17, 17, 17),
            text: RGBColor(235, 235, 235),
            grid: RGBColor(70, 70, 70),
            palette: [
                RGBColor(142, 186, 229),
                RGBColor(255, 179, 102),
                RGBColor(140, 214, 140),
                RGBColor(255, 128, 128),
                RGBColor(197, 176, 213),
                RGBColor(196, 156, 148),
                RGBColor(247, 182, 210),
                RGBColor(199, 199, 199),
            ],
        },
        other => {
            return Err(ToolError::invalid(format!(
                "parameter 'theme' must be default, seaborn or dark, not '{other}'"
            )));
        }
    })
}

/// Rows as columns: each column's values in row order.
#[derive(Debug, Default)]
struct Table {
    names: Vec<String>,
    rows: Vec<Map<String, Value>>,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".to_string(),
        other => other.to_string(),
    }
}

impl Table {
    fn new(rows: Vec<Value>) -> Result<Table, ToolError> {
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

    fn column(&self, name: &str) -> impl Iterator<Item = &Value> {
        self.rows
            .iter()
            .map(move |r| r.get(name).unwrap_or(&Value::Null))
    }

    /// Columns whose every present value is a number (text that reads as one
    /// counts), with at least one.
    fn numeric(&self) -> Vec<String> {
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
    fn categorical(&self) -> Vec<String> {
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

    fn numbers(&self, name: &str) -> Vec<f64> {
        self.column(name).filter_map(number).collect()
    }
}

fn pick(candidates: &[String], preferred: &[&str]) -> Option<String> {
    preferred
        .iter()
        .find(|p| candidates.iter().any(|c| c == *p))
        .map(|p| p.to_string())
        .or_else(|| candidates.first().cloned())
}

fn title_case(name: &str) -> String {
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
enum Plot {
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
fn grouped(t: &Table, cat: &str, num: Option<&str>, keep: usize) -> (Vec<String>, Vec<f64>) {
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

struct Columns<'a> {
    x: Option<&'a str>,
    y: Option<&'a str>,
}

fn plan(kind: &str, t: &Table, cols: &Columns, bins: usize) -> Result<(Plot, String), String> {
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
fn thin<T: Copy>(items: Vec<T>) -> Vec<T> {
    if items.len() <= MAX_POINTS {
        return items;
    }
    let step = items.len().div_ceil(MAX_POINTS);
    items.into_iter().step_by(step).collect()
}

/// Pearson's correlation over the rows where both have a number.
fn correlation(a: &[Option<f64>], b: &[Option<f64>]) -> f64 {
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
fn detect(t: &Table) -> Vec<String> {
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

type DrawResult = Result<(), String>;

/// An axis number without needless decimals: `1200`, `0.25`, `1.5e9`.
fn tidy(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e9).contains(&a) {
        return format!("{v:.2e}");
    }
    let text = if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn short(label: &str) -> String {
    if label.chars().count() > 18 {
        format!("{}…", label.chars().take(17).collect::<String>())
    } else {
        label.to_string()
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi <= lo {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &Plot,
    title: &str,
    th: &Theme,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&th.background).map_err(err)?;
    let text = |size: u32| TextStyle::from((FAMILY, size).into_font()).color(&th.text);
    let (w, _) = root.dim_in_pixel();
    let title_size = (w / 36).clamp(12, 28);
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(
            title,
            (FAMILY, title_size)
                .into_font()
                .style(FontStyle::Bold)
                .color(&th.text),
        )
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(70);
    match plot {
        Plot::Bars {
            labels,
            values,
            x,
            y,
        } => {
            let (lo, hi) = range(values.iter().copied().chain([0.0]));
            let lo = lo.min(0.0);
            let mut chart = builder
                .build_cartesian_2d((0..labels.len().saturating_sub(1)).into_segmented(), lo..hi)
                .map_err(err)?;
            chart.plotting_area().fill(&th.plot).map_err(err)?;
            themed(&mut chart.configure_mesh(), th)
                .disable_x_mesh()
                .y_label_formatter(&|v| tidy(*v))
                .x_desc(x.as_str())
                .y_desc(y.as_str())
                .x_labels(labels.len())
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => {
                        labels.get(*i).map(|l| short(l)).unwrap_or_default()
                    }
                    _ => String::new(),
                })
                .draw()
                .map_err(err)?;
            let color = th.palette[0];
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let (a, b) = if *v >= 0.0 { (0.0, *v) } else { (*v, 0.0) };
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), a), (SegmentValue::Exact(i + 1), b)],
                        color.filled(),
                    );
                    bar.set_margin(0, 0, 6, 6);
                    bar
                }))
                .map_err(err)?;
        }
        Plot::Pie { labels, values } => {
            let area = root
                .margin(15, 15, 15, 15)
                .titled(
                    title,
                    (FAMILY, title_size)
                        .into_font()
                        .style(FontStyle::Bold)
                        .color(&th.text),
                )
                .map_err(err)?;
            let (aw, ah) = area.dim_in_pixel();
            let center = (
                i32::try_from(aw / 2).unwrap_or(0),
                i32::try_from(ah / 2).unwrap_or(0),
            );
            let radius = f64::from(aw.min(ah)) * 0.35;
            let colors: Vec<RGBColor> = (0..values.len())
                .map(|i| th.palette[i % th.palette.len()])
                .collect();
            let labels: Vec<String> = labels.iter().map(|l| short(l)).collect();
            let mut pie = Pie::new(&center, &radius, values, &colors, &labels);
            pie.label_style(text(13));
            pie.percentages(TextStyle::from((FAMILY, 12).into_font()).color(&WHITE));
            area.draw(&pie).map_err(err)?;
            return root.present().map_err(err);
        }
        Plot::Lines { series, rows, x } => {
            let n = (*rows).max(2);
            let (lo, hi) = range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
            let mut chart = builder
                .build_cartesian_2d(0f64..(n - 1) as f64, lo..hi)
                .map_err(err)?;
            chart.plotting_area().fill(&th.plot).map_err(err)?;
            themed(&mut chart.configure_mesh(), th)
                .y_label_formatter(&|v| tidy(*v))
                .x_desc(x.as_str())
                .x_labels(n.min(12))
                .x_label_formatter(&|v| {
                    if v.fract() == 0.0 {
                        format!("{v:.0}")
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(err)?;
            for (i, (name, values)) in series.iter().enumerate() {
                let color = th.palette[i % th.palette.len()];
                chart
                    .draw_series(LineSeries::new(
                        values.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(th.background.mix(0.85))
                .border_style(th.grid)
                .label_font(text(12))
                .draw()
                .map_err(err)?;
        }
        Plot::Scatter { points, x, y } => {
            let (xl, xh) = range(points.iter().map(|p| p.0));
            let (yl, yh) = range(points.iter().map(|p| p.1));
            let mut chart = builder.build_cartesian_2d(xl..xh, yl..yh).map_err(err)?;
            chart.plotting_area().fill(&th.plot).map_err(err)?;
            themed(&mut chart.configure_mesh(), th)
                .y_label_formatter(&|v| tidy(*v))
                .x_desc(x.as_str())
                .y_desc(y.as_str())
                .x_label_formatter(&|v| tidy(*v))
                .draw()
                .map_err(err)?;
            let color = th.palette[0];
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new(*p, 4, color.mix(0.7).filled())),
                )
                .map_err(err)?;
        }
        Plot::Histogram { edges, counts, x } => {
            let lo = edges.first().copied().unwrap_or(0.0);
            let hi = edges.last().copied().unwrap_or(1.0);
            let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
            let mut chart = builder.build_cartesian_2d(lo..hi, 0f64..top).map_err(err)?;
            chart.plotting_area().fill(&th.plot).map_err(err)?;
            themed(&mut chart.configure_mesh(), th)
                .disable_x_mesh()
                .x_desc(x.as_str())
                .y_desc("Frequency")
                .y_label_formatter(&|v| {
                    if v.fract() == 0.0 {
                        tidy(*v)
                    } else {
                        String::new()
                    }
                })
                .x_label_formatter(&|v| tidy(*v))
                .draw()
                .map_err(err)?;
            let color = th.palette[0];
            chart
                .draw_series(counts.iter().enumerate().map(|(i, c)| {
                    Rectangle::new(
                        [(edges[i], 0.0), (edges[i + 1], *c as f64)],
                        color.mix(0.85).filled(),
                    )
                }))
                .map_err(err)?;
            chart
                .draw_series(counts.iter().enumerate().map(|(i, c)| {
                    Rectangle::new(
                        [(edges[i], 0.0), (edges[i + 1], *c as f64)],
                        th.background.stroke_width(1),
                    )
                }))
                .map_err(err)?;
        }
        Plot::Heatmap { names, matrix } => {
            let n = names.len();
            let mut chart = builder
                .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
                .map_err(err)?;
            let fmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) => names.get(*i).map(|l| short(l)).unwrap_or_default(),
                _ => String::new(),
            };
            // The first column on top, as a matrix is read.
            let yfmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(j) => {
                    names.get(n - 1 - *j).map(|l| short(l)).unwrap_or_default()
                }
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .axis_style(th.text)
                .label_style(text(12))
                .x_labels(n)
                .y_labels(n)
                .x_label_formatter(&fmt)
                .y_label_formatter(&yfmt)
                .draw()
                .map_err(err)?;
            let cells = (0..n).flat_map(|i| (0..n).map(move |j| (i, j)));
            chart
                .draw_series(cells.clone().map(|(i, j)| {
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(i), SegmentValue::Exact(j)),
                            (SegmentValue::Exact(i + 1), SegmentValue::Exact(j + 1)),
                        ],
                        diverging(matrix[n - 1 - j][i]).filled(),
                    )
                }))
                .map_err(err)?;
            chart
                .draw_series(cells.map(|(i, j)| {
                    let v = matrix[n - 1 - j][i];
                    Text::new(
                        format!("{v:.2}"),
                        (SegmentValue::CenterOf(i), SegmentValue::CenterOf(j)),
                        TextStyle::from((FAMILY, 12).into_font())
                            .color(if v.abs() > 0.6 { &WHITE } else { &BLACK })
                            .pos(plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Center,
                            )),
                    )
                }))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// The mesh of every chart with axes: major grid lines in the theme's grid
/// colour, axes and text in its text colour, the embedded font.
fn themed<'m, 'a, 'b, X, Y, DB>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    th: &'b Theme,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged,
    Y: Ranged,
    DB: DrawingBackend,
{
    mesh.light_line_style(TRANSPARENT)
        .bold_line_style(th.grid)
        .axis_style(th.text)
        .label_style(TextStyle::from((FAMILY, 12).into_font()).color(&th.text))
        .axis_desc_style(TextStyle::from((FAMILY, 14).into_font()).color(&th.text))
}

/// Blue (-1) through white (0) to red (1).
fn diverging(v: f64) -> RGBColor {
    let v = v.clamp(-1.0, 1.0);
    let mix =
        |a: u8, b: u8, t: f64| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    if v < 0.0 {
        let t = -v;
        RGBColor(mix(247, 59, t), mix(247, 76, t), mix(247, 192, t))
    } else {
        RGBColor(mix(247, 180, v), mix(247, 4, v), mix(247, 38, v))
    }
}

/// Draws a chart as PNG or SVG bytes.
fn render(
    plot: &Plot,
    title: &str,
    th: &Theme,
    (w, h): (u32, u32),
    format: &str,
) -> Result<Vec<u8>, String> {
    register_font();
    if format == "svg" {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            draw(&root, plot, title, th)?;
        }
        return Ok(svg.into_bytes());
    }
    let mut pixels = vec![0u8; (w as usize) * (h as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw(&root, plot, title, th)?;
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&pixels).map_err(err)?;
    }
    Ok(out)
}

fn side(p: &Map<String, Value>, name: &str, default: u32) -> Result<u32, ToolError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => {
            let n = number(v).ok_or_else(|| {
                ToolError::invalid(format!(
                    "parameter '{name}' must be a number of pixels, got {}",
                    type_name(v)
                ))
            })?;
            if n.fract() != 0.0 || n < f64::from(MIN_SIDE) || n > f64::from(MAX_SIDE) {
                return Err(ToolError::invalid(format!(
                    "parameter '{name}' must be a whole number of pixels from {MIN_SIDE} to {MAX_SIDE}, not {n}"
                )));
            }
            Ok(n as u32)
        }
    }
}

/// A list given as a list, or as text (`"bar, line"` or `'["bar"]'`).
fn list_param(p: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, ToolError> {
    let items = match p.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(a)) => a,
            _ => s
                .split(',')
                .map(|x| Value::String(x.trim().trim_matches(['\'', '"']).to_string()))
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                .collect(),
        },
        Some(other) => {
            return Err(ToolError::invalid(format!(
                "parameter '{name}' must be a list, got {}",
                type_name(other)
            )));
        }
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(ToolError::invalid(format!(
                "parameter '{name}' must hold text, found {}",
                type_name(&other)
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The rows: inline rows, an object of rows by name, CSV/JSON text, or a
/// workspace file named by `data` or `path`.
async fn rows(p: &Map<String, Value>, ctx: &ToolContext) -> Result<Vec<Value>, ToolError> {
    let mut p = p.clone();
    // `format` is the image's here; the data's is `data_format`.
    p.remove("format");
    if let Some(f) = p.remove("data_format") {
        p.insert("format".into(), f);
    }
    match p.get("data") {
        // A file name, as the seed reads one.
        Some(Value::String(s))
            if !s.contains('\n')
                && s.len() < 500
                && [".csv", ".json"]
                    .iter()
                    .any(|e| s.trim().to_lowercase().ends_with(e)) =>
        {
            let path = s.trim().to_string();
            p.remove("data");
            p.insert("path".into(), Value::String(path));
        }
        // {name: {field: …}, …}: one row per name, as the seed's frames.
        Some(Value::Object(m)) if !m.is_empty() && m.values().all(Value::is_object) => {
            let rows = m
                .iter()
                .map(|(k, v)| {
                    let mut row = Map::new();
                    row.insert("name".into(), Value::String(k.clone()));
                    if let Value::Object(fields) = v {
                        row.extend(fields.clone());
                    }
                    Value::Object(row)
                })
                .collect();
            return Ok(rows);
        }
        None | Some(Value::Null) if !p.contains_key("path") => {
            return Err(ToolError::invalid(
                "parameter 'data' is required: rows, CSV or JSON text, or a workspace file",
            ));
        }
        _ => {}
    }
    crate::data::rows_of(&p, ctx).await.map(|(rows, _)| rows)
}

async fn write_file(ctx: &ToolContext, relative: &str, bytes: &[u8]) -> Result<String, ToolError> {
    let target = resolve(&ctx.workspace, relative)?;
    if let Some(parent) = target.full.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            ToolError::new(ErrorKind::IOError, format!("'{}': {e}", target.relative))
        })?;
    }
    // Resolve again now that the folders exist (a symlink made meanwhile).
    let target = resolve(&ctx.workspace, relative)?;
    tokio::fs::write(&target.full, bytes)
        .await
        .map_err(|e| ToolError::new(ErrorKind::IOError, format!("'{}': {e}", target.relative)))?;
    Ok(target.relative)
}

fn folder(p: &Map<String, Value>, default: &str) -> Result<String, ToolError> {
    let dir = optional_str(p, "output_dir")?
        .unwrap_or(default)
        .trim()
        .trim_end_matches('/');
    let dir = if dir.is_empty() { "." } else { dir };
    Ok(dir.to_string())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `to` as seen from the folder `from` (both workspace-relative).
fn relative_to(from: &str, to: &str) -> String {
    let from: Vec<&str> = from
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let to_parts: Vec<&str> = to
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to_parts[common..]);
    parts.join("/")
}

impl Visualization {
    async fn create_charts(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let th = theme(optional_str(p, "theme")?.unwrap_or("seaborn"))?;
        let format = optional_str(p, "format")?.unwrap_or("png").to_lowercase();
        if format != "png" && format != "svg" {
            return Err(ToolError::invalid(format!(
                "parameter 'format' must be png or svg, not '{format}'"
            )));
        }
        let size = (side(p, "width", 800)?, side(p, "height", 600)?);
        let bins = match p.get("bins") {
            None | Some(Value::Null) => 20,
            Some(v) => match number(v) {
                Some(n) if n.fract() == 0.0 && (1.0..=500.0).contains(&n) => n as usize,
                _ => {
                    return Err(ToolError::invalid(
                        "parameter 'bins' must be a whole number from 1 to 500",
                    ));
                }
            },
        };
        let table = Table::new(rows(p, ctx).await?)?;
        let cols = Columns {
            x: optional_str(p, "x_column")?,
            y: optional_str(p, "y_column")?,
        };
        for (param, c) in [("x_column", cols.x), ("y_column", cols.y)] {
            if let Some(c) = c
                && !table.names.iter().any(|n| n == c)
            {
                return Err(ToolError::invalid(format!(
                    "parameter '{param}': the data has no column '{c}' (columns: {})",
                    table.names.join(", ")
                )));
            }
        }
        let asked = list_param(p, "chart_types")?.unwrap_or_else(|| vec!["auto".into()]);
        let mut kinds: Vec<String> = Vec::new();
        for k in &asked {
            let k = k.trim().to_lowercase();
            if k == "auto" {
                for d in detect(&table) {
                    if !kinds.contains(&d) {
                        kinds.push(d);
                    }
                }
            } else if CHART_TYPES.contains(&k.as_str()) {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            } else {
                return Err(ToolError::invalid(format!(
                    "parameter 'chart_types': '{k}' is not one of auto, {}",
                    CHART_TYPES.join(", ")
                )));
            }
        }
        let dir = folder(p, "charts")?;
        let prefix = optional_str(p, "file_prefix")?.unwrap_or("");
        let given_title = optional_str(p, "title")?.filter(|t| !t.trim().is_empty());
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for kind in &kinds {
            let (plot, auto_title) = match plan(kind, &table, &cols, bins) {
                Ok(x) => x,
                Err(why) => {
                    // As the seed: a chart the data cannot make is left out
                    // and said; the others are made.
                    ctx.log(
                        crate::log::Stream::Log,
                        &format!("{kind} chart left out: {why}"),
                    );
                    skipped.push(json!({"chart_type": kind, "reason": why}));
                    continue;
                }
            };
            let title = match given_title {
                Some(t) if kinds.len() == 1 => t.to_string(),
                Some(t) => format!("{t}: {auto_title}"),
                None => auto_title,
            };
            let (plot2, title2, th2, fmt) = (plot.clone(), title.clone(), th, format.clone());
            let bytes =
                tokio::task::spawn_blocking(move || render(&plot2, &title2, &th2, size, &fmt))
                    .await
                    .map_err(|_| {
                        ToolError::new(
                            ErrorKind::ExecutionError,
                            format!("drawing the {kind} chart failed"),
                        )
                    })?
                    .map_err(|e| {
                        ToolError::new(
                            ErrorKind::ExecutionError,
                            format!("drawing the {kind} chart failed: {e}"),
                        )
                    })?;
            let name = join(&dir, &format!("{prefix}{kind}_chart.{format}"));
            files.push(write_file(ctx, &name, &bytes).await?);
        }
        if files.is_empty() {
            return Err(ToolError::new(
                ErrorKind::DataFormatError,
                format!(
                    "no chart could be made from the data: {}",
                    skipped
                        .iter()
                        .map(|s| format!(
                            "{}: {}",
                            s["chart_type"].as_str().unwrap_or_default(),
                            s["reason"].as_str().unwrap_or_default()
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
        Ok(json!({
            "action": "create_charts",
            "charts": files,
            "files": files,
            "count": files.len(),
            "output_dir": dir,
            "chart_types": kinds,
            "format": format,
            "skipped": skipped,
            "rows": table.rows.len(),
        }))
    }

    async fn create_dashboard(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let charts = list_param(p, "charts")?.unwrap_or_default();
        if charts.is_empty() {
            return Err(ToolError::invalid(
                "parameter 'charts' must name at least one chart file (the `charts` of a create_charts step)",
            ));
        }
        let layout = optional_str(p, "layout")?.unwrap_or("grid");
        let css = match layout {
            "grid" => {
                "display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:24px"
            }
            "vertical" => "display:flex;flex-direction:column;gap:24px",
            "horizontal" => "display:flex;flex-direction:row;overflow-x:auto;gap:24px",
            other => {
                return Err(ToolError::invalid(format!(
                    "parameter 'layout' must be grid, vertical or horizontal, not '{other}'"
                )));
            }
        };
        let title = optional_str(p, "title")?.unwrap_or("Analysis Dashboard");
        let dir = folder(p, ".")?;
        let mut figures = String::new();
        for chart in &charts {
            let file = resolve(&ctx.workspace, chart)?;
            if !tokio::fs::try_exists(&file.full).await.unwrap_or(false) {
                return Err(ToolError::new(
                    ErrorKind::FileNotFoundError,
                    format!("parameter 'charts': '{}' does not exist", file.relative),
                ));
            }
            let caption = std::path::Path::new(&file.relative)
                .file_stem()
                .and_then(|s| s.to_str())
                .map(title_case)
                .unwrap_or_default();
            figures.push_str(&format!(
                "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>\n",
                escape(&relative_to(&dir, &file.relative)),
                escape(&caption),
                escape(&caption)
            ));
        }
        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t}</title>\n<style>\nbody{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:32px;background:#f7f7f9;color:#222}}\nh1{{font-weight:600}}\n.charts{{{css}}}\nfigure{{margin:0;background:#fff;border:1px solid #e3e3e8;border-radius:8px;padding:12px}}\nimg{{max-width:100%;height:auto;display:block;margin:auto}}\nfigcaption{{text-align:center;color:#555;margin-top:8px}}\n</style>\n</head>\n<body>\n<h1>{t}</h1>\n<div class=\"charts\">\n{figures}</div>\n</body>\n</html>\n",
            t = escape(title)
        );
        let path = write_file(ctx, &join(&dir, "dashboard.html"), html.as_bytes()).await?;
        Ok(json!({
            "action": "create_dashboard",
            "url": path,
            "dashboard_path": path,
            "charts_included": charts.len(),
            "layout": layout,
        }))
    }

    async fn export_figures(
        &self,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let charts = list_param(p, "charts")?.unwrap_or_default();
        if charts.is_empty() {
            return Err(ToolError::invalid(
                "parameter 'charts' must name at least one chart file",
            ));
        }
        let formats = list_param(p, "format")?.unwrap_or_else(|| vec!["png".into()]);
        let dir = folder(p, "exports")?;
        let mut exported = Vec::new();
        for chart in &charts {
            let file = resolve(&ctx.workspace, chart)?;
            let bytes = tokio::fs::read(&file.full).await.map_err(|_| {
                ToolError::new(
                    ErrorKind::FileNotFoundError,
                    format!("parameter 'charts': '{}' does not exist", file.relative),
                )
            })?;
            let path = std::path::Path::new(&file.relative);
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_lowercase();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("chart");
            for f in &formats {
                let f = f.to_lowercase();
                if f != ext {
                    return Err(ToolError::invalid(format!(
                        "parameter 'format': '{}' is {ext}; charts are exported in the format they were made in (make them with create_charts format: {f})",
                        file.relative
                    )));
                }
                exported.push(write_file(ctx, &join(&dir, &format!("{stem}.{f}")), &bytes).await?);
            }
        }
        Ok(json!({
            "action": "export_figures",
            "exported_files": exported,
            "formats": formats,
            "count": exported.len(),
        }))
    }
}

#[async_trait]
impl Tool for Visualization {
    fn id(&self) -> &str {
        "visualization"
    }

    fn description(&self) -> &str {
        "Charts (bar, line, scatter, histogram, pie, heatmap) from data as PNG or SVG files, and an HTML dashboard of them"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let charts = json!({"type": ["array", "string"], "items": {"type": "string"}, "description": "workspace chart files (the `charts` of a create_charts step)"});
        vec![
            action(
                "create_charts",
                "Draw charts from rows of data → {charts, files, count, output_dir, chart_types, format, skipped}",
                json!({
                    "type": "object",
                    "properties": {
                        "data": {"description": "a list of objects, an object of rows by name, CSV or JSON text, or a workspace .csv/.json file"},
                        "path": {"type": "string", "description": "a workspace CSV or JSON file (instead of `data`)"},
                        "chart_types": {"type": ["array", "string"], "items": {"type": "string", "enum": ["auto", "bar", "line", "scatter", "histogram", "pie", "heatmap"]}, "description": "default [auto]: the charts that suit the data"},
                        "output_dir": {"type": "string", "description": "workspace folder (default `charts`)"},
                        "title": {"type": "string"},
                        "theme": {"type": "string", "enum": ["seaborn", "default", "dark"]},
                        "format": {"type": "string", "enum": ["png", "svg"]},
                        "width": {"type": ["integer", "string"], "description": "pixels, 100 to 4000 (default 800)"},
                        "height": {"type": ["integer", "string"], "description": "pixels, 100 to 4000 (default 600)"},
                        "x_column": {"type": "string", "description": "the category (bar, pie) or x column (scatter)"},
                        "y_column": {"type": "string", "description": "the value column"},
                        "bins": {"type": ["integer", "string"], "description": "histogram bins (default 20)"},
                        "file_prefix": {"type": "string"},
                        "data_format": {"type": "string", "enum": ["csv", "json"], "description": "how text `data` is read (default: by its look or the file's extension)"}
                    }
                }),
            ),
            action(
                "create_dashboard",
                "An HTML page showing charts → {url, dashboard_path, charts_included, layout}",
                json!({
                    "type": "object",
                    "required": ["charts"],
                    "properties": {
                        "charts": charts,
                        "title": {"type": "string"},
                        "layout": {"type": "string", "enum": ["grid", "vertical", "horizontal"]},
                        "output_dir": {"type": "string", "description": "workspace folder for dashboard.html (default: the workspace)"}
                    }
                }),
            ),
            action(
                "export_figures",
                "Copy charts to a folder → {exported_files, formats, count}",
                json!({
                    "type": "object",
                    "required": ["charts"],
                    "properties": {
                        "charts": charts,
                        "format": {"type": ["string", "array"], "description": "png or svg: the format the charts were made in"},
                        "output_dir": {"type": "string", "description": "default `exports`"}
                    }
                }),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        p: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        match action {
            "create_charts" => self.create_charts(p, ctx).await,
            "create_dashboard" => self.create_dashboard(p, ctx).await,
            "export_figures" => self.export_figures(p, ctx).await,
            other => Err(ToolError::invalid(format!(
                "unknown action '{other}': use create_charts, create_dashboard or export_figures"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sales() -> Table {
        Table::new(
            serde_json::from_value(json!([
                {"region": "North", "revenue": 120.0, "units": 10, "price": 12.0, "date": "2024-01-01"},
                {"region": "South", "revenue": 80, "units": 8, "price": 10.0, "date": "2024-01-02"},
                {"region": "North", "revenue": "30", "units": 3, "price": 10.0, "date": "2024-01-03"},
                {"region": "East", "revenue": 50, "units": 4, "price": 12.5, "date": "2024-01-04"}
            ]))
            .expect("rows"),
        )
        .expect("table")
    }

    #[test]
    fn columns_are_told_apart_and_charts_chosen_as_the_seed_does() {
        let t = sales();
        assert_eq!(t.numeric(), vec!["revenue", "units", "price"]);
        assert_eq!(t.categorical(), vec!["region"], "dates are left out");
        assert_eq!(
            detect(&t),
            vec!["bar", "scatter", "histogram", "pie", "heatmap"]
        );
        let cols = Columns { x: None, y: None };
        let (plot, title) = plan("bar", &t, &cols, 20).expect("bar");
        assert_eq!(title, "Total Revenue by Region");
        match plot {
            Plot::Bars { labels, values, .. } => {
                assert_eq!(labels, vec!["North", "South", "East"]);
                assert_eq!(values, vec![150.0, 80.0, 50.0]);
            }
            other => panic!("{other:?}"),
        }
        match plan("histogram", &t, &cols, 4).expect("hist").0 {
            Plot::Histogram { counts, edges, .. } => {
                assert_eq!(counts.iter().sum::<u64>(), 4);
                assert_eq!(edges.len(), 5);
            }
            other => panic!("{other:?}"),
        }
        match plan("heatmap", &t, &cols, 20).expect("heatmap").0 {
            Plot::Heatmap { matrix, .. } => {
                assert!((matrix[0][0] - 1.0).abs() < 1e-9);
                assert!(matrix[0][1] > 0.9, "revenue and units go together");
            }
            other => panic!("{other:?}"),
        }
        let words = Table::new(vec![json!({"w": "a"})]).expect("table");
        assert!(plan("scatter", &words, &cols, 20).is_err());
    }

    #[test]
    fn every_chart_renders_as_png_and_svg() {
        let t = sales();
        let cols = Columns { x: None, y: None };
        for kind in CHART_TYPES {
            let (plot, title) = plan(kind, &t, &cols, 10).expect(kind);
            for (name, th) in [("seaborn", theme("seaborn")), ("dark", theme("dark"))] {
                let th = th.expect(name);
                let png = render(&plot, &title, &th, (640, 480), "png").expect("png");
                assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{kind}");
                let svg =
                    String::from_utf8(render(&plot, &title, &th, (640, 480), "svg").expect("svg"))
                        .expect("utf8");
                assert!(svg.starts_with("<svg"), "{kind}: {svg:.80}");
                assert!(
                    svg.contains(&title.replace('&', "&amp;")),
                    "{kind}: the title is text in the SVG"
                );
            }
        }
    }

    #[test]
    fn awkward_data_draws_or_says_why() {
        let cols = Columns { x: None, y: None };
        // One value, constant columns, negatives, a single row.
        for rows in [
            json!([{"v": 5}]),
            json!([{"v": 1, "w": 1}, {"v": 1, "w": 1}]),
            json!([{"c": "a", "v": -3}, {"c": "b", "v": 4}]),
            json!([1, 2, 3, 1e300]),
        ] {
            let t = Table::new(serde_json::from_value(rows.clone()).expect("rows")).expect("table");
            for kind in CHART_TYPES {
                if let Ok((plot, title)) = plan(kind, &t, &cols, 20) {
                    render(
                        &plot,
                        &title,
                        &theme("default").expect("theme"),
                        (300, 200),
                        "png",
                    )
                    .unwrap_or_else(|e| panic!("{kind} of {rows}: {e}"));
                }
            }
        }
        let t = Table::new(vec![json!({"c": "a", "v": -3})]).expect("table");
        assert!(
            plan("pie", &t, &cols, 20).is_err(),
            "negative slices are refused"
        );
        assert!(Table::new(vec![]).is_err());
        assert!(Table::new(vec![json!([1])]).is_err());
    }

    #[test]
    fn the_largest_data_draws_in_bounded_time() {
        let rows: Vec<Value> = (0..MAX_ROWS)
            .map(|i| json!({"c": format!("k{}", i % 1000), "x": i, "y": (i as f64).sin(), "z": i % 7}))
            .collect();
        let t = Table::new(rows).expect("table");
        let cols = Columns { x: None, y: None };
        let started = std::time::Instant::now();
        for kind in CHART_TYPES {
            let (plot, title) = plan(kind, &t, &cols, 500).expect(kind);
            render(
                &plot,
                &title,
                &theme("seaborn").expect("theme"),
                (1600, 1200),
                "png",
            )
            .expect(kind);
        }
        assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
        assert!(Table::new(vec![json!({"a": 1}); MAX_ROWS + 1]).is_err());
    }

    #[test]
    fn dashboard_paths_are_relative_to_the_page() {
        assert_eq!(
            relative_to(".", "charts/bar_chart.png"),
            "charts/bar_chart.png"
        );
        assert_eq!(relative_to("out", "out/charts/a.png"), "charts/a.png");
        assert_eq!(
            relative_to("out/dash", "out/charts/a.png"),
            "../charts/a.png"
        );
    }
}
