// matmul.wgsl with vec4 operand loads: both operands contiguous along K (a_k = w_k = 1) and K,
// every row stride and batch stride a multiple of 4, so each 16-byte load is aligned. Ends with
// matmul_common.wgsl.

@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;

@compute @workgroup_size(8, 8, 1)
fn matmul_vec4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tid = lid.y * 8u + lid.x;
    let a_base = batch * p.a_batch;
    let w_base = batch * p.w_batch;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += KSTEP) {
        // 32 rows x 4 vec4 per operand tile, 2 vec4 per thread. K % 4 == 0, so a vec4 is
        // either wholly inside K or wholly past it.
        for (var i = 0u; i < 2u; i++) {
            let e = tid + i * 64u;
            let q = e % 4u;
            let r = e / 4u;
            let gk = k0 + q * 4u;
            var av = vec4<f32>(0.0);
            var wv = vec4<f32>(0.0);
            if (gk < p.k) {
                if (row0 + r < p.m) { av = a[(a_base + (row0 + r) * p.a_m + gk) / 4u]; }
                if (col0 + r < p.n) { wv = w[(w_base + (col0 + r) * p.w_n + gk) / 4u]; }
            }
            let kk = q * 4u;
            a_tile[kk * TILE + r] = av.x;
            a_tile[(kk + 1u) * TILE + r] = av.y;
            a_tile[(kk + 2u) * TILE + r] = av.z;
            a_tile[(kk + 3u) * TILE + r] = av.w;
            w_tile[kk * TILE + r] = wv.x;
            w_tile[(kk + 1u) * TILE + r] = wv.y;
            w_tile[(kk + 2u) * TILE + r] = wv.z;
            w_tile[(kk + 3u) * TILE + r] = wv.w;
        }
        workgroupBarrier();
        accumulate(lid, &c0, &c1, &c2, &c3);
        workgroupBarrier();
    }
    store_tile(batch, row0 + lid.y * 4u, col0 + lid.x * 4u, c0, c1, c2, c3);
}
