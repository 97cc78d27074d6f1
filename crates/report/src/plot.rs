//! Plots for report pages, drawn with plotters' SVG backend. Each function returns one `<svg>`
//! element as a string, ready for [`crate::Block::Svg`].

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A named list of points.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// `(x, y)` points, in order of x for lines.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from its name and points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// The colours of successive series (Tableau 10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series colour `i`.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

const W: u32 = 500;
const H: u32 = 320;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// The extent of `values` (finite ones), widened when empty or flat.
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * (1.0 + lo.abs()) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// The legend of a chart's labelled series, on a light box.
fn draw_legend<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(position)
        .draw()
        .map_err(err)
}

/// A filled square legend key at `(x, y)`.
fn square_key(x: i32, y: i32, c: RGBColor) -> Rectangle<(i32, i32)> {
    Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
}

/// A centred moving average of `values` over `window` points (fewer at the ends), as the
/// smoothed line beside a noisy curve: unlike an exponential average it does not lag.
pub fn smooth(values: &[f64], window: usize) -> Vec<f64> {
    let h = window.max(1) / 2;
    (0..values.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(h), (i + h + 1).min(values.len()));
            values[a..b].iter().sum::<f64>() / (b - a) as f64
        })
        .collect()
}

/// A tick label: integers without decimals, other values to three significant digits.
pub fn tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v == v.round() && v.abs() < 1e7 {
        return format!("{}", v as i64);
    }
    let a = v.abs();
    if !(1e-4..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Lines through each series; `log_y` draws y on a log scale (non-positive values dropped),
/// labelled in the data's own units.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<String> {
    // On a log scale the chart draws log10(y) on a linear axis and labels ticks with 10^tick,
    // so that even a narrow range (a loss between 0.3 and 0.6) gets labels.
    let to_axis = |y: f64| if log_y { y.log10() } else { y };
    let keep = |y: f64| y.is_finite() && (!log_y || y > 0.0);
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|p| p.0.is_finite() && keep(p.1))
                .map(|&(x, y)| (x, to_axis(y)))
                .collect()
        })
        .collect();
    let (x0, x1) = extent(lines.iter().flatten().map(|p| p.0));
    let (y0, y1) = extent(lines.iter().flatten().map(|p| p.1));
    let pad = 0.04 * (y1 - y0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(38)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0 - pad..y1 + pad)
            .map_err(err)?;
        let y_tick = |v: &f64| tick(if log_y { 10f64.powf(*v) } else { *v });
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(if log_y {
                format!("{y_label} (log scale)")
            } else {
                y_label.to_string()
            })
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&y_tick)
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (i, (s, pts)) in series.iter().zip(lines).enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        if series.len() > 1 || series.iter().any(|s| !s.name.is_empty()) {
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Points of each series as dots (square axes when `equal_axes`), with axis titles.
pub fn scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    equal_axes: bool,
) -> Result<String> {
    let (mut x0, mut x1) = extent(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (mut y0, mut y1) = extent(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    if equal_axes {
        let (lo, hi) = (x0.min(y0), x1.max(y1));
        (x0, x1, y0, y1) = (lo, hi, lo, hi);
    }
    let (px, py) = (0.04 * (x1 - x0), 0.04 * (y1 - y0));
    let mut svg = String::new();
    {
        let side = if equal_axes { 420 } else { W };
        let root = SVGBackend::with_string(&mut svg, (side, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(if x_label.is_empty() { 30 } else { 42 })
            .y_label_area_size(if y_label.is_empty() { 44 } else { 58 })
            .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(
                    s.points
                        .iter()
                        .filter(|p| p.0.is_finite() && p.1.is_finite())
                        .map(|&p| Circle::new(p, 2, c.mix(0.55).filled())),
                )
                .map_err(err)?
                .label(s.name.clone())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Overlaid histograms of several sets of values over `bins` equal bins spanning `range`
/// (default: all values' extent), each normalised to a density so sets of different sizes
/// compare.
pub fn histograms(
    title: &str,
    x_label: &str,
    sets: &[(&str, &[f64])],
    bins: usize,
    range: Option<(f64, f64)>,
) -> Result<String> {
    let bins = bins.max(1);
    let (lo, hi) = range.unwrap_or_else(|| extent(sets.iter().flat_map(|s| s.1.iter().copied())));
    let width = (hi - lo) / bins as f64;
    let densities: Vec<Vec<f64>> = sets
        .iter()
        .map(|(_, v)| {
            let mut c = vec![0f64; bins];
            let mut n = 0usize;
            for &x in v.iter().filter(|x| x.is_finite()) {
                if x < lo || x > hi {
                    continue;
                }
                let b = (((x - lo) / width) as usize).min(bins - 1);
                c[b] += 1.0;
                n += 1;
            }
            c.iter().map(|&k| k / (n.max(1) as f64 * width)).collect()
        })
        .collect();
    let top = densities.iter().flatten().cloned().fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.08 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(58)
            .build_cartesian_2d(lo..hi, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("density")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (i, ((name, _), d)) in sets.iter().zip(&densities).enumerate() {
            let c = colour(i);
            chart
                .draw_series(d.iter().enumerate().map(|(b, &v)| {
                    let x = lo + b as f64 * width;
                    Rectangle::new([(x, 0.0), (x + width, v)], c.mix(0.4).filled())
                }))
                .map_err(err)?
                .label(name.to_string())
                .legend(move |(x, y)| square_key(x, y, c));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A colour between white (`t = 0`) and deep blue (`t = 1`).
fn scale_colour(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// A matrix as coloured cells with their values written in, rows labelled on the left.
pub fn heatmap(
    title: &str,
    row_title: &str,
    col_title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
) -> Result<String> {
    anyhow::ensure!(
        values.len() == rows.len() && values.iter().all(|r| r.len() == cols.len()),
        "heatmap: {} x {} labels for a matrix of {} rows",
        rows.len(),
        cols.len(),
        values.len()
    );
    let (lo, hi) = extent(values.iter().flatten().copied());
    let (nr, nc) = (rows.len().max(1), cols.len().max(1));
    let mut svg = String::new();
    {
        let cell = 64u32;
        let size = (130 + cell * nc as u32, 90 + cell * nr as u32);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(100)
            .build_cartesian_2d((0..nc - 1).into_segmented(), (0..nr - 1).into_segmented())
            .map_err(err)?;
        let label = |names: &[String], v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        // row 0 at the top
        let flip = |i: usize| nr - 1 - i;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_desc(col_title)
            .y_desc(row_title)
            .x_label_formatter(&|v| label(cols, v))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if *i < nr => {
                    label(rows, &SegmentValue::CenterOf(flip(*i)))
                }
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        for (i, row) in values.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let t = (v - lo) / (hi - lo);
                let y = flip(i);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(y + 1)),
                        ],
                        scale_colour(t).filled(),
                    )))
                    .map_err(err)?;
                let ink = if t > 0.55 { WHITE } else { BLACK };
                let style = ("sans-serif", 13)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.3}"),
                        (SegmentValue::CenterOf(j), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A 2-D density (`bins x bins` cells over `range` on both axes, `values[x * bins + y]`, x
/// major) as a square of cells coloured by the log of their density over three decades below
/// the densest (white: empty), with labelled axes: a Ramachandran plot, for example.
pub fn density(
    title: &str,
    x_label: &str,
    y_label: &str,
    range: (f64, f64),
    values: &[f64],
) -> Result<String> {
    let bins = (values.len() as f64).sqrt().round() as usize;
    anyhow::ensure!(
        bins >= 1 && bins * bins == values.len(),
        "density: {} values do not make a square grid",
        values.len()
    );
    let top = values.iter().cloned().fold(0.0, f64::max);
    let (lo, hi) = range;
    let w = (hi - lo) / bins as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (360, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(err)?;
        let cells = values
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(k, &v)| {
                let (x, y) = ((k / bins) as f64, (k % bins) as f64);
                let t = if top > 0.0 {
                    (v / top).log10() / 3.0 + 1.0
                } else {
                    0.0
                };
                Rectangle::new(
                    [
                        (lo + x * w, lo + y * w),
                        (lo + (x + 1.0) * w, lo + (y + 1.0) * w),
                    ],
                    scale_colour(t.max(0.05)).filled(),
                )
            });
        chart.draw_series(cells).map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Grouped bars: for each category, one bar per group (`groups[g].1[c]`), side by side.
pub fn bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    groups: &[(&str, Vec<f64>)],
) -> Result<String> {
    anyhow::ensure!(
        groups.iter().all(|g| g.1.len() == categories.len()),
        "bars: every group needs one value per category ({})",
        categories.len()
    );
    let g = groups.len().max(1);
    let slots = categories.len().max(1) * (g + 1);
    let top = groups
        .iter()
        .flat_map(|x| x.1.iter())
        .cloned()
        .fold(0.0, f64::max);
    // headroom for the legend
    let top = if top > 0.0 { top * 1.35 } else { 1.0 };
    let mut svg = String::new();
    {
        let width = (160 + 22 * slots as u32).max(W);
        let root = SVGBackend::with_string(&mut svg, (width, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d((0..slots - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(slots)
            .y_desc(y_label)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(s) if s % (g + 1) == (g - 1) / 2 => {
                    categories.get(s / (g + 1)).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        for (k, (name, vals)) in groups.iter().enumerate() {
            let c = colour(k);
            chart
                .draw_series(vals.iter().enumerate().map(|(ci, &v)| {
                    let s = ci * (g + 1) + k;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(s), 0.0),
                            (
                                SegmentValue::Exact(s + 1),
                                if v.is_finite() { v } else { 0.0 },
                            ),
                        ],
                        c.filled(),
                    )
                }))
                .map_err(err)?
                .label(name.to_string())
                .legend(move |(x, y)| square_key(x, y, c));
        }
        draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Closed outlines, each a list of points.
type Polygons = Vec<Vec<(f64, f64)>>;

/// The outline of a nucleotide letter in a unit box (y up), as filled polygons and, drawn
/// over them in white, its counters (the hole of the A).
fn glyph(letter: u8) -> (Polygons, Polygons) {
    let arc = |from: f64, to: f64, extra: Vec<(f64, f64)>| {
        let steps = 40;
        let at = |deg: f64, rx: f64, ry: f64| {
            let t = deg.to_radians();
            (0.5 + rx * t.cos(), 0.5 + ry * t.sin())
        };
        let mut pts: Vec<(f64, f64)> = (0..=steps)
            .map(|k| at(from + (to - from) * k as f64 / steps as f64, 0.5, 0.5))
            .collect();
        pts.extend(extra);
        pts.extend(
            (0..=steps)
                .rev()
                .map(|k| at(from + (to - from) * k as f64 / steps as f64, 0.3, 0.32)),
        );
        pts
    };
    let rect = |x0: f64, y0: f64, x1: f64, y1: f64| vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)];
    match letter {
        b'A' => (
            vec![vec![
                (0.0, 0.0),
                (0.4, 1.0),
                (0.6, 1.0),
                (1.0, 0.0),
                (0.78, 0.0),
                (0.68, 0.26),
                (0.32, 0.26),
                (0.22, 0.0),
            ]],
            vec![vec![(0.38, 0.42), (0.62, 0.42), (0.5, 0.74)]],
        ),
        b'C' => (vec![arc(40.0, 320.0, vec![])], vec![]),
        b'G' => (
            vec![arc(40.0, 360.0, vec![]), rect(0.55, 0.36, 1.0, 0.52)],
            vec![],
        ),
        _ => (
            vec![rect(0.0, 0.82, 1.0, 1.0), rect(0.39, 0.0, 0.61, 0.82)],
            vec![],
        ),
    }
}

/// The colour of a base in a logo (A green, C blue, G orange, T red, as in WebLogo).
fn base_colour(letter: u8) -> RGBColor {
    match letter {
        b'A' => RGBColor(0, 150, 0),
        b'C' => RGBColor(0, 70, 200),
        b'G' => RGBColor(240, 150, 0),
        _ => RGBColor(210, 0, 0),
    }
}

/// A sequence logo: one stack per position of `columns` (base frequencies A, C, G, T), each
/// letter as tall as its frequency times the column's information content (2 - entropy, in
/// bits), the likeliest on top. `first` numbers the first column.
pub fn logo(title: &str, columns: &[[f64; 4]], first: i64) -> Result<String> {
    let n = columns.len().max(1);
    let mut svg = String::new();
    {
        let width = (90 + 30 * n as u32).max(300);
        let root = SVGBackend::with_string(&mut svg, (width, 240)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..2.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .x_labels(n)
            .y_labels(5)
            .x_desc("position")
            .y_desc("bits")
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    (v.round() as i64 + first).to_string()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| tick(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, col) in columns.iter().enumerate() {
            let total: f64 = col.iter().filter(|p| p.is_finite()).sum();
            if total <= 0.0 {
                continue;
            }
            let p: Vec<f64> = col.iter().map(|&v| v.max(0.0) / total).collect();
            let entropy: f64 = p.iter().filter(|&&v| v > 0.0).map(|v| -v * v.log2()).sum();
            let info = (2.0 - entropy).max(0.0);
            let mut order: Vec<usize> = (0..4).collect();
            order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
            let mut y = 0.0;
            for b in order {
                let h = p[b] * info;
                if h < 1e-3 {
                    continue;
                }
                let letter = b"ACGT"[b];
                let (x0, w) = (i as f64 - 0.45, 0.9);
                let place = |poly: &Vec<(f64, f64)>| -> Vec<(f64, f64)> {
                    poly.iter()
                        .map(|&(gx, gy)| (x0 + gx * w, y + gy * h))
                        .collect()
                };
                let (shapes, holes) = glyph(letter);
                let c = base_colour(letter);
                chart
                    .draw_series(shapes.iter().map(|g| Polygon::new(place(g), c.filled())))
                    .map_err(err)?;
                chart
                    .draw_series(holes.iter().map(|g| Polygon::new(place(g), WHITE.filled())))
                    .map_err(err)?;
                y += h;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_svg(s: &str) {
        assert!(
            s.trim_start().starts_with("<svg"),
            "{}",
            &s[..s.len().min(80)]
        );
        assert!(s.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn every_plot_draws_svg() {
        let a = Series::new(
            "loss",
            (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect(),
        );
        let b = Series::new("smoothed", vec![(1.0, 0.5), (49.0, 0.03)]);
        is_svg(&line_chart("t", "step", "loss", &[a.clone(), b.clone()], true).unwrap());
        is_svg(&line_chart("t", "step", "loss", std::slice::from_ref(&a), false).unwrap());
        is_svg(&scatter("s", "x", "y", &[a, b], true).unwrap());
        let v: Vec<f64> = (0..100).map(|i| (i as f64 * 0.37).sin()).collect();
        is_svg(&histograms("h", "x", &[("gen", &v), ("real", &v[..50])], 20, None).unwrap());
        let names = vec!["A".to_string(), "B".to_string()];
        let h = heatmap(
            "kl",
            "gen",
            "real",
            &names,
            &names,
            &[vec![0.1, 2.0], vec![1.5, 0.2]],
        )
        .unwrap();
        is_svg(&h);
        assert!(
            h.contains("0.100") && h.contains("2.000"),
            "values written in"
        );
        is_svg(
            &bars(
                "b",
                "rate",
                &names,
                &[("gen", vec![0.2, 0.4]), ("real", vec![0.3, 0.1])],
            )
            .unwrap(),
        );
    }

    #[test]
    fn empty_and_flat_data_still_draw() {
        is_svg(&line_chart("t", "x", "y", &[Series::new("e", vec![])], true).unwrap());
        is_svg(
            &line_chart(
                "t",
                "x",
                "y",
                &[Series::new("f", vec![(1.0, 2.0), (2.0, 2.0)])],
                false,
            )
            .unwrap(),
        );
        is_svg(&histograms("h", "x", &[("none", &[])], 10, None).unwrap());
        assert!(heatmap("x", "r", "c", &["a".into()], &["b".into()], &[]).is_err());
    }

    #[test]
    fn logos_stack_letters_by_information() {
        let cols = [
            [1.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.5, 0.5, 0.0],
        ];
        let svg = logo("logo", &cols, 1).unwrap();
        is_svg(&svg);
        // a certain A (one polygon and its counter), nothing for the uniform column, C and G
        // at one bit each
        assert_eq!(svg.matches("<polygon").count(), 2 + 1 + 2, "{svg}");
    }

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(0.3162), "0.316");
        assert_eq!(tick(12.345), "12.3");
        assert_eq!(tick(2e-5), "2.00e-5");
    }

    #[test]
    fn log_charts_label_narrow_ranges() {
        let a = Series::new(
            "loss",
            (1..40)
                .map(|i| (i as f64, 0.6 - 0.007 * i as f64))
                .collect(),
        );
        let svg = line_chart("t", "step", "loss", &[a], true).unwrap();
        let labels = svg.matches(">\n0.").count() + svg.matches(">0.").count();
        assert!(labels >= 3, "no y tick labels on a narrow log axis");
    }

    #[test]
    fn smoothing_is_a_centred_average() {
        assert_eq!(smooth(&[1.0, 3.0, 5.0, 7.0], 3), vec![2.0, 3.0, 5.0, 6.0]);
        assert_eq!(smooth(&[1.0, 3.0], 1), vec![1.0, 3.0]);
        assert!(smooth(&[], 5).is_empty());
    }
}
