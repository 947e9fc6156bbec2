// SG-DETR two-stage proposal anchors (sg-detr.md §3.10 steps 2, 4, 5) over the concatenated
// FPN levels. Level l covers tokens [off_l, off_l + len_l) of a row; for token t = off_l + i:
//   n      = number of tokens of level l whose mask is > 0.5 (this sample)
//   valid  = mask[b, t] > 0.5  and  width_ok_l  and  0.0125 < (i + 0.5) / n < 0.9875
//   anchors[b, t] = (invsig((i + 0.5) / n), width_logit_l) if valid, else (invalid, invalid)
// The centre test runs on integers: 0.0125 = 1/80 and 0.9875 = 79/80, so for integer i and n
// the float32 comparisons equal 40(2i+1) > n and 40(2i+1) < 79n (see src/ops/proposals.rs);
// the GPU's inexact division then only touches the anchor values, never the selection.
// invsig(x) = log(max(clamp(x,0,1), 1e-3) / max(1 - clamp(x,0,1), 1e-3)) (DAB-DETR).
// Layout: mask (B, T), anchors (B, T, 2), valid (B, T), row-major.
// Threads: one per (b, t), 256 per workgroup, grid folded by grid_1d; each thread counts its
// level's valid tokens with a serial loop (levels are at most a few thousand tokens).

struct Params {
    batch: u32,
    total: u32,
    levels: u32,
    invalid: f32,
    off0: u32, len0: u32, wlogit0: f32, wok0: u32,
    off1: u32, len1: u32, wlogit1: f32, wok1: u32,
    off2: u32, len2: u32, wlogit2: f32, wok2: u32,
    off3: u32, len3: u32, wlogit3: f32, wok3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> anchors: array<f32>;
@group(0) @binding(3) var<storage, read_write> valid: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn proposal_anchors(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let gid = (wid.x + wid.y * 65535u) * 256u + lid.x;
    if (gid >= p.batch * p.total) { return; }
    let b = gid / p.total;
    let t = gid % p.total;
    let row = b * p.total;

    // The level of token t: levels are contiguous and in order.
    var off = p.off0;
    var len = p.len0;
    var wlogit = p.wlogit0;
    var wok = p.wok0;
    if (p.levels > 1u && t >= p.off1) { off = p.off1; len = p.len1; wlogit = p.wlogit1; wok = p.wok1; }
    if (p.levels > 2u && t >= p.off2) { off = p.off2; len = p.len2; wlogit = p.wlogit2; wok = p.wok2; }
    if (p.levels > 3u && t >= p.off3) { off = p.off3; len = p.len3; wlogit = p.wlogit3; wok = p.wok3; }

    var n = 0u;
    for (var j = 0u; j < len; j++) {
        n += select(0u, 1u, mask[row + off + j] > 0.5);
    }
    let i = t - off;
    let a = 40u * (2u * i + 1u);
    let ok = mask[gid] > 0.5 && wok == 1u && a > n && a < 79u * n;

    var c_logit = p.invalid;
    var w_logit = p.invalid;
    if (ok) {
        let center = clamp((f32(i) + 0.5) / f32(n), 0.0, 1.0);
        c_logit = log(max(center, 1e-3) / max(1.0 - center, 1e-3));
        w_logit = wlogit;
    }
    anchors[2u * gid] = c_logit;
    anchors[2u * gid + 1u] = w_logit;
    valid[gid] = select(0.0, 1.0, ok);
}
