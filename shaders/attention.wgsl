// Fused multi-head scaled-dot-product attention with an online (flash-style) softmax: the
// Lq x Lk score matrix never leaves the workgroup.
//
//   out[b, i, h*dv + c] = gate(b, i) * sum_j p[b, h, i, j] * v[b, j, h*dv + c]
//   p[b, h, i, :]       = softmax over the valid keys j of (scale * q[b, i, h*dk : (h+1)*dk]) . k[b, j, h*dk : (h+1)*dk]
//
// Layout: q, k, v are column windows of row-major (B, L, width) tensors: element (b, l, c) of the
// window is at (b*L + l) * stride + start + c, so they can be read straight out of a fused
// projection. The output is dense (B, Lq, H*dv), heads concatenated (PyTorch's layout before
// out_proj). Keys are valid when key_mask[b, j] > 0.5 (no mask: all valid); masked keys are
// skipped, never exponentiated. A query with no valid key gets an all-zero output row (PyTorch
// gives NaN there). gate(b, i) = sigmoid(gate_logits[b, i]) when has_gate, else 1 (SG-DETR's
// saliency-guided rows: the post-softmax row is scaled without renormalising, which is O_i *= g_i).
// Optional batch quirk (has_qmask): PyTorch models that pass a (B, Lq, Lk) attn_mask built with
// `.repeat(H, 1, 1)` mask, in head h of sample b, key j for query i also when query i is padded AND
// key j is padded in sample b2 = (b*H + h) mod B; query_mask is that (B, Lq) mask.
//
// Threads: one workgroup of 64 lanes per (batch, head, query tile). The 64 lanes are QT = 64/KS
// queries x KS key splits (KS = p.splits, 1..8, picked on the host from Lq: few decoder queries
// spread each query over several lanes, many clip queries use one lane each). A lane keeps its
// scaled Q row and its O accumulator in named vec4 registers (q0..q15, o0..o15; the head dims are
// zero-padded to 16, 32 or 64 = p.dk4/p.dv4 vec4s) plus its running max m and sum l, and walks
// every KS-th key of each K/V tile. K/V tiles of p.tile_keys rows sit in workgroup memory
// (kv: 12 KiB). At the end the KS partial (m, l, O) of a query are merged through workgroup memory
// (reusing kv) with the same rescaling rule as the key loop.

