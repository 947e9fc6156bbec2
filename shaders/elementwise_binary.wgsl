// Binary elementwise op with NumPy broadcasting:
//   out[i] = post( op( a[i·sa], pre_b( b[i·sb] ) ) )
// Layout: out is dense (d0, d1, d2, d3) (the host collapses mergeable dims and pads to rank 4);
// a and b are read through element strides, 0 on broadcast dims. pre_b and post are unary codes
// of elementwise_common.wgsl; a PReLU in post reads its slope from `slope`.
// Threads: one output per thread, 256 per workgroup, grid folded by grid_1d. This file: any
// strides; elementwise_binary_vec4.wgsl: four outputs per thread with vec4 loads.
// Ends with elementwise_common.wgsl.

struct Params {
    n: u32,
    d1: u32, d2: u32, d3: u32,
    sa0: u32, sa1: u32, sa2: u32, sa3: u32,
    sb0: u32, sb1: u32, sb2: u32, sb3: u32,
    op: u32,
    pre_code: u32, pre_p0: f32, pre_p1: f32,
    post_code: u32, post_p0: f32, post_p1: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> slope: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn binary(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.n) { return; }
    let i3 = i % p.d3;
    var t = i / p.d3;
    let i2 = t % p.d2;
    t = t / p.d2;
    let i1 = t % p.d1;
    let i0 = t / p.d1;
    let av = a[i0 * p.sa0 + i1 * p.sa1 + i2 * p.sa2 + i3 * p.sa3];
    let bv = b[i0 * p.sb0 + i1 * p.sb1 + i2 * p.sb2 + i3 * p.sb3];
    let s = slope[0];
    let bb = unary4(vec4<f32>(bv), p.pre_code, p.pre_p0, p.pre_p1, s);
    let r = binary4(vec4<f32>(av), bb, p.op);
    out[i] = unary4(r, p.post_code, p.post_p0, p.post_p1, s).x;
}
