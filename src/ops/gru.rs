//! PyTorch `nn.GRU` (unidirectional, batch-first, `h0 = 0`, any number of stacked layers, optional
//! per-sample lengths). Per layer: the input projections of all steps `x W_ihᵀ + b_ih` are one
//! [`crate::ops::matmul::linear`], then the whole recurrent time loop runs in one dispatch (one
//! workgroup per sample). WGSL: `shaders/gru.wgsl`.

use std::sync::Arc;

use super::gemm::{self, Epilogue, PackedB};
use super::{sigmoid, Act, Const, Kernel, Params, Prepared, Shader};
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Graph, TensorId};
use crate::weights::Tensor;

/// Largest hidden size: two copies of h (double buffer) plus one word within 16 KiB of workgroup memory.
pub const MAX_HIDDEN: usize = 2040;

const SHADER: Shader = Shader { name: "gru", source: include_str!("../../shaders/gru.wgsl"), entry: "gru" };

/// One GRU layer's weights, prepared once at load time (the recurrent weight is stored
/// transposed for the kernel). Gate order r, z, n in the rows of PyTorch's `weight_ih_l{k}`
/// `(3H, I)` and `weight_hh_l{k}` `(3H, H)`. Build graphs from the same `GruWeights` so every graph
/// shares the uploaded constants.
#[derive(Clone, Debug)]
pub struct GruWeights {
    input: usize,
    hidden: usize,
    w_ih: Arc<[f32]>,
    b_ih: Arc<[f32]>,
    /// `W_hhᵀ`, `(H, 3H)`.
    w_hh_t: Arc<[f32]>,
    b_hh: Arc<[f32]>,
}

impl GruWeights {
    /// From PyTorch's `weight_ih_l{k}` `(3H, I)`, `weight_hh_l{k}` `(3H, H)`, `bias_ih_l{k}` and
    /// `bias_hh_l{k}` `(3H)`.
    pub fn from_tensors(weight_ih: &Tensor, weight_hh: &Tensor, bias_ih: &Tensor, bias_hh: &Tensor) -> Result<Self> {
        let bad = |what: &str, shape: &[usize]| Error::Graph(format!("GRU: {what} of shape {shape:?}"));
        let [g3, input] = weight_ih.shape[..] else { return Err(bad("weight_ih", &weight_ih.shape)) };
        if g3 % 3 != 0 {
            return Err(bad("weight_ih (rows must be 3·hidden)", &weight_ih.shape));
        }
        let hidden = g3 / 3;
        if weight_hh.shape != [g3, hidden] {
            return Err(bad(&format!("weight_hh (expected [{g3}, {hidden}])"), &weight_hh.shape));
        }
        for (what, t) in [("bias_ih", bias_ih), ("bias_hh", bias_hh)] {
            if t.shape != [g3] {
                return Err(bad(&format!("{what} (expected [{g3}])"), &t.shape));
            }
        }
        let mut w =
            Self::new(input, hidden, &weight_ih.data, &weight_hh.data, Some(&bias_ih.data), Some(&bias_hh.data))?;
        // Share the caller's allocations, so graphs built from other copies of them share buffers.
        w.w_ih = weight_ih.data.clone();
        w.b_ih = bias_ih.data.clone();
        Ok(w)
    }

    /// From row-major slices (PyTorch layouts as in [`GruWeights::from_tensors`]); absent biases
    /// are zeros (`bias=False`).
    pub fn new(
        input: usize,
        hidden: usize,
        weight_ih: &[f32],
        weight_hh: &[f32],
        bias_ih: Option<&[f32]>,
        bias_hh: Option<&[f32]>,
    ) -> Result<Self> {
        let g3 = 3 * hidden;
        if input == 0 || hidden == 0 || hidden > MAX_HIDDEN {
            return Err(Error::Graph(format!(
                "GRU: input size {input}, hidden size {hidden}: both must be ≥ 1 and hidden ≤ {MAX_HIDDEN}"
            )));
        }
        let check = |what: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(Error::Graph(format!("GRU: {what} has {len} values, expected {want}")))
            }
        };
        check("weight_ih", weight_ih.len(), g3 * input)?;
        check("weight_hh", weight_hh.len(), g3 * hidden)?;
        let zeros = vec![0.0f32; g3];
        let bias_ih = bias_ih.unwrap_or(&zeros);
        let bias_hh = bias_hh.unwrap_or(&zeros);
        check("bias_ih", bias_ih.len(), g3)?;
        check("bias_hh", bias_hh.len(), g3)?;
        let mut w_hh_t = vec![0.0f32; g3 * hidden];
        for row in 0..g3 {
            for k in 0..hidden {
                w_hh_t[k * g3 + row] = weight_hh[row * hidden + k];
            }
        }
        Ok(GruWeights {
            input,
            hidden,
            w_ih: weight_ih.into(),
            b_ih: bias_ih.into(),
            w_hh_t: w_hh_t.into(),
            b_hh: bias_hh.into(),
        })
    }

    pub fn input_size(&self) -> usize {
        self.input
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }
}

