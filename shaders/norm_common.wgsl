
// Shared by norm_layer.wgsl and norm_l2.wgsl (appended by the Rust side): the workgroup size and
// a tree sum over the workgroup's partial values.

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// Sum of every thread's `v`, returned to all threads. Ends with a barrier, so the caller may
// call it again right away.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
