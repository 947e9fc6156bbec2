// Strided copy with zero fill: the one kernel behind slice (with step), select, pad, permute /
// transpose, broadcast_to, repeat_interleave and reshape.
// The dense row-major output is viewed as 4 dims (d0 outermost; the Rust side merges and pads
// the real dims to 4). For the output coordinate c_i along dim i:
//   in range  iff lo_i <= c_i < hi_i,
//   source coordinate s_i = (c_i - lo_i) / div_i          (div_i > 1 only for repeat_interleave),
//   out = in range on every dim ? x[base + sum_i s_i * stride_i] : 0   (stride 0 = broadcast).
// One thread per output element, 256 threads per workgroup, 1-D grid folded into (x, y).

struct Params {
    total: u32, base: u32,
    n0: u32, st0: u32, lo0: u32, hi0: u32, dv0: u32,
    n1: u32, st1: u32, lo1: u32, hi1: u32, dv1: u32,
    n2: u32, st2: u32, lo2: u32, hi2: u32, dv2: u32,
    n3: u32, st3: u32, lo3: u32, hi3: u32, dv3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn copy(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.total) { return; }
    var r = i;
    let c3 = r % p.n3; r = r / p.n3;
    let c2 = r % p.n2; r = r / p.n2;
    let c1 = r % p.n1;
    let c0 = r / p.n1;
    let inside = c0 >= p.lo0 && c0 < p.hi0 && c1 >= p.lo1 && c1 < p.hi1
        && c2 >= p.lo2 && c2 < p.hi2 && c3 >= p.lo3 && c3 < p.hi3;
    var v = 0.0;
    if (inside) {
        let src = p.base + (c0 - p.lo0) / p.dv0 * p.st0 + (c1 - p.lo1) / p.dv1 * p.st1
            + (c2 - p.lo2) / p.dv2 * p.st2 + (c3 - p.lo3) / p.dv3 * p.st3;
        v = x[src];
    }
    y[i] = v;
}
