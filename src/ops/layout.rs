//! Data movement: concat (with broadcasting), broadcast_to, slice (with step), select, pad,
//! permute / transpose, repeat_interleave and row gather. (A reshape is free: `Graph::reshape`.)
//! WGSL: `shaders/layout_copy.wgsl` (one strided-copy kernel behind every single-input layout op),
//! `shaders/layout_concat.wgsl` (up to 6 inputs per dispatch) and `shaders/layout_gather.wgsl`.
//!
//! Every op here writes a new dense tensor in one dispatch; models should prefer builders that
//! already produce the shape they need (`select` drops the selected axis, `concat` broadcasts
//! size-1 dims, …).

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const THREADS: usize = 256;
/// Dims of the kernels' internal view; tensors of higher rank work when their dims merge down.
const VIEW_RANK: usize = 4;
/// Inputs of one concat dispatch: 6 inputs + 1 output stay within 8 storage buffers.
pub const MAX_CONCAT_PARTS: usize = 6;

const COPY: Shader =
    Shader { name: "layout_copy", source: include_str!("../../shaders/layout_copy.wgsl"), entry: "copy" };
const CONCAT: Shader =
    Shader { name: "layout_concat", source: include_str!("../../shaders/layout_concat.wgsl"), entry: "concat" };
const GATHER: Shader =
    Shader { name: "layout_gather", source: include_str!("../../shaders/layout_gather.wgsl"), entry: "gather_rows" };

fn err<T>(msg: String) -> Result<T> {
    Err(Error::Graph(msg))
}

fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Strided copy
// ---------------------------------------------------------------------------------------------

/// One output dim of a strided copy: coordinates `lo <= c < hi` read source coordinate
/// `(c - lo) / div` at `stride`; others give 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dim {
    size: usize,
    stride: usize,
    lo: usize,
    hi: usize,
    div: usize,
}

impl Dim {
    fn plain(size: usize, stride: usize) -> Dim {
        Dim { size, stride, lo: 0, hi: size, div: 1 }
    }
    fn is_plain(&self) -> bool {
        self.lo == 0 && self.hi == self.size && self.div == 1
    }
}

/// `y = x` read through per-dim strides, offsets, zero-fill ranges and repeat divisors.
#[derive(Clone, Debug)]
pub struct StridedCopy {
    label: &'static str,
    total: usize,
    base: usize,
    dims: [Dim; VIEW_RANK],
}

impl StridedCopy {
    /// Merges adjacent plain dims that are contiguous in the source, drops plain size-1 dims and
    /// pads to 4 dims; fails when more than 4 remain.
    fn new(label: &'static str, base: usize, dims: Vec<Dim>) -> Result<StridedCopy> {
        let total = dims.iter().map(|d| d.size).product();
        let mut merged: Vec<Dim> = Vec::new();
        for d in dims {
            if d.size == 1 && d.is_plain() {
                continue;
            }
            if let Some(last) = merged.last_mut() {
                if last.is_plain() && d.is_plain() && last.stride == d.stride * d.size {
                    *last = Dim::plain(last.size * d.size, d.stride);
                    continue;
                }
            }
            merged.push(d);
        }
        if merged.len() > VIEW_RANK {
            return err(format!(
                "{label}: the access pattern needs {} dims after merging; at most 4 are supported",
                merged.len()
            ));
        }
        let mut all = [Dim::plain(1, 0); VIEW_RANK];
        all[VIEW_RANK - merged.len()..].copy_from_slice(&merged);
        Ok(StridedCopy { label, total, base, dims: all })
    }
}

impl Kernel for StridedCopy {
    fn label(&self) -> &'static str {
        self.label
    }
    fn shader(&self) -> Shader {
        COPY
    }
    fn params(&self) -> Params {
        let mut p = Params::new().u(self.total).u(self.base);
        for d in &self.dims {
            p = p.u(d.size).u(d.stride).u(d.lo).u(d.hi).u(d.div);
        }
        p
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.total.div_ceil(THREADS))
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let x = inputs[0];
        let y = &mut outputs[0];
        let [d0, d1, d2, d3] = self.dims;
        // Source offset of a coordinate along one dim, None when it falls in the zero fill.
        let off = |d: &Dim, c: usize| (c >= d.lo && c < d.hi).then(|| (c - d.lo) / d.div * d.stride);
        let mut i = 0;
        for c0 in 0..d0.size {
            let o0 = off(&d0, c0);
            for c1 in 0..d1.size {
                let o1 = off(&d1, c1);
                for c2 in 0..d2.size {
                    let o2 = off(&d2, c2);
                    for c3 in 0..d3.size {
                        y[i] = match (o0, o1, o2, off(&d3, c3)) {
                            (Some(a), Some(b), Some(c), Some(d)) => x[self.base + a + b + c + d],
                            _ => 0.0,
                        };
                        i += 1;
                    }
                }
            }
        }
    }
}

