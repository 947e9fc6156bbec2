//! Span ops (pairwise IoU / GIoU, temporal NMS, MR2HD top-span rows): GPU kernels vs CPU twins,
//! and the CPU functions vs hand-computed values and an independent transcription of
//! moment-DETR's list-popping `temporal_nms` in f64.

use moment_gpu::ops::span::{
    hull_iou, nms, pairwise_iou, span_giou, span_iou, temporal_nms, to_start_end, NmsIou, SpanFormat,
};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// IoU / GIoU in [-1, 1] from a handful of f32 operations; WGSL allows 2.5 ulp for a division
/// (two divisions in a GIoU), so a few 1e-7.
const IOU_TOL: Tolerance = Tolerance::new(1e-6, 0.0);
/// Index and mask outputs are integers: exact.
const EXACT: Tolerance = Tolerance::new(0.0, 0.0);

/// `n` spans in `format`: starts in [0, 1), widths in [0, 0.5), every 7th of width 0 and every
/// 5th a copy of its predecessor (exact ties, full overlap).
fn spans(rng: &mut Rng, n: usize, format: SpanFormat) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        if i % 5 == 4 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            out.extend([a, b]);
            continue;
        }
        let s = rng.uniform(0.0, 1.0);
        let w = if i % 7 == 3 { 0.0 } else { rng.uniform(0.0, 0.5) };
        match format {
            SpanFormat::StartEnd => out.extend([s, s + w]),
            SpanFormat::CenterWidth => out.extend([s + 0.5 * w, w]),
        }
    }
    out
}

#[test]
fn pairwise_iou_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    // (B, N, M): size 1, odd sizes, 10 × 10 predictions, N·M off the 256-thread workgroup, B > 1.
    for &(b, n, m) in &[(1, 1, 1), (2, 3, 5), (3, 25, 10), (1, 7, 300), (4, 10, 10), (2, 33, 17)] {
        for format in [SpanFormat::StartEnd, SpanFormat::CenterWidth] {
            for generalized in [false, true] {
                let a = spans(&mut rng, b * n, format);
                let c = spans(&mut rng, b * m, format);
                let build = |g: &mut Graph| {
                    let ai = g.input("a", &[b, n, 2]);
                    let ci = g.input("c", &[b, m, 2]);
                    let y = pairwise_iou(g, ai, ci, format, generalized).unwrap();
                    g.output("y", y);
                };
                let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("a", &a), ("c", &c)]);
                assert_close(
                    &format!("pairwise iou {b}x{n}x{m} {format:?} generalized={generalized}"),
                    gpu_out.get("y"),
                    cpu.get("y"),
                    IOU_TOL,
                );
            }
        }
    }
}

