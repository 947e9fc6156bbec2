
// Shared by span_iou.wgsl and span_nms.wgsl (the Rust side appends this file to either): the
// 1-D span overlap measures, in the exact f32 operation order of the CPU twins in span.rs.

// (center, width) → (start, end) when cxw == 1u (`span_cxw_to_xx`; 0.5·w is exact).
fn to_start_end(s0: f32, s1: f32, cxw: u32) -> vec2<f32> {
    if (cxw == 1u) { return vec2<f32>(s0 - 0.5 * s1, s0 + 0.5 * s1); }
    return vec2<f32>(s0, s1);
}

// Moment-DETR `temporal_iou`: inter / (len_a + len_b − inter), 0 where that union is ≤ 0.
// Returns (iou, union).
fn span_iou(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let inter = max(min(a.y, b.y) - max(a.x, b.x), 0.0);
    let uni = (a.y - a.x) + (b.y - b.x) - inter;
    return vec2<f32>(select(0.0, inter / uni, uni > 0.0), uni);
}

// Moment-DETR `generalized_temporal_iou`: iou − (hull − union) / hull, = iou where hull ≤ 0.
fn span_giou(a: vec2<f32>, b: vec2<f32>) -> f32 {
    let r = span_iou(a, b);
    let hull = max(max(a.y, b.y) - min(a.x, b.x), 0.0);
    return select(r.x, r.x - (hull - r.y) / hull, hull > 0.0);
}

// Moment-DETR `compute_temporal_iou` (its temporal NMS): inter / (max end − min start), the
// hull instead of the union; 0 where the hull is exactly 0.
fn hull_iou(a: vec2<f32>, b: vec2<f32>) -> f32 {
    let inter = max(min(a.y, b.y) - max(a.x, b.x), 0.0);
    let hull = max(a.y, b.y) - min(a.x, b.x);
    return select(inter / hull, 0.0, hull == 0.0);
}
