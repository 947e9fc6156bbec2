// Batched matmul with a fused epilogue:
//   c[b, m, n] = act(sum_k a[b, m, k] * w[b, k, n] + bias[n]) + residual[b, m, n]
// Operands are read through element strides, so one kernel serves PyTorch's `Linear`
// (w stored (N, K): stride_k = 1, stride_n = K, batch stride 0) and plain batched products.
// Tile: 32 x 32 outputs per workgroup of 8 x 8 threads, 4 x 4 outputs per thread held in four
// named vec4 accumulators, K consumed 16 at a time through workgroup memory (4 KiB).
// This file: any strides, scalar loads. matmul_vec4.wgsl: operands contiguous along K, vec4
// loads. Both end with matmul_common.wgsl.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;

@compute @workgroup_size(8, 8, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
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
        // 512 values per operand tile, 8 per thread; consecutive threads walk along K.
        for (var i = 0u; i < 8u; i++) {
            let e = tid + i * 64u;
            let kk = e % KSTEP;
            let r = e / KSTEP;
            let gk = k0 + kk;
            var av = 0.0;
            var wv = 0.0;
            if (gk < p.k) {
                if (row0 + r < p.m) { av = a[a_base + (row0 + r) * p.a_m + gk * p.a_k]; }
                if (col0 + r < p.n) { wv = w[w_base + gk * p.w_k + (col0 + r) * p.w_n]; }
            }
            a_tile[kk * TILE + r] = av;
            w_tile[kk * TILE + r] = wv;
        }
        workgroupBarrier();
        accumulate(lid, &c0, &c1, &c2, &c3);
        workgroupBarrier();
    }
    store_tile(batch, row0 + lid.y * 4u, col0 + lid.x * 4u, c0, c1, c2, c3);
}

