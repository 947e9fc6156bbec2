//! 1-D convolutions over time on channels-last activations `(B, L, C)`, with PyTorch weight
//! layouts, zero "same" padding (odd kernel sizes, padding `k / 2`), optional stride and a fused
//! epilogue `act(conv + bias + residual)` (the residual is added BEFORE the activation).
//! BatchNorm (eval mode) is folded into the weight and bias at load time by [`fold_batchnorm`].
//! Also the depthwise-separable convolution of SG-DETR's FPN (depthwise k = 3, optional stride 2
//! and nearest ×2 up-sampling of the input, then pointwise) in one dispatch.
//! WGSL: `shaders/conv1d.wgsl` (one implicit-GEMM kernel for both forms and for the masked form
//! of [`super::masked_conv1d`]).

use std::sync::Arc;

use super::gemm::{self, Epilogue, PackedB};
use super::{activate, Act, Const, Kernel, Params, Prepared, Shader};
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Graph, TensorId};

/// Output tile of a workgroup (rows × output channels); must match `TILE` in the shader.
const TILE: usize = 32;

const SHADER: Shader = Shader { name: "conv1d", source: include_str!("../../shaders/conv1d.wgsl"), entry: "conv1d" };

/// `out[b, t, o] = act(Σ W[o, c, tap] · A(b, t, tap, c) + bias[o] + residual[b, t, o])`, see the shader.
/// Inputs, as the shader's bindings: x, W, depthwise weight, bias, PReLU slope, residual, row
/// mask (only [`super::masked_conv1d::MaskedConv1d`] binds one).
#[derive(Clone, Debug)]
pub struct Conv1d {
    pub(super) batch: usize,
    pub(super) l_in: usize,
    l_out: usize,
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) ksize: usize,
    stride: usize,
    /// Nearest up-sampling factor of the input (1 = none).
    up: usize,
    /// Depthwise (input 2, `(C_in, 1, k)`) then pointwise (`(C_out, C_in, 1)`) instead of dense.
    separable: bool,
    has_bias: bool,
    act: u32,
    has_residual: bool,
}

impl Conv1d {
    /// The op over an input `(B, L_in, C_in)`, once its epilogue operands fit its output.
    #[allow(clippy::too_many_arguments)]
    fn new(
        g: &Graph,
        op: &str,
        [batch, l_in, c_in]: [usize; 3],
        c_out: usize,
        ksize: usize,
        stride: usize,
        up: usize,
        separable: bool,
        bias: Option<TensorId>,
        act: Act,
        residual: Option<TensorId>,
    ) -> Result<Conv1d> {
        let l_out = conv_out_len(l_in * up, ksize, stride);
        check_epilogue(g, op, c_out, &[batch, l_out, c_out], bias, act, residual)?;
        let (has_bias, has_residual) = (bias.is_some(), residual.is_some());
        Ok(Conv1d {
            batch,
            l_in,
            l_out,
            c_in,
            c_out,
            ksize,
            stride,
            up,
            separable,
            has_bias,
            act: act.code(),
            has_residual,
        })
    }
    fn pad(&self) -> usize {
        self.ksize / 2
    }
    /// Element strides of W[o, c, tap] along o and c.
    fn w_strides(&self) -> (usize, usize) {
        if self.separable {
            (self.c_in, 1)
        } else {
            (self.c_in * self.ksize, self.ksize)
        }
    }
    pub(super) fn out_shape(&self) -> Vec<usize> {
        vec![self.batch, self.l_out, self.c_out]
    }

    /// The shader's uniform block; `masked` selects its mode 2 (dense, stride 1, row mask bound).
    pub(super) fn shader_params(&self, masked: bool) -> Params {
        let (w_o, w_c) = self.w_strides();
        Params::new()
            .u(self.batch)
            .u(self.l_in)
            .u(self.l_out)
            .u(self.c_in)
            .u(self.c_out)
            .u(self.ksize)
            .u(self.stride)
            .u(self.pad())
            .u(self.up)
            .u(if masked { 2 } else { self.separable as usize })
            .u(w_o)
            .u(w_c)
            .flag(self.has_bias)
            .u(self.act as usize)
            .flag(self.has_residual)
    }

