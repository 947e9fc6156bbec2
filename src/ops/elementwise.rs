//! Elementwise ops: unary functions (relu, sigmoid, tanh, exact GELU, PReLU, DAB-DETR
//! `inverse_sigmoid`, scale-and-shift, exp) and binary operators with NumPy broadcasting, with an
//! optional unary applied to `b` before and to the result after the operator.
//! WGSL: `shaders/elementwise_unary.wgsl`, `shaders/elementwise_binary.wgsl` (any strides) and
//! `shaders/elementwise_binary_vec4.wgsl` (vec4 loads), each completed by
//! `shaders/elementwise_common.wgsl`.

use super::{grid_1d, sigmoid as sigmoid_f32, vmath, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const UNARY: Shader = Shader {
    name: "elementwise_unary",
    source: concat!(
        include_str!("../../shaders/elementwise_unary.wgsl"),
        include_str!("../../shaders/elementwise_common.wgsl")
    ),
    entry: "unary",
};
const BINARY: Shader = Shader {
    name: "elementwise_binary",
    source: concat!(
        include_str!("../../shaders/elementwise_binary.wgsl"),
        include_str!("../../shaders/elementwise_common.wgsl")
    ),
    entry: "binary",
};
const BINARY_VEC4: Shader = Shader {
    name: "elementwise_binary_vec4",
    source: concat!(
        include_str!("../../shaders/elementwise_binary_vec4.wgsl"),
        include_str!("../../shaders/elementwise_common.wgsl")
    ),
    entry: "binary_vec4",
};

const WG: usize = 256;

/// A unary function, as the builders take it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Identity,
    Relu,
    /// PyTorch `nn.PReLU()`: one learnt slope, read on the GPU from this 1-element tensor.
    Prelu(TensorId),
    Sigmoid,
    Tanh,
    /// Exact GELU (PyTorch default): `x · 0.5 · (1 + erf(x/√2))`.
    Gelu,
    /// DAB-DETR: `log(max(clamp(x,0,1), eps) / max(1 − clamp(x,0,1), eps))` (the models use 1e-3).
    InverseSigmoid {
        eps: f32,
    },
    /// `scale · x + shift`.
    ScaleShift {
        scale: f32,
        shift: f32,
    },
    Exp,
}

impl Unary {
    /// (code, p0, p1) shared with the WGSL `unary4` helper.
    fn code(self) -> (u32, f32, f32) {
        match self {
            Unary::Identity => (0, 0.0, 0.0),
            Unary::Relu => (1, 0.0, 0.0),
            Unary::Prelu(_) => (2, 0.0, 0.0),
            Unary::Sigmoid => (3, 0.0, 0.0),
            Unary::Tanh => (4, 0.0, 0.0),
            Unary::Gelu => (5, 0.0, 0.0),
            Unary::InverseSigmoid { eps } => (6, eps, 0.0),
            Unary::ScaleShift { scale, shift } => (7, scale, shift),
            Unary::Exp => (8, 0.0, 0.0),
        }
    }
    fn slope(self) -> Option<TensorId> {
        match self {
            Unary::Prelu(t) => Some(t),
            _ => None,
        }
    }
}

/// erf in f32 with < 1.3 ulp error: N. Juffa's rational approximation, the same as the WGSL
/// `erf4` (so GPU and CPU differ only by the hardware's `exp` and `fma`). Constants as published.
#[allow(clippy::excessive_precision)]
pub fn erf_f32(a: f32) -> f32 {
    let t = a.abs();
    let s = a * a;
    if t > 0.927734375 {
        let mut r = (-1.72853470e-5f32).mul_add(t, 3.83197126e-4);
        let u = (-3.88396438e-3f32).mul_add(t, 2.42546219e-2);
        r = r.mul_add(s, u);
        r = r.mul_add(t, -1.06777877e-1);
        r = r.mul_add(t, -6.34846687e-1);
        r = r.mul_add(t, -1.28717512e-1);
        r = r.mul_add(t, -t);
        let r = 1.0 - r.exp();
        if a < 0.0 {
            -r
        } else {
            r
        }
    } else {
        let mut r = -5.96761703e-4f32;
        r = r.mul_add(s, 4.99119423e-3);
        r = r.mul_add(s, -2.67681349e-2);
        r = r.mul_add(s, 1.12819925e-1);
        r = r.mul_add(s, -3.76125336e-1);
        r = r.mul_add(s, 1.28379166e-1);
        r.mul_add(a, a)
    }
}