#[test]
fn iou_hand_values() {
    let close = |got: f32, want: f64| assert!((got as f64 - want).abs() < 1e-7, "got {got}, want {want}");
    // Partial overlap: inter 1, union 3, hull 3.
    close(span_iou([0.0, 2.0], [1.0, 3.0]), 1.0 / 3.0);
    close(span_giou([0.0, 2.0], [1.0, 3.0]), 1.0 / 3.0);
    close(hull_iou([0.0, 2.0], [1.0, 3.0]), 1.0 / 3.0);
    // Disjoint: inter 0, union 3, hull 4 → GIoU −1/4.
    close(span_iou([0.0, 1.0], [2.0, 4.0]), 0.0);
    close(span_giou([0.0, 1.0], [2.0, 4.0]), -0.25);
    close(hull_iou([0.0, 1.0], [2.0, 4.0]), 0.0);
    // Containment: inter 1, union 4.
    close(span_iou([0.0, 4.0], [1.0, 2.0]), 0.25);
    close(span_giou([0.0, 4.0], [1.0, 2.0]), 0.25);
    // Identical spans.
    close(span_iou([0.25, 0.75], [0.25, 0.75]), 1.0);
    // Two empty spans at the same point: union and hull 0 → defined as 0.
    close(span_iou([1.0, 1.0], [1.0, 1.0]), 0.0);
    close(span_giou([1.0, 1.0], [1.0, 1.0]), 0.0);
    close(hull_iou([1.0, 1.0], [1.0, 1.0]), 0.0);
    // An empty span inside another: inter 0, union 2 → 0.
    close(span_iou([0.0, 2.0], [1.0, 1.0]), 0.0);
    // (center, width) conversion.
    assert_eq!(to_start_end([0.5, 0.25], SpanFormat::CenterWidth), [0.375, 0.625]);
    assert_eq!(to_start_end([0.5, 0.25], SpanFormat::StartEnd), [0.5, 0.25]);

    // The graph op's CPU twin, spans as (center, width): a = [(1, 2)] = [0, 2] against
    // b = [(2, 2), (3.5, 1), (1, 0)] = [1, 3], [3, 4], [1, 1] → IoU [1/3, 0, 0] and
    // GIoU [1/3, 0 − (4 − 3)/4, 0 − (2 − 2)/2] = [1/3, −1/4, 0].
    for (generalized, want) in [(false, [1.0 / 3.0, 0.0, 0.0]), (true, [1.0 / 3.0, -0.25, 0.0])] {
        let out = run_cpu(
            |g| {
                let a = g.input("a", &[1, 2]);
                let b = g.input("b", &[3, 2]);
                let y = pairwise_iou(g, a, b, SpanFormat::CenterWidth, generalized).unwrap();
                g.output("y", y);
            },
            &[("a", &[1.0, 2.0]), ("b", &[2.0, 2.0, 3.5, 1.0, 1.0, 0.0])],
        );
        assert_eq!(out.shape("y"), &[1, 3]);
        for (g, w) in out.get("y").iter().zip(want) {
            close(*g, w);
        }
    }
}

/// moment-DETR `temporal_nms` transcribed literally (Python lists, float64 IoU), returning the
/// kept original indices.
fn python_temporal_nms(spans: &[[f32; 2]], scores: &[f32], nms_thd: f64, max_after_nms: usize) -> Vec<usize> {
    if spans.len() == 1 {
        return vec![0];
    }
    let iou = |p: [f64; 2], q: [f64; 2]| {
        let inter = (p[1].min(q[1]) - p[0].max(q[0])).max(0.0);
        let union = p[1].max(q[1]) - p[0].min(q[0]);
        if union == 0.0 {
            0.0
        } else {
            inter / union
        }
    };
    let mut pred: Vec<(usize, [f64; 2], f64)> =
        (0..spans.len()).map(|i| (i, [spans[i][0] as f64, spans[i][1] as f64], scores[i] as f64)).collect();
    pred.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap()); // stable, like Python's sorted
    let mut r = Vec::new();
    while pred.len() > 1 && r.len() < max_after_nms {
        let mut idx = 1;
        while idx < pred.len() {
            if iou(pred[0].1, pred[idx].1) > nms_thd {
                pred.remove(idx);
            } else {
                idx += 1;
            }
        }
        r.push(pred.remove(0).0);
    }
    if r.len() < max_after_nms && !pred.is_empty() {
        r.push(pred.remove(0).0);
    }
    r
}

