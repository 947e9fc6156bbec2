//! Masked row softmax: GPU kernel vs CPU twin (both mask modes, partly and fully masked rows),
//! the CPU twin vs an f64 reference, and the defined results of fully masked rows.

use moment_gpu::ops::softmax::{softmax, MaskMode};
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// Probabilities in [0, 1]; the GPU's online (max, sum) merges and its `exp` differ from the CPU's
/// two-pass f32/f64 evaluation by a few ulps of the row sum.
const TOL: Tolerance = Tolerance::new(1e-6, 1e-5);

const VSLNET: MaskMode = MaskMode::Additive(-1e30);

/// One case: x shape, valid keys per sample (None = no mask).
struct Case {
    shape: &'static [usize],
    valid: Option<&'static [usize]>,
}

/// Size 1, odd sizes, S off the 64-thread stride (65, 285), B > 1, rank 2 (one row per sample),
/// rank 4 (attention scores (B, H, Lq, S)), partly and fully masked samples.
const CASES: &[Case] = &[
    Case { shape: &[1, 1, 1], valid: Some(&[1]) },
    Case { shape: &[1, 1], valid: None },
    Case { shape: &[1, 3, 7], valid: Some(&[4]) },
    Case { shape: &[3, 5, 75], valid: Some(&[75, 30, 0]) },
    Case { shape: &[2, 4, 65], valid: Some(&[0, 64]) },
    Case { shape: &[4, 33], valid: Some(&[33, 1, 0, 17]) },
    Case { shape: &[2, 8, 10, 285], valid: Some(&[285, 200]) },
    Case { shape: &[7, 2], valid: None },
    Case { shape: &[2, 3, 300], valid: None },
];

#[test]
fn softmax_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    for case in CASES {
        let shape = case.shape;
        let s = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let modes: &[MaskMode] = if case.valid.is_some() { &[MaskMode::Skip, VSLNET] } else { &[MaskMode::Skip] };
        for &mode in modes {
            for scale in [1.0f32, 0.125] {
                let x = rng.vec(numel, -8.0, 8.0);
                let mask = case.valid.map(|v| padding_mask(v, s));
                let build = |g: &mut Graph| {
                    let xi = g.input("x", shape);
                    let mi = mask.as_ref().map(|_| g.input("m", &[shape[0], s]));
                    let y = softmax(g, xi, mi, mode, scale).unwrap();
                    g.output("y", y);
                };
                let m = mask.clone().unwrap_or_default();
                let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x), ("m", &m)]);
                assert_close(
                    &format!("softmax {shape:?} {:?} {mode:?} scale {scale}", case.valid),
                    gpu_out.get("y"),
                    cpu.get("y"),
                    TOL,
                );
            }
        }
    }
}

/// Fully masked rows: `Skip` gives exact zeros, VSLNet's additive −1e30 gives exactly uniform
/// rows (every logit rounds to −1e30), on both backends; the other samples are unaffected.
#[test]
fn fully_masked_rows_are_defined() {
    let (b, r, s) = (3, 4, 37);
    let mut rng = Rng::new(22);
    let x = rng.vec(b * r * s, -5.0, 5.0);
    let mask = padding_mask(&[37, 0, 5], s);
    let gpu = gpu();
    for mode in [MaskMode::Skip, VSLNET] {
        let build = |g: &mut Graph| {
            let xi = g.input("x", &[b, r, s]);
            let mi = g.input("m", &[b, s]);
            let y = softmax(g, xi, Some(mi), mode, 1.0).unwrap();
            g.output("y", y);
        };
        let mut results = vec![("cpu", run_cpu(build, &[("x", &x), ("m", &mask)]))];
        if let Some(gpu) = &gpu {
            results.push(("gpu", run_cpu_and_gpu(gpu, build, &[("x", &x), ("m", &mask)]).1));
        }
        for (backend, out) in results {
            let y = out.get("y");
            let masked = &y[r * s..2 * r * s];
            match mode {
                MaskMode::Skip => assert!(masked.iter().all(|&v| v == 0.0), "{backend}: Skip gives zeros"),
                _ => assert_close(
                    &format!("{backend}: additive fully masked row is uniform"),
                    masked,
                    &vec![1.0 / s as f32; r * s],
                    Tolerance::new(0.0, 1e-6),
                ),
            }
            // Sample 2 (5 valid keys): padded keys get exactly 0 in both modes (e^(−1e30) = 0),
            // and every row sums to 1.
            for row in 0..r {
                let yr = &y[(2 * r + row) * s..][..s];
                assert!(yr[5..].iter().all(|&v| v == 0.0), "{backend} {mode:?}: padded keys are 0");
                let sum: f32 = yr.iter().sum();
                assert!((sum - 1.0).abs() < 1e-6, "{backend} {mode:?}: row sums to {sum}");
            }
        }
    }
}

