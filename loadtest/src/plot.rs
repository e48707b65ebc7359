//! SVG plots of a run (plotters): latency percentiles over time, offered vs
//! achieved rate, and the latency distribution (percentile spectrum).

use crate::collector::IntervalPoint;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

type PlotResult = Result<(), String>;
/// A named, coloured line taken from each second.
type Series = (&'static str, RGBColor, fn(&IntervalPoint) -> f64);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One chart of per-second lines against time.
struct TimePlot<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y_max: f64,
    series: &'a [Series],
}

/// Draws `plot` over `points` (x = seconds since start) into an SVG.
fn time_plot(points: &[&IntervalPoint], plot: &TimePlot<'_>, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = points.last().map_or(1.0, |p| p.t_s).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..plot.y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc(plot.y_desc)
        .draw()
        .map_err(err)?;
    for &(name, color, f) in plot.series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, f(p))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Per-second p50/p99/p99.9/max of delivery and p99 of send-to-ok, in ms.
///
/// # Errors
/// When the SVG cannot be drawn or written.
pub fn latency_over_time(points: &[IntervalPoint], path: &Path) -> PlotResult {
    // Seconds with no sample have no percentiles; leave them out of the lines.
    let sampled: Vec<&IntervalPoint> = points
        .iter()
        .filter(|p| p.delivery.count > 0 || p.send_ok.count > 0)
        .collect();
    let y_max = sampled
        .iter()
        .map(|p| p.delivery.p99_9_ms.max(p.send_ok.p99_ms))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let series: [Series; 4] = [
        ("delivery p50", BLUE, |p| p.delivery.p50_ms),
        ("delivery p99", RED, |p| p.delivery.p99_ms),
        ("delivery p99.9", MAGENTA, |p| p.delivery.p99_9_ms),
        ("send->ok p99", GREEN, |p| p.send_ok.p99_ms),
    ];
    let plot = TimePlot {
        caption: "Latency per second (ms)",
        y_desc: "ms",
        y_max,
        series: &series,
    };
    time_plot(&sampled, &plot, path)
}

/// Offered sends/s (the plan), sends written, oks and errors per second.
///
/// # Errors
/// When the SVG cannot be drawn or written.
pub fn rates(points: &[IntervalPoint], path: &Path) -> PlotResult {
    let y_max = points
        .iter()
        .map(|p| p.offered_per_s.max(p.sent_per_s).max(p.acked_per_s))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let series: [Series; 4] = [
        ("offered", BLACK, |p| p.offered_per_s),
        ("sent", BLUE, |p| p.sent_per_s),
        ("ok (achieved)", GREEN, |p| p.acked_per_s),
        ("errors", RED, |p| p.errors_per_s),
    ];
    let plot = TimePlot {
        caption: "Offered vs achieved sends per second",
        y_desc: "sends/s",
        y_max,
        series: &series,
    };
    time_plot(&points.iter().collect::<Vec<_>>(), &plot, path)
}

/// Percentile spectrum of the whole run: x is `1/(1-q)` on a log scale
/// (10 = p90, 100 = p99, ...), y the latency in ms, as HdrHistogram plots it.
///
/// # Errors
/// When the SVG cannot be drawn or written.
pub fn distribution(series: &[(&str, &Histogram<u64>)], path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, h)| (*name, spectrum(h)))
        .collect();
    let y_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(10.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile (whole run)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("1/(1-percentile): 10 = p90, 100 = p99, 1000 = p99.9")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    for ((name, curve), color) in curves.into_iter().zip([RED, GREEN, BLUE, MAGENTA]) {
        chart
            .draw_series(LineSeries::new(curve, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// `(1/(1-q), ms)` points of `h`, q below 1.
fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to()))
        .filter(|(q, _)| *q < 1.0)
        .map(|(q, v)| (1.0 / (1.0 - q), v as f64 / 1000.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{LatencySummary, new_hist, record};

    #[test]
    fn plots_are_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("loadtest-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut h = new_hist();
        for v in 1..=5000 {
            record(&mut h, v * 10);
        }
        let pts: Vec<IntervalPoint> = (1..=5)
            .map(|t| IntervalPoint {
                t_s: f64::from(t),
                offered_per_s: 100.0,
                sent_per_s: 100.0,
                acked_per_s: 99.0,
                delivery: LatencySummary::of(&h),
                send_ok: LatencySummary::of(&h),
                ..IntervalPoint::default()
            })
            .collect();
        latency_over_time(&pts, &dir.join("a.svg")).expect("latency");
        rates(&pts, &dir.join("b.svg")).expect("rates");
        distribution(&[("delivery", &h)], &dir.join("c.svg")).expect("dist");
        for f in ["a.svg", "b.svg", "c.svg"] {
            let text = std::fs::read_to_string(dir.join(f)).expect("read");
            assert!(text.starts_with("<svg"), "{f}");
            assert!(text.contains("<polyline"), "{f} has a line");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