/// The recurrent time loop of one layer over precomputed input projections (see the shader).
#[derive(Clone, Debug)]
pub struct GruRecurrent {
    batch: usize,
    steps: usize,
    hidden: usize,
    has_lengths: bool,
}

impl Kernel for GruRecurrent {
    fn label(&self) -> &'static str {
        "gru"
    }
    fn shader(&self) -> Shader {
        SHADER
    }
    fn params(&self) -> Params {
        Params::new().u(self.batch).u(self.steps).u(self.hidden).flag(self.has_lengths)
    }
    fn workgroups(&self) -> [u32; 3] {
        super::grid_1d(self.batch)
    }
    /// `W_hhᵀ (H, 3H)` packed once: each step is then one GEMM `h (B, H) · W_hhᵀ + b_hh` over
    /// the whole batch.
    fn cpu_prepare(&self, consts: &[Option<Const>], cache: &ConstCache) -> Option<Prepared> {
        let hd = self.hidden;
        let pack = |w: &[f32]| PackedB::pack(w, hd, 3 * hd, 3 * hd, 1);
        Some(cache.packed(consts[1]?.dense()?, "strided", [hd, 3 * hd, 3 * hd, 1], pack) as Prepared)
    }

    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], prepared: Option<&Prepared>) {
        let Some(w_hh) = prepared.and_then(|p| p.downcast_ref::<PackedB>()) else {
            return self.cpu(inputs, outputs);
        };
        let (gi, b_hh, lengths) = (inputs[0], inputs[2], inputs[3]);
        let [seq, last] = outputs else { unreachable!("gru has two outputs") };
        let (batch, t_max, hd) = (self.batch, self.steps, self.hidden);
        let g3 = 3 * hd;
        let len = |b: usize| {
            if self.has_lengths {
                lengths[b].floor().clamp(0.0, t_max as f32) as usize
            } else {
                t_max
            }
        };
        let steps = (0..batch).map(len).max().unwrap_or(0);
        let bias = Epilogue { bias: Some(b_hh), ..Epilogue::NONE };
        super::with_scratch([batch * hd, batch * g3], |[h, gh]| {
            h.fill(0.0); // h0 = 0
            for t in 0..steps {
                gemm::gemm(batch, h, hd, w_hh, gh, &bias);
                for b in (0..batch).filter(|&b| t < len(b)) {
                    let h = &mut h[b * hd..][..hd];
                    super::vmath::gru_gates(&gi[(b * t_max + t) * g3..][..g3], &gh[b * g3..][..g3], h);
                    seq[(b * t_max + t) * hd..][..hd].copy_from_slice(h);
                }
            }
            for b in 0..batch {
                seq[(b * t_max + len(b)) * hd..(b + 1) * t_max * hd].fill(0.0);
                last[b * hd..(b + 1) * hd].copy_from_slice(&h[b * hd..(b + 1) * hd]);
            }
        });
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (gi, w_hh_t, b_hh, lengths) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let [seq, last] = outputs else { unreachable!("gru has two outputs") };
        let (t_max, hd) = (self.steps, self.hidden);
        let g3 = 3 * hd;
        let mut h = vec![0.0f32; hd];
        let mut gh = vec![0.0f32; g3];
        for b in 0..self.batch {
            let len = if self.has_lengths { lengths[b].floor().clamp(0.0, t_max as f32) as usize } else { t_max };
            h.fill(0.0);
            for t in 0..len {
                // gh = b_hh + W_hh h, accumulated row by row of W_hhᵀ.
                gh.copy_from_slice(b_hh);
                for (k, &hk) in h.iter().enumerate() {
                    for (acc, &w) in gh.iter_mut().zip(&w_hh_t[k * g3..(k + 1) * g3]) {
                        *acc += hk * w;
                    }
                }
                let g = &gi[(b * t_max + t) * g3..][..g3];
                let out = &mut seq[(b * t_max + t) * hd..][..hd];
                for j in 0..hd {
                    let r = sigmoid(g[j] + gh[j]);
                    let z = sigmoid(g[hd + j] + gh[hd + j]);
                    let n = (g[2 * hd + j] + r * gh[2 * hd + j]).tanh();
                    h[j] = (1.0 - z) * n + z * h[j];
                    out[j] = h[j];
                }
            }
            seq[(b * t_max + len) * hd..(b + 1) * t_max * hd].fill(0.0);
            last[b * hd..(b + 1) * hd].copy_from_slice(&h);
        }
    }
}

