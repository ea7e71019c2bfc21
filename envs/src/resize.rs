//! Area-averaging downscale (what OpenCV calls `INTER_AREA`), used for 210x160 -> 84x84.
//!
//! Each output pixel is the mean of the source area it covers, with fractional weights for
//! partly covered source pixels. The filter is separable, so the weights are precomputed per
//! axis once and each frame costs two short passes.

/// Precomputed area weights for one `src -> dst` size.
#[derive(Debug, Clone)]
pub struct AreaResize {
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
    rows: Taps,
    cols: Taps,
    tmp: Vec<f32>,
}

/// One axis: for output `i`, source indices `start[i] .. start[i] + k` with weights
/// `w[i*k .. i*k + k]` (padded with zero weights so every output has exactly `k` taps; this
/// keeps the inner loops branch-free).
#[derive(Debug, Clone)]
struct Taps {
    k: usize,
    start: Vec<usize>,
    w: Vec<f32>,
}

fn axis_taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let spans: Vec<(usize, Vec<f32>)> = (0..dst)
        .map(|i| {
            let lo = i as f64 * scale;
            let hi = lo + scale;
            let start = lo.floor() as usize;
            let end = (hi.ceil() as usize).min(src);
            let weights = (start..end)
                .map(|j| {
                    let overlap = (hi.min(j as f64 + 1.0) - lo.max(j as f64)).max(0.0);
                    (overlap / scale) as f32
                })
                .collect();
            (start, weights)
        })
        .collect();
    let k = spans.iter().map(|(_, w)| w.len()).max().unwrap_or(1);
    let mut start = Vec::with_capacity(dst);
    let mut w = Vec::with_capacity(dst * k);
    for (s, ws) in spans {
        // Shift the window left near the end of the axis; the extra taps get weight 0.
        let s0 = s.min(src - k);
        start.push(s0);
        for j in s0..s0 + k {
            w.push(if j >= s && j - s < ws.len() { ws[j - s] } else { 0.0 });
        }
    }
    Taps { k, start, w }
}

impl AreaResize {
    /// Weights for resizing `src_h x src_w` to `dst_h x dst_w` (downscaling only).
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        assert!(dst_h <= src_h && dst_w <= src_w, "area resize only shrinks");
        AreaResize { src_h, src_w, dst_h, dst_w, rows: axis_taps(src_h, dst_h), cols: axis_taps(src_w, dst_w), tmp: vec![0.0; src_h * dst_w] }
    }

    /// Resize one grayscale image.
    pub fn apply(&mut self, src: &[u8], dst: &mut [u8]) {
        self.apply_max(src, None, dst)
    }

    /// Resize the pixel-wise maximum of `a` and `b` (max-pooling of two frames fused into the
    /// horizontal pass), or of `a` alone.
    pub fn apply_max(&mut self, a: &[u8], b: Option<&[u8]>, dst: &mut [u8]) {
        let (sw, dw) = (self.src_w, self.dst_w);
        assert_eq!(a.len(), self.src_h * sw);
        assert_eq!(dst.len(), self.dst_h * dw);
        let mut row = vec![0u8; sw];
        let k = self.cols.k;
        for y in 0..self.src_h {
            let ra = &a[y * sw..(y + 1) * sw];
            let px: &[u8] = match b {
                Some(b) => {
                    let rb = &b[y * sw..(y + 1) * sw];
                    for ((o, &x), &z) in row.iter_mut().zip(ra).zip(rb) {
                        *o = x.max(z);
                    }
                    &row
                }
                None => ra,
            };
            let out = &mut self.tmp[y * dw..(y + 1) * dw];
            if k == 3 {
                for (i, o) in out.iter_mut().enumerate() {
                    let s = self.cols.start[i];
                    let w = &self.cols.w[i * 3..i * 3 + 3];
                    *o = px[s] as f32 * w[0] + px[s + 1] as f32 * w[1] + px[s + 2] as f32 * w[2];
                }
            } else {
                for (i, o) in out.iter_mut().enumerate() {
                    let s = self.cols.start[i];
                    *o = self.cols.w[i * k..(i + 1) * k].iter().zip(&px[s..s + k]).map(|(&w, &p)| w * p as f32).sum();
                }
            }
        }
        let kr = self.rows.k;
        let mut acc = vec![0f32; dw];
        for oy in 0..self.dst_h {
            acc.iter_mut().for_each(|a| *a = 0.0);
            let s = self.rows.start[oy];
            for t in 0..kr {
                let w = self.rows.w[oy * kr + t];
                let r = &self.tmp[(s + t) * dw..(s + t + 1) * dw];
                for (a, &v) in acc.iter_mut().zip(r) {
                    *a += v * w;
                }
            }
            for (o, &a) in dst[oy * dw..(oy + 1) * dw].iter_mut().zip(&acc) {
                // Round half up; a + 0.5 truncated is exact for the non-negative sums here.
                *o = (a + 0.5).min(255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let mut r = AreaResize::new(210, 160, 84, 84);
        let src = vec![117u8; 210 * 160];
        let mut dst = vec![0u8; 84 * 84];
        r.apply(&src, &mut dst);
        assert!(dst.iter().all(|&v| v == 117));
    }

    #[test]
    fn integer_factor_is_block_mean() {
        // 4x4 -> 2x2: each output is the mean of a 2x2 block.
        let mut r = AreaResize::new(4, 4, 2, 2);
        let src = [0, 4, 8, 8, 4, 0, 8, 8, 100, 100, 1, 3, 100, 100, 3, 1];
        let mut dst = [0u8; 4];
        r.apply(&src, &mut dst);
        assert_eq!(dst, [2, 8, 100, 2]);
    }

    #[test]
    fn fractional_factor_weights_partial_pixels() {
        // 5 -> 2 columns: output 0 covers pixels 0,1 and half of 2.
        let mut r = AreaResize::new(1, 5, 1, 2);
        let src = [10, 20, 30, 40, 50];
        let mut dst = [0u8; 2];
        r.apply(&src, &mut dst);
        // (10 + 20 + 0.5*30) / 2.5 = 18; (0.5*30 + 40 + 50) / 2.5 = 42
        assert_eq!(dst, [18, 42]);
    }

    #[test]
    fn weights_sum_to_one() {
        for t in [axis_taps(210, 84), axis_taps(160, 84), axis_taps(7, 3)] {
            for ws in t.w.chunks_exact(t.k) {
                let s: f32 = ws.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{s}");
            }
        }
    }

    #[test]
    fn fused_max_equals_max_then_resize() {
        let mut r = AreaResize::new(210, 160, 84, 84);
        let a: Vec<u8> = (0..210 * 160).map(|i| ((i * 7919) % 251) as u8).collect();
        let b: Vec<u8> = (0..210 * 160).map(|i| ((i * 104729) % 241) as u8).collect();
        let m: Vec<u8> = a.iter().zip(&b).map(|(x, y)| *x.max(y)).collect();
        let (mut d1, mut d2) = (vec![0u8; 84 * 84], vec![0u8; 84 * 84]);
        r.apply_max(&a, Some(&b), &mut d1);
        r.apply(&m, &mut d2);
        assert_eq!(d1, d2);
    }
}
