//! A small PNG line-plot renderer for `wndqn compare`: mean curves with shaded confidence bands,
//! axes with ticks, a legend. Pixels are drawn here; text uses `ab_glyph` with the system's
//! DejaVu Sans (Debian `fonts-dejavu-core`, installed by scripts/setup.sh). Without the font the
//! plot is still drawn, without labels.

use std::path::Path;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont};
use anyhow::Result;

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

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    font: Option<FontVec>,
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, c: [u8; 3], a: f32) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (p, &ck) in self.px[i..i + 3].iter_mut().zip(&c) {
            *p = (*p as f32 * (1.0 - a) + ck as f32 * a).round() as u8;
        }
    }

    /// An anti-aliased line of `width` pixels: coverage is accumulated as a maximum in a mask,
    /// then blended once, so overlapping segments do not darken the joints.
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3], width: f64) {
        self.polyline(&[(x0, y0), (x1, y1)], c, width);
    }

    fn polyline(&mut self, pts: &[(f64, f64)], c: [u8; 3], width: f64) {
        let mut mask = vec![0f32; self.w * self.h];
        let r = width / 2.0;
        for seg in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (seg[0], seg[1]);
            let (xa, xb) = (x0.min(x1) - r - 1.0, x0.max(x1) + r + 1.0);
            let (ya, yb) = (y0.min(y1) - r - 1.0, y0.max(y1) + r + 1.0);
            let (dx, dy) = (x1 - x0, y1 - y0);
            let len2 = (dx * dx + dy * dy).max(1e-12);
            for y in (ya.floor() as i64).max(0)..=(yb.ceil() as i64).min(self.h as i64 - 1) {
                for x in (xa.floor() as i64).max(0)..=(xb.ceil() as i64).min(self.w as i64 - 1) {
                    let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                    let t = (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0);
                    let d = ((px - x0 - t * dx).powi(2) + (py - y0 - t * dy).powi(2)).sqrt();
                    let cov = (r + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let m = &mut mask[y as usize * self.w + x as usize];
                    *m = m.max(cov);
                }
            }
        }
        for (i, &a) in mask.iter().enumerate() {
            if a > 0.0 {
                self.blend((i % self.w) as i64, (i / self.w) as i64, c, a);
            }
        }
    }

    fn text(&mut self, s: &str, x: f64, y: f64, size: f32, c: [u8; 3], anchor_right: bool) {
        let Some(font) = self.font.take() else { return };
        let scaled = font.as_scaled(PxScale::from(size));
        let width: f32 = s.chars().map(|ch| scaled.h_advance(font.glyph_id(ch))).sum();
        let mut pen = if anchor_right { x as f32 - width } else { x as f32 };
        let base = y as f32 + scaled.ascent() / 2.0;
        for ch in s.chars() {
            let g = font.glyph_id(ch).with_scale_and_position(PxScale::from(size), ab_glyph::point(pen, base));
            pen += scaled.h_advance(font.glyph_id(ch));
            if let Some(o) = font.outline_glyph(g) {
                let b = o.px_bounds();
                o.draw(|gx, gy, cov| self.blend(b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, c, cov));
            }
        }
        self.font = Some(font);
    }
}

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= n as f64).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut v = Vec::new();
    while t <= hi + 1e-9 {
        v.push(t);
        t += step;
    }
    v
}

fn fmt_tick(v: f64) -> String {
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Draw `series` into a PNG at `path`.
pub fn line_plot(path: &Path, title: &str, xlabel: &str, ylabel: &str, series: &[Series]) -> Result<()> {
    let (w, h) = (1000usize, 620usize);
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .ok()
        .and_then(|b| FontVec::try_from_vec(b).ok());
    let mut c = Canvas { w, h, px: vec![255; w * h * 3], font };
    let (l, r, t, b) = (80.0, 20.0, 50.0, 70.0);
    let (pw, ph) = (w as f64 - l - r, h as f64 - t - b);
    let all_x = series.iter().flat_map(|s| s.x.iter().copied());
    let (x0, x1) = all_x.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let ys = series.iter().flat_map(|s| s.lo.iter().chain(&s.hi).chain(&s.mean).copied()).filter(|v| v.is_finite());
    let (mut y0, mut y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (0.0, 1.0) };
    let fx = |x: f64| l + (x - x0) / (x1 - x0) * pw;
    let fy = |y: f64| t + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let grid = [225, 225, 225];
    for tx in nice_ticks(x0, x1, 8) {
        c.line(fx(tx), t, fx(tx), t + ph, grid, 1.0);
        c.text(&fmt_tick(tx), fx(tx) - 12.0, t + ph + 16.0, 14.0, [60, 60, 60], false);
    }
    for ty in nice_ticks(y0, y1, 6) {
        c.line(l, fy(ty), l + pw, fy(ty), grid, 1.0);
        c.text(&fmt_tick(ty), l - 8.0, fy(ty), 14.0, [60, 60, 60], true);
    }
    // Bands first, then the mean lines on top.
    for s in series {
        for i in 1..s.x.len() {
            let (xa, xb) = (fx(s.x[i - 1]), fx(s.x[i]));
            for px in xa.floor() as i64..xb.floor() as i64 {
                let f = if xb > xa { ((px as f64 - xa) / (xb - xa)).clamp(0.0, 1.0) } else { 0.0 };
                let lo = s.lo[i - 1] + (s.lo[i] - s.lo[i - 1]) * f;
                let hi = s.hi[i - 1] + (s.hi[i] - s.hi[i - 1]) * f;
                if !(lo.is_finite() && hi.is_finite()) {
                    continue;
                }
                for py in fy(hi).round() as i64..=fy(lo).round() as i64 {
                    c.blend(px, py, s.color, 0.18);
                }
            }
        }
    }
    for s in series {
        let pts: Vec<(f64, f64)> =
            s.x.iter().zip(&s.mean).filter(|(_, m)| m.is_finite()).map(|(&x, &m)| (fx(x), fy(m))).collect();
        c.polyline(&pts, s.color, 2.5);
    }
    let axis = [40, 40, 40];
    c.line(l, t + ph, l + pw, t + ph, axis, 1.5);
    c.line(l, t, l, t + ph, axis, 1.5);
    c.text(title, l, 22.0, 18.0, [20, 20, 20], false);
    c.text(xlabel, l + pw / 2.0 - 40.0, h as f64 - 22.0, 15.0, [20, 20, 20], false);
    c.text(ylabel, 8.0, t - 16.0, 14.0, [20, 20, 20], false);
    for (i, s) in series.iter().enumerate() {
        let y = t + 14.0 + 22.0 * i as f64;
        c.line(l + 14.0, y, l + 44.0, y, s.color, 4.0);
        c.text(&s.label, l + 52.0, y, 14.0, [20, 20, 20], false);
    }
    let tmp = path.with_extension("png.tmp");
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let mut enc = png::Encoder::new(f, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&c.px)?;
    }
    std::fs::rename(tmp, path)?;
    Ok(())
}
