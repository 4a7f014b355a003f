//! Pictures as SVG: training curves (`loss.svg`, `elman plot`) and gradient-flow charts
//! (`elman gradflow`).
//!
//! One small chart type covers both: a few named line series over a shared x axis, solid or dashed,
//! linear or logarithmic y. plotters writes the SVG as a string with its built-in font metrics (no
//! font files or C libraries needed); the text itself is rendered by whatever shows the SVG.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed lines mark references and bounds (or validation curves next to training ones).
    pub dashed: bool,
    /// Index into the palette; series that belong together share a colour.
    pub color: usize,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_y: bool,
    /// Label x values as token counts (12k, 3.4M) rather than plain numbers.
    pub x_is_count: bool,
    pub series: Vec<Series>,
}

/// Colour-blind-safe qualitative palette (Okabe–Ito), then black.
const PALETTE: [(u8, u8, u8); 8] = [
    (0, 114, 178),
    (213, 94, 0),
    (0, 158, 115),
    (204, 121, 167),
    (230, 159, 0),
    (86, 180, 233),
    (120, 120, 120),
    (0, 0, 0),
];

pub fn color(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// 950 → "950", 12_300 → "12.3k", 4_100_000 → "4.1M".
pub fn human_count(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The chart's points that can be drawn (finite; positive on a log axis, as log10), per series,
/// and the ranges of the axes (x0, x1, y0, y1) that hold them with a little room.
type Drawable<'a> = (Vec<(&'a Series, Vec<(f64, f64)>)>, (f64, f64, f64, f64));

fn drawable(chart: &Chart) -> Result<Drawable<'_>> {
    // A log axis is drawn as log10 values on a linear axis labelled 1e-k: plotters' own log axis
    // leaves most decades unlabelled when the values span many of them.
    let log_y = chart.log_y;
    let map = |&(x, y): &(f64, f64)| -> Option<(f64, f64)> {
        let y = if log_y {
            if y > 0.0 {
                y.log10()
            } else {
                return None;
            }
        } else {
            y
        };
        (x.is_finite() && y.is_finite()).then_some((x, y))
    };
    let series: Vec<(&Series, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| (s, s.points.iter().filter_map(map).collect()))
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    if all().next().is_none() {
        return Err(anyhow!("nothing to plot: no finite values"));
    }
    let (x0, mut x1, mut y0, mut y1) = all().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), (x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    // Counts (tokens seen) start from nothing.
    let x0 = if chart.x_is_count { x0.min(0.0) } else { x0 };
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(if log_y { 0.2 } else { 1e-3 });
    y0 -= pad;
    y1 += pad;
    Ok((series, (x0, x1, y0, y1)))
}

