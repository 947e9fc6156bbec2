// Top-k over the last axis: x (rows, n) → values (rows, k) and indices (rows, k) (f32 holding
// integers), sorted by descending value, ties → lower index first (a stable descending sort).
// NaN ranks as -inf (its value is still returned as NaN); -inf entries are returned like any
// other value when fewer than k entries are finite.
// One workgroup of 256 threads per row and k rounds: round r selects the best element that comes
// strictly after round r-1's pick in the (value desc, index asc) order, so nothing has to be
// marked and n is unbounded; each thread scans a strided share of the row, then a tree in
// workgroup memory (2 KiB) picks the round's winner.

struct Params {
    rows: u32, n: u32, k: u32, neg_inf: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<f32>;

var<workgroup> vals: array<f32, 256>;
var<workgroup> idxs: array<u32, 256>;

// NaN → -inf, tested on the bits: `v != v` may be folded away by drivers that assume no NaN.
fn key(v: f32) -> f32 {
    return select(v, p.neg_inf, (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u);
}

@compute @workgroup_size(256, 1, 1)
fn topk(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) { return; }
    let t = lid.x;
    let base = row * p.n;
    // The previous pick as (key, index + 1); (+inf, 0) puts every element after it.
    var prev_v = -p.neg_inf;
    var prev_i1 = 0u;
    for (var r = 0u; r < p.k; r++) {
        var bv = p.neg_inf;
        var bi = 0xffffffffu;
        for (var j = t; j < p.n; j += 256u) {
            let v = key(x[base + j]);
            let after_prev = v < prev_v || (v == prev_v && j + 1u > prev_i1);
            if (after_prev && (v > bv || (v == bv && j < bi))) {
                bv = v;
                bi = j;
            }
        }
        vals[t] = bv;
        idxs[t] = bi;
        workgroupBarrier();
        for (var s = 128u; s > 0u; s = s >> 1u) {
            if (t < s) {
                let a = vals[t];
                let b = vals[t + s];
                let ib = idxs[t + s];
                if (b > a || (b == a && ib < idxs[t])) {
                    vals[t] = b;
                    idxs[t] = ib;
                }
            }
            workgroupBarrier();
        }
        prev_v = vals[0];
        let win = idxs[0];
        prev_i1 = win + 1u;
        if (t == 0u) {
            values[row * p.k + r] = x[base + win];
            indices[row * p.k + r] = f32(win);
        }
        // Everyone has read the winner before the next round overwrites it.
        workgroupBarrier();
    }
}