fn check_axis(what: &str, shape: &[usize], axis: usize) -> Result<()> {
    if axis >= shape.len() {
        return err(format!("{what}: axis {axis} out of range for a tensor of shape {shape:?}"));
    }
    Ok(())
}

/// Source dims of `shape` read straight through (the identity view).
fn identity_dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().zip(strides_of(shape)).map(|(&n, s)| Dim::plain(n, s)).collect()
}

/// `x[..., start + i·step, ...]` for `i < len` along `axis` (the axis keeps length `len`).
pub fn slice_step(g: &mut Graph, x: TensorId, axis: usize, start: usize, len: usize, step: usize) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    check_axis("slice", &shape, axis)?;
    if len == 0 || step == 0 || start + (len - 1) * step >= shape[axis] {
        return err(format!(
            "slice of {len} elements from {start} with step {step} along axis {axis} of shape {shape:?} is empty or out of range"
        ));
    }
    let mut dims = identity_dims(&shape);
    let base = start * dims[axis].stride;
    dims[axis] = Dim::plain(len, dims[axis].stride * step);
    let mut out = shape.clone();
    out[axis] = len;
    let op = StridedCopy::new("slice", base, dims)?;
    Ok(g.push1(op, &[Some(x)], out))
}

/// `x[..., start .. start + len, ...]` along `axis`.
pub fn slice(g: &mut Graph, x: TensorId, axis: usize, start: usize, len: usize) -> Result<TensorId> {
    slice_step(g, x, axis, start, len, 1)
}

/// `x[..., index, ...]` along `axis`, with that axis removed (PyTorch `x.select(axis, index)`,
/// e.g. `x[:, 0]`). A rank-1 input gives shape `[1]`.
pub fn select(g: &mut Graph, x: TensorId, axis: usize, index: usize) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    check_axis("select", &shape, axis)?;
    if index >= shape[axis] {
        return err(format!("select: index {index} out of range along axis {axis} of shape {shape:?}"));
    }
    let mut dims = identity_dims(&shape);
    let base = index * dims[axis].stride;
    dims.remove(axis);
    let mut out = shape.clone();
    out.remove(axis);
    if out.is_empty() {
        out.push(1);
    }
    let op = StridedCopy::new("select", base, dims)?;
    Ok(g.push1(op, &[Some(x)], out))
}

/// Zero padding along `axis`: `before` zero rows, then `x`, then `after` zero rows.
pub fn pad(g: &mut Graph, x: TensorId, axis: usize, before: usize, after: usize) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    check_axis("pad", &shape, axis)?;
    let mut dims = identity_dims(&shape);
    let n = shape[axis];
    dims[axis] = Dim { size: before + n + after, stride: dims[axis].stride, lo: before, hi: before + n, div: 1 };
    let mut out = shape.clone();
    out[axis] = before + n + after;
    let op = StridedCopy::new("pad", 0, dims)?;
    Ok(g.push1(op, &[Some(x)], out))
}

/// PyTorch `x.permute(perm)`: output dim `i` is input dim `perm[i]`.
pub fn permute(g: &mut Graph, x: TensorId, perm: &[usize]) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    let mut seen = vec![false; shape.len()];
    if perm.len() != shape.len() || perm.iter().any(|&a| a >= shape.len() || std::mem::replace(&mut seen[a], true)) {
        return err(format!("permute: {perm:?} is not a permutation of the dims of shape {shape:?}"));
    }
    let src = identity_dims(&shape);
    let dims = perm.iter().map(|&a| src[a]).collect();
    let out = perm.iter().map(|&a| shape[a]).collect();
    let op = StridedCopy::new("permute", 0, dims)?;
    Ok(g.push1(op, &[Some(x)], out))
}

