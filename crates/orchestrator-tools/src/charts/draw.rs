//! Drawing a planned chart as PNG or SVG with the embedded font, in a theme.

use std::sync::Once;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::Plot;
use crate::ToolError;

pub(super) const FONT: &[u8] = crate::fonts::DEJAVU_SANS;
pub(super) const FAMILY: &str = "sans-serif";

pub(super) static FONT_ONCE: Once = Once::new();

pub(super) fn register_font() {
    FONT_ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is compiled in; it parses.
            let _ = plotters::style::register_font(FAMILY, style, FONT);
        }
    });
}

/// Colours of a theme.
#[derive(Debug, Clone, Copy)]
pub(super) struct Theme {
    background: RGBColor,
    plot: RGBColor,
    text: RGBColor,
    grid: RGBColor,
    palette: [RGBColor; 8],
}

pub(super) const TAB10: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub(super) fn theme(name: &str) -> Result<Theme, ToolError> {
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

pub(super) type DrawResult = Result<(), String>;

/// An axis number without needless decimals: `1200`, `0.25`, `1.5e9`.
pub(super) fn tidy(v: f64) -> String {
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

pub(super) fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

pub(super) fn short(label: &str) -> String {
    if label.chars().count() > 18 {
        format!("{}…", label.chars().take(17).collect::<String>())
    } else {
        label.to_string()
    }
}

pub(super) fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
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

pub(super) fn draw<DB: DrawingBackend>(
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
pub(super) fn themed<'m, 'a, 'b, X, Y, DB>(
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
pub(super) fn diverging(v: f64) -> RGBColor {
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
pub(super) fn render(
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
