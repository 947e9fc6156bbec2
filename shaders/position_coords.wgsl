// Sine embedding of coordinate values (DAB-DETR `gen_sineembed_for_position`, 1-D anchors):
//   y[r, c*F + k] = sin((v[r, c] * scale) / dim_t[k]) for even k, cos(...) for odd k
// i.e. every coordinate gets F interleaved sin/cos features, coordinates concatenated in order
// ([center | width] for (center, width) anchors). dim_t (F) = temperature^(2 floor(k/2) / F) is
// a host-computed table shared with the CPU twin.
// Layout: v (rows, C), dim_t (F), y (rows, C*F) row-major.
// Threads: one output value per thread, 256 per workgroup, grid folded by grid_1d; consecutive
// threads write consecutive features of one coordinate (coalesced) and read the same v (cached).
// Arguments stay within [0, scale] for coordinates in [0, 1] (sigmoid anchors), where the hardware
// sin/cos of every target is accurate to ~1e-6.

struct Params {
    n: u32,
    f: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> dim_t: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn sine_coords(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.n) { return; }
    let k = i % p.f;
    let a = (v[i / p.f] * p.scale) / dim_t[k];
    y[i] = select(cos(a), sin(a), (k & 1u) == 0u);
}