/// Swaps two dims (PyTorch `x.transpose(a, b)`).
pub fn transpose(g: &mut Graph, x: TensorId, a: usize, b: usize) -> Result<TensorId> {
    let rank = g.shape(x).len();
    if a >= rank || b >= rank {
        return err(format!("transpose({a}, {b}) of a rank-{rank} tensor"));
    }
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.swap(a, b);
    permute(g, x, &perm)
}

/// PyTorch `x.repeat_interleave(repeats, axis)` (e.g. nearest ×2 up-sampling along time).
pub fn repeat_interleave(g: &mut Graph, x: TensorId, axis: usize, repeats: usize) -> Result<TensorId> {
    let shape = g.shape(x).to_vec();
    check_axis("repeat_interleave", &shape, axis)?;
    if repeats == 0 {
        return err("repeat_interleave: 0 repeats".into());
    }
    let mut dims = identity_dims(&shape);
    let n = shape[axis] * repeats;
    dims[axis] = Dim { size: n, stride: dims[axis].stride, lo: 0, hi: n, div: repeats };
    let mut out = shape.clone();
    out[axis] = n;
    let op = StridedCopy::new("repeat_interleave", 0, dims)?;
    Ok(g.push1(op, &[Some(x)], out))
}

/// NumPy-style broadcast of `x` to `shape`: leading dims may be added, and size-1 dims repeat
/// (e.g. learnt query anchors `(Q, 2)` → `(B, Q, 2)`).
pub fn broadcast_to(g: &mut Graph, x: TensorId, shape: &[usize]) -> Result<TensorId> {
    let xs = g.shape(x).to_vec();
    if xs.len() > shape.len() {
        return err(format!("broadcast_to: cannot broadcast {xs:?} to lower-rank {shape:?}"));
    }
    let lead = shape.len() - xs.len();
    let strides = strides_of(&xs);
    let mut dims = Vec::with_capacity(shape.len());
    for (i, &n) in shape.iter().enumerate() {
        let stride = if i < lead {
            0
        } else if xs[i - lead] == n {
            strides[i - lead]
        } else if xs[i - lead] == 1 {
            0
        } else {
            return err(format!("broadcast_to: cannot broadcast {xs:?} to {shape:?}"));
        };
        dims.push(Dim::plain(n, stride));
    }
    let op = StridedCopy::new("broadcast_to", 0, dims)?;
    Ok(g.push1(op, &[Some(x)], shape.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// Concat
// ---------------------------------------------------------------------------------------------

/// One dispatch of `cat(parts, axis)` over the 4-dim view; part k covers `ends[k-1]..ends[k]`
/// along `axis` and is read with `strides[k]` (0 on broadcast dims).
#[derive(Clone, Debug)]
pub struct Concat {
    out: [usize; VIEW_RANK],
    axis: usize,
    ends: Vec<usize>,
    strides: Vec<[usize; VIEW_RANK]>,
}

impl Concat {
    fn offset(&self, k: usize) -> usize {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        start * self.strides[k][self.axis]
    }
}

impl Kernel for Concat {
    fn label(&self) -> &'static str {
        "concat"
    }
    fn shader(&self) -> Shader {
        CONCAT
    }
    fn params(&self) -> Params {
        let total: usize = self.out.iter().product();
        let mut p = Params::new().u(total).u(self.out[1]).u(self.out[2]).u(self.out[3]).u(self.axis);
        let len = self.out[self.axis];
        for k in 0..MAX_CONCAT_PARTS {
            if k < self.ends.len() {
                let s = self.strides[k];
                p = p.u(self.ends[k]).u(self.offset(k)).u(s[0]).u(s[1]).u(s[2]).u(s[3]);
            } else {
                p = p.u(len).u(0).u(0).u(0).u(0).u(0);
            }
        }
        p
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.out.iter().product::<usize>().div_ceil(THREADS))
    }
    /// The CPU backend: row by row, each part's run along the last axis copied as a slice.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&super::Prepared>) {
        let y = &mut outputs[0];
        let [n0, n1, n2, n3] = self.out;
        let mut rows = y.chunks_exact_mut(n3.max(1));
        for c0 in 0..n0 {
            for c1 in 0..n1 {
                for c2 in 0..n2 {
                    let row = rows.next().expect("output holds every row");
                    let c = [c0, c1, c2, 0];
                    // The parts this row reads, as (part, first column, end column).
                    let mut start = 0;
                    for (k, &end) in self.ends.iter().enumerate() {
                        let (lo, hi) = if self.axis == 3 { (start, end) } else { (0, n3) };
                        if (self.axis == 3 && lo < hi) || (self.axis < 3 && (start..end).contains(&c[self.axis])) {
                            let s = self.strides[k];
                            let base = c0 * s[0] + c1 * s[1] + c2 * s[2] + lo * s[3] - self.offset(k);
                            let dst = &mut row[lo..hi];
                            if s[3] == 1 {
                                dst.copy_from_slice(&inputs[k][base..base + (hi - lo)]);
                            } else {
                                dst.iter_mut().enumerate().for_each(|(j, v)| *v = inputs[k][base + j * s[3]]);
                            }
                        }
                        start = end;
                    }
                }
            }
        }
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let y = &mut outputs[0];
        let [n0, n1, n2, n3] = self.out;
        let mut i = 0;
        for c0 in 0..n0 {
            for c1 in 0..n1 {
                for c2 in 0..n2 {
                    for c3 in 0..n3 {
                        let c = [c0, c1, c2, c3];
                        let k = self.ends.iter().position(|&e| c[self.axis] < e).unwrap();
                        let s = self.strides[k];
                        let at = c0 * s[0] + c1 * s[1] + c2 * s[2] + c3 * s[3] - self.offset(k);
                        y[i] = inputs[k][at];
                        i += 1;
                    }
                }
            }
        }
    }
}

