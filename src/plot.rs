//! The PNGs of `wndqn compare` and `wndqn sweep report`: curves with shaded confidence bands,
//! and interval estimates side by side, with axes and legends, drawn
//! with `plotters` (bitmap backend). Text uses the system's DejaVu Sans (Debian
//! `fonts-dejavu-core`, installed by scripts/setup.sh) through plotters' `ab_glyph` renderer, so
//! no fontconfig is needed; without the font the curves are still drawn, without text.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One series: x, mean, lower and upper band.
pub struct Series {
    pub label: String,
    pub color: [u8; 3],
    pub x: Vec<f64>,
    pub mean: Vec<f64>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

/// Colors for up to 8 variants (Tableau 10).
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Register DejaVu Sans as plotters' "sans-serif" once; false when the font is missing.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| match std::fs::read(FONT) {
        Ok(bytes) => {
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok()
        }
        Err(_) => false,
    })
}

/// The range of the finite values, padded by 5% (a unit range when there are none).
fn padded_range(values: impl Iterator<Item = f64>, pad: bool) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() || hi <= lo {
        return if lo.is_finite() { (lo - 0.5, lo + 0.5) } else { (0.0, 1.0) };
    }
    let p = if pad { (hi - lo) * 0.05 } else { 0.0 };
    (lo - p, hi + p)
}

/// A tick label: `2k`, `1.5M`, `0.25`, `-20`.
fn tick(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    match a {
        _ if a >= 1e6 => format!("{}M", trim(format!("{:.2}", v / 1e6))),
        _ if a >= 1e3 => format!("{}k", trim(format!("{:.1}", v / 1e3))),
        _ if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => trim(format!("{v:.2}")),
    }
}

/// Draw `series` into a 1000x620 PNG at `path`.
pub fn line_plot(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> Result<()> {
    draw_lines(path, title, xlabel, ylabel, series, &|v| tick(v), false)
}

/// As [`line_plot`], on a logarithmic x-axis (every x positive), each point marked: a curve over
/// a few settings of a hyper-parameter spaced by factors.
pub fn line_plot_log_x(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> Result<()> {
    let logged: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            color: s.color,
            x: s.x.iter().map(|x| x.log10()).collect(),
            mean: s.mean.clone(),
            lo: s.lo.clone(),
            hi: s.hi.clone(),
        })
        .collect();
    let fmt = |v: f64| {
        let x = 10f64.powf(v);
        let s = format!("{:.2e}", x);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
    };
    draw_lines(path, title, xlabel, ylabel, &logged, &fmt, true)
}

