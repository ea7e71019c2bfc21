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
    rows: Vec<Taps>,
    cols: Vec<Taps>,
    tmp: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

fn axis_taps(src: usize, dst: usize) -> Vec<Taps> {
    let scale = src as f64 / dst as f64;
    (0..dst)
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
            Taps { start, weights }
        })
        .collect()
}

impl AreaResize {
    /// Weights for resizing `src_h x src_w` to `dst_h x dst_w` (downscaling only).
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        assert!(dst_h <= src_h && dst_w <= src_w, "area resize only shrinks");
        AreaResize {
            src_h,
            src_w,
            dst_h,
            dst_w,
            rows: axis_taps(src_h, dst_h),
            cols: axis_taps(src_w, dst_w),
            tmp: vec![0.0; src_h * dst_w],
        }
    }

    /// Resize one grayscale image.
    pub fn apply(&mut self, src: &[u8], dst: &mut [u8]) {
        assert_eq!(src.len(), self.src_h * self.src_w);
        assert_eq!(dst.len(), self.dst_h * self.dst_w);
        for (y, row) in src.chunks_exact(self.src_w).enumerate() {
            let out = &mut self.tmp[y * self.dst_w..(y + 1) * self.dst_w];
            for (o, t) in out.iter_mut().zip(&self.cols) {
                let px = &row[t.start..t.start + t.weights.len()];
                *o = px.iter().zip(&t.weights).map(|(&p, &w)| p as f32 * w).sum();
            }
        }
        for (oy, t) in self.rows.iter().enumerate() {
            let out = &mut dst[oy * self.dst_w..(oy + 1) * self.dst_w];
            let mut acc = [0f32; 256];
            let acc = &mut acc[..self.dst_w];
            for (k, &w) in t.weights.iter().enumerate() {
                let r = &self.tmp[(t.start + k) * self.dst_w..(t.start + k + 1) * self.dst_w];
                for (a, &v) in acc.iter_mut().zip(r) {
                    *a += v * w;
                }
            }
            for (o, a) in out.iter_mut().zip(acc.iter()) {
                *o = a.round().clamp(0.0, 255.0) as u8;
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
        for t in axis_taps(210, 84).iter().chain(axis_taps(160, 84).iter()) {
            let s: f32 = t.weights.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "{s}");
        }
    }
}