/// Renders the chart as an SVG document.
pub fn svg(chart: &Chart) -> Result<String> {
    let log_y = chart.log_y;
    let (series, (x0, x1, y0, y1)) = drawable(chart)?;
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing the chart: {e}");
    // The legend goes in a strip below the plot, two entries to a row, so it never hides data.
    let entries = series.iter().filter(|(_, p)| !p.is_empty()).count();
    let legend_h = 12 + 22 * entries.div_ceil(2) as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (820, 500 + legend_h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (plot, legend) = root.split_vertically(500);
        let mut c = ChartBuilder::on(&plot)
            .caption(&chart.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let x_is_count = chart.x_is_count;
        let x_fmt = move |x: &f64| {
            if x_is_count {
                human_count(*x)
            } else if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        };
        let y_fmt = move |y: &f64| {
            if !log_y {
                format!("{y:.2}")
            } else if y.fract().abs() < 1e-9 {
                format!("1e{}", y.round() as i64)
            } else {
                format!("{:.1e}", 10f64.powf(*y))
            }
        };
        c.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        let mut legend_at = 0usize;
        for (s, pts) in series {
            if pts.is_empty() {
                continue;
            }
            let marks = pts.len() <= 40 && chart.x_is_count;
            let marked = pts.clone();
            let col = color(s.color);
            let style = ShapeStyle {
                color: col.to_rgba(),
                filled: false,
                stroke_width: 2,
            };
            // Few points (evaluations): mark each, so the reader sees where the data are.
            if marks {
                c.draw_series(marked.iter().map(|&p| Circle::new(p, 3, style.filled())))
                    .map_err(|e| err(&e))?;
            }
            if s.dashed {
                c.draw_series(DashedLineSeries::new(pts, 6, 4, style))
                    .map_err(|e| err(&e))?;
            } else {
                c.draw_series(LineSeries::new(pts, style))
                    .map_err(|e| err(&e))?;
            }
            // This series' entry in the legend strip: a short stroke in its style, its label.
            let (col, row) = (legend_at % 2, legend_at / 2);
            legend_at += 1;
            let (lx, ly) = (80 + 370 * col as i32, 14 + 22 * row as i32);
            let stroke = if s.dashed {
                vec![
                    PathElement::new(vec![(lx, ly), (lx + 7, ly)], style),
                    PathElement::new(vec![(lx + 13, ly), (lx + 20, ly)], style),
                ]
            } else {
                vec![PathElement::new(vec![(lx, ly), (lx + 20, ly)], style)]
            };
            for e in stroke {
                legend.draw(&e).map_err(|e| err(&e))?;
            }
            legend
                .draw(&Text::new(
                    s.label.clone(),
                    (lx + 28, ly - 8),
                    ("sans-serif", 14).into_font().color(&RGBColor(40, 40, 40)),
                ))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

/// What the x axis of a loss chart counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Tokens trained on: per-token learning, whatever the speed.
    Tokens,
    /// Seconds of training: what a budget buys.
    Time,
}

/// A run to draw: its name and its evaluations.
pub type Run = (String, Vec<crate::checkpoint::Metric>);

/// The runs named on `elman plot`'s command line: a checkpoint folder (or a name under
/// checkpoints/), or a folder or file with a metrics.jsonl of the same fields (a peer's run).
pub fn read_runs(paths: &[std::path::PathBuf]) -> Result<Vec<Run>> {
    use crate::checkpoint;
    let mut runs = Vec::new();
    for p in paths {
        let (name_of, metrics) = if p.is_file() {
            (p.clone(), checkpoint::read_metrics_file(p)?)
        } else {
            let dir = checkpoint::resolve_dir(p);
            if !dir.join(checkpoint::METRICS_FILE).exists() {
                // A checkpoint folder says what is wrong with it (or that it is none).
                checkpoint::read_config(&dir)?;
            }
            let m = checkpoint::read_metrics(&dir)?;
            (dir, m)
        };
        if metrics.is_empty() {
            anyhow::bail!(
                "{}: no evaluations yet, nothing to plot (train longer than --eval-every steps)",
                name_of.display()
            );
        }
        let stem = if p.is_file() {
            name_of.file_stem()
        } else {
            name_of.file_name()
        };
        let name = stem.map_or(name_of.display().to_string(), |n| {
            n.to_string_lossy().into()
        });
        runs.push((name, metrics));
    }
    Ok(runs)
}

/// Training (solid) and validation (dashed) loss of each run, one colour per run.
pub fn loss_chart(runs: &[Run]) -> Chart {
    compare_chart(runs, XAxis::Tokens, false, None)
}

/// [`loss_chart`] against `x`, optionally with only the validation curves and a cut y axis.
pub fn compare_chart(runs: &[Run], x: XAxis, validation_only: bool, y_max: Option<f64>) -> Chart {
    let xv = |m: &crate::checkpoint::Metric| match x {
        XAxis::Tokens => m.tokens_seen as f64,
        XAxis::Time => m.wall_time_s,
    };
    let cut = |y: f64| y_max.is_none_or(|top| y <= top);
    let mut series = Vec::new();
    for (i, (name, metrics)) in runs.iter().enumerate() {
        let label = |what: &str| {
            if runs.len() == 1 {
                what.to_string()
            } else if validation_only {
                name.clone()
            } else {
                format!("{name} {what}")
            }
        };
        let sampled = metrics.iter().any(|m| m.train_loss_sampled);
        if !validation_only {
            series.push(Series {
                label: label(if sampled {
                    "train (sampled softmax)"
                } else {
                    "train"
                }),
                points: metrics
                    .iter()
                    .map(|m| (xv(m), m.train_loss))
                    .filter(|p| cut(p.1))
                    .collect(),
                dashed: false,
                color: i,
            });
        }
        series.push(Series {
            label: label("validation"),
            points: metrics
                .iter()
                .map(|m| (xv(m), m.val_loss))
                .filter(|p| cut(p.1))
                .collect(),
            dashed: !validation_only,
            color: i,
        });
    }
    let what = if validation_only {
        "validation loss"
    } else {
        "loss"
    };
    let title = if runs.len() == 1 {
        format!("{}: {what}", runs[0].0)
    } else {
        what.to_string()
    };
    Chart {
        title,
        x_label: match x {
            XAxis::Tokens => "tokens seen".into(),
            XAxis::Time => "seconds of training".into(),
        },
        y_label: "nats per token".into(),
        log_y: false,
        x_is_count: x == XAxis::Tokens,
        series,
    }
}
