//! Fused multi-head scaled-dot-product attention (online softmax, optional key-padding mask,
//! optional per-query gate) and the head-averaged attention weights.
//! WGSL: `shaders/attention.wgsl` (the fused kernel, also used by
//! [`crate::ops::gated_attention`]) and `shaders/attention_weights.wgsl` (the weights).
//!
//! Operands are column windows ([`Cols`]) of `(B, L, width)` tensors, so q, k and v can be read
//! straight out of one fused projection (e.g. PyTorch's packed `in_proj`) without a copy. Heads
//! are contiguous column slices of the window: head `h` of q/k is columns `[h·dk, (h+1)·dk)`, of v
//! `[h·dv, (h+1)·dv)`; the output is `(B, Lq, H·dv)` with the heads concatenated, i.e. what
//! PyTorch feeds to `out_proj`. `dk` and `dv` may differ (DAB-style decoder cross-attention:
//! dk = 64, dv = 32) and may be anything from 1 to 64.
//!
//! Masks are f32 `(B, Lk)`, a key is valid when its value is > 0.5. Masked keys are skipped.
//! **A query with no valid key gets an all-zero output row** (and all-zero weights); PyTorch
//! returns NaN there.

use super::gemm::{self, packed_len, Epilogue, PackedB};
use super::{grid_1d, sigmoid, vmath, Kernel, Params, Prepared, Shader, SharedOut};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

/// Lanes per workgroup of both kernels.
const LANES: usize = 64;
/// Capacity (in vec4s) of the fused kernel's K/V tile memory: 12 KiB, so that with the key flags
/// and merge statistics the kernel stays under the portable 16 KiB of workgroup memory.
const KV_VEC4: usize = 768;
/// Most keys staged per tile (size of the key-flag array).
const MAX_TILE: usize = 64;
// Workgroup memory of the fused kernel: 12 KiB of tiles + 256 B of key flags + 512 B of merge
// statistics, within the portable 16 KiB.
const _: () = assert!(KV_VEC4 * 16 + MAX_TILE * 4 + LANES * 8 <= 16 * 1024);
/// Largest supported head dimension (16 vec4 registers per lane for Q and for O).
pub const MAX_HEAD_DIM: usize = 64;

const FUSED: Shader =
    Shader { name: "attention", source: include_str!("../../shaders/attention.wgsl"), entry: "attention" };
const WEIGHTS: Shader = Shader {
    name: "attention_weights",
    source: include_str!("../../shaders/attention_weights.wgsl"),
    entry: "attention_weights",
};

/// Columns `[start, start + len)` of the last dimension of `tensor`, a `(B, L, width)` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cols {
    pub tensor: TensorId,
    pub start: usize,
    pub len: usize,
}

impl Cols {
    pub fn new(tensor: TensorId, start: usize, len: usize) -> Self {
        Cols { tensor, start, len }
    }

    /// Every column of `tensor`.
    pub fn all(g: &Graph, tensor: TensorId) -> Self {
        Cols { tensor, start: 0, len: g.shape(tensor).last().copied().unwrap_or(0) }
    }
}

/// Where a window lives: `(B, L, row stride)`, after checking it fits its tensor.
fn window(g: &Graph, what: &str, c: Cols) -> Result<[usize; 3]> {
    let s = g.shape(c.tensor);
    let [b, l, width] = *s else {
        return Err(Error::Graph(format!("attention: {what} must be a (B, L, width) tensor, got shape {s:?}")));
    };
    if c.len == 0 || c.start + c.len > width {
        return Err(Error::Graph(format!(
            "attention: {what} columns [{}, {}) do not fit a tensor of shape {s:?}",
            c.start,
            c.start + c.len
        )));
    }
    if b == 0 || l == 0 {
        return Err(Error::Graph(format!("attention: {what} of shape {s:?} is empty")));
    }
    Ok([b, l, width])
}

