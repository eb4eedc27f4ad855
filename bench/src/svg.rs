//! `--svg`: one append run drawn as two panels: the commit latency histogram (buckets doubling
//! in width, so a log axis) and durable records per second over time.

use std::path::Path;

use plotters::prelude::*;

/// What one picture shows.
#[derive(Debug)]
pub struct RunPicture<'a> {
    pub title: String,
    /// (from µs, to µs, transactions).
    pub latency_buckets: &'a [(u64, u64, u64)],
    /// (seconds since the start, records durable by then).
    pub timeline: &'a [(f64, u64)],
}

/// Draws `run` into the SVG file `path`.
pub fn draw(path: &Path, run: &RunPicture<'_>) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(&run.title, ("sans-serif", 18)).map_err(err)?;
    let (top, bottom) = root.split_vertically(340);
    latency(&top, run.latency_buckets)?;
    throughput(&bottom, run.timeline)?;
    root.present().map_err(err)
}

fn latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    buckets: &[(u64, u64, u64)],
) -> Result<(), String> {
    let ms = |us: u64| us.max(1) as f64 / 1e3;
    let x_max = buckets.last().map_or(1.0, |(_, to, _)| ms(*to)).max(0.01);
    let y_max = buckets.iter().map(|(_, _, n)| *n).max().unwrap_or(1).max(1);
    let x_min = buckets.iter().find(|(_, _, n)| *n > 0).map_or(0.001, |(from, _, _)| ms(*from) / 2.0);
    let mut chart = ChartBuilder::on(area)
        .caption("commit latency (transactions per bucket)", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min.min(x_max / 2.0)..x_max * 1.1).log_scale(), 0..y_max + y_max / 10)
        .map_err(err)?;
    chart.configure_mesh().x_desc("latency, ms (log scale)").y_desc("transactions").draw().map_err(err)?;
    let bars = buckets
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(from, to, n)| Rectangle::new([(ms(*from), 0), (ms(*to), *n)], BLUE.mix(0.6).filled()));
    chart.draw_series(bars).map_err(err)?;
    Ok(())
}

fn throughput(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    timeline: &[(f64, u64)],
) -> Result<(), String> {
    let rates: Vec<(f64, f64)> = timeline
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].0, (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0)))
        .collect();
    let x_max = timeline.last().map_or(1.0, |(t, _)| *t).max(0.1);
    let y_max = rates.iter().map(|(_, r)| *r).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("durable records per second", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.1)
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds").y_desc("records/s").draw().map_err(err)?;
    chart.draw_series(LineSeries::new(rates, &RED)).map_err(err)?;
    Ok(())
}

fn err(error: impl std::fmt::Display) -> String {
    format!("drawing the SVG: {error}")
}

/// The file for run `tag` when one `--svg` path serves several runs: `stem-tag.svg`.
pub fn path_for(path: &Path, tag: &str, runs: usize) -> std::path::PathBuf {
    if runs <= 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map_or_else(|| "append".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}-{tag}.svg"))
}
