// Greedy temporal NMS per batch row: spans (B, N, 2) + scores (B, N) → keep (B, N), 1 = kept,
// 0 = suppressed. Candidates are visited by descending score, ties → lower index (Python's
// stable `sorted(..., reverse=True)`; NaN scores rank as −inf); a candidate is kept when no
// already kept span overlaps it with IoU > threshold and fewer than max_keep spans are kept;
// a row of one span always keeps it (moment-DETR's early return).
// IoU: kind 0 = moment-DETR `temporal_nms` (hull_iou), kind 1 = exact IoU (torchvision `nms` on
// [start, 0, end, 1] boxes).
// One workgroup of 256 threads per row, N ≤ 512: scores are ranked (O(N²) compares, parallel over
// candidates) into workgroup memory in sorted order (10 KiB), then one barrier-separated step per
// candidate in which every thread tests a strided share of the later candidates. Ends with
// span_common.wgsl.

struct Params {
    rows: u32, n: u32, max_keep: u32, kind: u32, cxw: u32, threshold: f32, neg_inf: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> spans: array<f32>;
@group(0) @binding(2) var<storage, read> scores: array<f32>;
@group(0) @binding(3) var<storage, read_write> keep: array<f32>;

const MAXN: u32 = 512u;
var<workgroup> key: array<f32, MAXN>;
// By rank (sorted order):
var<workgroup> s_start: array<f32, MAXN>;
var<workgroup> s_end: array<f32, MAXN>;
var<workgroup> s_idx: array<u32, MAXN>;
var<workgroup> alive: array<u32, MAXN>;

fn overlap(a: vec2<f32>, b: vec2<f32>) -> f32 {
    if (p.kind == 0u) { return hull_iou(a, b); }
    return span_iou(a, b).x;
}

@compute @workgroup_size(256, 1, 1)
fn nms(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x + wid.y * 65535u;
    if (row >= p.rows) { return; }
    let t = lid.x;
    let n = p.n;
    let base = row * n;
    for (var i = t; i < n; i += 256u) {
        let s = scores[base + i];
        // NaN → -inf, tested on the bits (`s != s` may be folded away by drivers).
        key[i] = select(s, p.neg_inf, (bitcast<u32>(s) & 0x7fffffffu) > 0x7f800000u);
    }
    workgroupBarrier();
    for (var i = t; i < n; i += 256u) {
        let ki = key[i];
        var rank = 0u;
        for (var j = 0u; j < n; j++) {
            let kj = key[j];
            if (kj > ki || (kj == ki && j < i)) { rank++; }
        }
        let se = to_start_end(spans[(base + i) * 2u], spans[(base + i) * 2u + 1u], p.cxw);
        s_start[rank] = se.x;
        s_end[rank] = se.y;
        s_idx[rank] = i;
        alive[rank] = 1u;
    }
    workgroupBarrier();
    var kept = 0u;
    for (var r = 0u; r < n; r++) {
        // alive[r] was last written before the previous barrier; this step only writes j > r.
        let keep_r = alive[r] == 1u && (kept < p.max_keep || n == 1u);
        if (keep_r) {
            kept++;
            let a = vec2<f32>(s_start[r], s_end[r]);
            for (var j = r + 1u + t; j < n; j += 256u) {
                if (alive[j] == 1u && overlap(a, vec2<f32>(s_start[j], s_end[j])) > p.threshold) {
                    alive[j] = 0u;
                }
            }
        }
        if (t == 0u) { keep[base + s_idx[r]] = select(0.0, 1.0, keep_r); }
        workgroupBarrier();
    }
}
