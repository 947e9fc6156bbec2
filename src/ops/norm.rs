//! Normalisations over the last dim: PyTorch `LayerNorm` and row L2 normalisation.
//! WGSL: `shaders/norm_layer.wgsl` and `shaders/norm_l2.wgsl`, both completed by
//! `shaders/norm_common.wgsl` (workgroup size and tree sum).

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const LAYER: Shader = Shader {
    name: "norm_layer",
    source: concat!(include_str!("../../shaders/norm_layer.wgsl"), include_str!("../../shaders/norm_common.wgsl")),
    entry: "layer_norm",
};
const L2: Shader = Shader {
    name: "norm_l2",
    source: concat!(include_str!("../../shaders/norm_l2.wgsl"), include_str!("../../shaders/norm_common.wgsl")),
    entry: "l2_normalize",
};

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` per row of `n` values (biased variance).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    rows: usize,
    n: usize,
    eps: f32,
}

impl Kernel for LayerNorm {
    fn label(&self) -> &'static str {
        "layer_norm"
    }
    fn shader(&self) -> Shader {
        LAYER
    }
    fn params(&self) -> Params {
        Params::new().u(self.rows).u(self.n).f(self.eps)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.rows)
    }
    /// The CPU backend: the same two-pass statistics in f32 with lane-wise partial sums
    /// ([`super::vmath::layer_norm_row`], built per ISA), rows spread over the pool on large
    /// tensors.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&super::Prepared>) {
        let (x, gamma, beta) = (inputs[0], inputs[1], inputs[2]);
        let n = self.n;
        let (gamma, beta) = (&gamma[..n], &beta[..n]);
        let row = |(xr, yr): (&[f32], &mut [f32])| super::vmath::layer_norm_row(xr, yr, gamma, beta, self.eps);
        let (x, y) = (&x[..self.rows * n], &mut outputs[0][..self.rows * n]);
        if self.rows * n >= PARALLEL_MIN_VALUES {
            // Runs of rows, about PARALLEL_MIN_VALUES / 4 values each.
            let rows_per_task = (PARALLEL_MIN_VALUES / 4).div_ceil(n);
            super::pool::for_each_chunk(y, rows_per_task * n, |t, ys| {
                let xs = &x[t * rows_per_task * n..][..ys.len()];
                xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)).for_each(row);
            });
        } else {
            x.chunks_exact(n).zip(y.chunks_exact_mut(n)).for_each(row);
        }
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (x, gamma, beta) = (inputs[0], inputs[1], inputs[2]);
        let y = &mut outputs[0];
        let n = self.n;
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).take(self.rows) {
            // Two-pass mean and variance in f64: the oracle should be the accurate side.
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + self.eps as f64).sqrt();
            for (c, (out, &v)) in yr.iter_mut().zip(xr).enumerate() {
                *out = ((v as f64 - mean) * rstd * gamma[c] as f64 + beta[c] as f64) as f32;
            }
        }
    }
}

/// Tensors of at least this many values are normalised in parallel.
const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// Where the L2 normalisation puts its epsilon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2Mode {
    /// `x / (‖x‖ + eps)`: the dataset-side feature normalisation of TR-DETR, LD-DETR, VideoLights
    /// and SG-DETR (NumPy, eps 1e-5).
    AddEps,
    /// `x / max(‖x‖, eps)`: torch `F.normalize` (SG-DETR local saliency, eps 1e-12).
    MaxEps,
}

/// Row L2 normalisation, see [`L2Mode`].
#[derive(Clone, Debug)]
pub struct L2Normalize {
    rows: usize,
    n: usize,
    eps: f32,
    mode: L2Mode,
}

impl Kernel for L2Normalize {
    fn label(&self) -> &'static str {
        "l2_normalize"
    }
    fn shader(&self) -> Shader {
        L2
    }
    fn params(&self) -> Params {
        Params::new().u(self.rows).u(self.n).f(self.eps).flag(self.mode == L2Mode::MaxEps)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.rows)
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let x = inputs[0];
        let y = &mut outputs[0];
        let n = self.n;
        for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)).take(self.rows) {
            let norm = (xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sqrt() as f32;
            let denom = match self.mode {
                L2Mode::AddEps => norm + self.eps,
                L2Mode::MaxEps => norm.max(self.eps),
            };
            for (out, &v) in yr.iter_mut().zip(xr) {
                *out = v / denom;
            }
        }
    }
}

/// Rows and width of a tensor normalised over its last dim.
fn rows_of(g: &Graph, x: TensorId, op: &str) -> Result<(usize, usize)> {
    let shape = g.shape(x);
    match shape.last() {
        Some(&n) if n > 0 => Ok((shape[..shape.len() - 1].iter().product(), n)),
        _ => Err(Error::Graph(format!("{op}: input of shape {shape:?} has no non-empty last dim"))),
    }
}

/// PyTorch `nn.LayerNorm(n, eps)` over the last dim of `x (…, n)`, biased variance, affine with
/// `gamma (n)` and `beta (n)`. Output has the shape of `x`.
pub fn layer_norm(g: &mut Graph, x: TensorId, gamma: TensorId, beta: TensorId, eps: f32) -> Result<TensorId> {
    let (rows, n) = rows_of(g, x, "layer_norm")?;
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if g.shape(t) != [n] {
            return Err(Error::Graph(format!("layer_norm: {name} of shape {:?} for width {n}", g.shape(t))));
        }
    }
    let shape = g.shape(x).to_vec();
    Ok(g.push1(LayerNorm { rows, n, eps }, &[Some(x), Some(gamma), Some(beta)], shape))
}

/// L2 normalisation of every row of `x (…, n)` over the last dim; `mode` places `eps` (see
/// [`L2Mode`]). An all-zero row gives zeros in both modes (for eps > 0).
pub fn l2_normalize(g: &mut Graph, x: TensorId, eps: f32, mode: L2Mode) -> Result<TensorId> {
    let (rows, n) = rows_of(g, x, "l2_normalize")?;
    if eps.is_nan() || eps <= 0.0 {
        return Err(Error::Graph(format!("l2_normalize: eps must be positive, got {eps}")));
    }
    let shape = g.shape(x).to_vec();
    Ok(g.push1(L2Normalize { rows, n, eps, mode }, &[Some(x)], shape))
}