/// A stacked unidirectional PyTorch GRU (`batch_first=True`, `h0 = 0`) over `x (B, T, I)`:
/// layer l + 1 reads layer l's output sequence. `lengths (B)` (f32 holding integers, optional)
/// gives each sample's number of steps, `clamp(floor(len), 0, T)`; without it every sample runs
/// all T steps (what TR-DETR / LD-DETR / VideoLights do over their zero-padded rows). Returns
/// `(seq (B, T, H), last (B, H))` of the LAST layer: `seq[b, t]` is h after step t for t < len
/// and 0 after; `last[b]` is h after the sample's last step (0 for length 0), as PyTorch's `h_n`
/// with packed sequences. Two dispatches per layer.
pub fn gru(
    g: &mut Graph,
    x: TensorId,
    layers: &[GruWeights],
    lengths: Option<TensorId>,
) -> Result<(TensorId, TensorId)> {
    let [batch, steps, input] = *g.shape(x) else {
        return Err(Error::Graph(format!("gru: input must be (B, T, I), got {:?}", g.shape(x))));
    };
    if batch == 0 || steps == 0 {
        return Err(Error::Graph(format!("gru: empty input {:?}", g.shape(x))));
    }
    let Some(first) = layers.first() else { return Err(Error::Graph("gru: no layers".into())) };
    if first.input != input {
        return Err(Error::Graph(format!("gru: input width {input} but layer 0 expects {}", first.input)));
    }
    for (l, pair) in layers.windows(2).enumerate() {
        if pair[1].input != pair[0].hidden {
            return Err(Error::Graph(format!(
                "gru: layer {} has hidden size {} but layer {} expects input {}",
                l,
                pair[0].hidden,
                l + 1,
                pair[1].input
            )));
        }
    }
    if let Some(len) = lengths {
        if g.shape(len) != [batch] {
            return Err(Error::Graph(format!("gru: lengths of shape {:?} for batch {batch}", g.shape(len))));
        }
    }
    let mut cur = x;
    let mut last = None;
    for layer in layers {
        let (i, hd) = (layer.input, layer.hidden);
        let w_ih = g.constant(layer.w_ih.clone(), &[3 * hd, i])?;
        let b_ih = g.constant(layer.b_ih.clone(), &[3 * hd])?;
        let w_hh_t = g.constant(layer.w_hh_t.clone(), &[hd, 3 * hd])?;
        let b_hh = g.constant(layer.b_hh.clone(), &[3 * hd])?;
        let gi = crate::ops::matmul::linear(g, cur, w_ih, Some(b_ih), Act::None)?;
        let op = GruRecurrent { batch, steps, hidden: hd, has_lengths: lengths.is_some() };
        let outs =
            g.push(op, &[Some(gi), Some(w_hh_t), Some(b_hh), lengths], &[vec![batch, steps, hd], vec![batch, hd]]);
        cur = outs[0];
        last = Some(outs[1]);
    }
    Ok((cur, last.expect("at least one layer")))
}

#[cfg(test)]
mod tests {
    /// The builder's hidden-size limit must match the shader's double buffer of h.
    #[test]
    fn shader_limits_match_builder() {
        let src = super::SHADER.source;
        assert!(src.contains(&format!("const MAX_HIDDEN: u32 = {}u;", super::MAX_HIDDEN)));
        assert!(src.contains(&format!("var<workgroup> hbuf: array<f32, {}>;", 2 * super::MAX_HIDDEN)));
        assert!(2 * super::MAX_HIDDEN * 4 + 4 <= 16 * 1024, "workgroup memory within the portable 16 KiB");
    }
}
