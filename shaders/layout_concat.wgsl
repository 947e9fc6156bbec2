// Concatenation of up to 6 tensors along one axis, with broadcasting of size-1 dims, in one
// dispatch: y = cat([a0, ..., a5], axis).
// The dense row-major output is viewed as 4 dims (d0 outermost; the Rust side merges and pads
// the real dims to 4, and `axis` is the concat axis in that view). Part k covers output
// coordinates end_{k-1} <= c_axis < end_k and is read at
//   sum_i c_i * s_k_i - off_k        (off_k = end_{k-1} * s_k_axis; stride 0 on broadcast dims),
// in wrapping u32 arithmetic (the result is always in range). Absent parts are bound to a dummy
// buffer and never read (their `end` equals the axis length).
// One thread per output element, 256 threads per workgroup, 1-D grid folded into (x, y).

struct Params {
    total: u32, n1: u32, n2: u32, n3: u32, axis: u32,
    end0: u32, off0: u32, s00: u32, s01: u32, s02: u32, s03: u32,
    end1: u32, off1: u32, s10: u32, s11: u32, s12: u32, s13: u32,
    end2: u32, off2: u32, s20: u32, s21: u32, s22: u32, s23: u32,
    end3: u32, off3: u32, s30: u32, s31: u32, s32: u32, s33: u32,
    end4: u32, off4: u32, s40: u32, s41: u32, s42: u32, s43: u32,
    end5: u32, off5: u32, s50: u32, s51: u32, s52: u32, s53: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a0: array<f32>;
@group(0) @binding(2) var<storage, read> a1: array<f32>;
@group(0) @binding(3) var<storage, read> a2: array<f32>;
@group(0) @binding(4) var<storage, read> a3: array<f32>;
@group(0) @binding(5) var<storage, read> a4: array<f32>;
@group(0) @binding(6) var<storage, read> a5: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

fn at(c: vec4<u32>, s0: u32, s1: u32, s2: u32, s3: u32, off: u32) -> u32 {
    return c.x * s0 + c.y * s1 + c.z * s2 + c.w * s3 - off;
}

@compute @workgroup_size(256, 1, 1)
fn concat(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (i >= p.total) { return; }
    var r = i;
    let c3 = r % p.n3; r = r / p.n3;
    let c2 = r % p.n2; r = r / p.n2;
    let c1 = r % p.n1;
    let c0 = r / p.n1;
    let c = vec4<u32>(c0, c1, c2, c3);
    let ca = select(select(select(c3, c2, p.axis == 2u), c1, p.axis == 1u), c0, p.axis == 0u);
    var v: f32;
    if (ca < p.end0) {
        v = a0[at(c, p.s00, p.s01, p.s02, p.s03, p.off0)];
    } else if (ca < p.end1) {
        v = a1[at(c, p.s10, p.s11, p.s12, p.s13, p.off1)];
    } else if (ca < p.end2) {
        v = a2[at(c, p.s20, p.s21, p.s22, p.s23, p.off2)];
    } else if (ca < p.end3) {
        v = a3[at(c, p.s30, p.s31, p.s32, p.s33, p.off3)];
    } else if (ca < p.end4) {
        v = a4[at(c, p.s40, p.s41, p.s42, p.s43, p.off4)];
    } else {
        v = a5[at(c, p.s50, p.s51, p.s52, p.s53, p.off5)];
    }
    y[i] = v;
}
