// Rows of the top-1 predicted moment (TR-DETR MR2HD, LD-DETR HD head), as gather indices.
// Per sample b: the query with the largest foreground margin logits[q,0] - logits[q,1] (the
// argmax of softmax(logits)[:, 0]; ties to the first query), its span (cx, w) converted to clip
// indices in float32 exactly as the official code does,
//   s = floor(((cx - 0.5 w) * (L * clip_len)) / clip_len),  e = floor(((cx + 0.5 w) * (L * clip_len)) / clip_len),
// with L the sample's valid clip count, then Python slicing rows[s : e + 1] (negative bounds
// count from the end, bounds clipped, empty when start >= stop). Output: index[b, t] = the row of
// step t, or -1 for a zero row (after the slice, and on padded clips); steps[b] = L.
// One workgroup per sample: lane 0 picks the range, all lanes write the indices.

struct Params {
    batch: u32,
    queries: u32,
    clips: u32,
    clip_len: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> spans: array<f32>;
@group(0) @binding(3) var<storage, read> video_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> index: array<f32>;
@group(0) @binding(5) var<storage, read_write> steps: array<f32>;

var<workgroup> range_start: i32;
var<workgroup> range_count: i32;
var<workgroup> valid: i32;

fn python_bound(i: i32, n: i32) -> i32 {
    if (i < 0) { return max(i + n, 0); }
    return min(i, n);
}

@compute @workgroup_size(64)
fn moment_rows(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.x;
    if (lid.x == 0u) {
        var n = 0.0;
        for (var t = 0u; t < p.clips; t++) { n += video_mask[b * p.clips + t]; }
        let l = i32(round(n));
        var best = 0u;
        var best_margin = logits[b * p.queries * 2u] - logits[b * p.queries * 2u + 1u];
        for (var q = 1u; q < p.queries; q++) {
            let at = (b * p.queries + q) * 2u;
            let margin = logits[at] - logits[at + 1u];
            if (margin > best_margin) { best = q; best_margin = margin; }
        }
        let cx = spans[(b * p.queries + best) * 2u];
        let w = spans[(b * p.queries + best) * 2u + 1u];
        let scale = f32(l) * p.clip_len;
        let s = i32(floor((cx - 0.5 * w) * scale / p.clip_len));
        let e = i32(floor((cx + 0.5 * w) * scale / p.clip_len));
        let start = python_bound(s, l);
        let stop = python_bound(e + 1, l);
        range_start = start;
        range_count = max(stop - start, 0);
        valid = l;
        steps[b] = f32(l);
    }
    workgroupBarrier();
    let start = workgroupUniformLoad(&range_start);
    let count = workgroupUniformLoad(&range_count);
    for (var t = lid.x; t < p.clips; t += 64u) {
        var row = -1;
        if (i32(t) < count) { row = start + i32(t); }
        index[b * p.clips + t] = f32(row);
    }
}