/// Exact GELU, PyTorch's formula and evaluation order.
pub fn gelu_f32(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// DAB-DETR `inverse_sigmoid(x, eps)`.
pub fn inverse_sigmoid_f32(x: f32, eps: f32) -> f32 {
    let c = x.clamp(0.0, 1.0);
    (c.max(eps) / (1.0 - c).max(eps)).ln()
}

/// CPU twin of the WGSL `unary4` for one value.
fn apply_unary(x: f32, (code, p0, p1): (u32, f32, f32), slope: f32) -> f32 {
    match code {
        1 => x.max(0.0),
        2 => {
            if x >= 0.0 {
                x
            } else {
                slope * x
            }
        }
        3 => sigmoid_f32(x),
        4 => x.tanh(),
        5 => gelu_f32(x),
        6 => inverse_sigmoid_f32(x, p0),
        7 => p0 * x + p1,
        8 => x.exp(),
        _ => x,
    }
}

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl Binary {
    fn code(self) -> u32 {
        self as u32
    }
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => a.max(b),
            Binary::Min => a.min(b),
        }
    }
}

/// `y = f(x)` over a dense tensor of `n` values.
#[derive(Clone, Debug)]
pub struct UnaryOp {
    n: usize,
    f: (u32, f32, f32),
}

impl Kernel for UnaryOp {
    fn label(&self) -> &'static str {
        "unary"
    }
    fn shader(&self) -> Shader {
        UNARY
    }
    fn params(&self) -> Params {
        let (code, p0, p1) = self.f;
        Params::new().u(self.n.div_ceil(4)).u(code as usize).f(p0).f(p1)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.n.div_ceil(4).div_ceil(WG))
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let slope = inputs[1].first().copied().unwrap_or(0.0);
        for (y, &x) in outputs[0].iter_mut().zip(inputs[0]) {
            *y = apply_unary(x, self.f, slope);
        }
    }
}

/// Tensors of at least this many values are computed over the CPU backend's pool.
const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// `out[i] = op(a[i], b[i])`, with `a` empty meaning `out` already holds `a`; one loop per op.
fn binary_rows(op: Binary, out: &mut [f32], a: &[f32], b: &[f32]) {
    macro_rules! each {
        ($f:expr) => {
            if a.is_empty() {
                out.iter_mut().zip(b).for_each(|(o, &y)| *o = $f(*o, y))
            } else {
                out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = $f(x, y))
            }
        };
    }
    match op {
        Binary::Add => each!(|x: f32, y: f32| x + y),
        Binary::Sub => each!(|x: f32, y: f32| x - y),
        Binary::Mul => each!(|x: f32, y: f32| x * y),
        Binary::Div => each!(|x: f32, y: f32| x / y),
        Binary::Max => each!(|x: f32, y: f32| x.max(y)),
        Binary::Min => each!(|x: f32, y: f32| x.min(y)),
    }
}

/// `out = post(op(a, pre_b(b)))` with broadcasting: `out` dense `(d0, d1, d2, d3)`, operands read
/// through element strides (0 on broadcast dims).
#[derive(Clone, Debug)]
pub struct BinaryOp {
    dims: [usize; 4],
    sa: [usize; 4],
    sb: [usize; 4],
    op: Binary,
    pre_b: (u32, f32, f32),
    post: (u32, f32, f32),
}

impl BinaryOp {
    fn n(&self) -> usize {
        self.dims.iter().product()
    }
    fn vec4_ok(&self) -> bool {
        let [d0, d1, d2, d3] = self.dims;
        (d3 % 4 == 0 || d0 * d1 * d2 == 1) && self.sa[3] <= 1 && self.sb[3] <= 1
    }
}

