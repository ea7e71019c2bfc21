//! Area-averaging downscale (what OpenCV calls `INTER_AREA`), used for 210x160 -> 84x84.
//!
//! Each output pixel is the mean of the source area it covers, with fractional weights for
//! partly covered source pixels. The filter is separable, so the weights are precomputed per
//! axis once and each frame costs one vertical and one horizontal pass per output row.

/// Precomputed area weights for one `src -> dst` size.
#[derive(Debug, Clone)]
pub struct AreaResize {
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
    rows: Taps,
    cols: Taps,
    /// One row of vertical sums.
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
        AreaResize {
            src_h,
            src_w,
            dst_h,
            dst_w,
            rows: axis_taps(src_h, dst_h),
            cols: axis_taps(src_w, dst_w),
            tmp: vec![0.0; src_w],
        }
    }

    /// Resize one grayscale image (the max-pooling of two frames comes before, in
    /// [`crate::pool`]).
    ///
    /// Vertical pass first, over whole source rows (contiguous, so it vectorizes), into one
    /// row of `src_w` sums per output row; then the short horizontal pass on that row, so that
    /// the gathering pass runs on the 84 output rows, not on all 210 source rows (`wndqn bench
    /// env`; docs/BENCHMARKS.md).
    ///
    /// On x86-64 with AVX2 the same code is compiled a second time with AVX2 enabled (8 lanes
    /// instead of SSE2's 4; no FMA, so the sums and the results are the same bits).
    pub fn apply(&mut self, px: &[u8], dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            return unsafe { self.apply_avx2(px, dst) };
        }
        self.apply_portable(px, dst)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&mut self, px: &[u8], dst: &mut [u8]) {
        self.apply_portable(px, dst)
    }

    #[inline(always)]
    fn apply_portable(&mut self, px: &[u8], dst: &mut [u8]) {
        let (sw, dw) = (self.src_w, self.dst_w);
        assert_eq!(px.len(), self.src_h * sw);
        assert_eq!(dst.len(), self.dst_h * dw);
        let (kr, kc) = (self.rows.k, self.cols.k);
        let acc = &mut self.tmp[..sw];
        for oy in 0..self.dst_h {
            let s = self.rows.start[oy];
            let ws = &self.rows.w[oy * kr..(oy + 1) * kr];
            let first = &px[s * sw..(s + 1) * sw];
            for (o, &v) in acc.iter_mut().zip(first) {
                *o = v as f32 * ws[0];
            }
            for (t, &w) in ws.iter().enumerate().skip(1) {
                if w == 0.0 {
                    continue;
                }
                let r = &px[(s + t) * sw..(s + t + 1) * sw];
                for (o, &v) in acc.iter_mut().zip(r) {
                    *o += v as f32 * w;
                }
            }
            let out = &mut dst[oy * dw..(oy + 1) * dw];
            // The tap count as a constant where it is small, so the taps loop unrolls (the
            // horizontal pass was most of the resize).
            match kc {
                2 => horizontal::<2>(&self.cols, acc, out),
                3 => horizontal::<3>(&self.cols, acc, out),
                4 => horizontal::<4>(&self.cols, acc, out),
                _ => horizontal_any(&self.cols, acc, out),
            }
        }
    }
}

/// One output row from one row of vertical sums, `K` taps per output pixel.
#[inline(always)]
fn horizontal<const K: usize>(cols: &Taps, acc: &[f32], out: &mut [u8]) {
    for ((o, &s), w) in out.iter_mut().zip(&cols.start).zip(cols.w.chunks_exact(K)) {
        let p = &acc[s..s + K];
        let mut v = 0.0f32;
        for t in 0..K {
            v += w[t] * p[t];
        }
        *o = round(v);
    }
}

/// [`horizontal`] for any tap count.
#[inline(always)]
fn horizontal_any(cols: &Taps, acc: &[f32], out: &mut [u8]) {
    let k = cols.k;
    for ((o, &s), w) in out.iter_mut().zip(&cols.start).zip(cols.w.chunks_exact(k)) {
        let mut v = 0.0f32;
        for (&w, &p) in w.iter().zip(&acc[s..s + k]) {
            v += w * p;
        }
        *o = round(v);
    }
}

/// Round half up; `v + 0.5` truncated is exact for the non-negative sums here.
#[inline(always)]
fn round(v: f32) -> u8 {
    (v + 0.5).min(255.0) as u8
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

    /// The Atari resize takes the unrolled horizontal path, and it gives the generic path's bytes.
    #[test]
    fn unrolled_taps_equal_the_generic_loop() {
        let r = AreaResize::new(210, 160, 84, 84);
        let kc = r.cols.k;
        assert!((2..=4).contains(&kc), "{kc} column taps");
        let acc: Vec<f32> = (0..160).map(|i| ((i * 7919) % 256) as f32 * 0.999).collect();
        let (mut a, mut b) = (vec![0u8; 84], vec![1u8; 84]);
        match kc {
            2 => horizontal::<2>(&r.cols, &acc, &mut a),
            3 => horizontal::<3>(&r.cols, &acc, &mut a),
            _ => horizontal::<4>(&r.cols, &acc, &mut a),
        }
        horizontal_any(&r.cols, &acc, &mut b);
        assert_eq!(a, b);
    }
}
