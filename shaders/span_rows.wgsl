// Clip rows of the top-scoring span, as TR-DETR / LD-DETR's MR2HD slice them:
// scores (B, Q), spans (B, Q, 2) as (center, width) → idx (B, L) f32 for layout::gather_rows.
//   top = argmax_q scores[b, q] (ties → lowest index, NaN ignored)
//   x1, x2 = cx − 0.5·w, cx + 0.5·w;  st = floor(x1·scale / clip_len), ed = floor(x2·scale / clip_len)
//   (scale = float32(L·clip_len), each product / quotient rounded to f32 as in the reference)
//   [start, stop) = Python slice st : ed + 1 over L rows (negative → + L, then clamp to [0, L])
//   idx[b, t] = start + t where start + t < stop, else −1 (a zero row after the gather).
// One workgroup of 64 threads per batch row: strided argmax + tree in workgroup memory, then
// every thread writes a strided share of the L indices. Integer values are kept as f32 (exact
// below 2^24).

struct Params {
    rows: u32, q: u32, l: u32, scale: f32, clip_len: f32, neg_inf: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> spans: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<f32>;

var<workgroup> bv: array<f32, 64>;
var<workgroup> bi: array<u32, 64>;

// Python's normalisation of a slice bound over a sequence of `len` items.
fn py_bound(i: f32, len: f32) -> f32 {
    if (i < 0.0) { return max(i + len, 0.0); }
    return min(i, len);
}

@compute @workgroup_size(64, 1, 1)
fn top_span_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) { return; }
    let t = lid.x;
    var best = p.neg_inf;
    var at = 0u;
    for (var j = t; j < p.q; j += 64u) {
        let v = scores[row * p.q + j];
        if (v > best) { best = v; at = j; }
    }
    bv[t] = best;
    bi[t] = at;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (t < s) {
            let a = bv[t];
            let b = bv[t + s];
            let ib = bi[t + s];
            if (b > a || (b == a && ib < bi[t])) { bv[t] = b; bi[t] = ib; }
        }
        workgroupBarrier();
    }
    let top = (row * p.q + bi[0]) * 2u;
    let cx = spans[top];
    let w = spans[top + 1u];
    let x1 = cx - 0.5 * w;
    let x2 = cx + 0.5 * w;
    let st = floor((x1 * p.scale) / p.clip_len);
    let ed = floor((x2 * p.scale) / p.clip_len);
    let lf = f32(p.l);
    let start = py_bound(st, lf);
    let stop = py_bound(ed + 1.0, lf);
    for (var i = t; i < p.l; i += 64u) {
        let j = start + f32(i);
        idx[row * p.l + i] = select(-1.0, j, j < stop);
    }
}