fn draw_lines(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    xfmt: &dyn Fn(f64) -> String,
    marks: bool,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let text = font_ready();
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x0, x1) = padded_range(series.iter().flat_map(|s| s.x.iter().copied()), false);
    let (y0, y1) = padded_range(series.iter().flat_map(|s| s.lo.iter().chain(&s.hi).chain(&s.mean).copied()), true);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20).x_label_area_size(if text { 50 } else { 10 }).y_label_area_size(if text { 70 } else { 10 });
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| err(&e))?;
    let xf = |v: &f64| xfmt(*v);
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE).bold_line_style(RGBColor(225, 225, 225));
    if text {
        mesh.x_desc(xlabel).y_desc(ylabel).label_style(("sans-serif", 14));
        mesh.x_label_formatter(&xf).y_label_formatter(&|v| tick(*v));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(&e))?;
    // Bands first, then the mean lines on top.
    for s in series {
        let color = RGBColor(s.color[0], s.color[1], s.color[2]);
        let finite = |x: &f64, y: &f64| x.is_finite() && y.is_finite();
        let upper = s.x.iter().zip(&s.hi).filter(|(x, y)| finite(x, y)).map(|(&x, &y)| (x, y));
        let lower = s.x.iter().zip(&s.lo).filter(|(x, y)| finite(x, y)).map(|(&x, &y)| (x, y)).rev();
        let band: Vec<(f64, f64)> = upper.chain(lower.collect::<Vec<_>>()).collect();
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18).filled()))).map_err(|e| err(&e))?;
    }
    for s in series {
        let color = RGBColor(s.color[0], s.color[1], s.color[2]);
        let points = s.x.iter().zip(&s.mean).filter(|(x, y)| x.is_finite() && y.is_finite()).map(|(&x, &y)| (x, y));
        let line = chart.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(|e| err(&e))?;
        line.label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        if marks {
            let points = s.x.iter().zip(&s.mean).filter(|(x, y)| x.is_finite() && y.is_finite());
            chart.draw_series(points.map(|(&x, &y)| Circle::new((x, y), 4, color.filled()))).map_err(|e| err(&e))?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Interval estimates side by side: one panel per metric, one bar per variant from the
/// interval's low to high end with the point estimate marked, into a 1200x360 PNG at `path`.
pub fn interval_plot(path: &Path, title: &str, panels: &[(&str, Vec<(String, crate::stats::Interval)>)]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let text = font_ready();
    let root = BitMapBackend::new(path, (1200, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = if text { root.titled(title, ("sans-serif", 20)).map_err(|e| err(&e))? } else { root };
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, (metric, rows)) in areas.iter().zip(panels) {
        let (x0, x1) = padded_range(rows.iter().flat_map(|(_, i)| [i.low, i.high, i.point]), true);
        let n = rows.len().max(1) as f64;
        let mut b = ChartBuilder::on(area);
        b.margin(12).x_label_area_size(if text { 40 } else { 5 }).y_label_area_size(if text { 140 } else { 5 });
        if text {
            b.caption(*metric, ("sans-serif", 16));
        }
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let xfmt = |v: &f64| tick(*v);
        let yfmt = |y: &f64| {
            let k = y.round();
            if (y - k).abs() < 1e-6 && k >= 0.0 {
                names.get(k as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let mut chart = b.build_cartesian_2d(x0..x1, -0.5..n - 0.5).map_err(|e| err(&e))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE).bold_line_style(RGBColor(225, 225, 225)).x_labels(4).y_labels(rows.len().max(1));
        if text {
            mesh.label_style(("sans-serif", 13)).x_label_formatter(&xfmt).y_label_formatter(&yfmt);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|e| err(&e))?;
        for (k, (_, i)) in rows.iter().enumerate() {
            let c = PALETTE[k % PALETTE.len()];
            let color = RGBColor(c[0], c[1], c[2]);
            let y = k as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(i.low, y - 0.3), (i.high, y + 0.3)],
                    color.mix(0.6).filled(),
                )))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(i.point, y - 0.38), (i.point, y + 0.38)],
                    BLACK.stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let cases =
            [(2000.0, "2k"), (12500.0, "12.5k"), (1_500_000.0, "1.5M"), (600.0, "600"), (0.25, "0.25"), (-20.0, "-20")];
        for (v, want) in cases {
            assert_eq!(tick(v), want);
        }
    }

    #[test]
    fn draws_bands_lines_and_text() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.png");
        let x: Vec<f64> = (0..20).map(|i| i as f64 * 1000.0).collect();
        let mean: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let s = Series {
            label: "plain (2 seeds)".into(),
            color: PALETTE[0],
            x: x.clone(),
            lo: mean.iter().map(|m| m - 2.0).collect(),
            hi: mean.iter().map(|m| m + 2.0).collect(),
            mean: mean.iter().enumerate().map(|(i, &m)| if i == 5 { f64::NAN } else { m }).collect(),
        };
        line_plot(&p, "CartPole: return", "env steps", "return", &[s]).unwrap();
        let img = std::fs::read(&p).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(img));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        r.next_frame(&mut buf).unwrap();
        let px: Vec<&[u8]> = buf.chunks(3).collect();
        let exact = |c: [u8; 3]| px.iter().filter(|p| **p == c).count();
        assert!(exact(PALETTE[0]) > 500, "the mean line is drawn in the series color");
        let tinted = px.iter().filter(|p| p[2] > p[0] + 20 && p[0] > 150).count();
        assert!(tinted > 5000, "the band is shaded: {tinted} light-blue pixels");
        if std::path::Path::new(FONT).exists() {
            let dark = px.iter().filter(|p| p[0] < 90 && p[1] < 90 && p[2] < 90).count();
            assert!(dark > 300, "title, ticks and labels are drawn: {dark} dark pixels");
        }
    }
}
