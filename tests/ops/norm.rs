//! LayerNorm and L2 normalisation: GPU kernel vs CPU twin, and the CPU twin vs f64 references
//! written here.

use moment_gpu::ops::norm::{l2_normalize, layer_norm, L2Mode};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// The GPU sums in f32 in a tree order, the CPU twin in f64; outputs are O(1)–O(10) (gamma up to
/// 2, |z| up to a few), so a few f32 ulps of the statistics show up as ~1e-6 absolute.
const TOL: Tolerance = Tolerance::new(1e-5, 1e-5);

/// (shape of x): size 1, odd widths, widths off the 256-thread stride, the model widths (256,
/// 2818) and B > 1 (rank 3).
const SHAPES: &[&[usize]] = &[&[1, 1], &[1, 7], &[3, 256], &[75, 2818], &[2, 33, 513], &[4, 5, 300], &[1, 257]];

#[test]
fn layer_norm_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for &shape in SHAPES {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        // Rows centred away from zero, so that a one-pass variance would lose digits.
        let x: Vec<f32> = rng.vec(numel, -1.0, 1.0).iter().map(|v| v * 3.0 + 4.0).collect();
        let gamma = rng.vec(n, 0.5, 2.0);
        let beta = rng.vec(n, -1.0, 1.0);
        let build = |g: &mut Graph| {
            let xi = g.input("x", shape);
            let gi = g.constant(gamma.clone().into(), &[n]).unwrap();
            let bi = g.constant(beta.clone().into(), &[n]).unwrap();
            let y = layer_norm(g, xi, gi, bi, 1e-5).unwrap();
            g.output("y", y);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
        assert_eq!(gpu_out.shape("y"), shape);
        assert_close(&format!("layer_norm {shape:?}"), gpu_out.get("y"), cpu.get("y"), TOL);
    }
}

#[test]
fn l2_normalize_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    for &shape in SHAPES {
        for mode in [L2Mode::AddEps, L2Mode::MaxEps] {
            let numel: usize = shape.iter().product();
            let mut x = rng.vec(numel, -2.0, 2.0);
            // An all-zero row (the eps matters there).
            let n = *shape.last().unwrap();
            x[..n].fill(0.0);
            let eps = if mode == L2Mode::AddEps { 1e-5 } else { 1e-12 };
            let build = |g: &mut Graph| {
                let xi = g.input("x", shape);
                let y = l2_normalize(g, xi, eps, mode).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
            // Outputs are ≤ 1 in magnitude: an absolute 1e-6 is a few ulps of the norm.
            assert_close(
                &format!("l2_normalize {shape:?} {mode:?}"),
                gpu_out.get("y"),
                cpu.get("y"),
                Tolerance::new(1e-6, 1e-5),
            );
            assert!(gpu_out.get("y")[..n].iter().all(|&v| v == 0.0), "zero row stays zero");
        }
    }
}

/// The CPU twin against an f64 LayerNorm written here (PyTorch formula, biased variance).
#[test]
fn layer_norm_cpu_matches_f64_reference() {
    let mut rng = Rng::new(13);
    let (rows, n) = (6, 37);
    let x = rng.vec(rows * n, -3.0, 5.0);
    let gamma = rng.vec(n, -2.0, 2.0);
    let beta = rng.vec(n, -1.0, 1.0);
    let out = run_cpu(
        |g| {
            let xi = g.input("x", &[rows, n]);
            let gi = g.constant(gamma.clone().into(), &[n]).unwrap();
            let bi = g.constant(beta.clone().into(), &[n]).unwrap();
            let y = layer_norm(g, xi, gi, bi, 1e-5).unwrap();
            g.output("y", y);
        },
        &[("x", &x)],
    );
    let mut want = Vec::new();
    for r in 0..rows {
        let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
        let mut mean = 0.0;
        for v in &row {
            mean += v;
        }
        mean /= n as f64;
        let mut var = 0.0;
        for v in &row {
            var += (v - mean) * (v - mean);
        }
        var /= n as f64;
        for c in 0..n {
            want.push(((row[c] - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64) as f32);
        }
    }
    assert_close("layer_norm cpu vs f64", out.get("y"), &want, Tolerance::new(1e-6, 1e-6));
    // Width 1: the variance is 0, so the output is beta.
    let one = run_cpu(
        |g| {
            let xi = g.input("x", &[3, 1]);
            let gi = g.constant(vec![2.0f32].into(), &[1]).unwrap();
            let bi = g.constant(vec![0.25f32].into(), &[1]).unwrap();
            let y = layer_norm(g, xi, gi, bi, 1e-5).unwrap();
            g.output("y", y);
        },
        &[("x", &[5.0, -1.0, 0.0])],
    );
    assert_eq!(one.get("y"), &[0.25, 0.25, 0.25]);
}

/// The CPU twin against hand-computed values: a 3-4-5 row and a zero row in both modes.
#[test]
fn l2_normalize_cpu_matches_hand_values() {
    for (mode, eps, want) in [
        (L2Mode::AddEps, 1e-5f32, [3.0 / (5.0 + 1e-5), 4.0 / (5.0 + 1e-5)]),
        (L2Mode::MaxEps, 1e-12, [0.6, 0.8]),
        // eps above the norm: max() takes eps, the sum does not.
        (L2Mode::MaxEps, 10.0, [0.3, 0.4]),
        (L2Mode::AddEps, 10.0, [0.2, 4.0 / 15.0]),
    ] {
        let out = run_cpu(
            |g| {
                let xi = g.input("x", &[2, 2]);
                let y = l2_normalize(g, xi, eps, mode).unwrap();
                g.output("y", y);
            },
            &[("x", &[3.0, 4.0, 0.0, 0.0])],
        );
        let w = [want[0] as f32, want[1] as f32, 0.0, 0.0];
        assert_close(&format!("l2 {mode:?} eps {eps}"), out.get("y"), &w, Tolerance::new(1e-7, 1e-6));
    }
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[4, 8]);
    let gamma = g.input("gamma", &[7]);
    let beta = g.input("beta", &[8]);
    assert!(layer_norm(&mut g, x, gamma, beta, 1e-5).is_err());
    assert!(layer_norm(&mut g, x, beta, gamma, 1e-5).is_err());
    let s = g.input("s", &[]);
    assert!(layer_norm(&mut g, s, beta, beta, 1e-5).is_err());
    assert!(l2_normalize(&mut g, x, 0.0, L2Mode::AddEps).is_err());
    let e = g.input("e", &[3, 0]);
    assert!(l2_normalize(&mut g, e, 1e-5, L2Mode::AddEps).is_err());
}
