//! A first convolution computed as one matrix product over its input's patches (MinAtar's).

use tch::{Kind, Tensor};

use super::{Layer, Op};
use crate::kernels::{f32s, f32s_mut, plain_f32, transpose_blocks, Pass};

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
    /// Each output position's window corner in a sample (`y * W + x`), and a window's offsets
    /// from it (`c * H * W + ky * W + kx`), both in the order of `index`: for reading the
    /// patches where they lie ([`Patches::product`]).
    corners: Vec<isize>,
    window: Vec<isize>,
    /// Elements per sample of the input.
    per_sample: isize,
    /// Every patch row's offset in a batch of inputs (sample-major, as `gather` lays them
    /// out), for the largest batch seen: a smaller batch's are its first rows.
    rows: std::sync::Mutex<Vec<isize>>,
}

/// The windows of a `kernel x kernel` convolution without padding on a channel-major `[c, h, w]`
/// map, `stride` apart, as flat offsets into the map: each output position's window corner
/// (`y * stride * w + x * stride`, position-major) and a window's offsets from its corner
/// (`c * h * w + ky * w + kx`, the weight's order). Patch `i`'s element `p` lies at
/// `corners[i] + window[p]`.
pub(crate) fn windows(c: usize, h: usize, w: usize, kernel: usize, stride: usize) -> (Vec<isize>, Vec<isize>) {
    let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
    let corners = (0..oh).flat_map(|y| (0..ow).map(move |x| (y * stride * w + x * stride) as isize)).collect();
    let window = (0..c)
        .flat_map(|ci| (0..kernel).flat_map(move |ky| (0..kernel).map(move |kx| (ci * h * w + ky * w + kx) as isize)))
        .collect();
    (corners, window)
}

impl Patches {
    pub(super) fn new(in_shape: [i64; 3], kernel: i64, stride: i64, device: tch::Device) -> Patches {
        let [c, h, w] = in_shape;
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let u = |v: i64| v as usize;
        let (corners, window) = windows(u(c), u(h), u(w), u(kernel), u(stride));
        let index: Vec<i64> = corners.iter().flat_map(|&r| window.iter().map(move |&o| (r + o) as i64)).collect();
        let runs = index.iter().step_by(kernel as usize).map(|&i| i as usize).collect();
        let index = Tensor::from_slice(&index).to_device(device);
        Patches {
            index,
            runs,
            kernel: kernel as usize,
            out_hw: (oh, ow),
            corners,
            window,
            per_sample: (c * h * w) as isize,
            rows: Default::default(),
        }
    }

    /// `f` of every patch row's offset in a batch of `x` (see `rows`), where `x` is a batch of
    /// this layer's inputs (contiguous CPU f32 of `per_sample` elements each; `None` otherwise).
    fn with_rows<R>(&self, x: &Tensor, f: impl FnOnce(&[isize]) -> R) -> Option<R> {
        let batch = x.size()[0].max(0) as usize;
        if !plain_f32(x) || x.numel() != batch * self.per_sample as usize {
            return None;
        }
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let need = batch * self.corners.len();
        if rows.len() < need {
            let per = self.per_sample;
            *rows = (0..batch as isize).flat_map(|b| self.corners.iter().map(move |&c| b * per + c)).collect();
        }
        Some(f(&rows[..need]))
    }

    /// `patches(x) wt + bias` (`wt` the kernel as `[C * k * k, out]` with contiguous rows) with
    /// the patches read where they lie in `x` ([`crate::gemm::indexed_into`]): the same sums as
    /// [`Patches::gather`] and a product, without the copy. `None` where that kernel does not
    /// run (no AVX-512F, several threads, a gradient through an operand).
    pub(super) fn product(&self, x: &Tensor, wt: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
        self.with_rows(x, |rows| {
            let out = Tensor::empty([rows.len() as i64, wt.size()[1]], (Kind::Float, tch::Device::Cpu));
            // SAFETY: a row's offset plus a window's stays inside its sample of `x` (`with_rows`
            // checked `x` holds whole samples of this layer's input).
            unsafe { crate::gemm::indexed_into(&out, x, rows, &self.window, wt, bias) }.then_some(out)
        })
        .flatten()
    }

    /// `patches(x) wt + bias` (`wt` the kernel as `[C * k * k, out]`): read in place
    /// ([`Patches::product`]) where the kernels run, else gathered and multiplied by
    /// `crate::gemm::product`; the gathered patches come back too (a backward pass's operand).
    pub(super) fn forward(&self, x: &Tensor, wt: &Tensor, bias: Option<&Tensor>) -> (Tensor, Option<Tensor>) {
        match self.product(x, &wt.contiguous(), bias) {
            Some(y) => (y, None),
            None => {
                let cols = self.gather(x);
                (crate::gemm::product(bias, &cols, wt), Some(cols))
            }
        }
    }

