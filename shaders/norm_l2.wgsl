// Row L2 normalisation over the last dim, two eps placements:
//   mode 0 (data pipelines of TR-DETR / LD-DETR / VideoLights / SG-DETR): y = x / (||x|| + eps)
//   mode 1 (torch F.normalize):                                           y = x / max(||x||, eps)
// Layout: x and y are (rows, n) row-major.
// Threads: one workgroup of 256 threads per row (rows folded into a 2-D grid by grid_1d); each
// thread sums squares with stride 256, a workgroup-memory tree sum gives ||x||², a second sweep
// divides (a true division, as the references do, not a multiply by the reciprocal).
// Ends with norm_common.wgsl.

struct Params {
    rows: u32,
    n: u32,
    eps: f32,
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn l2_normalize(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.n;

    var q = 0.0;
    for (var c = lid; c < p.n; c += WG) {
        let v = x[base + c];
        q += v * v;
    }
    let norm = sqrt(workgroup_sum(lid, q));
    let denom = select(norm + p.eps, max(norm, p.eps), p.mode == 1u);

    for (var c = lid; c < p.n; c += WG) {
        y[base + c] = x[base + c] / denom;
    }
}