/// Head dims padded to the 4, 8 or 16 vec4 registers the kernel keeps per lane.
fn vec4_tier(d: usize) -> usize {
    match d {
        0..=16 => 4,
        17..=32 => 8,
        _ => 16,
    }
}

/// The fused kernel: one dispatch of `shaders/attention.wgsl`.
#[derive(Clone, Debug)]
pub(crate) struct FusedAttention {
    label: &'static str,
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    dk: usize,
    dv: usize,
    /// (row stride, first column) of q, k, v.
    q_win: [usize; 2],
    k_win: [usize; 2],
    v_win: [usize; 2],
    scale: f32,
    has_mask: bool,
    has_qmask: bool,
    has_gate: bool,
}

impl FusedAttention {
    fn dk4(&self) -> usize {
        vec4_tier(self.dk)
    }
    fn dv4(&self) -> usize {
        vec4_tier(self.dv)
    }
    /// Keys per K/V tile: as many as fit the tile memory, at most [`MAX_TILE`].
    fn tile_keys(&self) -> usize {
        (KV_VEC4 / (self.dk4() + self.dv4())).min(MAX_TILE)
    }
    /// Lanes per query (key splits): the most of 8, 4, 2, 1 that still fits all Lq queries into
    /// one workgroup, no more than the keys, and whose merge fits the tile memory. Few decoder
    /// queries thus spread each query over several lanes; many clip queries use one lane each.
    fn splits(&self) -> usize {
        let mut ks = 8;
        while ks > 1 && (LANES / ks < self.lq || ks > self.lk || (LANES / ks) * (ks - 1) * self.dv4() > KV_VEC4) {
            ks /= 2;
        }
        ks
    }
    fn q_tiles(&self) -> usize {
        self.lq.div_ceil(LANES / self.splits())
    }
}

impl Kernel for FusedAttention {
    fn label(&self) -> &'static str {
        self.label
    }
    fn shader(&self) -> Shader {
        FUSED
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.batch)
            .u(self.lq)
            .u(self.lk)
            .u(self.heads)
            .u(self.dk)
            .u(self.dv)
            .u(self.dk4())
            .u(self.dv4())
            .u(self.q_win[0])
            .u(self.q_win[1])
            .u(self.k_win[0])
            .u(self.k_win[1])
            .u(self.v_win[0])
            .u(self.v_win[1])
            .f(self.scale)
            .u(self.tile_keys())
            .u(self.splits())
            .u(self.q_tiles())
            .flag(self.has_mask)
            .flag(self.has_qmask)
            .flag(self.has_gate)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.batch * self.heads * self.q_tiles())
    }
    /// The CPU backend: per (sample, head), scores and the weighted sum of values are two
    /// GEMMs over that head's keys and values packed into scratch; heads run in parallel.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&Prepared>) {
        let out = SharedOut::new(outputs[0]);
        let heads = self.batch * self.heads;
        let work = heads * self.lq * self.lk * (self.dk + self.dv);
        if work < PARALLEL_MIN_WORK {
            (0..heads).for_each(|bh| self.head_fast(bh / self.heads, bh % self.heads, inputs, out));
        } else {
            super::pool::for_each(heads, |bh| self.head_fast(bh / self.heads, bh % self.heads, inputs, out));
        }
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (q, k, v, kmask, qmask, gate) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5]);
        let out = &mut outputs[0];
        let (h_n, dk, dv, lq, lk) = (self.heads, self.dk, self.dv, self.lq, self.lk);
        let mut probs = vec![0.0f32; lk];
        let mut qs = vec![0.0f32; dk];
        for b in 0..self.batch {
            for h in 0..h_n {
                let b2 = (b * h_n + h) % self.batch;
                for i in 0..lq {
                    let q_row = (b * lq + i) * self.q_win[0] + self.q_win[1] + h * dk;
                    for (x, &y) in qs.iter_mut().zip(&q[q_row..q_row + dk]) {
                        *x = y * self.scale;
                    }
                    let q_pad_b2 = self.has_qmask && qmask[b2 * lq + i] <= 0.5;
                    let mut max = f32::NEG_INFINITY;
                    for (j, p) in probs.iter_mut().enumerate() {
                        *p = f32::NEG_INFINITY;
                        if key_valid(self.has_mask, kmask, b, b2, lk, j, q_pad_b2) {
                            let k_row = (b * lk + j) * self.k_win[0] + self.k_win[1] + h * dk;
                            *p = qs.iter().zip(&k[k_row..k_row + dk]).map(|(a, c)| a * c).sum();
                            max = max.max(*p);
                        }
                    }
                    let o = &mut out[(b * lq + i) * h_n * dv + h * dv..][..dv];
                    o.fill(0.0);
                    if max == f32::NEG_INFINITY {
                        continue; // no valid key: zero row
                    }
                    let mut sum = 0.0f32;
                    for p in probs.iter_mut() {
                        *p = (*p - max).exp(); // exp(-inf) = 0 for masked keys
                        sum += *p;
                    }
                    for (j, &p) in probs.iter().enumerate() {
                        if p != 0.0 {
                            let v_row = (b * lk + j) * self.v_win[0] + self.v_win[1] + h * dv;
                            for (acc, &x) in o.iter_mut().zip(&v[v_row..v_row + dv]) {
                                *acc += p * x;
                            }
                        }
                    }
                    let g = if self.has_gate { sigmoid(gate[b * lq + i]) } else { 1.0 };
                    for acc in o.iter_mut() {
                        *acc = *acc / sum * g;
                    }
                }
            }
        }
    }
}