struct Params {
    batch: u32, lq: u32, lk: u32, heads: u32,
    dk: u32, dv: u32, dk4: u32, dv4: u32,
    q_stride: u32, q_start: u32, k_stride: u32, k_start: u32,
    v_stride: u32, v_start: u32, scale: f32, tile_keys: u32,
    splits: u32, q_tiles: u32, has_mask: u32, has_qmask: u32,
    has_gate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> key_mask: array<f32>;
@group(0) @binding(5) var<storage, read> query_mask: array<f32>;
@group(0) @binding(6) var<storage, read> gate_logits: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const LANES: u32 = 64u;
const KV_VEC4: u32 = 768u;
const MAX_TILE: u32 = 64u;
// A finite "minus infinity": a lane that has seen no valid key yet keeps m = NEG and l = 0, and
// exp(NEG - s) underflows to 0 instead of producing NaN.
const NEG: f32 = -3.0e38;

// K tile rows at kv[j * dk4], V tile rows at kv[tile_keys * dk4 + j * dv4]; after the key loop
// the same memory holds the partial O of the lanes being merged.
var<workgroup> kv: array<vec4<f32>, 768>;
// Per key of the tile: bit 0 = valid in this sample, bit 1 = padded in sample b2 (batch quirk).
var<workgroup> key_flags: array<u32, 64>;
var<workgroup> part_ml: array<vec2<f32>, 64>;

var<private> q0: vec4<f32>; var<private> q1: vec4<f32>; var<private> q2: vec4<f32>; var<private> q3: vec4<f32>;
var<private> q4: vec4<f32>; var<private> q5: vec4<f32>; var<private> q6: vec4<f32>; var<private> q7: vec4<f32>;
var<private> q8: vec4<f32>; var<private> q9: vec4<f32>; var<private> q10: vec4<f32>; var<private> q11: vec4<f32>;
var<private> q12: vec4<f32>; var<private> q13: vec4<f32>; var<private> q14: vec4<f32>; var<private> q15: vec4<f32>;
var<private> o0: vec4<f32>; var<private> o1: vec4<f32>; var<private> o2: vec4<f32>; var<private> o3: vec4<f32>;
var<private> o4: vec4<f32>; var<private> o5: vec4<f32>; var<private> o6: vec4<f32>; var<private> o7: vec4<f32>;
var<private> o8: vec4<f32>; var<private> o9: vec4<f32>; var<private> o10: vec4<f32>; var<private> o11: vec4<f32>;
var<private> o12: vec4<f32>; var<private> o13: vec4<f32>; var<private> o14: vec4<f32>; var<private> o15: vec4<f32>;

// Columns c..c+3 of a row starting at element `base`, zero past column d (windows need no
// alignment, so loads are scalar; they are coalesced across lanes).
fn load_q4(base: u32, c: u32, d: u32) -> vec4<f32> {
    if (c + 3u < d) { return vec4<f32>(q[base + c], q[base + c + 1u], q[base + c + 2u], q[base + c + 3u]); }
    var r = vec4<f32>(0.0);
    if (c < d) { r.x = q[base + c]; }
    if (c + 1u < d) { r.y = q[base + c + 1u]; }
    if (c + 2u < d) { r.z = q[base + c + 2u]; }
    return r;
}

fn load_k4(base: u32, c: u32, d: u32) -> vec4<f32> {
    if (c + 3u < d) { return vec4<f32>(k[base + c], k[base + c + 1u], k[base + c + 2u], k[base + c + 3u]); }
    var r = vec4<f32>(0.0);
    if (c < d) { r.x = k[base + c]; }
    if (c + 1u < d) { r.y = k[base + c + 1u]; }
    if (c + 2u < d) { r.z = k[base + c + 2u]; }
    return r;
}

fn load_v4(base: u32, c: u32, d: u32) -> vec4<f32> {
    if (c + 3u < d) { return vec4<f32>(v[base + c], v[base + c + 1u], v[base + c + 2u], v[base + c + 3u]); }
    var r = vec4<f32>(0.0);
    if (c < d) { r.x = v[base + c]; }
    if (c + 1u < d) { r.y = v[base + c + 1u]; }
    if (c + 2u < d) { r.z = v[base + c + 2u]; }
    return r;
}

fn store4(base: u32, c: u32, x: vec4<f32>) {
    if (c < p.dv) { out[base + c] = x.x; }
    if (c + 1u < p.dv) { out[base + c + 1u] = x.y; }
    if (c + 2u < p.dv) { out[base + c + 2u] = x.z; }
    if (c + 3u < p.dv) { out[base + c + 3u] = x.w; }
}

fn load_q(base: u32) {
    let s = p.scale;
    q0 = load_q4(base, 0u, p.dk) * s; q1 = load_q4(base, 4u, p.dk) * s;
    q2 = load_q4(base, 8u, p.dk) * s; q3 = load_q4(base, 12u, p.dk) * s;
    if (p.dk4 >= 8u) {
        q4 = load_q4(base, 16u, p.dk) * s; q5 = load_q4(base, 20u, p.dk) * s;
        q6 = load_q4(base, 24u, p.dk) * s; q7 = load_q4(base, 28u, p.dk) * s;
    }
    if (p.dk4 >= 16u) {
        q8 = load_q4(base, 32u, p.dk) * s; q9 = load_q4(base, 36u, p.dk) * s;
        q10 = load_q4(base, 40u, p.dk) * s; q11 = load_q4(base, 44u, p.dk) * s;
        q12 = load_q4(base, 48u, p.dk) * s; q13 = load_q4(base, 52u, p.dk) * s;
        q14 = load_q4(base, 56u, p.dk) * s; q15 = load_q4(base, 60u, p.dk) * s;
    }
}

// Scaled q . k_j for the K row starting at kv[kb].
fn score(kb: u32) -> f32 {
    var s = dot(q0, kv[kb]) + dot(q1, kv[kb + 1u]) + dot(q2, kv[kb + 2u]) + dot(q3, kv[kb + 3u]);
    if (p.dk4 >= 8u) {
        s += dot(q4, kv[kb + 4u]) + dot(q5, kv[kb + 5u]) + dot(q6, kv[kb + 6u]) + dot(q7, kv[kb + 7u]);
    }
    if (p.dk4 >= 16u) {
        s += dot(q8, kv[kb + 8u]) + dot(q9, kv[kb + 9u]) + dot(q10, kv[kb + 10u]) + dot(q11, kv[kb + 11u]);
        s += dot(q12, kv[kb + 12u]) + dot(q13, kv[kb + 13u]) + dot(q14, kv[kb + 14u]) + dot(q15, kv[kb + 15u]);
    }
    return s;
}

// O = O * a + b * (row of kv at vb): the key update (a = rescale, b = weight of the key) and the
// merge of a partner's partial O (a = own rescale, b = partner's rescale).
fn axpy(a: f32, b: f32, vb: u32) {
    o0 = o0 * a + b * kv[vb]; o1 = o1 * a + b * kv[vb + 1u];
    o2 = o2 * a + b * kv[vb + 2u]; o3 = o3 * a + b * kv[vb + 3u];
    if (p.dv4 >= 8u) {
        o4 = o4 * a + b * kv[vb + 4u]; o5 = o5 * a + b * kv[vb + 5u];
        o6 = o6 * a + b * kv[vb + 6u]; o7 = o7 * a + b * kv[vb + 7u];
    }
    if (p.dv4 >= 16u) {
        o8 = o8 * a + b * kv[vb + 8u]; o9 = o9 * a + b * kv[vb + 9u];
        o10 = o10 * a + b * kv[vb + 10u]; o11 = o11 * a + b * kv[vb + 11u];
        o12 = o12 * a + b * kv[vb + 12u]; o13 = o13 * a + b * kv[vb + 13u];
        o14 = o14 * a + b * kv[vb + 14u]; o15 = o15 * a + b * kv[vb + 15u];
    }
}

fn stash_o(pb: u32) {
    kv[pb] = o0; kv[pb + 1u] = o1; kv[pb + 2u] = o2; kv[pb + 3u] = o3;
    if (p.dv4 >= 8u) { kv[pb + 4u] = o4; kv[pb + 5u] = o5; kv[pb + 6u] = o6; kv[pb + 7u] = o7; }
    if (p.dv4 >= 16u) {
        kv[pb + 8u] = o8; kv[pb + 9u] = o9; kv[pb + 10u] = o10; kv[pb + 11u] = o11;
        kv[pb + 12u] = o12; kv[pb + 13u] = o13; kv[pb + 14u] = o14; kv[pb + 15u] = o15;
    }
}

fn store_o(base: u32, f: f32) {
    store4(base, 0u, o0 * f); store4(base, 4u, o1 * f); store4(base, 8u, o2 * f); store4(base, 12u, o3 * f);
    if (p.dv4 >= 8u) {
        store4(base, 16u, o4 * f); store4(base, 20u, o5 * f); store4(base, 24u, o6 * f); store4(base, 28u, o7 * f);
    }
    if (p.dv4 >= 16u) {
        store4(base, 32u, o8 * f); store4(base, 36u, o9 * f); store4(base, 40u, o10 * f); store4(base, 44u, o11 * f);
        store4(base, 48u, o12 * f); store4(base, 52u, o13 * f); store4(base, 56u, o14 * f); store4(base, 60u, o15 * f);
    }
}

@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let group = wid.x + wid.y * 65535u;
    if (group >= p.batch * p.heads * p.q_tiles) { return; }
    let qt = group % p.q_tiles;
    let bh = group / p.q_tiles;
    let h = bh % p.heads;
    let b = bh / p.heads;
    // Sample whose masks the batch quirk crosses into this (b, h).
    let b2 = (b * p.heads + h) % p.batch;

