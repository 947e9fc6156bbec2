// Masked row softmax over the last dim:
//   l[r, j] = scale * x[r, j]                         (+ (1 - m[b, j]) * neg in Additive mode)
//   y[r, j] = exp(l[r, j] - max_r) / sum_r            over the keys j that take part
// Layout: x and y are (rows, s) row-major with rows = B * R (R rows per batch sample); the
// optional mask is (B, s), row r reads mask row r / R.
// Mask modes: 0 = Skip (keys with m == 0 take no part and get 0; a row with no key left is all
// zeros), 1 = Additive (VSLNet `mask_logits`: every key takes part with the additive penalty, so a
// fully masked row comes out uniform, exactly as that float32 formula gives).
// Threads: one workgroup of 64 threads per row (rows folded into a 2-D grid by grid_1d). Each
// thread makes one online pass over its strided keys keeping a running (max, sum); the 64 pairs
// are merged in a workgroup-memory tree (m = max(ma, mb), s = sa e^(ma-m) + sb e^(mb-m)); a
// second sweep writes the probabilities. The running max starts at a large finite negative
// value, never -inf, so no inf - inf appears.

struct Params {
    rows: u32,
    r_per_batch: u32,
    s: u32,
    has_mask: u32,
    mode: u32,
    scale: f32,
    neg: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
const START: f32 = -3.0e38;
var<workgroup> wg_max: array<f32, 64>;
var<workgroup> wg_sum: array<f32, 64>;

// The logit of key j and whether it takes part.
fn logit(base: u32, mbase: u32, j: u32) -> vec2<f32> {
    var v = p.scale * x[base + j];
    var keep = 1.0;
    if (p.has_mask == 1u) {
        let m = mask[mbase + j];
        if (p.mode == 1u) {
            v = v + (1.0 - m) * p.neg;
        } else if (m == 0.0) {
            keep = 0.0;
        }
    }
    return vec2<f32>(v, keep);
}

@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.s;
    let mbase = (row / p.r_per_batch) * p.s;

    var m = START;
    var sum = 0.0;
    for (var j = lid; j < p.s; j += WG) {
        let l = logit(base, mbase, j);
        if (l.y != 0.0) {
            let m_new = max(m, l.x);
            sum = sum * exp(m - m_new) + exp(l.x - m_new);
            m = m_new;
        }
    }
    wg_max[lid] = m;
    wg_sum[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let ma = wg_max[lid];
            let mb = wg_max[lid + stride];
            let mm = max(ma, mb);
            wg_sum[lid] = wg_sum[lid] * exp(ma - mm) + wg_sum[lid + stride] * exp(mb - mm);
            wg_max[lid] = mm;
        }
        workgroupBarrier();
    }
    let row_max = wg_max[0];
    let row_sum = wg_sum[0];
    // No key took part (Skip mode, fully masked row): all zeros.
    let inv = select(0.0, 1.0 / row_sum, row_sum > 0.0);

    for (var j = lid; j < p.s; j += WG) {
        let l = logit(base, mbase, j);
        y[base + j] = select(0.0, exp(l.x - row_max) * inv, l.y != 0.0);
    }
}
