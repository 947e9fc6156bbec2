//! SG-DETR proposal anchors: GPU kernel vs CPU twin (SG-DETR's four FPN levels, single levels,
//! the exact-tie lengths 40 and 80, non-prefix and fully masked rows), the CPU twin vs the spec
//! (sg-detr.md §3.10) written here with f64 logs, and hand-checked tokens.

use moment_gpu::ops::proposals::{proposal_anchors, INVALID_ANCHOR_LOGIT};
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::{Graph, TensorId};

/// Anchor logits: `log(c / (1 − c))` of a centre `c` that the GPU may divide out up to 2.5 ulp
/// off (WGSL's division bound). Near `c = 0.9875` an ulp of `c` (6e-8) is amplified by
/// `1/(1 − c) = 80`: 2.5 ulp → 1.2e-5, plus a few ulp of the hardware `log` of values ≤ 4.4.
/// Validity flags are compared exactly.
const GPU_TOL: Tolerance = Tolerance::new(2e-5, 1e-6);
/// CPU twin (float32 log of the float32 ratio) vs the f64 log of the same float32 centre: a few
/// float32 ulp of logits up to 4.4 plus the ratio's rounding amplified by at most 80.
const SPEC_TOL: Tolerance = Tolerance::new(2e-6, 1e-6);

/// The default widths of the official configuration, and a set with an out-of-range width.
const WIDTHS: [f32; 4] = [0.05, 0.2, 0.4, 0.85];
const ODD_WIDTHS: [f32; 4] = [0.0125, 0.5, 0.9875, 0.3];

/// Level masks of SG-DETR's FPN for videos of `valid[b]` clips padded to `l` (a multiple of 4):
/// F0 repeat ×2, F1 the mask, F2 / F3 max-pooled by 2 / 4.
fn fpn_masks(valid: &[usize], l: usize) -> Vec<(Vec<usize>, Vec<f32>)> {
    let b = valid.len();
    [(2 * l, 2usize, 1usize), (l, 1, 1), (l / 2, 1, 2), (l / 4, 1, 4)]
        .into_iter()
        .map(|(n, up, down)| {
            let counts: Vec<usize> = valid.iter().map(|&v| (v * up).div_ceil(down)).collect();
            (vec![b, n], padding_mask(&counts, n))
        })
        .collect()
}

fn build<'a>(shapes: &'a [Vec<usize>], widths: &'a [f32]) -> impl Fn(&mut Graph) + 'a {
    move |g: &mut Graph| {
        let masks: Vec<TensorId> = shapes.iter().enumerate().map(|(k, s)| g.input(&format!("m{k}"), s)).collect();
        let (anchors, valid) = proposal_anchors(g, &masks, widths).unwrap();
        g.output("anchors", anchors);
        g.output("valid", valid);
    }
}

fn run_both(levels: &[(Vec<usize>, Vec<f32>)], widths: &[f32], what: &str) {
    let Some(gpu) = gpu() else { return };
    let shapes: Vec<Vec<usize>> = levels.iter().map(|l| l.0.clone()).collect();
    let names: Vec<String> = (0..levels.len()).map(|k| format!("m{k}")).collect();
    let inputs: Vec<(&str, &[f32])> = names.iter().zip(levels).map(|(n, l)| (n.as_str(), &l.1[..])).collect();
    let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build(&shapes, widths), &inputs);
    assert_eq!(gpu_out.get("valid"), cpu.get("valid"), "{what}: validity flags");
    assert_close(&format!("{what}: anchors"), gpu_out.get("anchors"), cpu.get("anchors"), GPU_TOL);
}

#[test]
fn fpn_levels_match_cpu() {
    // (valid clips per sample, padded L): one short video (L = 4), B > 1 with padding, the exact
    // tie lengths (F1 = 40, F0 = 80; F2 = 40 at L = 80), QVHighlights' 76, a long video, and a
    // fully masked sample.
    for (valid, l) in [
        (vec![4], 4),
        (vec![8, 4], 8),
        (vec![40, 20, 36], 40),
        (vec![80], 80),
        (vec![76, 32, 8], 76),
        (vec![300, 0], 300),
    ] {
        for widths in [WIDTHS, ODD_WIDTHS] {
            run_both(&fpn_masks(&valid, l), &widths, &format!("valid {valid:?} L = {l} widths {widths:?}"));
        }
    }
}

#[test]
fn single_levels_and_scattered_masks_match_cpu() {
    let mut rng = Rng::new(7);
    // (B, n): size 1, odd sizes, sizes off the 256-thread grid, B > 1.
    for (b, n) in [(1usize, 1usize), (3, 7), (2, 257), (5, 40), (1, 1000)] {
        let mask: Vec<f32> = (0..b * n).map(|_| (rng.below(5) > 0) as u32 as f32).collect();
        run_both(&[(vec![b, n], mask)], &[0.2], &format!("scattered mask B = {b} n = {n}"));
    }
    // Two and three levels of different lengths.
    let levels = vec![(vec![2, 9], padding_mask(&[9, 3], 9)), (vec![2, 50], padding_mask(&[50, 41], 50))];
    run_both(&levels, &[0.3, 0.7], "two levels");
    let mut three = levels.clone();
    three.push((vec![2, 3], padding_mask(&[0, 3], 3)));
    run_both(&three, &[0.3, 0.7, 0.5], "three levels, one fully masked row");
    run_both(&[(vec![2, 6], vec![0.0; 12])], &[0.2], "fully masked rows");
}