/// `torch.cat(parts, axis)` with broadcasting: all parts have the same rank; on every other
/// axis a part's size is either the output size (the largest among the parts) or 1, and a size
/// of 1 is repeated (e.g. `[x (B,L,d), q (B,1,d)]` along axis 2 appends `q` to every clip; a
/// `(1,1,d)` token concatenated to `(B,L,d)` along axis 1 is shared by all samples). More than
/// 6 parts take several dispatches.
pub fn concat(g: &mut Graph, parts: &[TensorId], axis: usize) -> Result<TensorId> {
    if parts.is_empty() {
        return err("concat of no tensors".into());
    }
    let shapes: Vec<Vec<usize>> = parts.iter().map(|&t| g.shape(t).to_vec()).collect();
    let rank = shapes[0].len();
    if shapes.iter().any(|s| s.len() != rank) {
        return err(format!("concat: parts have different ranks: {shapes:?}"));
    }
    check_axis("concat", &shapes[0], axis)?;
    let mut out: Vec<usize> = (0..rank).map(|i| shapes.iter().map(|s| s[i]).max().unwrap()).collect();
    for s in &shapes {
        for i in (0..rank).filter(|&i| i != axis) {
            if s[i] != out[i] && s[i] != 1 {
                return err(format!(
                    "concat along axis {axis}: shapes {shapes:?} neither match nor broadcast on axis {i}"
                ));
            }
        }
    }
    out[axis] = shapes.iter().map(|s| s[axis]).sum();
    if parts.len() > MAX_CONCAT_PARTS {
        // Concatenation is associative: fold groups of 6 (broadcasting first, so every
        // intermediate already has the output's other dims).
        let mut merged = Vec::new();
        for chunk in parts.chunks(MAX_CONCAT_PARTS) {
            merged.push(concat_broadcast(g, chunk, axis, &out)?);
        }
        return concat(g, &merged, axis);
    }
    concat_broadcast(g, parts, axis, &out)
}

