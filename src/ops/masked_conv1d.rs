//! 1-D convolution over each sample's valid clips only: the stride-1 "same" `Conv1d` of
//! [`crate::ops::conv1d`] with a row mask `(B, L)`, where padded clips read as the convolution's
//! zero padding and padded output rows are written as 0. A padded batch then gives every sample
//! exactly the result of its valid clips run alone, which the unmasked convolution cannot (a
//! padded clip next to the last valid one enters its window). Used by LD-DETR's residual conv
//! blocks on padded batches ([`masked_conv_bn_block`], two dispatches per block, BatchNorm folded
//! by [`crate::ops::conv1d::fold_batchnorm`]).
//! WGSL: `shaders/conv1d.wgsl` (its mode 2).

use super::conv1d::{self, err, Conv1d};
use super::gemm::PackedB;
use super::{Act, Const, Kernel, Params, Prepared, Shader};
use crate::error::Result;
use crate::graph::{ConstCache, Graph, TensorId};

/// `out[b, t, o] = valid(b, t) · act(Σ W[o, c, tap] · xin(b, t + tap − k/2, c) + bias[o] +
/// residual[b, t, o])` with `xin` zero outside `[0, L)` and on padded clips; see the shader.
/// The dense stride-1 [`Conv1d`] with the row mask as input 6.
#[derive(Clone, Debug)]
pub struct MaskedConv1d(Conv1d);

impl Kernel for MaskedConv1d {
    fn label(&self) -> &'static str {
        "masked_conv1d"
    }
    fn shader(&self) -> Shader {
        self.0.shader()
    }
    fn params(&self) -> Params {
        self.0.shader_params(true)
    }
    fn workgroups(&self) -> [u32; 3] {
        self.0.workgroups()
    }
    /// The CPU backend: the same packed-GEMM convolution as the unmasked op, so a sample's
    /// valid rows get bit-identical results batched or alone.
    fn cpu_prepare(&self, consts: &[Option<Const>], cache: &ConstCache) -> Option<Prepared> {
        self.0.cpu_prepare(consts, cache)
    }

    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], prepared: Option<&Prepared>) {
        match prepared.and_then(|p| p.downcast_ref::<PackedB>()) {
            Some(packed) => self.0.dense_by_gemm(inputs, Some(inputs[6]), packed, outputs[0]),
            None => self.cpu(inputs, outputs),
        }
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let conv = &self.0;
        let (x, mask) = (inputs[0], inputs[6]);
        let out = &mut outputs[0];
        let (k, c_in, c_out, l) = (conv.ksize, conv.c_in, conv.c_out, conv.l_in);
        let pad = (k / 2) as isize;
        let valid = |row: usize| mask[row] > 0.5;
        // The receptive field of one output position laid out like one row of W (index c·k + tap).
        let mut patch = vec![0.0f32; c_in * k];
        for b in 0..conv.batch {
            for t in 0..l {
                let row = b * l + t;
                if !valid(row) {
                    out[row * c_out..(row + 1) * c_out].fill(0.0);
                    continue;
                }
                for tap in 0..k {
                    let u = t as isize + tap as isize - pad;
                    let src =
                        (u >= 0 && (u as usize) < l && valid(b * l + u as usize)).then(|| (b * l + u as usize) * c_in);
                    for c in 0..c_in {
                        patch[c * k + tap] = src.map_or(0.0, |s| x[s + c]);
                    }
                }
                conv.twin_row(inputs, row, &patch, out);
            }
        }
    }
}

/// PyTorch `Conv1d(C_in, C_out, k, stride=1, padding=k//2)` over the valid clips of each sample
/// of `x (B, L, C_in)`, `mask (B, L)` (1 = valid, 0 = padded; a clip is valid when > 0.5),
/// `weight (C_out, C_in, k)` (k odd), then `act(· + bias + residual)`; output `(B, L, C_out)`.
/// Padded clips read as zeros and their output rows are 0; a fully padded sample gives zeros.
#[allow(clippy::too_many_arguments)]
pub fn masked_conv1d(
    g: &mut Graph,
    x: TensorId,
    mask: TensorId,
    weight: TensorId,
    bias: Option<TensorId>,
    residual: Option<TensorId>,
    act: Act,
) -> Result<TensorId> {
    let conv = conv1d::dense(g, "masked_conv1d", x, weight, bias, 1, residual, act)?;
    if g.shape(mask) != [conv.batch, conv.l_in] {
        return err(format!("masked_conv1d: mask of shape {:?} for input {:?}", g.shape(mask), g.shape(x)));
    }
    let shape = conv.out_shape();
    let inputs = [Some(x), Some(weight), None, bias, act.slope(), residual, Some(mask)];
    Ok(g.push1(MaskedConv1d(conv), &inputs, shape))
}

/// LD-DETR's residual conv block `ReLU(x + BN₂(Conv₂(ReLU(BN₁(Conv₁ x)))))` over each sample's
/// valid clips (`mask (B, L)`), in two dispatches: [`crate::ops::conv1d::conv_bn_block`] with
/// padded clips read as zeros and written as 0, so stacked blocks never mix padding into valid
/// clips. BatchNorms folded into `(w1, b1)`, `(w2, b2)` by
/// [`crate::ops::conv1d::fold_batchnorm`]; weights `(C, C, k)`, k odd. Output `(B, L, C)`.
pub fn masked_conv_bn_block(
    g: &mut Graph,
    x: TensorId,
    mask: TensorId,
    w1: TensorId,
    b1: TensorId,
    w2: TensorId,
    b2: TensorId,
) -> Result<TensorId> {
    let y = masked_conv1d(g, x, mask, w1, Some(b1), None, Act::Relu)?;
    masked_conv1d(g, y, mask, w2, Some(b2), Some(x), Act::Relu)
}