/// Below this many multiply-adds an attention stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

impl FusedAttention {
    /// Head `h` of sample `b` into its columns of `out`: what [`Kernel::cpu`] computes, by GEMMs.
    fn head_fast(&self, b: usize, h: usize, inputs: &[&[f32]], out: SharedOut) {
        let (q, k, v, kmask, qmask, gate) = (inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5]);
        let (h_n, dk, dv, lq, lk) = (self.heads, self.dk, self.dv, self.lq, self.lk);
        let b2 = (b * h_n + h) % self.batch;
        let lens = [packed_len(dk, lk), lq * lk, packed_len(lk, dv), lq * dv, 2 * lk];
        super::with_scratch(lens, |[k_buf, scores, v_buf, o, key_bias]| {
            let key_at = |j: usize| (b * lk + j) * self.k_win[0] + self.k_win[1] + h * dk;
            let keys = PackedB::pack_columns_into(k_buf, dk, lk, |j| &k[key_at(j)..key_at(j) + dk]);
            let q0 = b * lq * self.q_win[0] + self.q_win[1] + h * dk;
            gemm::gemm(lq, &q[q0..], self.q_win[0], &keys, scores, &Epilogue::NONE);
            // The key mask as 0 / -inf added to the scores: one row for queries that are not
            // padded, one for those whose crossed sample b2 is (see `key_valid`).
            let (plain, crossed) = key_bias.split_at_mut(lk);
            for j in 0..lk {
                let bias = |valid: bool| if valid { 0.0 } else { f32::NEG_INFINITY };
                plain[j] = bias(key_valid(self.has_mask, kmask, b, b2, lk, j, false));
                crossed[j] = bias(key_valid(self.has_mask, kmask, b, b2, lk, j, true));
            }
            // Masked softmax per query row; 1/sum and the gate fold into the probabilities.
            for (i, row) in scores.chunks_exact_mut(lk).enumerate() {
                let q_pad_b2 = self.has_qmask && qmask[b2 * lq + i] <= 0.5;
                let g = if self.has_gate { sigmoid(gate[b * lq + i]) } else { 1.0 };
                vmath::softmax_row(row, if q_pad_b2 { crossed } else { plain }, self.scale, g);
            }
            let value_at = |j: usize| (b * lk + j) * self.v_win[0] + self.v_win[1] + h * dv;
            let values = PackedB::pack_rows_into(v_buf, lk, dv, |j| &v[value_at(j)..value_at(j) + dv]);
            gemm::gemm(lq, scores, lk, &values, o, &Epilogue::NONE);
            for (i, o_row) in o.chunks_exact(dv).enumerate() {
                // SAFETY: (sample b, head h) owns these dv columns of each of its rows.
                unsafe { out.part((b * lq + i) * h_n * dv + h * dv, dv) }.copy_from_slice(o_row);
            }
        });
    }
}

