// Row gather with zero fill: y[b, k, :] = x[b, idx[b, k], :], or 0 when idx[b, k] is outside
// [0, L) (or NaN). Indices are f32 holding integers; a fractional index is truncated toward zero.
// Layout: x (B_x, L, D) dense with B_x in {1, B} (x_batch = 0 reuses one table for every sample),
// idx (B, K), y (B, K, D).
// One thread per output element, 256 threads per workgroup, 1-D grid folded into (x, y).

struct Params {
    total: u32, k: u32, d: u32, l: u32, x_batch: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn gather_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.total) { return; }
    let c = i % p.d;
    let row = i / p.d;          // b * K + k
    let b = row / p.k;
    let j = idx[row];
    var v = 0.0;
    // NaN is tested on the bits: drivers that assume no NaN may fold comparisons with it.
    let is_nan = (bitcast<u32>(j) & 0x7fffffffu) > 0x7f800000u;
    if (!is_nan && j >= 0.0 && j < f32(p.l)) {
        v = x[b * p.x_batch + u32(j) * p.d + c];
    }
    y[i] = v;
}
