//! PNG charts: line charts of run curves and bar charts of counts (ErrorType histograms).
//!
//! Drawn with plotters into a pixel buffer and encoded with `image`, with a font compiled in
//! (DejaVu Sans Mono), so charts look the same on every machine.

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use image::{ImageFormat, RgbImage};
use plotters::prelude::*;

use crate::error::{Error, IoContext, Result};

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

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("drawing a chart: {e}"))
}

fn write_png(path: &Path, buf: Vec<u8>, w: u32, h: u32) -> Result<()> {
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err("pixel buffer has the wrong size"))?;
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).map_err(plot_err)?;
    std::fs::write(path, bytes).at(path)
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
        root.fill(&WHITE).map_err(plot_err)?;
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
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style((FAMILY, 13)).draw().map_err(plot_err)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
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
        root.fill(&WHITE).map_err(plot_err)?;
        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.1;
        let n = bars.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..top)
            .map_err(plot_err)?;
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
            .map_err(plot_err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let color = PALETTE[i % PALETTE.len()];
                let mut r =
                    Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], color.filled());
                r.set_margin(0, 0, 8, 8);
                r
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
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
    }
}
