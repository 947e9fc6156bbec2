//! Linear layers and batched matmul with a fused epilogue (bias, activation, residual).
//! WGSL: `shaders/matmul.wgsl` (any strides) and `shaders/matmul_vec4.wgsl` (vec4 loads), both
//! completed by `shaders/matmul_common.wgsl`.

use std::sync::{Arc, LazyLock};

use super::gemm::{self, Epilogue, PackedB};
use super::{activate, Act, Const, Kernel, Params, Prepared, Shader};
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Graph, TensorId};

const TILE: usize = 32;

const SCALAR: Shader = Shader {
    name: "matmul",
    source: concat!(include_str!("../../shaders/matmul.wgsl"), include_str!("../../shaders/matmul_common.wgsl")),
    entry: "matmul",
};
const VEC4: Shader = Shader {
    name: "matmul_vec4",
    source: concat!(include_str!("../../shaders/matmul_vec4.wgsl"), include_str!("../../shaders/matmul_common.wgsl")),
    entry: "matmul_vec4",
};

/// The scalar kernel reading `w` stored as f16 (`DeviceOptions::f16_weights`): the same source
/// with the weight binding declared `array<f16>` and widened to f32 where the tile loads it.
static SCALAR_F16_WEIGHTS_SOURCE: LazyLock<String> = LazyLock::new(|| {
    let scalar = SCALAR.source;
    let (binding, load) = ("var<storage, read> w: array<f32>;", "wv = w[w_base + gk * p.w_k + (col0 + r) * p.w_n];");
    assert!(scalar.contains(binding) && scalar.contains(load), "matmul.wgsl changed: update the f16 variant");
    let widened = scalar
        .replace(binding, "var<storage, read> w: array<f16>;")
        .replace(load, "wv = f32(w[w_base + gk * p.w_k + (col0 + r) * p.w_n]);");
    format!("enable f16;\n{widened}")
});

/// `c[b] = act(a[b] · w[b] + bias) + residual[b]`, operands addressed by element strides.
#[derive(Clone, Debug)]
pub struct Matmul {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    /// a[b, m, k] at b·a_batch + m·a_m + k·a_k
    a_strides: [usize; 3],
    /// w[b, k, n] at b·w_batch + k·w_k + n·w_n
    w_strides: [usize; 3],
    has_bias: bool,
    act: u32,
    has_residual: bool,
    /// `w` is a `Linear` weight held as the CPU GEMM's panels (graphs for the CPU backend).
    w_panels: bool,
}

impl Matmul {
    fn vec4_ok(&self) -> bool {
        let [ab, am, ak] = self.a_strides;
        let [wb, wk, wn] = self.w_strides;
        ak == 1 && wk == 1 && self.k % 4 == 0 && [ab, am, wb, wn].iter().all(|s| s % 4 == 0)
    }
}

