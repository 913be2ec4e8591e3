//! The report's charts, drawn by plotters' SVG backend into strings that
//! the page inlines (no files beside it, nothing fetched). Three shapes
//! serve every chart: horizontal bars (sizes), a timeline of spans (boot
//! phases) and per-run distributions (box plots with every sample as a
//! dot). Text is left to the browser's sans-serif font: plotters only
//! estimates its width, so the label areas are sized generously.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

/// One chart: the `id` the page gives its `<svg>` (tests find it by it),
/// its title and the SVG text.
#[derive(Debug)]
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub svg: String,
}

#[derive(Debug, thiserror::Error)]
#[error("drawing the chart {chart:?}: {detail}")]
pub struct ChartError {
    chart: &'static str,
    detail: String,
}

const WIDTH: u32 = 960;
const ROW: u32 = 34;
const LABELS: u32 = 330;
const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

fn height(rows: usize) -> u32 {
    110 + ROW * rows.max(1) as u32
}

/// Rows are listed top first; plotters counts its y axis from the bottom.
fn row(rows: usize, i: usize) -> usize {
    rows - 1 - i
}

/// The label of segment `v` of a chart whose rows are `names`, top first.
fn label(names: &[String], v: &SegmentValue<usize>) -> String {
    match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < names.len() => {
            names[row(names.len(), *i)].clone()
        }
        _ => String::new(),
    }
}

/// The axis' upper end: a little room past the largest value.
fn axis_end(max: f64) -> f64 {
    if max > 0.0 { max * 1.12 } else { 1.0 }
}

/// Runs `draw` on a fresh SVG canvas and returns the SVG text.
fn svg(
    id: &'static str,
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend, plotters::coord::Shift>,
    ) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Chart, ChartError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let done = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root).map_err(|e| e.to_string()))
            .and_then(|()| root.present().map_err(|e| e.to_string()));
        done.map_err(|detail| ChartError { chart: id, detail })?;
    }
    Ok(Chart {
        id,
        title: title.to_string(),
        svg: text,
    })
}

/// A chart of one labelled row per name, top first, over `0..end` on the
/// horizontal axis: the frame bars and spans draw into.
type RowsChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize>,
    >,
>;

fn rows_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    axis: &str,
    names: &[String],
    end: f64,
) -> Result<RowsChart<'a, 'b>, Box<dyn std::error::Error>> {
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(LABELS)
        .build_cartesian_2d(0.0..end, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| label(names, v))
        .x_desc(axis)
        // plotters scales label text to the chart's height by default,
        // which makes it unreadably small on a short chart.
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    Ok(chart)
}

/// Horizontal bars, one per `(name, value)`, top first, each labelled
/// with its value as `fmt` writes it.
pub fn bars(
    id: &'static str,
    title: &str,
    axis: &str,
    rows: &[(String, f64)],
    fmt: impl Fn(f64) -> String,
) -> Result<Chart, ChartError> {
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let n = rows.len().max(1);
    let end = axis_end(rows.iter().map(|r| r.1).fold(0.0, f64::max));
    svg(id, title, (WIDTH, height(n)), |root| {
        let mut chart = rows_chart(root, title, axis, &names, end)?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
            let y = row(n, i);
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (*v, SegmentValue::Exact(y + 1)),
                ],
                COLORS[0].filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!(" {}", fmt(*v)),
                (*v, SegmentValue::CenterOf(row(n, i))),
                ("sans-serif", 13),
            )
        }))?;
        Ok(())
    })
}

/// A timeline: each `(name, from, to)` a span on the time axis, top first.
pub fn spans(
    id: &'static str,
    title: &str,
    axis: &str,
    rows: &[(String, f64, f64)],
) -> Result<Chart, ChartError> {
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let n = rows.len().max(1);
    let end = axis_end(rows.iter().map(|r| r.2).fold(0.0, f64::max));
    svg(id, title, (WIDTH, height(n)), |root| {
        let mut chart = rows_chart(root, title, axis, &names, end)?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, from, to))| {
            let y = row(n, i);
            let mut bar = Rectangle::new(
                [
                    (*from, SegmentValue::Exact(y)),
                    (*to, SegmentValue::Exact(y + 1)),
                ],
                COLORS[i % COLORS.len()].filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?;
        chart.draw_series(rows.iter().enumerate().map(|(i, (_, _, to))| {
            Text::new(
                format!(" {to:.3}"),
                (*to, SegmentValue::CenterOf(row(n, i))),
                ("sans-serif", 13),
            )
        }))?;
        Ok(())
    })
}

/// Per-run distributions, one row per `(name, samples)`, top first: a box
/// plot (quartiles, whiskers to the extremes) with each sample as a dot
/// on it, and the median written beside it.
pub fn distributions(
    id: &'static str,
    title: &str,
    axis: &str,
    rows: &[(String, Vec<f64>)],
) -> Result<Chart, ChartError> {
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let n = rows.len().max(1);
    let max = rows
        .iter()
        .flat_map(|r| r.1.iter().copied())
        .fold(0.0, f64::max);
    // Box plots take f32 values; room on the right for the median's label.
    let end = (axis_end(max) * 1.1) as f32;
    svg(id, title, (WIDTH, height(n)), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(LABELS)
            .build_cartesian_2d(0f32..end, (0..n).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| label(&names, v))
            .x_desc(axis)
            // plotters scales label text to the chart's height by default,
            // which makes it unreadably small on a short chart.
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        for (i, (_, samples)) in rows.iter().enumerate() {
            if samples.is_empty() {
                continue;
            }
            let y = || SegmentValue::CenterOf(row(n, i));
            let color = COLORS[i % COLORS.len()];
            let quartiles = Quartiles::new(samples);
            chart.draw_series(std::iter::once(
                Boxplot::new_horizontal(y(), &quartiles)
                    .width(ROW / 2)
                    .whisker_width(0.6)
                    .style(color),
            ))?;
            chart.draw_series(
                samples
                    .iter()
                    .map(|&v| Circle::new((v as f32, y()), 3, color.mix(0.55).filled())),
            )?;
            let top = samples.iter().copied().fold(f64::MIN, f64::max) as f32;
            chart.draw_series(std::iter::once(Text::new(
                format!("  median {}", short(quartiles.median())),
                (top, y()),
                ("sans-serif", 13),
            )))?;
        }
        Ok(())
    })
}

/// A figure with about four significant digits.
pub fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1000.0 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_draws_its_rows() {
        let b = bars(
            "b",
            "Sizes",
            "KiB",
            &[("a".into(), 3.0), ("b".into(), 1.0)],
            short,
        )
        .unwrap();
        assert!(
            b.svg.starts_with("<svg") && b.svg.contains("<rect"),
            "{}",
            b.svg
        );
        let s = spans("s", "Phases", "ms", &[("x".into(), 0.0, 2.0)]).unwrap();
        assert!(
            s.svg.contains("<rect") && s.svg.contains(">\nx\n<"),
            "{}",
            s.svg
        );
        let d = distributions(
            "d",
            "Runs",
            "ms",
            &[("one".into(), vec![1.0, 2.0, 3.0]), ("none".into(), vec![])],
        )
        .unwrap();
        assert_eq!(d.svg.matches("<circle").count(), 3, "{}", d.svg);
        assert!(d.svg.contains("median 2.000"), "{}", d.svg);
    }
}
