// LayerNorm over the last dim (PyTorch `nn.LayerNorm`, biased variance):
//   y[r, c] = (x[r, c] - mean_r) / sqrt(var_r + eps) * gamma[c] + beta[c]
// Layout: x and y are (rows, n) row-major; gamma and beta are (n).
// Threads: one workgroup of 256 threads per row (rows folded into a 2-D grid by grid_1d); each
// thread walks the row with stride 256 (coalesced). Two workgroup-memory tree sums: the mean,
// then the centred sum of squares (two-pass variance: no cancellation for rows far from zero),
// then a third sweep writes y. The row (≤ 11 KiB for the widest model input) stays in cache.
// Ends with norm_common.wgsl.

struct Params {
    rows: u32,
    n: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn layer_norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    // Uniform control flow: the whole workgroup leaves together (barriers follow).
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.n;
    let inv_n = 1.0 / f32(p.n);

    var s = 0.0;
    for (var c = lid; c < p.n; c += WG) { s += x[base + c]; }
    let mean = workgroup_sum(lid, s) * inv_n;

    var q = 0.0;
    for (var c = lid; c < p.n; c += WG) {
        let d = x[base + c] - mean;
        q += d * d;
    }
    let rstd = inverseSqrt(workgroup_sum(lid, q) * inv_n + p.eps);

    for (var c = lid; c < p.n; c += WG) {
        y[base + c] = (x[base + c] - mean) * rstd * gamma[c] + beta[c];
    }
}
