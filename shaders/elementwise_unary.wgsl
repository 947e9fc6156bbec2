// Unary elementwise op y = f(x) over a dense tensor of n values (f: see elementwise_common.wgsl).
// Layout: x and y viewed as array<vec4<f32>>; the executor pads every buffer to 16 bytes, so the
// last vec4 may cover up to 3 padding values, which are computed and written harmlessly.
// Threads: one vec4 per thread, 256 threads per workgroup, grid folded by grid_1d.
// Ends with elementwise_common.wgsl.

struct Params {
    n4: u32,
    code: u32,
    p0: f32,
    p1: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> slope: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(256, 1, 1)
fn unary(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.n4) { return; }
    // Absent slope: the dummy buffer is bound; its value is then unused.
    y[i] = unary4(x[i], p.code, p.p0, p.p1, slope[0]);
}