impl Kernel for Matmul {
    fn label(&self) -> &'static str {
        "matmul"
    }
    fn shader(&self) -> Shader {
        if self.vec4_ok() {
            VEC4
        } else {
            SCALAR
        }
    }
    fn f16_weight(&self) -> Option<(usize, Shader)> {
        Some((1, Shader { name: "matmul_f16_weights", source: SCALAR_F16_WEIGHTS_SOURCE.as_str(), entry: "matmul" }))
    }
    fn params(&self) -> Params {
        let [ab, am, ak] = self.a_strides;
        let [wb, wk, wn] = self.w_strides;
        Params::new()
            .u(self.m)
            .u(self.n)
            .u(self.k)
            .u(ab)
            .u(am)
            .u(ak)
            .u(wb)
            .u(wk)
            .u(wn)
            .flag(self.has_bias)
            .u(self.act as usize)
            .flag(self.has_residual)
    }
    fn workgroups(&self) -> [u32; 3] {
        [self.n.div_ceil(TILE) as u32, self.m.div_ceil(TILE) as u32, self.batch as u32]
    }
    fn reads_weight_panels(&self, input: usize) -> bool {
        self.w_panels && input == 1
    }

    /// A constant right operand shared by the batch (every Linear) is packed once for the
    /// CPU GEMM; a weight held as panels already is.
    fn cpu_prepare(&self, consts: &[Option<Const>], cache: &ConstCache) -> Option<Prepared> {
        if let Some(Const::Panels(panels)) = consts[1] {
            return Some(Arc::new(PackedB::from_panels(panels.clone(), self.k, self.n)) as Prepared);
        }
        let [_, wk, wn] = self.w_strides;
        let shared = self.batch == 1 || self.w_strides[0] == 0;
        match consts[1].and_then(Const::dense) {
            Some(w) if shared && self.a_strides[2] == 1 && self.k > 0 => {
                let (k, n) = (self.k, self.n);
                Some(cache.packed(w, "strided", [k, n, wk, wn], |w| PackedB::pack(w, k, n, wk, wn)) as Prepared)
            }
            _ => None,
        }
    }

    /// The CPU backend: the packed GEMM with its fused epilogue for constant weights; otherwise
    /// a blocked SIMD SGEMM (matrixmultiply) over the same strides, then the epilogue.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], prepared: Option<&Prepared>) {
        let (a, w, bias, slope, residual) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
        let c = &mut outputs[0];
        let [ab, am, ak] = self.a_strides;
        let [wb, wk, wn] = self.w_strides;
        let (m, n, k) = (self.m, self.n, self.k);
        if let Some(packed) = prepared.and_then(|p| p.downcast_ref::<PackedB>()) {
            let slope = slope.first().copied().unwrap_or(0.0);
            for b in 0..self.batch {
                let rows = b * m * n..(b + 1) * m * n;
                let epilogue = Epilogue {
                    bias: self.has_bias.then_some(bias),
                    act: self.act,
                    slope,
                    residual: self.has_residual.then(|| &residual[rows.clone()]),
                    residual_first: false,
                };
                gemm::gemm(m, &a[b * ab..], am, packed, &mut c[rows], &epilogue);
            }
            return;
        }
        // Products of two activations (attention-like maps in the VSLNet blocks): one sample
        // per task.
        let product = |b: usize, out: &mut [f32]| {
            if k == 0 {
                out.fill(0.0);
                return;
            }
            // SAFETY: every element the strides address lies inside its slice: the graph builder
            // checked the operand shapes against (batch, m, k, n) and these strides.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr().add(b * ab),
                    am as isize,
                    ak as isize,
                    w.as_ptr().add(b * wb),
                    wk as isize,
                    wn as isize,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        };
        let c = &mut c[..self.batch * m * n];
        if c.is_empty() {
            return;
        }
        if self.batch * m * n * k >= gemm::PARALLEL_MIN_MACS {
            super::pool::for_each_chunk(c, m * n, product);
        } else {
            c.chunks_exact_mut(m * n).enumerate().for_each(|(b, out)| product(b, out));
        }
        let slope = slope.first().copied().unwrap_or(0.0);
        if self.has_bias || self.act != 0 || self.has_residual {
            for (i, v) in c.iter_mut().enumerate() {
                let mut x = *v;
                if self.has_bias {
                    x += bias[i % n];
                }
                x = activate(x, self.act, slope);
                if self.has_residual {
                    x += residual[i];
                }
                *v = x;
            }
        }
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        if self.w_panels {
            // The twin stays simple: the weight back in its `(N, K)` layout.
            let w = gemm::linear_from_panels(inputs[1], self.n, self.k);
            let mut dense = inputs.to_vec();
            dense[1] = &w;
            return Matmul { w_panels: false, ..self.clone() }.cpu(&dense, outputs);
        }
        let (a, w, bias, slope, residual) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]);
        let c = &mut outputs[0];
        let [ab, am, ak] = self.a_strides;
        let [wb, wk, wn] = self.w_strides;
        let slope = slope.first().copied().unwrap_or(0.0);
        let mut row = vec![0.0f32; self.n];
        for b in 0..self.batch {
            for m in 0..self.m {
                if ak == 1 && wk == 1 {
                    // Both operands contiguous along K (every Linear): dot products of rows.
                    let a_row = &a[b * ab + m * am..][..self.k];
                    for (n, acc) in row.iter_mut().enumerate() {
                        let w_row = &w[b * wb + n * wn..][..self.k];
                        *acc = dot(a_row, w_row);
                    }
                } else {
                    row.fill(0.0);
                    for k in 0..self.k {
                        let x = a[b * ab + m * am + k * ak];
                        let w_row = b * wb + k * wk;
                        for (n, acc) in row.iter_mut().enumerate() {
                            *acc += x * w[w_row + n * wn];
                        }
                    }
                }
                for (n, acc) in row.iter().enumerate() {
                    let mut v = *acc;
                    if self.has_bias {
                        v += bias[n];
                    }
                    v = activate(v, self.act, slope);
                    let at = (b * self.m + m) * self.n + n;
                    if self.has_residual {
                        v += residual[at];
                    }
                    c[at] = v;
                }
            }
        }
    }
}

/// Dot product with four independent partial sums (lets the compiler vectorise).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = a4.remainder().iter().zip(b4.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a4.zip(b4) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

