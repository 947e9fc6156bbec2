// Head-averaged attention weights, the second output of `attention_with_weights`:
//
//   w[b, i, j] = (1/H) * sum_h softmax_j( (scale * q[b, i, h*dk:(h+1)*dk]) . k[b, j, h*dk:(h+1)*dk] )
//
// with the same key masking as attention.wgsl (masked keys get weight 0; a row with no valid key
// is all zeros; optional batch quirk through query_mask). q and k are column windows of
// (B, L, width) tensors (element (b, l, c) at (b*L + l) * stride + start + c); w is dense
// (B, Lq, Lk) like PyTorch's `need_weights=True, average_attn_weights=True`.
//
// Threads: one workgroup of 64 lanes per (batch, query row); lane t owns keys t, t+64, ... Per
// head: the scaled q row is staged in workgroup memory (16 vec4s), each lane runs an online
// (max, sum) over its keys, a workgroup tree merges the 64 partials, and a second sweep
// recomputes the scores and adds p/H to the lane's own entries of w (no two lanes share an entry).

struct Params {
    batch: u32, lq: u32, lk: u32, heads: u32,
    dk: u32, q_stride: u32, q_start: u32, k_stride: u32,
    k_start: u32, scale: f32, has_mask: u32, has_qmask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> key_mask: array<f32>;
@group(0) @binding(4) var<storage, read> query_mask: array<f32>;
@group(0) @binding(5) var<storage, read_write> w: array<f32>;

const LANES: u32 = 64u;
const NEG: f32 = -3.0e38;

var<workgroup> q_row: array<vec4<f32>, 16>;
var<workgroup> red: array<vec2<f32>, 64>;

fn load_k4(base: u32, c: u32) -> vec4<f32> {
    if (c + 3u < p.dk) { return vec4<f32>(k[base + c], k[base + c + 1u], k[base + c + 2u], k[base + c + 3u]); }
    var r = vec4<f32>(0.0);
    if (c < p.dk) { r.x = k[base + c]; }
    if (c + 1u < p.dk) { r.y = k[base + c + 1u]; }
    if (c + 2u < p.dk) { r.z = k[base + c + 2u]; }
    return r;
}

fn score(b: u32, h: u32, j: u32) -> f32 {
    let base = (b * p.lk + j) * p.k_stride + p.k_start + h * p.dk;
    var s = 0.0;
    for (var c4 = 0u; c4 * 4u < p.dk; c4++) {
        s += dot(q_row[c4], load_k4(base, c4 * 4u));
    }
    return s;
}

// Online merge of two (max, sum) pairs; NEG keeps empty partials finite.
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

@compute @workgroup_size(64, 1, 1)
fn attention_weights(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.batch * p.lq) { return; }
    let b = row / p.lq;
    let i = row % p.lq;
    let lane = lid.x;
    let inv_heads = 1.0 / f32(p.heads);
    for (var h = 0u; h < p.heads; h++) {
        let b2 = (b * p.heads + h) % p.batch;
        var q_pad_b2 = false;
        if (p.has_qmask == 1u) { q_pad_b2 = query_mask[b2 * p.lq + i] <= 0.5; }
        if (lane < 16u) {
            let base = row * p.q_stride + p.q_start + h * p.dk;
            var x = vec4<f32>(0.0);
            let c = lane * 4u;
            if (c < p.dk) { x.x = q[base + c]; }
            if (c + 1u < p.dk) { x.y = q[base + c + 1u]; }
            if (c + 2u < p.dk) { x.z = q[base + c + 2u]; }
            if (c + 3u < p.dk) { x.w = q[base + c + 3u]; }
            q_row[lane] = x * p.scale;
        }
        workgroupBarrier();
        var ml = vec2<f32>(NEG, 0.0);
        for (var j = lane; j < p.lk; j += LANES) {
            var ok = true;
            if (p.has_mask == 1u) {
                ok = key_mask[b * p.lk + j] > 0.5 && !(q_pad_b2 && key_mask[b2 * p.lk + j] <= 0.5);
            }
            if (ok) { ml = merge(ml, vec2<f32>(score(b, h, j), 1.0)); }
        }
        red[lane] = ml;
        workgroupBarrier();
        for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
            if (lane < stride) { red[lane] = merge(red[lane], red[lane + stride]); }
            workgroupBarrier();
        }
        let total = red[0];
        for (var j = lane; j < p.lk; j += LANES) {
            var ok = true;
            if (p.has_mask == 1u) {
                ok = key_mask[b * p.lk + j] > 0.5 && !(q_pad_b2 && key_mask[b2 * p.lk + j] <= 0.5);
            }
            var pj = 0.0;
            if (ok && total.y > 0.0) { pj = exp(score(b, h, j) - total.x) / total.y * inv_heads; }
            let at = row * p.lk + j;
            if (h == 0u) { w[at] = pj; } else { w[at] += pj; }
        }
        // q_row and red are rewritten by the next head.
        workgroupBarrier();
    }
}
