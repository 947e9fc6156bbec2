//! Reductions over one axis (sum, mean, max, min, argmax), non-overlapping window pooling along an
//! axis (`max_pool1d` with kernel = stride, e.g. SG-DETR's level masks), and top-k over the last
//! axis (SG-DETR's query selection).
//! WGSL: `shaders/reduce_row.wgsl` (contiguous windows of ≥ 64 values: one workgroup per output,
//! tree in workgroup memory), `shaders/reduce_col.wgsl` (strided or short windows: one thread per
//! output) and `shaders/reduce_topk.wgsl`.
//!
//! Rules shared by GPU and CPU: max / min / argmax ignore NaN; argmax ties go to the lowest index
//! and a window with nothing above −∞ gives index 0 (max −∞); index outputs are f32 holding
//! integers. Top-k sorts descending with ties to the lower index (a stable sort), NaN ranking as
//! −∞.

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const THREADS: usize = 256;
/// Contiguous windows at least this long use the workgroup-tree kernel.
const ROW_KERNEL_MIN_WINDOW: usize = 64;

const ROW: Shader =
    Shader { name: "reduce_row", source: include_str!("../../shaders/reduce_row.wgsl"), entry: "reduce_row" };
const COL: Shader =
    Shader { name: "reduce_col", source: include_str!("../../shaders/reduce_col.wgsl"), entry: "reduce_col" };
const TOPK: Shader =
    Shader { name: "reduce_topk", source: include_str!("../../shaders/reduce_topk.wgsl"), entry: "topk" };

/// What a reduction computes over each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    /// Index (within the window) of the largest value, as f32; ties → lowest index.
    Argmax,
}

impl ReduceOp {
    fn code(self) -> usize {
        match self {
            ReduceOp::Sum => 0,
            ReduceOp::Mean => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
            ReduceOp::Argmax => 4,
        }
    }
    fn label(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Mean => "reduce_mean",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
            ReduceOp::Argmax => "argmax",
        }
    }
}

/// `x` viewed as `(outer, axis, inner)`; `y[o, w, i] = op(x[o, w·window .. (w+1)·window, i])`
/// for `w < axis / window`.
#[derive(Clone, Debug)]
pub struct Reduce {
    outer: usize,
    axis: usize,
    inner: usize,
    window: usize,
    op: ReduceOp,
}

impl Reduce {
    fn n_win(&self) -> usize {
        self.axis / self.window
    }
    fn total(&self) -> usize {
        self.outer * self.n_win() * self.inner
    }
    fn row_kernel(&self) -> bool {
        self.inner == 1 && self.window >= ROW_KERNEL_MIN_WINDOW
    }
}

impl Kernel for Reduce {
    fn label(&self) -> &'static str {
        self.op.label()
    }
    fn shader(&self) -> Shader {
        if self.row_kernel() {
            ROW
        } else {
            COL
        }
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.total())
            .u(self.axis)
            .u(self.inner)
            .u(self.window)
            .u(self.n_win())
            .u(self.op.code())
            .f(f32::NEG_INFINITY)
    }
    fn workgroups(&self) -> [u32; 3] {
        if self.row_kernel() {
            grid_1d(self.total())
        } else {
            grid_1d(self.total().div_ceil(THREADS))
        }
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let x = inputs[0];
        let y = &mut outputs[0];
        let (inner, window, n_win) = (self.inner, self.window, self.n_win());
        for (out, slot) in y.iter_mut().enumerate() {
            let i = out % inner;
            let ow = out / inner;
            let base = ((ow / n_win) * self.axis + (ow % n_win) * window) * inner + i;
            let values = (0..window).map(|j| x[base + j * inner]);
            *slot = match self.op {
                // f64 accumulation: the oracle is more exact than either GPU summation order.
                ReduceOp::Sum => values.map(f64::from).sum::<f64>() as f32,
                ReduceOp::Mean => (values.map(f64::from).sum::<f64>() / window as f64) as f32,
                ReduceOp::Max => values.fold(f32::NEG_INFINITY, |a, v| if v > a { v } else { a }),
                ReduceOp::Min => values.fold(f32::INFINITY, |a, v| if v < a { v } else { a }),
                ReduceOp::Argmax => argmax_of(values) as f32,
            };
        }
    }
}

/// Index of the first largest value (NaN ignored; 0 when nothing is above −∞).
pub fn argmax_of(values: impl IntoIterator<Item = f32>) -> usize {
    let (mut best, mut at) = (f32::NEG_INFINITY, 0);
    for (j, v) in values.into_iter().enumerate() {
        if v > best {
            best = v;
            at = j;
        }
    }
    at
}

fn view(g: &Graph, what: &str, x: TensorId, axis: usize) -> Result<(Vec<usize>, usize, usize, usize)> {
    let shape = g.shape(x).to_vec();
    if axis >= shape.len() {
        return Err(Error::Graph(format!("{what}: axis {axis} out of range for a tensor of shape {shape:?}")));
    }
    if shape[axis] == 0 {
        return Err(Error::Graph(format!("{what}: reduction over an empty axis (shape {shape:?})")));
    }
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    let n = shape[axis];
    Ok((shape, outer, n, inner))
}

