// DETR `PositionEmbeddingSine` over a 1-D padding mask (B, L), 1 = valid:
//   c[b, t]   = sum_{j <= t} mask[b, j]                       (cumsum)
//   x[b, t]   = c[b, t] / (c[b, L-1] + eps) * scale           (normalize = 1; else x = c)
//   y[b, t, k] = sin(x / dim_t[k]) for even k, cos(x / dim_t[k]) for odd k    (interleaved)
// dim_t (F) = temperature^(2 floor(k/2) / F) is a host-computed table, so GPU and CPU divide by
// the same float32 values.
// Layout: mask (B, L), dim_t (F), y (B, L, F) row-major.
// Threads: one workgroup of 64 threads per position (b, t) (grid folded by grid_1d): the
// threads sum the mask row (prefix up to t, and the total) with a stride of 64 and a
// workgroup-memory tree, then write the F features with a stride of 64. For 0/1 masks every sum
// is an exact integer, so the result does not depend on the summation order. A fully masked row
// gives x = 0: (0, 1, 0, 1, ...).
// Arguments stay within [0, scale] (2π in the models), where the hardware sin/cos of every
// target is accurate to ~1e-6.

struct Params {
    positions: u32,
    l: u32,
    f: u32,
    normalize: u32,
    scale: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read> dim_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 64u;
var<workgroup> wg_prefix: array<f32, 64>;
var<workgroup> wg_total: array<f32, 64>;

@compute @workgroup_size(64, 1, 1)
fn sine_from_mask(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let pos = wid.x + wid.y * 65535u;
    if (pos >= p.positions) { return; }
    let lid = lid3.x;
    let b = pos / p.l;
    let t = pos % p.l;
    let row = b * p.l;

    var prefix = 0.0;
    var total = 0.0;
    for (var j = lid; j < p.l; j += WG) {
        let m = mask[row + j];
        total += m;
        if (j <= t) { prefix += m; }
    }
    wg_prefix[lid] = prefix;
    wg_total[lid] = total;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            wg_prefix[lid] += wg_prefix[lid + stride];
            wg_total[lid] += wg_total[lid + stride];
        }
        workgroupBarrier();
    }
    var x = wg_prefix[0];
    if (p.normalize == 1u) {
        x = x / (wg_total[0] + p.eps) * p.scale;
    }

    let out = pos * p.f;
    for (var k = lid; k < p.f; k += WG) {
        let v = x / dim_t[k];
        y[out + k] = select(cos(v), sin(v), (k & 1u) == 0u);
    }
}