    /// The kernel's gradient seen transposed, `patches(x)^T d` (`[C * k * k, out]`), for `d` the
    /// gradient of [`Patches::product`]'s output (`[B * OH * OW, out]`, contiguous): the
    /// patches read where they lie, as in `product`; the same sums in the same order as
    /// `d^T patches(x)` by `crate::gemm`. `None` where that kernel does not run.
    pub(super) fn weight_grad_t(&self, x: &Tensor, d: &Tensor) -> Option<Tensor> {
        self.with_rows(x, |rows| {
            let out = Tensor::empty([self.window.len() as i64, d.size()[1]], (Kind::Float, tch::Device::Cpu));
            // SAFETY: as in `product`.
            unsafe { crate::gemm::indexed_into(&out, x, &self.window, rows, d, None) }.then_some(out)
        })
        .flatten()
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
        let (y, _) = self.forward(x, &w.reshape([out, -1]).tr(), bias);
        if plain_f32(&y) && !y.requires_grad() {
            return self.to_channels_first(&y, b, Pass::Copy);
        }
        // Contiguous NCHW: the nonlinearity's backward and the flatten that follow run on
        // dense tensors of one layout (mixed layouts put them on a scalar path). Autograd's
        // copy where the weights need a gradient.
        y.view([b, oh, ow, out]).permute([0, 3, 1, 2]).contiguous()
    }

    /// The product's output (`[B * OH * OW, out]`, contiguous CPU f32) as the convolution's
    /// `[B, out, OH, OW]` map, through `pass` ([`transpose_blocks`]).
    pub(super) fn to_channels_first(&self, y: &Tensor, batch: i64, pass: Pass) -> Tensor {
        let (oh, ow) = self.out_hw;
        let positions = (oh * ow) as usize;
        let out = y.numel() / batch as usize / positions;
        let map = Tensor::empty([batch, out as i64, oh, ow], (Kind::Float, tch::Device::Cpu));
        // SAFETY: `y` is contiguous CPU f32 (the caller's) and only read; `map` is a new buffer.
        transpose_blocks(unsafe { f32s(y) }, unsafe { f32s_mut(&map) }, positions, out, pass);
        map
    }

    /// A `[B, out, OH, OW]` map's gradient (contiguous CPU f32) in the product's layout,
    /// `[B * OH * OW, out]`, through `pass`.
    pub(super) fn to_positions_first(&self, d: &Tensor, pass: Pass) -> Tensor {
        let (b, out) = (d.size()[0], d.size()[1]);
        let positions = (self.out_hw.0 * self.out_hw.1) as usize;
        let rows = Tensor::empty([b * positions as i64, out], (Kind::Float, tch::Device::Cpu));
        // SAFETY: `d` is contiguous CPU f32 (the caller's) and only read; `rows` is a new buffer.
        transpose_blocks(unsafe { f32s(d) }, unsafe { f32s_mut(&rows) }, out as usize, positions, pass);
        rows
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

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::Patches;
    use crate::gemm;

    /// Read where they lie, the patches give bit for bit what the gathered patches give through
    /// `gemm`: the forward product (with its bias) and the kernel's gradient, for strides 1 and
    /// 2 on a non-square map, with batches whose patch rows end in a partial tile.
    #[test]
    fn patches_read_in_place_give_the_gathered_products() {
        tch::set_num_threads(1);
        let f = (Kind::Float, Device::Cpu);
        for (stride, batch) in [(1, 5), (2, 3)] {
            let p = Patches::new([3, 10, 9], 3, stride, Device::Cpu);
            let x = Tensor::randn([batch, 3, 10, 9], f);
            let (wt, bias) = (Tensor::randn([27, 7], f), Tensor::randn([7], f));
            let cols = p.gather(&x);
            let Some(got) = p.product(&x, &wt, Some(&bias)) else {
                assert!(!gemm::enabled(), "refused where the kernels run");
                continue;
            };
            assert!(got.equal(&gemm::product(Some(&bias), &cols, &wt)), "stride {stride}: forward");
            let d = Tensor::randn([cols.size()[0], 7], f);
            let dw_t = p.weight_grad_t(&x, &d).expect("taken as the forward product was");
            assert!(dw_t.tr().equal(&gemm::product(None, &d.tr(), &cols)), "stride {stride}: weight gradient");
            // Not theirs: an input that needs a gradient, under autograd.
            assert!(p.product(&x.set_requires_grad(true), &wt, None).is_none());
        }
    }
}