/// Key `j` of sample `b` (head with crossed sample `b2`) takes part in the softmax.
fn key_valid(has_mask: bool, kmask: &[f32], b: usize, b2: usize, lk: usize, j: usize, q_pad_b2: bool) -> bool {
    !has_mask || (kmask[b * lk + j] > 0.5 && !(q_pad_b2 && kmask[b2 * lk + j] <= 0.5))
}

/// The head-averaged weights: one dispatch of `shaders/attention_weights.wgsl`.
#[derive(Clone, Debug)]
struct AttentionWeights {
    batch: usize,
    lq: usize,
    lk: usize,
    heads: usize,
    dk: usize,
    q_win: [usize; 2],
    k_win: [usize; 2],
    scale: f32,
    has_mask: bool,
    has_qmask: bool,
}

impl Kernel for AttentionWeights {
    fn label(&self) -> &'static str {
        "attention_weights"
    }
    fn shader(&self) -> Shader {
        WEIGHTS
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.batch)
            .u(self.lq)
            .u(self.lk)
            .u(self.heads)
            .u(self.dk)
            .u(self.q_win[0])
            .u(self.q_win[1])
            .u(self.k_win[0])
            .u(self.k_win[1])
            .f(self.scale)
            .flag(self.has_mask)
            .flag(self.has_qmask)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.batch * self.lq)
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (q, k, kmask, qmask) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let w = &mut outputs[0];
        let (h_n, dk, lq, lk) = (self.heads, self.dk, self.lq, self.lk);
        let mut scores = vec![0.0f32; lk];
        let mut qs = vec![0.0f32; dk];
        w.fill(0.0);
        for b in 0..self.batch {
            for i in 0..lq {
                let row = &mut w[(b * lq + i) * lk..][..lk];
                for h in 0..h_n {
                    let b2 = (b * h_n + h) % self.batch;
                    let q_row = (b * lq + i) * self.q_win[0] + self.q_win[1] + h * dk;
                    for (x, &y) in qs.iter_mut().zip(&q[q_row..q_row + dk]) {
                        *x = y * self.scale;
                    }
                    let q_pad_b2 = self.has_qmask && qmask[b2 * lq + i] <= 0.5;
                    let mut max = f32::NEG_INFINITY;
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s = f32::NEG_INFINITY;
                        if key_valid(self.has_mask, kmask, b, b2, lk, j, q_pad_b2) {
                            let k_row = (b * lk + j) * self.k_win[0] + self.k_win[1] + h * dk;
                            *s = qs.iter().zip(&k[k_row..k_row + dk]).map(|(a, c)| a * c).sum();
                            max = max.max(*s);
                        }
                    }
                    if max == f32::NEG_INFINITY {
                        continue; // no valid key: this head adds zeros
                    }
                    let mut sum = 0.0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let f = 1.0 / h_n as f32;
                    for (acc, &e) in row.iter_mut().zip(&scores) {
                        *acc += e / sum * f;
                    }
                }
            }
        }
    }
}

/// The checked geometry shared by every builder.
struct Checked {
    batch: usize,
    lq: usize,
    lk: usize,
    dk: usize,
    dv: usize,
    q_win: [usize; 2],
    k_win: [usize; 2],
    v_win: [usize; 2],
}