/// On rows with at least one valid key the two mask modes agree (the VSLNet penalty is exactly
/// "skip" there).
#[test]
fn additive_equals_skip_on_partly_masked_rows() {
    let (b, r, s) = (2, 3, 29);
    let mut rng = Rng::new(23);
    let x = rng.vec(b * r * s, -6.0, 6.0);
    let mask = padding_mask(&[29, 11], s);
    let run = |mode| {
        run_cpu(
            |g| {
                let xi = g.input("x", &[b, r, s]);
                let mi = g.input("m", &[b, s]);
                let y = softmax(g, xi, Some(mi), mode, 1.0).unwrap();
                g.output("y", y);
            },
            &[("x", &x), ("m", &mask)],
        )
    };
    assert_close("additive vs skip", run(VSLNET).get("y"), run(MaskMode::Skip).get("y"), Tolerance::new(1e-7, 1e-6));
}

/// The CPU twin against an f64 softmax written here, with a mask and a scale.
#[test]
fn softmax_cpu_matches_f64_reference() {
    let (b, r, s) = (2, 3, 13);
    let scale = 0.3f32;
    let mut rng = Rng::new(24);
    let x = rng.vec(b * r * s, -10.0, 10.0);
    let mask = padding_mask(&[13, 6], s);
    let out = run_cpu(
        |g| {
            let xi = g.input("x", &[b, r, s]);
            let mi = g.input("m", &[b, s]);
            let y = softmax(g, xi, Some(mi), MaskMode::Skip, scale).unwrap();
            g.output("y", y);
        },
        &[("x", &x), ("m", &mask)],
    );
    let mut want = vec![0.0f32; b * r * s];
    for bi in 0..b {
        for ri in 0..r {
            let row = (bi * r + ri) * s;
            let valid: Vec<usize> = (0..s).filter(|&j| mask[bi * s + j] == 1.0).collect();
            let max = valid.iter().map(|&j| scale as f64 * x[row + j] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = valid.iter().map(|&j| (scale as f64 * x[row + j] as f64 - max).exp()).sum();
            for &j in &valid {
                want[row + j] = ((scale as f64 * x[row + j] as f64 - max).exp() / sum) as f32;
            }
        }
    }
    assert_close("softmax cpu vs f64", out.get("y"), &want, Tolerance::new(1e-7, 1e-6));
    // Hand values: softmax(0, ln 3) = (1/4, 3/4).
    let two = run_cpu(
        |g| {
            let xi = g.input("x", &[1, 2]);
            let y = softmax(g, xi, None, MaskMode::Skip, 1.0).unwrap();
            g.output("y", y);
        },
        &[("x", &[0.0, 3.0f32.ln()])],
    );
    assert_close("softmax hand values", two.get("y"), &[0.25, 0.75], Tolerance::new(1e-7, 0.0));
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 5]);
    let wrong = g.input("m", &[2, 4]);
    assert!(softmax(&mut g, x, Some(wrong), MaskMode::Skip, 1.0).is_err());
    let wrong_b = g.input("mb", &[3, 5]);
    assert!(softmax(&mut g, x, Some(wrong_b), MaskMode::Skip, 1.0).is_err());
    let v = g.input("v", &[5]);
    let m5 = g.input("m5", &[5]);
    assert!(softmax(&mut g, v, Some(m5), MaskMode::Skip, 1.0).is_err());
    assert!(softmax(&mut g, v, None, MaskMode::Skip, 1.0).is_ok());
    let ok = g.input("ok", &[2, 5]);
    assert!(softmax(&mut g, x, Some(ok), MaskMode::Additive(f32::NEG_INFINITY), 1.0).is_err());
    let e = g.input("e", &[2, 0]);
    assert!(softmax(&mut g, e, None, MaskMode::Skip, 1.0).is_err());
}
