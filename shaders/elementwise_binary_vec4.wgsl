// elementwise_binary.wgsl with four outputs per thread and vec4 loads. Used when the (collapsed)
// last dim d3 is a multiple of 4, or is the only dim, and each operand's last-dim stride is 1
// (vec4 load) or 0 (one value splatted). In the single-dim case the last vec4 may cover up to 3
// padding values of the 16-byte-padded buffers; they are computed and written harmlessly.
// Threads: 256 per workgroup, grid folded by grid_1d. Ends with elementwise_common.wgsl.

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
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> slope: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;

// Four consecutive values at element index `at` (stride 1), or the value at `at` four times.
fn load_a(at: u32, contiguous: bool) -> vec4<f32> {
    let q = a[at / 4u];
    return select(vec4<f32>(q[at % 4u]), q, contiguous);
}
fn load_b(at: u32, contiguous: bool) -> vec4<f32> {
    let q = b[at / 4u];
    return select(vec4<f32>(q[at % 4u]), q, contiguous);
}

@compute @workgroup_size(256, 1, 1)
fn binary_vec4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let v = (wid.x + wid.y * 65535u) * 256u + lid.x;
    let i = v * 4u;
    if (i >= p.n) { return; }
    let i3 = i % p.d3;
    var t = i / p.d3;
    let i2 = t % p.d2;
    t = t / p.d2;
    let i1 = t % p.d1;
    let i0 = t / p.d1;
    let av = load_a(i0 * p.sa0 + i1 * p.sa1 + i2 * p.sa2 + i3 * p.sa3, p.sa3 == 1u);
    let bv = load_b(i0 * p.sb0 + i1 * p.sb1 + i2 * p.sb2 + i3 * p.sb3, p.sb3 == 1u);
    let s = slope[0];
    let bb = unary4(bv, p.pre_code, p.pre_p0, p.pre_p1, s);
    out[v] = unary4(binary4(av, bb, p.op), p.post_code, p.post_p0, p.post_p1, s);
}
