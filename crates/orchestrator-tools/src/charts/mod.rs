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

mod draw;
mod plan;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::filesystem::resolve;
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, optional_str, type_name};
use draw::{render, theme};
use plan::{CHART_TYPES, Columns, Table, detect, number, plan, title_case};

const MIN_SIDE: u32 = 100;
const MAX_SIDE: u32 = 4000;

#[derive(Debug, Clone, Copy, Default)]
pub struct Visualization;

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
            files.push(crate::filesystem::write_bytes(ctx, &name, &bytes).await?);
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
        let path =
            crate::filesystem::write_bytes(ctx, &join(&dir, "dashboard.html"), html.as_bytes())
                .await?;
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
                exported.push(
                    crate::filesystem::write_bytes(
                        ctx,
                        &join(&dir, &format!("{stem}.{f}")),
                        &bytes,
                    )
                    .await?,
                );
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
    use super::plan::{MAX_ROWS, Plot};
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
