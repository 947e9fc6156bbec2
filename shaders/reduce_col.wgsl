// Reduction over non-overlapping windows of a middle axis: x viewed as (outer, axis, inner)
// row-major, y[o, w, i] = op(x[o, w*window + j, i] for j < window), w < n_win = axis / window.
// op: 0 sum, 1 mean, 2 max, 3 min, 4 argmax (f32 index within the window). Same NaN / tie rules
// as reduce_row.wgsl: NaN ignored by max / min / argmax, argmax ties → lowest index, a window
// with nothing above -inf gives max -inf and argmax 0.
// One thread per output value folding its window serially (sums in four interleaved partials);
// consecutive threads take consecutive `i`, so reads are coalesced when inner > 1. Used when
// inner > 1 or the window is short.

struct Params {
    total: u32, axis: u32, inner: u32, window: u32, n_win: u32, op: u32, neg_inf: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn reduce_col(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let out = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (out >= p.total) { return; }
    let i = out % p.inner;
    let ow = out / p.inner;                     // o * n_win + w
    let base = ((ow / p.n_win) * p.axis + (ow % p.n_win) * p.window) * p.inner + i;
    let op = p.op;
    var acc = 0.0;
    if (op == 2u || op == 4u) { acc = p.neg_inf; }
    if (op == 3u) { acc = -p.neg_inf; }
    var best = 0u;
    if (op <= 1u) {
        // Sum / mean: four interleaved partial sums (a named vec4) halve the rounding error of
        // one long serial sum.
        var acc4 = vec4<f32>(0.0);
        let step = p.inner;
        var j = 0u;
        for (; j + 4u <= p.window; j += 4u) {
            let at = base + j * step;
            acc4 += vec4<f32>(x[at], x[at + step], x[at + 2u * step], x[at + 3u * step]);
        }
        for (; j < p.window; j++) {
            acc4.x += x[base + j * step];
        }
        acc = (acc4.x + acc4.y) + (acc4.z + acc4.w);
    } else {
        for (var j = 0u; j < p.window; j++) {
            let v = x[base + j * p.inner];
            switch op {
                case 2u: { if (v > acc) { acc = v; } }
                case 3u: { if (v < acc) { acc = v; } }
                default: { if (v > acc) { acc = v; best = j; } }
            }
        }
    }
    if (op == 1u) { acc = acc / f32(p.window); }
    if (op == 4u) { acc = f32(best); }
    y[out] = acc;
}