#[allow(clippy::too_many_arguments)]
fn check(
    g: &Graph,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: Option<TensorId>,
    query_mask: Option<TensorId>,
    heads: usize,
    scale: f32,
) -> Result<Checked> {
    let [bq, lq, wq] = window(g, "q", q)?;
    let [bk, lk, wk] = window(g, "k", k)?;
    let [bv, lv, wv] = window(g, "v", v)?;
    if bq != bk || bq != bv || lk != lv {
        return Err(Error::Graph(format!(
            "attention: q (B={bq}), k (B={bk}, L={lk}) and v (B={bv}, L={lv}) disagree on batch or key count"
        )));
    }
    if heads == 0 || !q.len.is_multiple_of(heads) || !v.len.is_multiple_of(heads) || q.len != k.len {
        return Err(Error::Graph(format!(
            "attention: q width {}, k width {} and v width {} do not split into {heads} heads (q and k widths must match)",
            q.len, k.len, v.len
        )));
    }
    let (dk, dv) = (q.len / heads, v.len / heads);
    if dk > MAX_HEAD_DIM || dv > MAX_HEAD_DIM {
        return Err(Error::Graph(format!(
            "attention: head dims dk = {dk}, dv = {dv}; at most {MAX_HEAD_DIM} supported"
        )));
    }
    if !scale.is_finite() {
        return Err(Error::Graph(format!("attention: scale {scale} is not finite")));
    }
    if let Some(m) = key_mask {
        if g.shape(m) != [bq, lk] {
            return Err(Error::Graph(format!("attention: key mask of shape {:?}, expected [{bq}, {lk}]", g.shape(m))));
        }
    }
    if let Some(m) = query_mask {
        if key_mask.is_none() {
            return Err(Error::Graph("attention: the batch quirk needs a key mask".into()));
        }
        if g.shape(m) != [bq, lq] {
            return Err(Error::Graph(format!(
                "attention: query mask of shape {:?}, expected [{bq}, {lq}]",
                g.shape(m)
            )));
        }
    }
    Ok(Checked { batch: bq, lq, lk, dk, dv, q_win: [wq, q.start], k_win: [wk, k.start], v_win: [wv, v.start] })
}

/// Shared by the public builders here and in [`crate::ops::gated_attention`]: checks shapes
/// and appends one fused dispatch. `gate_logits` must be `(B, Lq)` or `(B, Lq, 1)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fused(
    g: &mut Graph,
    label: &'static str,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: Option<TensorId>,
    query_mask: Option<TensorId>,
    gate_logits: Option<TensorId>,
    heads: usize,
    scale: f32,
) -> Result<TensorId> {
    let c = check(g, q, k, v, key_mask, query_mask, heads, scale)?;
    if let Some(t) = gate_logits {
        let s = g.shape(t);
        if s != [c.batch, c.lq] && s != [c.batch, c.lq, 1] {
            return Err(Error::Graph(format!(
                "{label}: gate of shape {s:?}, expected [{}, {}] (one logit per query)",
                c.batch, c.lq
            )));
        }
    }
    let op = FusedAttention {
        label,
        batch: c.batch,
        lq: c.lq,
        lk: c.lk,
        heads,
        dk: c.dk,
        dv: c.dv,
        q_win: c.q_win,
        k_win: c.k_win,
        v_win: c.v_win,
        scale,
        has_mask: key_mask.is_some(),
        has_qmask: query_mask.is_some(),
        has_gate: gate_logits.is_some(),
    };
    let inputs = [Some(q.tensor), Some(k.tensor), Some(v.tensor), key_mask, query_mask, gate_logits];
    Ok(g.push1(op, &inputs, vec![c.batch, c.lq, heads * c.dv]))
}

/// Multi-head attention `softmax(scale · q_h k_hᵀ) v_h`, heads concatenated: q `(B, Lq, H·dk)`,
/// k `(B, Lk, H·dk)`, v `(B, Lk, H·dv)` (column windows) → `(B, Lq, H·dv)`. `key_mask (B, Lk)`:
/// 1 = valid, 0 = padded (skipped); a query with no valid key gives a zero row. PyTorch's scale
/// is `dk^-0.5`.
pub fn attention(
    g: &mut Graph,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: Option<TensorId>,
    heads: usize,
    scale: f32,
) -> Result<TensorId> {
    fused(g, "attention", q, k, v, key_mask, None, None, heads, scale)
}

