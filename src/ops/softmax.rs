//! Masked row softmax over the last dim (online max/sum, one workgroup per row).
//! WGSL: `shaders/softmax.wgsl`.

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const SHADER: Shader = Shader { name: "softmax", source: include_str!("../../shaders/softmax.wgsl"), entry: "softmax" };

/// How a key-padding mask `(B, S)` (1 = valid, 0 = padded) enters the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskMode {
    /// Keys with mask value 0 take no part and get probability 0 (PyTorch boolean / `-inf`
    /// masking). A row whose keys are all masked is **all zeros** (PyTorch would give NaN).
    Skip,
    /// VSLNet `mask_logits`: logit `+ (1 − m)·neg` for every key (official value `neg = -1e30`).
    /// Equals `Skip` while a row has a valid key; a fully masked row comes out **uniform**
    /// (`1/S` each), exactly as the float32 formula gives.
    Additive(f32),
}

/// `y = softmax(scale·x [+ mask term])` over the last dim; see [`MaskMode`].
#[derive(Clone, Debug)]
pub struct Softmax {
    rows: usize,
    r_per_batch: usize,
    s: usize,
    has_mask: bool,
    mode: MaskMode,
    scale: f32,
}

impl Kernel for Softmax {
    fn label(&self) -> &'static str {
        "softmax"
    }
    fn shader(&self) -> Shader {
        SHADER
    }
    fn params(&self) -> Params {
        let (mode, neg) = match self.mode {
            MaskMode::Skip => (0, 0.0),
            MaskMode::Additive(neg) => (1, neg),
        };
        Params::new().u(self.rows).u(self.r_per_batch).u(self.s).flag(self.has_mask).u(mode).f(self.scale).f(neg)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.rows)
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (x, mask) = (inputs[0], inputs[1]);
        let y = &mut outputs[0];
        let s = self.s;
        let mut logits = vec![0.0f32; s];
        let mut keep = vec![true; s];
        for (row, (xr, yr)) in x.chunks_exact(s).zip(y.chunks_exact_mut(s)).take(self.rows).enumerate() {
            let mrow = self.has_mask.then(|| &mask[(row / self.r_per_batch) * s..][..s]);
            for j in 0..s {
                let mut v = self.scale * xr[j];
                keep[j] = true;
                if let Some(m) = mrow {
                    match self.mode {
                        MaskMode::Additive(neg) => v += (1.0 - m[j]) * neg,
                        MaskMode::Skip => keep[j] = m[j] != 0.0,
                    }
                }
                logits[j] = v;
            }
            let max = (0..s).filter(|&j| keep[j]).map(|j| logits[j]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for j in 0..s {
                yr[j] = if keep[j] { (logits[j] - max).exp() } else { 0.0 };
                sum += yr[j] as f64;
            }
            let inv = if sum > 0.0 { (1.0 / sum) as f32 } else { 0.0 };
            for v in yr.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Softmax over the last dim of `x`, with an optional key-padding `mask (B, S)`.
///
/// `x` is `(B, …, S)` (rank ≥ 2; all dims between the first and the last are rows sharing the
/// mask row of their sample, e.g. attention scores `(B, H, Lq, S)`); rank 2 `(B, S)` is one row
/// per sample. Without a mask, any rank ≥ 1. Logits are `scale · x` (pass 1.0 for a plain
/// softmax) before the mask term. Output has the shape of `x`.
pub fn softmax(g: &mut Graph, x: TensorId, mask: Option<TensorId>, mode: MaskMode, scale: f32) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    let Some(&s) = shape.last().filter(|&&s| s > 0) else {
        return Err(Error::Graph(format!("softmax: input of shape {shape:?} has no non-empty last dim")));
    };
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let r_per_batch = match mask {
        None => rows.max(1),
        Some(m) => {
            let ms = g.shape(m);
            if shape.len() < 2 || ms != [shape[0], s] {
                return Err(Error::Graph(format!(
                    "softmax: mask of shape {ms:?} for input {shape:?}; expected ({}, {s})",
                    shape.first().copied().unwrap_or(0)
                )));
            }
            (rows / shape[0].max(1)).max(1)
        }
    };
    if let MaskMode::Additive(neg) = mode {
        if !neg.is_finite() {
            return Err(Error::Graph(format!("softmax: additive mask value must be finite, got {neg}")));
        }
    }
    let op = Softmax { rows, r_per_batch, s, has_mask: mask.is_some(), mode, scale };
    Ok(g.push1(op, &[Some(x), mask], shape))
}