#[test]
fn temporal_nms_matches_python_transcription() {
    let mut rng = Rng::new(32);
    for n in [1usize, 2, 3, 10, 40, 150] {
        for ties in [false, true] {
            // The official threshold is a Python float: compare the f64 transcription against
            // the decimal value, not against the f32 we pass (an IoU of exactly 7/10 must not
            // exceed 0.7).
            for &(thd, thd64) in &[(0.0f32, 0.0f64), (0.3, 0.3), (0.5, 0.5), (0.7, 0.7), (1.0, 1.0)] {
                for max_after in [1usize, 3, 10, 100] {
                    // Spans on a 2-second grid (official post-processing rounds them) or free.
                    let sp: Vec<[f32; 2]> = (0..n)
                        .map(|_| {
                            let s = rng.uniform(0.0, 140.0);
                            let w = rng.uniform(0.0, 40.0);
                            if ties {
                                [(s / 2.0).round() * 2.0, ((s + w) / 2.0).round() * 2.0]
                            } else {
                                [s, s + w]
                            }
                        })
                        .collect();
                    let sc: Vec<f32> =
                        (0..n).map(|_| if ties { rng.below(4) as f32 * 0.25 } else { rng.uniform(0.0, 1.0) }).collect();
                    let got = temporal_nms(&sp, &sc, thd, max_after, NmsIou::Hull);
                    let want = python_temporal_nms(&sp, &sc, thd64, max_after);
                    assert_eq!(got, want, "n {n} ties {ties} thd {thd} max {max_after}");
                }
            }
        }
    }
}

#[test]
fn temporal_nms_hand_values() {
    // Score order: 0 (0.9), 3 (0.9, tie → after 0), 1 (0.8), 2 (0.8).
    let sp = [[0.0, 10.0], [1.0, 9.0], [20.0, 30.0], [0.0, 10.0]];
    let sc = [0.9, 0.8, 0.8, 0.9];
    // 3 duplicates 0 (IoU 1) and 1 lies inside it (IoU 0.8): both suppressed at 0.5.
    assert_eq!(temporal_nms(&sp, &sc, 0.5, 10, NmsIou::Hull), [0, 2]);
    assert_eq!(temporal_nms(&sp, &sc, 0.5, 1, NmsIou::Hull), [0]);
    assert_eq!(temporal_nms(&sp, &sc, 0.9, 10, NmsIou::Hull), [0, 1, 2]);
    assert_eq!(temporal_nms(&sp, &sc, 1.0, 10, NmsIou::Exact), [0, 3, 1, 2]);
    // A lone span is kept even with max_keep 0 (the official early return); otherwise 0 keeps none.
    assert_eq!(temporal_nms(&sp[..1], &sc[..1], 0.5, 0, NmsIou::Hull), [0]);
    assert!(temporal_nms(&sp, &sc, 0.5, 0, NmsIou::Hull).is_empty());

    // The graph op on the same row (B = 2: the second row reversed).
    let spans_flat: Vec<f32> = sp.iter().chain(sp.iter().rev()).flatten().copied().collect();
    let scores: Vec<f32> = sc.iter().chain(sc.iter().rev()).copied().collect();
    let build = |g: &mut Graph| {
        let s = g.input("s", &[2, 4, 2]);
        let c = g.input("c", &[2, 4]);
        let k = nms(g, s, c, SpanFormat::StartEnd, 0.5, None, NmsIou::Hull).unwrap();
        g.output("k", k);
    };
    // Reversed row: new 0 = old 3 now wins the tie, new 3 = old 0 is suppressed, new 1 = old 2
    // is kept, new 2 = old 1 is suppressed.
    let want = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    let inputs: &[(&str, &[f32])] = &[("s", &spans_flat), ("c", &scores)];
    assert_eq!(run_cpu(build, inputs).get("k"), &want);
    if let Some(gpu) = gpu() {
        let (_, gpu_out) = run_cpu_and_gpu(&gpu, build, inputs);
        assert_eq!(gpu_out.get("k"), &want);
    }
}

