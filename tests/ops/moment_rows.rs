//! Top-1 moment rows: the official span → clip conversion and Python slicing, GPU vs CPU, and the
//! CPU twin against hand-worked cases from the specs (tr-detr.md §3.9, ld-detr.md §3.10).

use moment_gpu::ops::moment_rows::{moment_rows, top_moment_range};
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu_and_gpu, Rng, Tolerance};

#[test]
fn hand_worked_ranges() {
    // L = 75, clip_len 2: cx − w/2 = −0.16 → s = floor(−12) = −12 → −12 + 75 = 63;
    // e = floor(0.83·75) = 62 → stop 63: empty slice (ld-detr.md §3.10).
    let logits = [0.0, 1.0, 3.0, 0.0];
    let spans = [0.5, 0.5, 0.335, 0.99];
    assert_eq!(top_moment_range(&logits, &spans, 75, 2.0), (63, 63));
    // x1 = −0.1 → s = floor(−7.5) = −8 → 67; x2 = 0.9 → e = floor(67.5) = 67: rows 67..67
    // (tr-detr.md §3.9: st = −8, ed = 67 → rows 67..67).
    let spans = [0.5, 0.5, 0.4, 1.0];
    let (s, e) = top_moment_range(&logits, &spans, 75, 2.0);
    assert_eq!((s, e), (67, 68));
    // A span past the end is clipped; ties go to the first query.
    assert_eq!(top_moment_range(&[1.0, 0.0, 1.0, 0.0], &[0.9, 0.5, 0.1, 0.1], 10, 2.0), (6, 10));
}

/// Exact: indices are small integers.
const EXACT: Tolerance = Tolerance::new(0.0, 0.0);

#[test]
fn moment_rows_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    // (valid clips per sample, padded L, queries)
    for (valid, l, q) in
        [(vec![1], 1, 1), (vec![7], 7, 10), (vec![75, 30, 7], 75, 10), (vec![66, 65], 66, 3), (vec![100], 130, 25)]
    {
        let b = valid.len();
        let logits = rng.vec(b * q * 2, -3.0, 3.0);
        // Spans whose ends fall on both sides of [0, 1].
        let spans: Vec<f32> =
            (0..b * q).flat_map(|_| [0.5 + 0.4 * (rng.uniform(-1.0, 1.0)), rng.uniform(0.0, 1.0)]).collect();
        let mask = padding_mask(&valid, l);
        let build = |g: &mut moment_gpu::Graph| {
            let lo = g.input("logits", &[b, q, 2]);
            let sp = g.input("spans", &[b, q, 2]);
            let m = g.input("mask", &[b, l]);
            let (index, steps) = moment_rows(g, lo, sp, m, 2.0).unwrap();
            g.output("index", index);
            g.output("steps", steps);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("logits", &logits), ("spans", &spans), ("mask", &mask)]);
        assert_close(&format!("index {valid:?}"), gpu_out.get("index"), cpu.get("index"), EXACT);
        assert_close(&format!("steps {valid:?}"), gpu_out.get("steps"), cpu.get("steps"), EXACT);
        let steps: Vec<f32> = valid.iter().map(|&v| v as f32).collect();
        assert_eq!(cpu.get("steps"), &steps[..]);
    }
}
