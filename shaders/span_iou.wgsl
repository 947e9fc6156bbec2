// Pairwise 1-D span IoU or generalized IoU: a (B, N, 2), b (B, M, 2) → y (B, N, M),
// y[b, i, j] = (g)iou(a[b, i], b[b, j]); spans are (start, end), or (center, width) when cxw = 1.
// One thread per output value, 256 threads per workgroup, 1-D grid folded into (x, y). Ends with
// span_common.wgsl.

struct Params {
    total: u32, n: u32, m: u32, cxw: u32, generalized: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> sa: array<f32>;
@group(0) @binding(2) var<storage, read> sb: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn pairwise_iou(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.total) { return; }
    let j = i % p.m;
    let bi = i / p.m;                       // batch * N + row
    let bt = bi / p.n;
    let ia = bi * 2u;
    let ib = (bt * p.m + j) * 2u;
    let a = to_start_end(sa[ia], sa[ia + 1u], p.cxw);
    let b = to_start_end(sb[ib], sb[ib + 1u], p.cxw);
    var v: f32;
    if (p.generalized == 1u) { v = span_giou(a, b); } else { v = span_iou(a, b).x; }
    y[i] = v;
}
