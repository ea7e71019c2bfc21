//! A first convolution computed as one matrix product over its input's patches (MinAtar's).

use tch::{Kind, Tensor};

use super::{Layer, Op};
use crate::kernels::{f32s, f32s_mut, plain_f32};

/// A convolution computed as `patches(x) W^T + b`: one gather ([`Patches::gather`]) collects
/// every output position's receptive field (`[B * OH * OW, C * k * k]`) and one `addmm` multiplies it by the
/// kernel seen as a `[out, C * k * k]` matrix; the result is the `[B, out, OH, OW]` map.
///
/// Why: for MinAtar's conv (16 3x3 filters on a 10x10 map, 2.4 MFLOP at batch 32) oneDNN's
/// convolution is mostly fixed cost, creating its primitives on each call: in PyTorch's own
/// profile of the MinAtar update (1 thread, AMD EPYC) the three forward convolutions took 88 us
/// each and the weight-gradient pass 169 us, about a fifth of the update. The patch product
/// costs two small kernels each way, and its backward is one matrix product (the input's
/// gradient is not needed). For large maps (Nature's 84x84 frames) the patches are big and
/// oneDNN's direct convolution is the faster one, so the network chooses per layer.
#[derive(Debug)]
pub(super) struct Patches {
    /// Flat input offsets (`c * H * W + y * W + x`), output position-major then `c, ky, kx`.
    pub(super) index: Tensor,
    /// Where each row of a kernel's window starts (`kernel` contiguous input elements), in
    /// the order of `index`: the CPU's gather copies whole rows.
    pub(super) runs: Vec<usize>,
    pub(super) kernel: usize,
    /// Output rows and columns.
    pub(super) out_hw: (i64, i64),
}

impl Patches {
    pub(super) fn new(in_shape: [i64; 3], kernel: i64, stride: i64, device: tch::Device) -> Patches {
        let [c, h, w] = in_shape;
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let mut index = Vec::with_capacity((oh * ow * c * kernel * kernel) as usize);
        for oy in 0..oh {
            for ox in 0..ow {
                for ci in 0..c {
                    for ky in 0..kernel {
                        for kx in 0..kernel {
                            index.push(ci * h * w + (oy * stride + ky) * w + ox * stride + kx);
                        }
                    }
                }
            }
        }
        let runs = index.iter().step_by(kernel as usize).map(|&i| i as usize).collect();
        let index = Tensor::from_slice(&index).to_device(device);
        Patches { index, runs, kernel: kernel as usize, out_hw: (oh, ow) }
    }

    /// Every output position's receptive field, `[B * OH * OW, C * k * k]`. On the CPU (f32,
    /// contiguous) by one loop copying whole kernel rows, where ATen's `index_select` pays a
    /// few nanoseconds an element.
    pub(super) fn gather(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let rows = b * self.out_hw.0 * self.out_hw.1;
        if !plain_f32(x) {
            return x.reshape([b, -1]).index_select(1, &self.index).view([rows, -1]);
        }
        let n = self.runs.len() * self.kernel;
        let cols = Tensor::empty([b, n as i64], (Kind::Float, tch::Device::Cpu));
        // SAFETY: `x` is contiguous CPU f32 (checked) and only read; `cols` is a new buffer.
        let (src, dst) = unsafe { (f32s(x), f32s_mut(&cols)) };
        let per = src.len() / b as usize;
        /// Window rows of `K` elements: a constant, so that each copy compiles to a few moves
        /// (a length known only at run time makes each a call to `memcpy`).
        fn copy_rows<const K: usize>(src: &[f32], dst: &mut [f32], runs: &[usize], per: usize) {
            for (xs, out) in src.chunks_exact(per).zip(dst.chunks_exact_mut(runs.len() * K)) {
                for (o, &r) in out.chunks_exact_mut(K).zip(runs) {
                    o.copy_from_slice(&xs[r..r + K]);
                }
            }
        }
        match self.kernel {
            3 => copy_rows::<3>(src, dst, &self.runs, per),
            k => {
                for (xs, out) in src.chunks_exact(per).zip(dst.chunks_exact_mut(n)) {
                    for (o, &r) in out.chunks_exact_mut(k).zip(&self.runs) {
                        o.copy_from_slice(&xs[r..r + k]);
                    }
                }
            }
        }
        cols.view([rows, -1])
    }

    pub(super) fn conv(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (b, out) = (x.size()[0], w.size()[0]);
        let (oh, ow) = self.out_hw;
        let cols = self.gather(x);
        let wt = w.reshape([out, -1]).tr();
        let y = crate::gemm::product(bias, &cols, &wt);
        // Contiguous NCHW: the nonlinearity's backward and the flatten that follow run on
        // dense tensors of one layout (mixed layouts put them on a scalar path).
        y.view([b, oh, ow, out]).permute([0, 3, 1, 2]).contiguous()
    }
}

impl Layer {
    /// Compute this convolution as a matrix product over its input's patches (see [`Patches`])
    /// whenever its input needs no gradient; `in_shape` is the input's `[C, H, W]`. The same
    /// function as the convolution (up to f32 summation order), on any device.
    pub fn use_patch_product(&mut self, in_shape: [i64; 3]) {
        if let Op::Conv2d { stride } = self.op {
            let kernel = self.weight.size()[2];
            self.patches = Some(Patches::new(in_shape, kernel, stride, self.weight.device()));
        }
    }
}
