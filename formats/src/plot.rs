//! PNG charts: line charts of run curves and bar charts of counts (ErrorType histograms).
//!
//! Drawn with plotters into a pixel buffer and encoded with `image`, with a font compiled in
//! (DejaVu Sans Mono), so charts look the same on every machine.

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use image::{ImageFormat, RgbImage};
use plotters::prelude::*;

use regrpo_schemas::IoContext;

use crate::error::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot { path: path.to_path_buf(), reason: e.to_string() }
}

fn write_png(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<()> {
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(path, "pixel buffer has the wrong size"))?;
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).map_err(|e| plot_err(path, e))?;
    Ok(std::fs::write(path, bytes).at(path)?)
}

/// A named series of `(x, y)` points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart of one or more series.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> Result<()> {
    font();
    let (w, h) = (800u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let pts = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if (x1 - x0).abs() < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0).abs() * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 13))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_png(path, buf, w, h)
}

/// A bar chart of labelled counts.
pub fn bar_chart(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)]) -> Result<()> {
    font();
    let (w, h) = (800u32, 480u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let n = bars.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
            .map_err(|e| plot_err(path, e))?;
        let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style((FAMILY, 12))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let color = PALETTE[i % PALETTE.len()];
                let mut r =
                    Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], color.filled());
                r.set_margin(0, 0, 8, 8);
                r
            }))
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_png(path, buf, w, h)
}

/// Bars of one series in a grouped chart: a value per group, with an optional interval.
pub struct BarSeries<'a> {
    pub name: &'a str,
    pub values: Vec<(f64, Option<(f64, f64)>)>,
}

/// Grouped bars (one bar per series in each group) with error bars where intervals are given:
/// recovery per policy with its confidence interval, or per ErrorType and policy.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[BarSeries<'_>],
) -> Result<()> {
    font();
    let (w, h) = (900u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let top = series
            .iter()
            .flat_map(|s| s.values.iter().map(|(v, ci)| finite(ci.map_or(*v, |c| c.1).max(*v))))
            .fold(0.0, f64::max)
            .max(1e-6)
            * 1.15;
        let n = groups.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..top)
            .map_err(|e| plot_err(path, e))?;
        let labels = groups.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            .x_labels(n)
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style((FAMILY, 12))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let width = 0.8 / series.len().max(1) as f64;
        for (k, s) in series.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let x = |g: usize| g as f64 - 0.4 + k as f64 * width;
            chart
                .draw_series(s.values.iter().enumerate().map(|(g, (v, _))| {
                    Rectangle::new([(x(g) + width * 0.08, 0.0), (x(g) + width * 0.92, finite(*v))], color.filled())
                }))
                .map_err(|e| plot_err(path, e))?
                .label(s.name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
            for (g, (_, ci)) in s.values.iter().enumerate() {
                let Some((lo, hi)) = ci else { continue };
                let (c, cap) = (x(g) + width / 2.0, width * 0.2);
                for line in [
                    vec![(c, *lo), (c, *hi)],
                    vec![(c - cap, *lo), (c + cap, *lo)],
                    vec![(c - cap, *hi), (c + cap, *hi)],
                ] {
                    chart
                        .draw_series(std::iter::once(PathElement::new(line, BLACK.stroke_width(2))))
                        .map_err(|e| plot_err(path, e))?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    write_png(path, buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        line_chart(
            &p,
            "loss",
            "step",
            "loss",
            &[Series { name: "train", points: (0..20).map(|i| (i as f64, 1.0 / (1.0 + i as f64))).collect() }],
        )
        .unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (800, 480));
        let q = dir.path().join("hist.png");
        bar_chart(&q, "ErrorType", "rows", &[("ArgInvalid".into(), 3.0), ("ToolMismatch".into(), 5.0)]).unwrap();
        assert!(std::fs::metadata(&q).unwrap().len() > 1000);
        let r = dir.path().join("recovery.png");
        let series = [
            BarSeries { name: "a", values: vec![(0.2, Some((0.1, 0.3))), (0.5, None)] },
            BarSeries { name: "b", values: vec![(0.4, Some((0.3, 0.5))), (f64::NAN, None)] },
        ];
        grouped_bars(&r, "recovery", "rate", &["x".into(), "y".into()], &series).unwrap();
        assert_eq!(image::open(&r).unwrap().width(), 900);
    }
}
