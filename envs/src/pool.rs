//! Palette indices to grayscale, max-pooled over two frames.
//!
//! The DQN observation is the pixel-wise max of the last two frames' grayscale screens. ALE
//! converts a screen from palette indices to gray with one scalar table lookup per pixel (8.4%
//! of a Pong env step under `perf`, for the two screens), and the max was a third pass. Here both
//! happen in one pass over the indices. The TIA only emits even palette indices (bit 0 of its
//! colour registers is unused), so the table has 128 entries: with AVX2 it is eight 16-byte
//! `pshufb` tables, 32 pixels per step; without, the scalar fallback looks the pair up in one
//! 16 KiB table of `max(gray(a), gray(b))`. The gray values come from ALE's own palette
//! ([`crate::ale::Ale::gray_palette`]); the parity tests check the observations against ale-py's.

const PAIRS: usize = 128 * 128;

/// Grayscale max-pooling of two screens of palette indices.
pub struct GrayPool {
    gray: [u8; 256],
    pair: Box<[u8; PAIRS]>,
    /// `gray` of the even indices, in 8 rows of 16 (the `pshufb` tables).
    rows: [[u8; 16]; 8],
    avx2: bool,
}

impl GrayPool {
    /// Tables for ALE's grayscale value of each palette index.
    pub fn new(gray: [u8; 256]) -> GrayPool {
        let mut pair = Box::new([0u8; PAIRS]);
        for (i, p) in pair.iter_mut().enumerate() {
            *p = gray[(i >> 7) << 1].max(gray[(i & 127) << 1]);
        }
        let rows = std::array::from_fn(|r| std::array::from_fn(|l| gray[(r * 16 + l) << 1]));
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        GrayPool { gray, pair, rows, avx2 }
    }

    /// `out[i] = max(gray(a[i]), gray(b[i]))`, or `gray(a[i])` without `b`.
    pub fn apply(&self, a: &[u8], b: Option<&[u8]>, out: &mut [u8]) {
        assert_eq!(a.len(), out.len());
        if let Some(b) = b {
            assert_eq!(b.len(), a.len());
        }
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: AVX2 is present (checked at construction); the lengths were checked above.
            let done = unsafe { simd::apply(&self.rows, a, b, out) };
            return self.scalar(&a[done..], b.map(|b| &b[done..]), &mut out[done..]);
        }
        self.scalar(a, b, out)
    }

    fn scalar(&self, a: &[u8], b: Option<&[u8]>, out: &mut [u8]) {
        match b {
            Some(b) => {
                for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                    *o = self.pair[(((x as usize) >> 1) << 7 | (y as usize) >> 1) & (PAIRS - 1)];
                }
            }
            None => {
                for (o, &x) in out.iter_mut().zip(a) {
                    *o = self.gray[x as usize];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Gray values of 32 palette indices: index `k = v >> 1` (0..128) picks row `k >> 4` and
    /// entry `k & 15`; each row is one `pshufb`, blended in where the row matches.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn gray32(v: __m256i, rows: &[__m256i; 8]) -> __m256i {
        // 16-bit shifts move bits across bytes; the masks drop them.
        let k = _mm256_and_si256(_mm256_srli_epi16(v, 1), _mm256_set1_epi8(0x7F));
        let lo = _mm256_and_si256(k, _mm256_set1_epi8(0x0F));
        let hi = _mm256_and_si256(_mm256_srli_epi16(k, 4), _mm256_set1_epi8(0x07));
        let mut r = _mm256_setzero_si256();
        for (j, row) in rows.iter().enumerate() {
            let here = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(j as i8));
            r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(*row, lo), here);
        }
        r
    }

    /// The whole 32-pixel blocks of [`super::GrayPool::apply`]; returns how many pixels it did.
    ///
    /// # Safety
    /// AVX2 must be present; `b` (if any) and `out` at least as long as `a`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn apply(rows: &[[u8; 16]; 8], a: &[u8], b: Option<&[u8]>, out: &mut [u8]) -> usize {
        // SAFETY: AVX2 is present (the caller's contract); every load and store covers 16 or 32
        // bytes at `at < blocks * 32 <= a.len()`, within `rows`, `a`, `b` and `out`.
        unsafe {
            let t: [__m256i; 8] =
                std::array::from_fn(|j| _mm256_broadcastsi128_si256(_mm_loadu_si128(rows[j].as_ptr().cast())));
            let blocks = a.len() / 32;
            for i in 0..blocks {
                let at = i * 32;
                let mut g = gray32(_mm256_loadu_si256(a.as_ptr().add(at).cast()), &t);
                if let Some(b) = b {
                    g = _mm256_max_epu8(g, gray32(_mm256_loadu_si256(b.as_ptr().add(at).cast()), &t));
                }
                _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), g);
            }
            blocks * 32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A palette where gray is not monotone in the index, so max(index) would be wrong.
    fn palette() -> [u8; 256] {
        std::array::from_fn(|i| ((i & 0xFE) * 37 % 256) as u8)
    }

    #[test]
    fn pooling_is_the_max_of_the_two_gray_values() {
        let gray = palette();
        let pool = GrayPool::new(gray);
        let a: Vec<u8> = (0..=255u8).step_by(2).collect();
        for shift in [0usize, 1, 17, 64] {
            let b: Vec<u8> = (0..a.len()).map(|i| a[(i + shift) % a.len()]).collect();
            let mut out = vec![0; a.len()];
            pool.apply(&a, Some(&b), &mut out);
            for i in 0..a.len() {
                assert_eq!(out[i], gray[a[i] as usize].max(gray[b[i] as usize]), "{} {}", a[i], b[i]);
            }
            pool.apply(&b, None, &mut out);
            assert!(out.iter().zip(&b).all(|(&o, &x)| o == gray[x as usize]));
        }
    }

    /// The AVX2 blocks and the scalar tail agree with the scalar path on a screen-sized input
    /// whose length is not a multiple of 32, odd indices included.
    #[test]
    fn simd_and_scalar_paths_agree() {
        let pool = GrayPool::new(palette());
        let mut scalar = GrayPool::new(palette());
        scalar.avx2 = false;
        let n = 210 * 160 + 13;
        let a: Vec<u8> = (0..n).map(|i| (i * 7919 % 251) as u8).collect();
        let b: Vec<u8> = (0..n).map(|i| (i * 104_729 % 241) as u8).collect();
        for second in [Some(&b[..]), None] {
            let (mut x, mut y) = (vec![0; n], vec![1; n]);
            pool.apply(&a, second, &mut x);
            scalar.apply(&a, second, &mut y);
            assert_eq!(x, y, "pooled: {}", second.is_some());
        }
    }
}