#[test]
fn nms_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    // (B, N): a single span, two, the official 10 before NMS, rows longer than the workgroup,
    // the largest supported row.
    for &(b, n) in &[(1, 1), (3, 2), (4, 10), (2, 75), (2, 300), (1, 512)] {
        for format in [SpanFormat::StartEnd, SpanFormat::CenterWidth] {
            for iou in [NmsIou::Hull, NmsIou::Exact] {
                for (thd, max_keep) in [(0.5f32, None), (0.3, Some(5)), (0.7, Some(1)), (0.0, None)] {
                    let sp = spans(&mut rng, b * n, format);
                    // Scores with many exact ties, and a NaN.
                    let mut sc: Vec<f32> = (0..b * n).map(|_| rng.below(6) as f32 * 0.125).collect();
                    if sc.len() > 3 {
                        sc[3] = f32::NAN;
                    }
                    let build = |g: &mut Graph| {
                        let s = g.input("s", &[b, n, 2]);
                        let c = g.input("c", &[b, n]);
                        let k = nms(g, s, c, format, thd, max_keep, iou).unwrap();
                        g.output("k", k);
                    };
                    let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("s", &sp), ("c", &sc)]);
                    assert_close(
                        &format!("nms {b}x{n} {format:?} {iou:?} thd {thd} max {max_keep:?}"),
                        gpu_out.get("k"),
                        cpu.get("k"),
                        EXACT,
                    );
                    let kept = cpu.get("k").iter().filter(|&&v| v == 1.0).count();
                    assert!(kept >= b && kept <= b * max_keep.unwrap_or(n), "{kept} kept over {b} rows");
                }
            }
        }
    }
}

/// Everything but the best suppressed (identical spans), nothing suppressed (disjoint spans).
#[test]
fn nms_all_or_nothing_suppressed() {
    let (b, n) = (3usize, 37usize);
    let mut rng = Rng::new(34);
    let scores = rng.vec(b * n, 0.0, 1.0);
    let same: Vec<f32> = (0..b * n).flat_map(|_| [10.0, 20.0]).collect();
    let disjoint: Vec<f32> = (0..b * n).flat_map(|i| [(i % n) as f32 * 2.0, (i % n) as f32 * 2.0 + 1.0]).collect();
    let best: Vec<usize> = (0..b)
        .map(|r| (0..n).max_by(|&i, &j| scores[r * n + i].partial_cmp(&scores[r * n + j]).unwrap()).unwrap())
        .collect();
    for (sp, want) in [
        (&same, (0..b * n).map(|i| if i % n == best[i / n] { 1.0 } else { 0.0 }).collect::<Vec<f32>>()),
        (&disjoint, vec![1.0; b * n]),
    ] {
        let build = |g: &mut Graph| {
            let s = g.input("s", &[b, n, 2]);
            let c = g.input("c", &[b, n]);
            let k = nms(g, s, c, SpanFormat::StartEnd, 0.0, None, NmsIou::Hull).unwrap();
            g.output("k", k);
        };
        let inputs: &[(&str, &[f32])] = &[("s", sp), ("c", &scores)];
        assert_eq!(run_cpu(build, inputs).get("k"), &want[..]);
        if let Some(gpu) = gpu() {
            let (_, gpu_out) = run_cpu_and_gpu(&gpu, build, inputs);
            assert_eq!(gpu_out.get("k"), &want[..]);
        }
    }
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 5, 2]);
    let b = g.input("b", &[3, 5, 2]);
    let c = g.input("c", &[2, 5, 3]);
    let s = g.input("s", &[2, 5]);
    let big = g.input("big", &[1, 513, 2]);
    let big_s = g.input("big_s", &[1, 513]);
    assert!(pairwise_iou(&mut g, a, b, SpanFormat::StartEnd, false).is_err());
    assert!(pairwise_iou(&mut g, a, c, SpanFormat::StartEnd, false).is_err());
    assert!(nms(&mut g, a, b, SpanFormat::StartEnd, 0.5, None, NmsIou::Hull).is_err());
    assert!(nms(&mut g, big, big_s, SpanFormat::StartEnd, 0.5, None, NmsIou::Hull).is_err());
    assert!(nms(&mut g, a, s, SpanFormat::StartEnd, f32::NAN, None, NmsIou::Hull).is_err());
    assert!(nms(&mut g, a, s, SpanFormat::StartEnd, 0.5, Some(3), NmsIou::Exact).is_ok());
}