/// Reduces `axis` away (`torch.sum(x, axis)` etc.; a rank-1 input gives shape `[1]`).
pub fn reduce(g: &mut Graph, x: TensorId, axis: usize, op: ReduceOp) -> Result<TensorId> {
    let (shape, outer, n, inner) = view(g, op.label(), x, axis)?;
    let mut out = shape;
    out.remove(axis);
    if out.is_empty() {
        out.push(1);
    }
    Ok(g.push1(Reduce { outer, axis: n, inner, window: n, op }, &[Some(x)], out))
}

pub fn sum(g: &mut Graph, x: TensorId, axis: usize) -> Result<TensorId> {
    reduce(g, x, axis, ReduceOp::Sum)
}
pub fn mean(g: &mut Graph, x: TensorId, axis: usize) -> Result<TensorId> {
    reduce(g, x, axis, ReduceOp::Mean)
}
pub fn max(g: &mut Graph, x: TensorId, axis: usize) -> Result<TensorId> {
    reduce(g, x, axis, ReduceOp::Max)
}
pub fn min(g: &mut Graph, x: TensorId, axis: usize) -> Result<TensorId> {
    reduce(g, x, axis, ReduceOp::Min)
}
/// Index of the largest value along `axis` (f32), ties → lowest index.
pub fn argmax(g: &mut Graph, x: TensorId, axis: usize) -> Result<TensorId> {
    reduce(g, x, axis, ReduceOp::Argmax)
}

/// Non-overlapping windows along `axis`: the axis becomes `⌊n / window⌋` long and each value is
/// `op` over `window` consecutive elements (trailing elements that fill no window are dropped,
/// as `max_pool1d(kernel = stride = window)` does). With `ReduceOp::Argmax` the index is within
/// the window.
pub fn pool1d(g: &mut Graph, x: TensorId, axis: usize, window: usize, op: ReduceOp) -> Result<TensorId> {
    let (shape, outer, n, inner) = view(g, "pool1d", x, axis)?;
    if window == 0 || window > n {
        return Err(Error::Graph(format!("pool1d: window {window} along axis {axis} of shape {shape:?}")));
    }
    let mut out = shape;
    out[axis] = n / window;
    Ok(g.push1(Reduce { outer, axis: n, inner, window, op }, &[Some(x)], out))
}

/// Top-k over the last axis of each row.
#[derive(Clone, Debug)]
pub struct TopK {
    rows: usize,
    n: usize,
    k: usize,
}

impl Kernel for TopK {
    fn label(&self) -> &'static str {
        "topk"
    }
    fn shader(&self) -> Shader {
        TOPK
    }
    fn params(&self) -> Params {
        Params::new().u(self.rows).u(self.n).u(self.k).f(f32::NEG_INFINITY)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.rows)
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let x = inputs[0];
        let [values, indices] = outputs else { unreachable!("topk has two outputs") };
        let mut order: Vec<usize> = Vec::with_capacity(self.n);
        for r in 0..self.rows {
            let row = &x[r * self.n..(r + 1) * self.n];
            order.clear();
            order.extend(0..self.n);
            top_k_order(row, self.k, &mut order);
            for (j, &i) in order[..self.k].iter().enumerate() {
                values[r * self.k + j] = row[i];
                indices[r * self.k + j] = i as f32;
            }
        }
    }
}

/// Reorders `order` (indices into `row`) so that its first `k` entries are the top-k in
/// descending value order, ties → lower index, NaN ranking as −∞.
fn top_k_order(row: &[f32], k: usize, order: &mut [usize]) {
    let key = |i: usize| if row[i].is_nan() { f32::NEG_INFINITY } else { row[i] };
    // Keys hold no NaN, so partial_cmp is total (and treats −0 == +0 like the GPU).
    let cmp = |a: &usize, b: &usize| key(*b).partial_cmp(&key(*a)).unwrap().then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k, cmp);
    }
    order[..k].sort_unstable_by(cmp);
}

/// Indices of the `k` largest values of `row`, best first, ties → lower index (CPU, plain
/// slices; the same order as the [`topk`] kernel).
pub fn top_k_indices(row: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(row.len());
    let mut order: Vec<usize> = (0..row.len()).collect();
    top_k_order(row, k, &mut order);
    order.truncate(k);
    order
}

/// `torch.topk(x, k, dim=-1)` with a deterministic order: returns `(values, indices)`, each of
/// shape `(…, k)`, sorted descending, ties → lower index first; indices are f32. `k` must be in
/// `1..=n` (PyTorch raises for k > n as well).
pub fn topk(g: &mut Graph, x: TensorId, k: usize) -> Result<(TensorId, TensorId)> {
    let shape = g.shape(x).to_vec();
    let Some(&n) = shape.last() else {
        return Err(Error::Graph("topk of a rank-0 tensor".into()));
    };
    if k == 0 || k > n {
        return Err(Error::Graph(format!("topk: k = {k} for rows of {n} values (shape {shape:?})")));
    }
    let rows = shape[..shape.len() - 1].iter().product();
    let mut out = shape.clone();
    *out.last_mut().unwrap() = k;
    let ids = g.push(TopK { rows, n, k }, &[Some(x)], &[out.clone(), out]);
    Ok((ids[0], ids[1]))
}
