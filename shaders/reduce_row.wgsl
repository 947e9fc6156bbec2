// Reduction over non-overlapping windows of the last axis: x viewed as (outer, axis) row-major,
// y[o, w] = op(x[o, w*window .. (w+1)*window]) for w < n_win = axis / window (window = axis for a
// full reduction). op: 0 sum, 1 mean, 2 max, 3 min, 4 argmax (f32 index within the window).
// Max / min / argmax ignore NaN (comparisons against a running best that starts at ∓inf); a
// window with no element above -inf gives max -inf and argmax 0. Argmax ties → lowest index.
// One workgroup of 256 threads per output value: each thread folds a strided share of the window
// (consecutive threads read consecutive values), then a tree in workgroup memory (2 KiB)
// combines the 256 partials. Used for windows of 64 values or more; reduce_col.wgsl otherwise.

struct Params {
    total: u32, axis: u32, inner: u32, window: u32, n_win: u32, op: u32, neg_inf: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> vals: array<f32, 256>;
var<workgroup> idxs: array<u32, 256>;

@compute @workgroup_size(256, 1, 1)
fn reduce_row(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out = wid.x + wid.y * 65535u;
    if (out >= p.total) { return; }
    let t = lid.x;
    let base = (out / p.n_win) * p.axis + (out % p.n_win) * p.window;
    let op = p.op;
    var acc = 0.0;
    if (op == 2u || op == 4u) { acc = p.neg_inf; }
    if (op == 3u) { acc = -p.neg_inf; }
    var best = 0u;
    for (var j = t; j < p.window; j += 256u) {
        let v = x[base + j];
        switch op {
            case 0u, 1u: { acc += v; }
            case 2u: { if (v > acc) { acc = v; } }
            case 3u: { if (v < acc) { acc = v; } }
            default: { if (v > acc) { acc = v; best = j; } }
        }
    }
    vals[t] = acc;
    idxs[t] = best;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (t < s) {
            let a = vals[t];
            let b = vals[t + s];
            switch op {
                case 0u, 1u: { vals[t] = a + b; }
                case 2u: { if (b > a) { vals[t] = b; } }
                case 3u: { if (b < a) { vals[t] = b; } }
                default: {
                    let bi = idxs[t + s];
                    if (b > a || (b == a && bi < idxs[t])) { vals[t] = b; idxs[t] = bi; }
                }
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        var r = vals[0];
        if (op == 1u) { r = r / f32(p.window); }
        if (op == 4u) { r = f32(idxs[0]); }
        y[out] = r;
    }
}