    let lane = lid.x;
    let ks = p.splits;
    let split = lane % ks;
    let i = qt * (LANES / ks) + lane / ks;
    let live = i < p.lq;

    o0 = vec4<f32>(0.0); o1 = o0; o2 = o0; o3 = o0; o4 = o0; o5 = o0; o6 = o0; o7 = o0;
    o8 = o0; o9 = o0; o10 = o0; o11 = o0; o12 = o0; o13 = o0; o14 = o0; o15 = o0;
    var m = NEG;
    var l = 0.0;
    var q_pad_b2 = false;
    if (live) {
        load_q((b * p.lq + i) * p.q_stride + p.q_start + h * p.dk);
        if (p.has_qmask == 1u) { q_pad_b2 = query_mask[b2 * p.lq + i] <= 0.5; }
    }

    let tk = p.tile_keys;
    let v_tile = tk * p.dk4;
    for (var t0 = 0u; t0 < p.lk; t0 += tk) {
        let n = min(tk, p.lk - t0);
        // Stage the K and V rows of this tile (zero-padded to dk4/dv4 vec4s) and the key flags.
        for (var e = lane; e < n * p.dk4; e += LANES) {
            let r = e / p.dk4;
            let base = (b * p.lk + t0 + r) * p.k_stride + p.k_start + h * p.dk;
            kv[e] = load_k4(base, (e % p.dk4) * 4u, p.dk);
        }
        for (var e = lane; e < n * p.dv4; e += LANES) {
            let r = e / p.dv4;
            let base = (b * p.lk + t0 + r) * p.v_stride + p.v_start + h * p.dv;
            kv[v_tile + e] = load_v4(base, (e % p.dv4) * 4u, p.dv);
        }
        if (lane < n) {
            let j = t0 + lane;
            var f = 1u;
            if (p.has_mask == 1u) {
                f = select(0u, 1u, key_mask[b * p.lk + j] > 0.5);
                if (p.has_qmask == 1u && key_mask[b2 * p.lk + j] <= 0.5) { f |= 2u; }
            }
            key_flags[lane] = f;
        }
        workgroupBarrier();
        if (live) {
            for (var j = split; j < n; j += ks) {
                let f = key_flags[j];
                if ((f & 1u) == 0u || (q_pad_b2 && (f & 2u) != 0u)) { continue; }
                let s = score(j * p.dk4);
                let m_new = max(m, s);
                let c = exp(m - m_new);
                let w = exp(s - m_new);
                l = l * c + w;
                axpy(c, w, v_tile + j * p.dv4);
                m = m_new;
            }
        }
        workgroupBarrier();
    }

    if (ks > 1u) {
        // Lanes split > 0 hand their partial (m, l, O) to the split-0 lane of their query.
        let slot0 = (lane / ks) * (ks - 1u);
        if (live && split > 0u) {
            part_ml[lane] = vec2<f32>(m, l);
            stash_o((slot0 + split - 1u) * p.dv4);
        }
        workgroupBarrier();
        if (live && split == 0u) {
            for (var t = 1u; t < ks; t++) {
                let ml = part_ml[lane + t];
                let m_new = max(m, ml.x);
                let a = exp(m - m_new);
                let c = exp(ml.x - m_new);
                l = l * a + ml.y * c;
                axpy(a, c, (slot0 + t - 1u) * p.dv4);
                m = m_new;
            }
        }
    }

    if (live && split == 0u) {
        var g = 1.0;
        if (p.has_gate == 1u) { g = 1.0 / (1.0 + exp(-gate_logits[b * p.lq + i])); }
        // l = 0: no valid key; the defined result is a zero row.
        let f = select(0.0, g / l, l > 0.0);
        store_o((b * p.lq + i) * (p.heads * p.dv) + h * p.dv, f);
    }
}