impl Kernel for BinaryOp {
    fn label(&self) -> &'static str {
        "binary"
    }
    fn shader(&self) -> Shader {
        if self.vec4_ok() {
            BINARY_VEC4
        } else {
            BINARY
        }
    }
    fn params(&self) -> Params {
        let [_, d1, d2, d3] = self.dims;
        let mut p = Params::new().u(self.n()).u(d1).u(d2).u(d3);
        for s in self.sa.iter().chain(&self.sb) {
            p = p.u(*s);
        }
        let (pc, p0, p1) = self.pre_b;
        let (qc, q0, q1) = self.post;
        p.u(self.op.code() as usize).u(pc as usize).f(p0).f(p1).u(qc as usize).f(q0).f(q1)
    }
    fn workgroups(&self) -> [u32; 3] {
        let threads = if self.vec4_ok() { self.n().div_ceil(4) } else { self.n() };
        grid_1d(threads.div_ceil(WG))
    }
    /// The CPU backend: row by row, `pre_b(b)` over the row first (GELU vectorised), then the
    /// op chosen once per call so each loop vectorises; strided inner reads go to the twin.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&super::Prepared>) {
        let (a, b) = (inputs[0], inputs[1]);
        let [d0, d1, d2, d3] = self.dims;
        let (sa, sb) = (self.sa, self.sb);
        if sa[3] > 1 || sb[3] > 1 {
            return self.cpu(inputs, outputs);
        }
        let slope = inputs[2].first().copied().unwrap_or(0.0);
        let width = d3.max(1);
        // Rows `first ..` of the output (flat row index over d0 × d1 × d2) into `rows`.
        let run = |first: usize, rows: &mut [f32]| {
            super::with_scratch([d3], |[b_row]| {
                for (r, row) in rows.chunks_exact_mut(width).enumerate() {
                    let flat = first + r;
                    let (i0, i1, i2) = (flat / (d1 * d2), flat / d2 % d1, flat % d2);
                    let ra = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                    let rb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                    if sb[3] == 1 {
                        b_row.copy_from_slice(&b[rb..rb + d3]);
                    } else {
                        b_row.fill(b[rb]);
                    }
                    match self.pre_b.0 {
                        0 => {}
                        5 => vmath::gelu_in_place(b_row),
                        _ => b_row.iter_mut().for_each(|v| *v = apply_unary(*v, self.pre_b, slope)),
                    }
                    if sa[3] == 1 {
                        binary_rows(self.op, row, &a[ra..ra + d3], b_row);
                    } else {
                        row.fill(a[ra]);
                        binary_rows(self.op, row, &[], b_row);
                    }
                    if self.post.0 != 0 {
                        row.iter_mut().for_each(|v| *v = apply_unary(*v, self.post, slope));
                    }
                }
            })
        };
        let out = &mut outputs[0][..d0 * d1 * d2 * d3];
        if out.len() < PARALLEL_MIN_VALUES || d3 == 0 {
            return run(0, out);
        }
        // Large tensors: runs of rows over the pool.
        let rows_per_task = PARALLEL_MIN_VALUES.div_ceil(width);
        super::pool::for_each_chunk(out, rows_per_task * width, |t, rows| run(t * rows_per_task, rows));
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (a, b) = (inputs[0], inputs[1]);
        let slope = inputs[2].first().copied().unwrap_or(0.0);
        let out = &mut outputs[0];
        let [d0, d1, d2, d3] = self.dims;
        let (sa, sb) = (self.sa, self.sb);
        let mut i = 0;
        for i0 in 0..d0 {
            for i1 in 0..d1 {
                for i2 in 0..d2 {
                    let ra = i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                    let rb = i0 * sb[0] + i1 * sb[1] + i2 * sb[2];
                    for i3 in 0..d3 {
                        let bv = apply_unary(b[rb + i3 * sb[3]], self.pre_b, slope);
                        let v = self.op.apply(a[ra + i3 * sa[3]], bv);
                        out[i] = apply_unary(v, self.post, slope);
                        i += 1;
                    }
                }
            }
        }
    }
}

fn check_slope(g: &Graph, f: Unary) -> Result<()> {
    if let Some(s) = f.slope() {
        if g.shape(s).iter().product::<usize>() != 1 {
            return Err(Error::Graph(format!("PReLU slope of shape {:?}; one slope expected", g.shape(s))));
        }
    }
    Ok(())
}

/// `f(x)` elementwise; output has the shape of `x`.
pub fn unary(g: &mut Graph, x: TensorId, f: Unary) -> Result<TensorId> {
    check_slope(g, f)?;
    let shape = g.shape(x).to_vec();
    let n = shape.iter().product();
    Ok(g.push1(UnaryOp { n, f: f.code() }, &[Some(x), f.slope()], shape))
}

pub fn relu(g: &mut Graph, x: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Relu)
}
pub fn sigmoid(g: &mut Graph, x: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Sigmoid)
}
pub fn tanh(g: &mut Graph, x: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Tanh)
}
pub fn gelu(g: &mut Graph, x: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Gelu)
}
/// PReLU with the 1-element learnt `slope` tensor.
pub fn prelu(g: &mut Graph, x: TensorId, slope: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Prelu(slope))
}
/// DAB-DETR `inverse_sigmoid(x, eps)` (eps 1e-3 in all four models).
pub fn inverse_sigmoid(g: &mut Graph, x: TensorId, eps: f32) -> Result<TensorId> {
    unary(g, x, Unary::InverseSigmoid { eps })
}
/// `scale · x + shift`.
pub fn scale_shift(g: &mut Graph, x: TensorId, scale: f32, shift: f32) -> Result<TensorId> {
    unary(g, x, Unary::ScaleShift { scale, shift })
}
pub fn exp(g: &mut Graph, x: TensorId) -> Result<TensorId> {
    unary(g, x, Unary::Exp)
}