/// [`attention`] plus the head-averaged attention weights `(B, Lq, Lk)` (PyTorch's
/// `need_weights=True, average_attn_weights=True`; masked keys 0, fully masked rows all 0).
/// Two dispatches: the fused kernel and a weights kernel that recomputes the scores.
pub fn attention_with_weights(
    g: &mut Graph,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: Option<TensorId>,
    heads: usize,
    scale: f32,
) -> Result<(TensorId, TensorId)> {
    let out = attention(g, q, k, v, key_mask, heads, scale)?;
    let c = check(g, q, k, v, key_mask, None, heads, scale)?;
    let op = AttentionWeights {
        batch: c.batch,
        lq: c.lq,
        lk: c.lk,
        heads,
        dk: c.dk,
        q_win: c.q_win,
        k_win: c.k_win,
        scale,
        has_mask: key_mask.is_some(),
        has_qmask: false,
    };
    let w = g.push1(op, &[Some(q.tensor), Some(k.tensor), key_mask, None], vec![c.batch, c.lq, c.lk]);
    Ok((out, w))
}

/// [`attention`] reproducing PyTorch's `attn_mask.repeat(H, 1, 1)` head/batch mix-up of the
/// official TR-DETR / LD-DETR T2V layers and VideoLights' Bi-CMF: besides its own key padding,
/// head `h` of sample `b` masks key `j` for query `i` when query `i` is padded (`query_mask`,
/// `(B, Lq)`) AND key `j` is padded in sample `b2 = (b·H + h) mod B`. Identical to
/// [`attention`] for B = 1. Use it only for parity with official batched outputs.
#[allow(clippy::too_many_arguments)]
pub fn attention_batch_quirk(
    g: &mut Graph,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: TensorId,
    query_mask: TensorId,
    heads: usize,
    scale: f32,
) -> Result<TensorId> {
    fused(g, "attention_batch_quirk", q, k, v, Some(key_mask), Some(query_mask), None, heads, scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust side sizes tiles and dispatches from these constants: they must match the WGSL.
    #[test]
    fn constants_match_the_shader() {
        let src = FUSED.source;
        assert!(src.contains(&format!("const LANES: u32 = {LANES}u;")));
        assert!(src.contains(&format!("const KV_VEC4: u32 = {KV_VEC4}u;")));
        assert!(src.contains(&format!("const MAX_TILE: u32 = {MAX_TILE}u;")));
        assert!(src.contains(&format!("var<workgroup> kv: array<vec4<f32>, {KV_VEC4}>;")));
        assert!(src.contains(&format!("var<workgroup> key_flags: array<u32, {MAX_TILE}>;")));
        assert!(src.contains(&format!("@workgroup_size({LANES}, 1, 1)")));
        assert!(WEIGHTS.source.contains(&format!("@workgroup_size({LANES}, 1, 1)")));
    }

    #[test]
    fn geometry_fits_the_tile_memory() {
        for dk in 1..=MAX_HEAD_DIM {
            for dv in 1..=MAX_HEAD_DIM {
                for lq in [1, 5, 10, 25, 33, 76] {
                    let op = FusedAttention {
                        label: "t",
                        batch: 1,
                        lq,
                        lk: 100,
                        heads: 1,
                        dk,
                        dv,
                        q_win: [dk, 0],
                        k_win: [dk, 0],
                        v_win: [dv, 0],
                        scale: 1.0,
                        has_mask: false,
                        has_qmask: false,
                        has_gate: false,
                    };
                    let (tk, ks) = (op.tile_keys(), op.splits());
                    assert!((1..=MAX_TILE).contains(&tk) && tk * (op.dk4() + op.dv4()) <= KV_VEC4);
                    assert!((LANES / ks) * (ks - 1) * op.dv4() <= KV_VEC4);
                    assert!(op.q_tiles() * (LANES / ks) >= lq);
                }
            }
        }
    }
}