/// One dispatch: `parts` (≤ 6, checked by the caller) concatenated along `axis`, other dims
/// broadcast to `full[i]`.
fn concat_broadcast(g: &mut Graph, parts: &[TensorId], axis: usize, full: &[usize]) -> Result<TensorId> {
    let rank = full.len();
    let shapes: Vec<Vec<usize>> = parts.iter().map(|&t| g.shape(t).to_vec()).collect();
    let mut out = full.to_vec();
    out[axis] = shapes.iter().map(|s| s[axis]).sum();
    // Per part: strides over the output dims (0 where the part broadcasts).
    let strides: Vec<Vec<usize>> = shapes
        .iter()
        .map(|s| {
            let st = strides_of(s);
            (0..rank).map(|i| if s[i] == out[i] || i == axis { st[i] } else { 0 }).collect()
        })
        .collect();
    // Merge adjacent non-axis dims that every part reads contiguously.
    let mut dims: Vec<usize> = Vec::new();
    let mut part_strides: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
    let mut view_axis = 0;
    for i in 0..rank {
        if out[i] == 1 && i != axis {
            continue;
        }
        let last_is_axis = !dims.is_empty() && view_axis == dims.len() - 1 && i > axis;
        let mergeable = !dims.is_empty()
            && i != axis
            && !last_is_axis
            && strides.iter().zip(&part_strides).all(|(s, ps)| *ps.last().unwrap() == s[i] * out[i]);
        if mergeable {
            *dims.last_mut().unwrap() *= out[i];
            for (ps, s) in part_strides.iter_mut().zip(&strides) {
                *ps.last_mut().unwrap() = s[i];
            }
        } else {
            if i == axis {
                view_axis = dims.len();
            }
            dims.push(out[i]);
            for (ps, s) in part_strides.iter_mut().zip(&strides) {
                ps.push(s[i]);
            }
        }
    }
    if dims.len() > VIEW_RANK {
        return err(format!(
            "concat of {shapes:?} along axis {axis} needs {} dims after merging; at most 4",
            dims.len()
        ));
    }
    let lead = VIEW_RANK - dims.len();
    let mut view = [1usize; VIEW_RANK];
    view[lead..].copy_from_slice(&dims);
    let strides4 = part_strides
        .iter()
        .map(|ps| {
            let mut s = [0usize; VIEW_RANK];
            s[lead..].copy_from_slice(ps);
            s
        })
        .collect();
    let mut ends = Vec::new();
    let mut end = 0;
    for s in &shapes {
        end += s[axis];
        ends.push(end);
    }
    let op = Concat { out: view, axis: lead + view_axis, ends, strides: strides4 };
    let mut inputs: Vec<Option<TensorId>> = parts.iter().map(|&t| Some(t)).collect();
    inputs.resize(MAX_CONCAT_PARTS, None);
    Ok(g.push1(op, &inputs, out))
}

// ---------------------------------------------------------------------------------------------
// Row gather
// ---------------------------------------------------------------------------------------------

/// `y[b, k, :] = x[b, idx[b, k], :]`, zero rows for indices outside `[0, L)`.
#[derive(Clone, Debug)]
pub struct GatherRows {
    batch: usize,
    k: usize,
    d: usize,
    l: usize,
    x_batch: usize,
}

impl Kernel for GatherRows {
    fn label(&self) -> &'static str {
        "gather_rows"
    }
    fn shader(&self) -> Shader {
        GATHER
    }
    fn params(&self) -> Params {
        Params::new().u(self.batch * self.k * self.d).u(self.k).u(self.d).u(self.l).u(self.x_batch)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d((self.batch * self.k * self.d).div_ceil(THREADS))
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (x, idx) = (inputs[0], inputs[1]);
        let y = &mut outputs[0];
        for (row, out) in y.chunks_exact_mut(self.d).enumerate() {
            let j = idx[row];
            if j >= 0.0 && j < self.l as f32 {
                let at = (row / self.k) * self.x_batch + j as usize * self.d;
                out.copy_from_slice(&x[at..at + self.d]);
            } else {
                out.fill(0.0);
            }
        }
    }
}

/// Row gather along axis 1: `x (B, L, D)` (or `(1, L, D)` / `(L, D)`, shared by every sample)
/// and `idx (B, K)` f32 → `(B, K, D)` with `y[b, k] = x[b, idx[b, k]]`. An index outside
/// `[0, L)` or NaN gives a zero row (data-dependent slicing with zero fill, e.g. TR-DETR's MR2HD
/// rows); a fractional index is truncated toward zero. Top-k indices feed it directly.
pub fn gather_rows(g: &mut Graph, x: TensorId, idx: TensorId) -> Result<TensorId> {
    let xs = g.shape(x).to_vec();
    let is = g.shape(idx).to_vec();
    let [b, k] = is[..] else {
        return err(format!("gather_rows: indices must be (B, K), got {is:?}"));
    };
    let (xb, l, d) = match xs[..] {
        [l, d] => (1, l, d),
        [xb, l, d] => (xb, l, d),
        _ => return err(format!("gather_rows: x must be (B, L, D) or (L, D), got {xs:?}")),
    };
    if xb != b && xb != 1 {
        return err(format!("gather_rows: x {xs:?} has batch {xb}, indices {is:?} have batch {b}"));
    }
    let x_batch = if xb == 1 { 0 } else { l * d };
    let op = GatherRows { batch: b, k, d, l, x_batch };
    Ok(g.push1(op, &[Some(x), Some(idx)], vec![b, k, d]))
}
