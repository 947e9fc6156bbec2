//! 1-D convolution over each sample's valid clips only: the stride-1 "same" `Conv1d` of
//! [`crate::ops::conv1d`] with a row mask `(B, L)`, where padded clips read as the convolution's
//! zero padding and padded output rows are written as 0. A padded batch then gives every sample
//! exactly the result of its valid clips run alone, which the unmasked convolution cannot (a
//! padded clip next to the last valid one enters its window). Used by LD-DETR's residual conv
//! blocks on padded batches ([`masked_conv_bn_block`], two dispatches per block, BatchNorm folded
//! by [`crate::ops::conv1d::fold_batchnorm`]).
//! WGSL: `shaders/masked_conv1d.wgsl`.

use std::sync::Arc;

use super::conv1d;
use super::gemm::PackedB;
use super::{activate, Act, Kernel, Params, Prepared, Shader};
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Graph, TensorId};

/// Output tile of a workgroup (rows × output channels); must match `TILE` in the shader.
const TILE: usize = 32;

const SHADER: Shader =
    Shader { name: "masked_conv1d", source: include_str!("../../shaders/masked_conv1d.wgsl"), entry: "masked_conv1d" };

/// `out[b, t, o] = valid(b, t) · act(Σ W[o, c, tap] · xin(b, t + tap − k/2, c) + bias[o] +
/// residual[b, t, o])` with `xin` zero outside `[0, L)` and on padded clips; see the shader.
#[derive(Clone, Debug)]
pub struct MaskedConv1d {
    batch: usize,
    l: usize,
    c_in: usize,
    c_out: usize,
    ksize: usize,
    has_bias: bool,
    act: u32,
    has_residual: bool,
}

impl Kernel for MaskedConv1d {
    fn label(&self) -> &'static str {
        "masked_conv1d"
    }
    fn shader(&self) -> Shader {
        SHADER
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.batch)
            .u(self.l)
            .u(self.c_in)
            .u(self.c_out)
            .u(self.ksize)
            .u(self.ksize / 2)
            .flag(self.has_bias)
            .u(self.act as usize)
            .flag(self.has_residual)
    }
    fn workgroups(&self) -> [u32; 3] {
        [self.c_out.div_ceil(TILE) as u32, (self.batch * self.l).div_ceil(TILE) as u32, 1]
    }
    /// The CPU backend: the same packed-GEMM convolution as the unmasked op, so a sample's
    /// valid rows get bit-identical results batched or alone.
    fn cpu_prepare(&self, consts: &[Option<&Arc<[f32]>>], cache: &ConstCache) -> Option<Prepared> {
        Some(conv1d::pack_taps(cache, consts[2]?, self.ksize, self.c_in, self.c_out) as Prepared)
    }

    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], prepared: Option<&Prepared>) {
        let Some(packed) = prepared.and_then(|p| p.downcast_ref::<PackedB>()) else {
            return self.cpu(inputs, outputs);
        };
        let epilogue = conv1d::conv_epilogue(inputs, self.has_bias, self.act, self.has_residual);
        let shape = [self.batch, self.l, self.c_in, self.c_out];
        conv1d::conv_by_gemm(inputs[0], Some(inputs[1]), shape, packed, &epilogue, outputs[0]);
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (x, mask, w, bias, slope, residual) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5]);
        let out = &mut outputs[0];
        let slope = slope.first().copied().unwrap_or(0.0);
        let (k, c_in, l) = (self.ksize, self.c_in, self.l);
        let pad = (k / 2) as isize;
        let valid = |row: usize| mask[row] > 0.5;
        // The receptive field of one output position laid out like one row of W (index c·k + tap),
        // so each output is a dot product with a W row.
        let w_o = c_in * k;
        let mut patch = vec![0.0f32; w_o];
        for b in 0..self.batch {
            for t in 0..l {
                let row = b * l + t;
                let at = row * self.c_out;
                if !valid(row) {
                    out[at..at + self.c_out].fill(0.0);
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
                for o in 0..self.c_out {
                    let mut v: f32 = patch.iter().zip(&w[o * w_o..(o + 1) * w_o]).map(|(a, b)| a * b).sum();
                    if self.has_bias {
                        v += bias[o];
                    }
                    if self.has_residual {
                        v += residual[at + o];
                    }
                    out[at + o] = activate(v, self.act, slope);
                }
            }
        }
    }
}

fn err<T>(msg: String) -> Result<T> {
    Err(Error::Graph(msg))
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
    let [batch, l, c_in] = *g.shape(x) else {
        return err(format!("masked_conv1d: input must be (B, L, C), got {:?}", g.shape(x)));
    };
    if batch == 0 || l == 0 || c_in == 0 {
        return err(format!("masked_conv1d: empty input {:?}", g.shape(x)));
    }
    if g.shape(mask) != [batch, l] {
        return err(format!("masked_conv1d: mask of shape {:?} for input {:?}", g.shape(mask), g.shape(x)));
    }
    let [c_out, wc, k] = *g.shape(weight) else {
        return err(format!("masked_conv1d: weight must be (C_out, C_in, k), got {:?}", g.shape(weight)));
    };
    if wc != c_in || c_out == 0 || k % 2 == 0 {
        return err(format!(
            "masked_conv1d: weight {:?} for input {:?}: needs C_in = {c_in} and an odd kernel size",
            g.shape(weight),
            g.shape(x)
        ));
    }
    if let Some(b) = bias {
        if g.shape(b) != [c_out] {
            return err(format!("masked_conv1d: bias of shape {:?} for {c_out} output channels", g.shape(b)));
        }
    }
    if let Some(s) = act.slope() {
        if g.shape(s).iter().product::<usize>() != 1 {
            return err(format!("masked_conv1d: PReLU slope of shape {:?}; one slope expected", g.shape(s)));
        }
    }
    let out_shape = vec![batch, l, c_out];
    if let Some(r) = residual {
        if g.shape(r) != out_shape {
            return err(format!("masked_conv1d: residual of shape {:?} for output {out_shape:?}", g.shape(r)));
        }
    }
    let op = MaskedConv1d {
        batch,
        l,
        c_in,
        c_out,
        ksize: k,
        has_bias: bias.is_some(),
        act: act.code(),
        has_residual: residual.is_some(),
    };
    Ok(g.push1(op, &[Some(x), Some(mask), Some(weight), bias, act.slope(), residual], out_shape))
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

#[cfg(test)]
mod tests {
    /// The dispatch geometry above assumes the shader's tile (wgpu does not catch a mismatch).
    #[test]
    fn shader_tile_matches_dispatch() {
        assert!(super::SHADER.source.contains(&format!("const TILE: u32 = {}u;", super::TILE)));
        assert!(super::SHADER.source.contains("@workgroup_size(8, 8, 1)"));
    }
}