    /// The epilogue `act(· + bias + residual)` from inputs 3, 4, 5.
    fn epilogue<'a>(&self, inputs: &[&'a [f32]]) -> Epilogue<'a> {
        Epilogue {
            bias: self.has_bias.then_some(inputs[3]),
            act: self.act,
            slope: inputs[4].first().copied().unwrap_or(0.0),
            residual: self.has_residual.then_some(inputs[5]),
            residual_first: true,
        }
    }

    /// The CPU backend's dense stride-1 convolution, see [`conv_by_gemm`].
    pub(super) fn dense_by_gemm(&self, inputs: &[&[f32]], mask: Option<&[f32]>, packed: &PackedB, out: &mut [f32]) {
        let shape = [self.batch, self.l_in, self.c_in, self.c_out];
        conv_by_gemm(inputs[0], mask, shape, packed, &self.epilogue(inputs), out);
    }

    /// Output row `row` of a CPU twin: `act(patch · W[o] + bias[o] + residual[row, o])` for every
    /// o, where `patch` is the row's receptive field laid out like a row of W.
    pub(super) fn twin_row(&self, inputs: &[&[f32]], row: usize, patch: &[f32], out: &mut [f32]) {
        let (w, bias, residual) = (inputs[1], inputs[3], inputs[5]);
        let slope = inputs[4].first().copied().unwrap_or(0.0);
        let w_o = patch.len();
        for o in 0..self.c_out {
            let mut v: f32 = patch.iter().zip(&w[o * w_o..(o + 1) * w_o]).map(|(a, b)| a * b).sum();
            if self.has_bias {
                v += bias[o];
            }
            let at = row * self.c_out + o;
            if self.has_residual {
                v += residual[at];
            }
            out[at] = activate(v, self.act, slope);
        }
    }
}

impl Kernel for Conv1d {
    fn label(&self) -> &'static str {
        if self.separable {
            "conv1d_separable"
        } else {
            "conv1d"
        }
    }
    fn shader(&self) -> Shader {
        SHADER
    }
    fn params(&self) -> Params {
        self.shader_params(false)
    }
    fn workgroups(&self) -> [u32; 3] {
        [self.c_out.div_ceil(TILE) as u32, (self.batch * self.l_out).div_ceil(TILE) as u32, 1]
    }
    /// A dense stride-1 convolution with constant weights runs as GEMMs (see `conv_by_gemm`);
    /// a separable one as its depthwise taps then one pointwise GEMM.
    fn cpu_prepare(&self, consts: &[Option<Const>], cache: &ConstCache) -> Option<Prepared> {
        let w = consts[1]?.dense()?;
        let (c_in, c_out) = (self.c_in, self.c_out);
        if self.separable {
            let pack = |w: &[f32]| PackedB::pack(w, c_in, c_out, 1, c_in);
            return Some(cache.packed(w, "strided", [c_in, c_out, 1, c_in], pack) as Prepared);
        }
        if self.stride != 1 || self.up != 1 {
            return None;
        }
        Some(pack_taps(cache, w, self.ksize, c_in, c_out) as Prepared)
    }

    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], prepared: Option<&Prepared>) {
        let Some(packed) = prepared.and_then(|p| p.downcast_ref::<PackedB>()) else {
            return self.cpu(inputs, outputs);
        };
        if !self.separable {
            return self.dense_by_gemm(inputs, None, packed, outputs[0]);
        }
        let (x, dw) = (inputs[0], inputs[2]);
        let epilogue = self.epilogue(inputs);
        let (k, c_in, rows) = (self.ksize, self.c_in, self.batch * self.l_out);
        let l_virtual = (self.l_in * self.up) as isize;
        super::with_scratch([rows * c_in, k * c_in], |[depthwise, taps]| {
            // The depthwise weights tap-major, so the per-channel loop below reads them in order.
            for (tap, row) in taps.chunks_exact_mut(c_in).enumerate() {
                row.iter_mut().enumerate().for_each(|(c, w)| *w = dw[c * k + tap]);
            }
            let taps = &*taps;
            let depthwise_rows = |first: usize, chunk: &mut [f32]| {
                for (r, d) in chunk.chunks_exact_mut(c_in).enumerate() {
                    let (b, t) = ((first + r) / self.l_out, (first + r) % self.l_out);
                    d.fill(0.0);
                    let u0 = (t * self.stride) as isize - self.pad() as isize;
                    for (tap, w) in taps.chunks_exact(c_in).enumerate() {
                        let u = u0 + tap as isize;
                        if u < 0 || u >= l_virtual {
                            continue; // zero padding adds nothing
                        }
                        let src = &x[(b * self.l_in + u as usize / self.up) * c_in..][..c_in];
                        d.iter_mut().zip(src.iter().zip(w)).for_each(|(d, (&xv, &wv))| *d += wv * xv);
                    }
                }
            };
            // Large inputs: runs of rows over the pool (each task writes its own rows).
            const ROWS_PER_TASK: usize = 128;
            if rows > 2 * ROWS_PER_TASK {
                super::pool::for_each_chunk(depthwise, ROWS_PER_TASK * c_in, |t, chunk| {
                    depthwise_rows(t * ROWS_PER_TASK, chunk)
                });
            } else {
                depthwise_rows(0, depthwise);
            }
            gemm::gemm(rows, depthwise, c_in, packed, outputs[0], &epilogue);
        });
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (x, dw) = (inputs[0], inputs[2]);
        let out = &mut outputs[0];
        let (k, c_in) = (self.ksize, self.c_in);
        let l_virtual = (self.l_in * self.up) as isize;
        // The receptive field of one output position, laid out like one row of W: index
        // c·k + tap (dense) or c (separable), so each output is a dot product with a W row.
        let (w_o, _) = self.w_strides();
        let mut patch = vec![0.0f32; w_o];
        for b in 0..self.batch {
            let xin = |u: isize, c: usize| -> f32 {
                if u < 0 || u >= l_virtual {
                    0.0
                } else {
                    x[(b * self.l_in + u as usize / self.up) * c_in + c]
                }
            };
            for t in 0..self.l_out {
                let u0 = (t * self.stride) as isize - self.pad() as isize;
                for c in 0..c_in {
                    if self.separable {
                        patch[c] = (0..k).map(|tap| dw[c * k + tap] * xin(u0 + tap as isize, c)).sum();
                    } else {
                        for tap in 0..k {
                            patch[c * k + tap] = xin(u0 + tap as isize, c);
                        }
                    }
                }
                self.twin_row(inputs, b * self.l_out + t, &patch, out);
            }
        }
    }
}