/// NumPy broadcasting of two shapes: the output shape and each operand's element strides over
/// the output dims (0 on broadcast dims).
fn broadcast(a: &[usize], b: &[usize]) -> Option<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = Vec::with_capacity(rank);
    for (&x, &y) in pa.iter().zip(&pb) {
        out.push(match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => return None,
        });
    }
    let strides = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; rank];
        let mut acc = 1;
        for k in (0..rank).rev() {
            st[k] = if s[k] == 1 { 0 } else { acc };
            acc *= s[k];
        }
        st
    };
    Some((out.clone(), strides(&pa), strides(&pb)))
}

/// Drops size-1 dims and merges neighbours that both operands walk contiguously, so that most
/// cases become rank ≤ 2 (and vec4-friendly); `None` if more than 4 dims remain.
fn collapse(dims: &[usize], sa: &[usize], sb: &[usize]) -> Option<([usize; 4], [usize; 4], [usize; 4])> {
    let mut d: Vec<usize> = Vec::new();
    let mut a: Vec<usize> = Vec::new();
    let mut b: Vec<usize> = Vec::new();
    for k in 0..dims.len() {
        if dims[k] == 1 {
            continue;
        }
        if let (Some(&dl), Some(&al), Some(&bl)) = (d.last(), a.last(), b.last()) {
            if al == sa[k] * dims[k] && bl == sb[k] * dims[k] {
                *d.last_mut().unwrap() = dl * dims[k];
                *a.last_mut().unwrap() = sa[k];
                *b.last_mut().unwrap() = sb[k];
                continue;
            }
        }
        d.push(dims[k]);
        a.push(sa[k]);
        b.push(sb[k]);
    }
    if d.len() > 4 {
        return None;
    }
    let fill = |v: &[usize], one: usize| -> [usize; 4] {
        let mut r = [one; 4];
        r[4 - v.len()..].copy_from_slice(v);
        r
    };
    Some((fill(&d, 1), fill(&a, 0), fill(&b, 0)))
}

/// `post(op(a, pre_b(b)))` elementwise with NumPy broadcasting (shapes right-aligned, size-1
/// dims stretched), in one dispatch. E.g. DAB refinement `sigmoid(t + inverse_sigmoid(r))` is
/// `binary_fused(g, Binary::Add, t, r, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)`.
/// `pre_b` cannot be a PReLU. Any ranks whose broadcast collapses to ≤ 4 dims.
pub fn binary_fused(
    g: &mut Graph,
    op: Binary,
    a: TensorId,
    b: TensorId,
    pre_b: Unary,
    post: Unary,
) -> Result<TensorId> {
    let (sa_shape, sb_shape) = (g.shape(a).to_vec(), g.shape(b).to_vec());
    let Some((out, sa, sb)) = broadcast(&sa_shape, &sb_shape) else {
        return Err(Error::Graph(format!("{op:?}: shapes {sa_shape:?} and {sb_shape:?} do not broadcast")));
    };
    let Some((dims, sa, sb)) = collapse(&out, &sa, &sb) else {
        return Err(Error::Graph(format!(
            "{op:?}: broadcasting {sa_shape:?} with {sb_shape:?} needs more than 4 dims after merging"
        )));
    };
    if pre_b.slope().is_some() {
        return Err(Error::Graph(format!("{op:?}: PReLU is only supported after the operator")));
    }
    check_slope(g, post)?;
    let kernel = BinaryOp { dims, sa, sb, op, pre_b: pre_b.code(), post: post.code() };
    Ok(g.push1(kernel, &[Some(a), Some(b), post.slope()], out))
}

/// `op(a, b)` elementwise with NumPy broadcasting.
pub fn binary(g: &mut Graph, op: Binary, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary_fused(g, op, a, b, Unary::Identity, Unary::Identity)
}
pub fn add(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Add, a, b)
}
pub fn sub(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Sub, a, b)
}
pub fn mul(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Mul, a, b)
}
pub fn div(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Div, a, b)
}
pub fn maximum(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Max, a, b)
}
pub fn minimum(g: &mut Graph, a: TensorId, b: TensorId) -> Result<TensorId> {
    binary(g, Binary::Min, a, b)
}