fn push(
    g: &mut Graph,
    op: Matmul,
    a: TensorId,
    w: TensorId,
    bias: Option<TensorId>,
    act: Act,
    residual: Option<TensorId>,
    shape: Vec<usize>,
) -> TensorId {
    g.push1(op, &[Some(a), Some(w), bias, act.slope(), residual], shape)
}

fn check_epilogue(
    g: &Graph,
    n: usize,
    out_shape: &[usize],
    bias: Option<TensorId>,
    act: Act,
    residual: Option<TensorId>,
) -> Result<()> {
    if let Some(b) = bias {
        if g.shape(b) != [n] {
            return Err(Error::Graph(format!("bias of shape {:?} for {n} outputs", g.shape(b))));
        }
    }
    if let Some(s) = act.slope() {
        if g.shape(s).iter().product::<usize>() != 1 {
            return Err(Error::Graph(format!("PReLU slope of shape {:?}; one slope expected", g.shape(s))));
        }
    }
    if let Some(r) = residual {
        if g.shape(r) != out_shape {
            return Err(Error::Graph(format!("residual of shape {:?} for output {out_shape:?}", g.shape(r))));
        }
    }
    Ok(())
}

/// PyTorch `Linear`: `x (…, K) · wᵀ + bias` with `w` stored `(N, K)` (or held as the CPU
/// GEMM's panels, in graphs for the CPU backend), then `act`.
pub fn linear(g: &mut Graph, x: TensorId, w: TensorId, bias: Option<TensorId>, act: Act) -> Result<TensorId> {
    linear_residual(g, x, w, bias, act, None)
}

/// [`linear`] followed by `+ residual` (same shape as the output) in the same dispatch.
pub fn linear_residual(
    g: &mut Graph,
    x: TensorId,
    w: TensorId,
    bias: Option<TensorId>,
    act: Act,
    residual: Option<TensorId>,
) -> Result<TensorId> {
    let xs = g.shape(x).to_vec();
    let ws = g.shape(w).to_vec();
    let (Some(&k), [n, wk]) = (xs.last(), ws.as_slice()) else {
        return Err(Error::Graph(format!("linear of input {xs:?} with weight {ws:?}")));
    };
    if k != *wk {
        return Err(Error::Graph(format!("linear: input width {k} but weight {ws:?} expects {wk}")));
    }
    let m = xs[..xs.len() - 1].iter().product();
    let mut out = xs.clone();
    *out.last_mut().unwrap() = *n;
    check_epilogue(g, *n, &out, bias, act, residual)?;
    let op = Matmul {
        batch: 1,
        m,
        n: *n,
        k,
        a_strides: [0, k, 1],
        w_strides: [0, 1, k],
        has_bias: bias.is_some(),
        act: act.code(),
        has_residual: residual.is_some(),
        w_panels: g.is_panels(w),
    };
    Ok(push(g, op, x, w, bias, act, residual, out))
}

/// Batched product `a (B, M, K) · b` with `b` of shape `(B, K, N)`, or `(B, N, K)` when
/// `transpose_b` (as in `q · kᵀ`). Rank-2 operands are treated as B = 1.
pub fn matmul(g: &mut Graph, a: TensorId, b: TensorId, transpose_b: bool) -> Result<TensorId> {
    let as_ = g.shape(a).to_vec();
    let bs = g.shape(b).to_vec();
    let batched = |s: &[usize]| -> Option<[usize; 3]> {
        match *s {
            [r, c] => Some([1, r, c]),
            [bt, r, c] => Some([bt, r, c]),
            _ => None,
        }
    };
    let (Some([ba, m, k]), Some([bb, r, c])) = (batched(&as_), batched(&bs)) else {
        return Err(Error::Graph(format!("matmul needs rank-2 or rank-3 operands, got {as_:?} and {bs:?}")));
    };
    let (kb, n) = if transpose_b { (c, r) } else { (r, c) };
    if ba != bb || k != kb {
        return Err(Error::Graph(format!("matmul of {as_:?} and {bs:?} (transpose_b = {transpose_b})")));
    }
    let w_strides = if transpose_b { [r * c, 1, c] } else { [r * c, c, 1] };
    let op = Matmul {
        batch: ba,
        m,
        n,
        k,
        a_strides: [m * k, k, 1],
        w_strides,
        has_bias: false,
        act: 0,
        has_residual: false,
        w_panels: false,
    };
    let out = if as_.len() == 2 { vec![m, n] } else { vec![ba, m, n] };
    Ok(push(g, op, a, b, None, Act::None, None, out))
}