/// `W (C_out, C_in, k)` packed once as the `(k·C_in, C_out)` GEMM operand whose row
/// `tap·C_in + c` meets input row `t + tap − k/2`, channel `c`.
fn pack_taps(cache: &ConstCache, w: &Arc<[f32]>, k: usize, c_in: usize, c_out: usize) -> Arc<PackedB> {
    let pack = |w: &[f32]| PackedB::from_fn(k * c_in, c_out, |row, o| w[(o * c_in + row % c_in) * k + row / c_in]);
    cache.packed(w, "conv1d_taps", [k, c_in, c_out, 0], pack)
}

/// The CPU backend's stride-1 "same" convolution of `x (B, L, C_in)` with weights packed by
/// [`pack_taps`]: per sample, the input with `k / 2` zero rows on each side makes output row `t`
/// one contiguous GEMM row (`k` consecutive input rows). The epilogue's residual is `(B, L,
/// C_out)`. With a row `mask`, padded clips read as zeros and padded output rows are 0.
fn conv_by_gemm(
    x: &[f32],
    mask: Option<&[f32]>,
    [batch, l, c_in, c_out]: [usize; 4],
    packed: &PackedB,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let pad = (packed.k() / c_in) / 2;
    super::with_scratch([(l + 2 * pad) * c_in], |[padded]| {
        padded[..pad * c_in].fill(0.0);
        padded[(pad + l) * c_in..].fill(0.0);
        for b in 0..batch {
            let valid = |t: usize| mask.is_none_or(|m| m[b * l + t] > 0.5);
            for t in 0..l {
                let row = &mut padded[(pad + t) * c_in..(pad + t + 1) * c_in];
                if valid(t) {
                    row.copy_from_slice(&x[(b * l + t) * c_in..(b * l + t + 1) * c_in]);
                } else {
                    row.fill(0.0);
                }
            }
            let rows = b * l * c_out..(b + 1) * l * c_out;
            let epilogue = Epilogue { residual: epilogue.residual.map(|r| &r[rows.clone()]), ..*epilogue };
            let out = &mut out[rows];
            gemm::gemm(l, padded, c_in, packed, out, &epilogue);
            for t in (0..l).filter(|&t| !valid(t)) {
                out[t * c_out..(t + 1) * c_out].fill(0.0);
            }
        }
    });
}

