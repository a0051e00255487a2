//! The --plot SVG: the latency percentile curve (left), latency over time (middle: p50, p99 and
//! the maximum of each interval, on a log scale, so a stall stands out) and throughput over time
//! (right).

use std::path::Path;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::Report;

/// Labels a point of the percentile axis, where `x` is 1 / (1 - quantile).
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let s = format!("{p:.5}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// (1 / (1 - quantile), latency µs) points along the histogram's percentile spectrum.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        pts.push((1.0 / (1.0 - q), v.value_iterated_to() as f64 / 1000.0));
    }
    if let Some(&(x, _)) = pts.last() {
        pts.push((x * 2.0, h.max() as f64 / 1000.0));
    }
    pts
}

/// Writes the three-panel SVG for a report.
pub fn write_svg(path: &Path, r: &Report) -> Result<()> {
    let root = SVGBackend::new(path, (1920, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let title = format!("{} against {} ({} B payloads)", r.scenario, r.server, r.size);
    let root = root.titled(&title, ("sans-serif", 22)).map_err(|e| anyhow!("plot: {e}"))?;
    let (left, rest) = root.split_horizontally(640);
    let (middle, right) = rest.split_horizontally(640);
    over_time_panel(&middle, r)?;

    // Left: latency by percentile, log-scaled toward the tail.
    let pts = r.histogram.as_ref().map(percentile_points).unwrap_or_default();
    if pts.is_empty() {
        left.draw_text("latency not measured in this scenario", &("sans-serif", 18).into_text_style(&left), (120, 240))
            .map_err(|e| anyhow!("plot: {e}"))?;
    } else {
        let x_max = pts.last().map_or(10.0, |p| p.0).max(10.0);
        let x_max = 10f64.powf(x_max.log10().ceil());
        let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1 + 1.0;
        let mut chart = ChartBuilder::on(&left)
            .caption("latency by percentile", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart.draw_series(LineSeries::new(pts, &BLUE)).map_err(|e| anyhow!("plot: {e}"))?;
    }

    // Right: throughput per sampling interval.
    let tl: Vec<(f64, f64)> = r.timeline.iter().map(|s| (s.t_s, s.per_sec)).collect();
    if tl.is_empty() {
        right
            .draw_text("run too short for a timeline", &("sans-serif", 18).into_text_style(&right), (180, 240))
            .map_err(|e| anyhow!("plot: {e}"))?;
    } else {
        let x_max = tl.iter().map(|p| p.0).fold(0.0, f64::max).max(0.001);
        let y_max = tl.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1 + 1.0;
        let mut chart = ChartBuilder::on(&right)
            .caption("throughput over time", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| anyhow!("plot: {e}"))?;
        chart.draw_series(LineSeries::new(tl, &RED)).map_err(|e| anyhow!("plot: {e}"))?;
    }
    root.present().map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// Picks one latency figure (µs) of an interval.
type PickUs = fn(&crate::over_time::LatencySample) -> f64;

/// The middle panel: each interval's p50, p99 and maximum latency against time.
fn over_time_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, r: &Report) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let pts = &r.latency_over_time;
    if pts.is_empty() {
        area.draw_text("latency not measured over time", &("sans-serif", 18).into_text_style(area), (150, 240))
            .map_err(|e| anyhow!("plot: {e}"))?;
        return Ok(());
    }
    let x_max = pts.iter().map(|p| p.t_s).fold(0.0, f64::max).max(0.001);
    let y_max = pts.iter().map(|p| p.max_us).fold(1.0, f64::max) * 1.5;
    let y_min = pts.iter().map(|p| p.p50_us).fold(f64::INFINITY, f64::min).clamp(0.5, y_max / 2.0) / 1.5;
    let mut chart = ChartBuilder::on(area)
        .caption("latency over time (by send time)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (µs)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    let series: [(&str, RGBColor, PickUs); 3] =
        [("max", RED, |p| p.max_us), ("p99", MAGENTA, |p| p.p99_us), ("p50", BLUE, |p| p.p50_us)];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.t_s, value(p).max(y_min))), color))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }
}
