//! SVG plots of the examples (plotters, SVG backend): accuracy against a cost
//! ratio, one line per method, and stacked per-layer cost bars.

use std::path::Path;

use energy_prune::Error;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Line colours by series index (a colour-blind-safe qualitative palette).
const COLORS: [RGBColor; 6] = [
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Colours of the stacked parts.
const PARTS: [RGBColor; 3] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
];

fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::External(Box::new(e))
}

/// One line of a plot: a method's (cost ratio, accuracy in %) points, in any order.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// (x, y) points; sorted by x when drawn.
    pub points: Vec<(f64, f64)>,
}

/// Write `text` to `path`, creating its directory.
pub fn save(path: &Path, text: &str) -> energy_prune::Result<()> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    energy_prune::files::write_atomic(path, text.as_bytes())
}

/// A padded range around `values` (never empty).
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let d = ((hi - lo) * pad).max(1e-3);
    (lo - d, hi + d)
}

/// Accuracy (y, %) against a cost ratio (x), one line with markers per series, and
/// a dashed horizontal reference line (`reference`: its label and accuracy).
pub fn accuracy_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    reference: Option<(&str, f64)>,
) -> energy_prune::Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(ext)?;
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = span(xs, 0.05);
        let ys = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(reference.map(|r| r.1));
        let (y0, y1) = span(ys, 0.08);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(x0.max(0.0)..x1, y0..y1.min(100.5))
            .map_err(ext)?;
        // Enough decimals that neighbouring tick labels differ.
        let decimals = if y1 - y0 < 1.5 { 2 } else { 1 };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("test accuracy [%]")
            .x_label_formatter(&|x| format!("{x:.2}"))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(ext)?;
        if let Some((name, acc)) = reference {
            let style = BLACK.mix(0.6).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new([(x0, acc), (x1, acc)], 8, 6, style))
                .map_err(ext)?
                .label(format!("{name} ({acc:.2} %)"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], style));
        }
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts = s.points.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(ext)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(ext)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(ext)?;
        root.present().map_err(ext)?;
    }
    save(path, &svg)
}

/// One panel of [`breakdown_plot`]: a network's per-layer costs in three parts.
pub struct Breakdown {
    /// Panel title (the network).
    pub title: String,
    /// Per layer: name and the three parts (same unit across panels).
    pub layers: Vec<(String, [f64; 3])>,
}

/// Stacked bars of per-layer costs, one panel per network side by side;
/// `parts` names the three stacked parts (bottom first). Every panel shares one y
/// axis, except the first when `first_own_scale` (a dense reference next to
/// pruned networks a few times smaller).
pub fn breakdown_plot(
    path: &Path,
    title: &str,
    y_label: &str,
    parts: [&str; 3],
    panels: &[Breakdown],
    first_own_scale: bool,
) -> energy_prune::Result<()> {
    let mut svg = String::new();
    {
        let width = 80 + 300 * panels.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(ext)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(ext)?;
        let top = |panels: &[Breakdown]| {
            panels
                .iter()
                .flat_map(|p| p.layers.iter().map(|l| l.1.iter().sum::<f64>()))
                .fold(0.0f64, f64::max)
                .max(1e-12)
                * 1.08
        };
        let split = usize::from(first_own_scale && panels.len() > 1);
        let (own, shared) = (top(&panels[..split]), top(&panels[split..]));
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (k, (panel, area)) in panels.iter().zip(&areas).enumerate() {
            let labelled = k == 0 || k == split;
            let top = if k < split { own } else { shared };
            draw_panel(area, panel, top, labelled.then_some(y_label), k == 0, parts)?;
        }
        root.present().map_err(ext)?;
    }
    save(path, &svg)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &Breakdown,
    top: f64,
    y_label: Option<&str>,
    legend: bool,
    parts: [&str; 3],
) -> energy_prune::Result<()> {
    let n = panel.layers.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(if y_label.is_some() { 64 } else { 44 })
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(ext)?;
    let names: Vec<String> = panel.layers.iter().map(|l| l.0.clone()).collect();
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.2}"));
    if let Some(y) = y_label {
        mesh.y_desc(y);
    }
    mesh.draw().map_err(ext)?;
    for (p, (part, color)) in parts.iter().zip(PARTS).enumerate() {
        let bars = panel.layers.iter().enumerate().map(|(i, (_, v))| {
            let bottom: f64 = v[..p].iter().sum();
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), bottom),
                    (SegmentValue::Exact(i + 1), bottom + v[p]),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 6, 6);
            bar
        });
        let drawn = chart.draw_series(bars).map_err(ext)?;
        if legend {
            drawn.label(*part).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(ext)?;
    }
    Ok(())
}