/// The spec's steps in f64 (centres in float32 as the official code computes them).
fn spec(levels: &[(Vec<usize>, Vec<f32>)], widths: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let b = levels[0].0[0];
    let invsig = |x: f64| {
        let c = x.clamp(0.0, 1.0);
        (c.max(1e-3) / (1.0 - c).max(1e-3)).ln()
    };
    let (mut anchors, mut valid) = (Vec::new(), Vec::new());
    for s in 0..b {
        for ((shape, mask), &w) in levels.iter().zip(widths) {
            let n = shape[1];
            let row = &mask[s * n..(s + 1) * n];
            let n_valid = row.iter().filter(|&&m| m > 0.5).count() as f32;
            for (i, &m) in row.iter().enumerate() {
                let center = (i as f32 + 0.5) / n_valid;
                let ok = m > 0.5 && 0.0125f32 < center && center < 0.9875f32 && 0.0125f32 < w && w < 0.9875f32;
                valid.push(ok as u32 as f32);
                if ok {
                    anchors.extend([invsig(center as f64) as f32, invsig(w as f64) as f32]);
                } else {
                    anchors.extend([INVALID_ANCHOR_LOGIT; 2]);
                }
            }
        }
    }
    (anchors, valid)
}

#[test]
fn cpu_twin_matches_the_spec() {
    for (valid, l) in [(vec![76, 32, 8], 76), (vec![40, 17], 40), (vec![4, 0], 4)] {
        for widths in [WIDTHS, ODD_WIDTHS] {
            let levels = fpn_masks(&valid, l);
            let shapes: Vec<Vec<usize>> = levels.iter().map(|l| l.0.clone()).collect();
            let names: Vec<String> = (0..4).map(|k| format!("m{k}")).collect();
            let inputs: Vec<(&str, &[f32])> = names.iter().zip(&levels).map(|(n, l)| (n.as_str(), &l.1[..])).collect();
            let out = run_cpu(build(&shapes, &widths), &inputs);
            let (anchors, flags) = spec(&levels, &widths);
            let what = format!("valid {valid:?} L = {l} widths {widths:?}");
            assert_eq!(out.get("valid"), &flags[..], "{what}: validity");
            assert_close(&what, out.get("anchors"), &anchors, SPEC_TOL);
        }
    }
}

/// Hand-checked tokens of one 40-clip level: token 0 has centre 0.5/40 = 0.0125 exactly and
/// token 39 has 39.5/40 = 0.9875 exactly, both invalid (strict bounds); token 1 (centre 0.0375)
/// is valid with anchor log(0.0375/0.9625); a width of 0.9875 invalidates the whole level.
#[test]
fn exact_ties_are_invalid() {
    let shapes = vec![vec![1, 40]];
    let mask = vec![1.0f32; 40];
    for (width, any_valid) in [(0.2f32, true), (0.9875, false)] {
        let out = run_cpu(build(&shapes, &[width]), &[("m0", &mask)]);
        let (anchors, valid) = (out.get("anchors"), out.get("valid"));
        assert_eq!((valid[0], valid[39]), (0.0, 0.0));
        assert_eq!(valid[1], any_valid as u32 as f32);
        assert_eq!(valid[38], any_valid as u32 as f32);
        assert_eq!(&anchors[0..2], &[INVALID_ANCHOR_LOGIT; 2]);
        if any_valid {
            assert!((anchors[2] - (0.0375f64 / 0.9625).ln() as f32).abs() < 1e-6, "{}", anchors[2]);
            assert!((anchors[3] - (0.2f64 / 0.8).ln() as f32).abs() < 1e-6, "{}", anchors[3]);
        }
    }
    if let Some(gpu) = gpu() {
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build(&shapes, &[0.2]), &[("m0", &mask)]);
        assert_eq!(gpu_out.get("valid"), cpu.get("valid"));
    }
}

#[test]
fn bad_levels_are_graph_errors() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 8]);
    let b = g.input("b", &[3, 4]);
    let c = g.input("c", &[2, 0]);
    let d = g.input("d", &[2, 4, 1]);
    for (masks, widths) in [
        (vec![], vec![]),
        (vec![a; 5], vec![0.2; 5]),
        (vec![a, b], vec![0.2, 0.2]),
        (vec![a], vec![0.2, 0.3]),
        (vec![c], vec![0.2]),
        (vec![d], vec![0.2]),
        (vec![a], vec![f32::NAN]),
    ] {
        let err = proposal_anchors(&mut g, &masks, &widths).unwrap_err().to_string();
        assert!(err.contains("proposal_anchors"), "{err}");
    }
}