/// Output length of a convolution with kernel `k` (odd), padding `k / 2` and `stride` over `l`
/// positions: `⌊(l − 1) / stride⌋ + 1` (PyTorch's formula for this padding).
pub fn conv_out_len(l: usize, k: usize, stride: usize) -> usize {
    (l + 2 * (k / 2) - k) / stride + 1
}

pub(super) fn err<T>(msg: String) -> Result<T> {
    Err(Error::Graph(msg))
}

/// Checks the input, the bias, the epilogue operands; returns (B, L, C_in).
fn check_input(g: &Graph, op: &str, x: TensorId) -> Result<[usize; 3]> {
    match *g.shape(x) {
        [b, l, c] if b > 0 && l > 0 && c > 0 => Ok([b, l, c]),
        ref s => err(format!("{op}: input must be (B, L, C) with no empty dimension, got {s:?}")),
    }
}

fn check_epilogue(
    g: &Graph,
    op: &str,
    c_out: usize,
    out_shape: &[usize],
    bias: Option<TensorId>,
    act: Act,
    residual: Option<TensorId>,
) -> Result<()> {
    if let Some(b) = bias {
        if g.shape(b) != [c_out] {
            return err(format!("{op}: bias of shape {:?} for {c_out} output channels", g.shape(b)));
        }
    }
    if let Some(s) = act.slope() {
        if g.shape(s).iter().product::<usize>() != 1 {
            return err(format!("{op}: PReLU slope of shape {:?}; one slope expected", g.shape(s)));
        }
    }
    if let Some(r) = residual {
        if g.shape(r) != out_shape {
            return err(format!("{op}: residual of shape {:?} for output {out_shape:?}", g.shape(r)));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn push(
    g: &mut Graph,
    op: Conv1d,
    x: TensorId,
    w: TensorId,
    dw: Option<TensorId>,
    bias: Option<TensorId>,
    act: Act,
    residual: Option<TensorId>,
) -> TensorId {
    let shape = op.out_shape();
    g.push1(op, &[Some(x), Some(w), dw, bias, act.slope(), residual, None], shape)
}

/// PyTorch `Conv1d(C_in, C_out, k, stride=1, padding=k//2)` over time on `x (B, L, C_in)` with
/// `weight (C_out, C_in, k)` (k odd), then `act(· + bias + residual)`; output `(B, L, C_out)`.
pub fn conv1d(
    g: &mut Graph,
    x: TensorId,
    weight: TensorId,
    bias: Option<TensorId>,
    residual: Option<TensorId>,
    act: Act,
) -> Result<TensorId> {
    conv1d_strided(g, x, weight, bias, 1, residual, act)
}

/// [`conv1d`] with a stride: output `(B, ⌊(L − 1) / stride⌋ + 1, C_out)`.
pub fn conv1d_strided(
    g: &mut Graph,
    x: TensorId,
    weight: TensorId,
    bias: Option<TensorId>,
    stride: usize,
    residual: Option<TensorId>,
    act: Act,
) -> Result<TensorId> {
    let op = dense(g, "conv1d", x, weight, bias, stride, residual, act)?;
    Ok(push(g, op, x, weight, None, bias, act, residual))
}

/// The shape-checked dense convolution of [`conv1d_strided`], also the masked op's (named `op`
/// in errors).
#[allow(clippy::too_many_arguments)]
pub(super) fn dense(
    g: &Graph,
    op: &str,
    x: TensorId,
    weight: TensorId,
    bias: Option<TensorId>,
    stride: usize,
    residual: Option<TensorId>,
    act: Act,
) -> Result<Conv1d> {
    let [batch, l_in, c_in] = check_input(g, op, x)?;
    let [c_out, wc, k] = *g.shape(weight) else {
        return err(format!("{op}: weight must be (C_out, C_in, k), got {:?}", g.shape(weight)));
    };
    if wc != c_in || c_out == 0 || k % 2 == 0 {
        return err(format!(
            "{op}: weight {:?} for input {:?}: needs C_in = {c_in} and an odd kernel size",
            g.shape(weight),
            g.shape(x)
        ));
    }
    if stride == 0 {
        return err(format!("{op}: stride 0"));
    }
    Conv1d::new(g, op, [batch, l_in, c_in], c_out, k, stride, 1, false, bias, act, residual)
}

/// SG-DETR's depthwise-separable convolution in one dispatch: nearest up-sampling of `x
/// (B, L, C_in)` by `upsample` (1 or more; 1 = none), then the depthwise `Conv1d(C_in, C_in, k,
/// stride, padding=k//2, groups=C_in, bias=False)` with `depthwise (C_in, 1, k)`, then the
/// pointwise `Conv1d(C_in, C_out, 1)` with `pointwise (C_out, C_in, 1)` (or `(C_out, C_in)`),
/// then `act(· + bias + residual)`. Output `(B, ⌊(L·upsample − 1) / stride⌋ + 1, C_out)`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_separable(
    g: &mut Graph,
    x: TensorId,
    depthwise: TensorId,
    pointwise: TensorId,
    bias: Option<TensorId>,
    stride: usize,
    upsample: usize,
    residual: Option<TensorId>,
    act: Act,
) -> Result<TensorId> {
    let [batch, l_in, c_in] = check_input(g, "depthwise_separable", x)?;
    let k = match *g.shape(depthwise) {
        [c, 1, k] if c == c_in && k % 2 == 1 => k,
        ref s => {
            return err(format!(
                "depthwise_separable: depthwise weight must be ({c_in}, 1, k) with k odd for input {:?}, got {s:?}",
                g.shape(x)
            ))
        }
    };
    let c_out = match *g.shape(pointwise) {
        [o, c, 1] | [o, c] if c == c_in && o > 0 => o,
        ref s => return err(format!("depthwise_separable: pointwise weight must be (C_out, {c_in}, 1), got {s:?}")),
    };
    if stride == 0 || upsample == 0 {
        return err(format!("depthwise_separable: stride {stride} and upsample {upsample} must be ≥ 1"));
    }
    let input = [batch, l_in, c_in];
    let op = Conv1d::new(g, "depthwise_separable", input, c_out, k, stride, upsample, true, bias, act, residual)?;
    Ok(push(g, op, x, pointwise, Some(depthwise), bias, act, residual))
}

/// LD-DETR's residual conv block `ReLU(x + BN₂(Conv₂(ReLU(BN₁(Conv₁ x)))))` in two dispatches, with
/// the BatchNorms already folded into `(w1, b1)` and `(w2, b2)` by [`fold_batchnorm`]. Weights
/// `(C, C, k)`, k odd (3 in LD-DETR), stride 1, zero padding; no masking of padded clips (as the
/// model). Output `(B, L, C)`.
pub fn conv_bn_block(
    g: &mut Graph,
    x: TensorId,
    w1: TensorId,
    b1: TensorId,
    w2: TensorId,
    b2: TensorId,
) -> Result<TensorId> {
    let y = conv1d(g, x, w1, Some(b1), None, Act::Relu)?;
    conv1d(g, y, w2, Some(b2), Some(x), Act::Relu)
}

/// Folds an eval-mode `BatchNorm1d` that follows a convolution into the convolution:
/// `w'[o, …] = w[o, …]·s[o]`, `b'[o] = (b[o] − mean[o])·s[o] + beta[o]` with
/// `s = gamma / sqrt(var + eps)` (computed in f64). `weight` is `(C_out, …)` row-major with
/// `C_out = gamma.len()`; an absent conv bias counts as zeros. Returns `(w', b')`.
pub fn fold_batchnorm(
    weight: &[f32],
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = gamma.len();
    if c == 0 || !weight.len().is_multiple_of(c) {
        return err(format!("fold_batchnorm: {} weight values for {c} BatchNorm channels", weight.len()));
    }
    for (name, len) in [("beta", beta.len()), ("running_mean", running_mean.len()), ("running_var", running_var.len())]
        .into_iter()
        .chain(bias.map(|b| ("conv bias", b.len())))
    {
        if len != c {
            return err(format!("fold_batchnorm: {name} has {len} values for {c} channels"));
        }
    }
    let per = weight.len() / c;
    let mut w = Vec::with_capacity(weight.len());
    let mut b = Vec::with_capacity(c);
    for o in 0..c {
        let s = gamma[o] as f64 / (running_var[o] as f64 + eps as f64).sqrt();
        w.extend(weight[o * per..(o + 1) * per].iter().map(|&v| (v as f64 * s) as f32));
        let conv_b = bias.map_or(0.0, |bias| bias[o] as f64);
        b.push(((conv_b - running_mean[o] as f64) * s + beta[o] as f64) as f32);
    }
    Ok((w, b))
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
