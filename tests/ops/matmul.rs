//! Linear / batched matmul: GPU kernel vs CPU twin, and the CPU twin vs a naive f64 product.

use moment_gpu::ops::matmul::{linear, linear_residual, matmul};
use moment_gpu::ops::Act;
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};

/// f32 accumulation over K ≤ 3000 of values in [-1, 1]: the GPU and CPU sum in different
/// orders, so allow a few ulps of the partial sums.
const TOL: Tolerance = Tolerance::new(2e-5, 1e-5);

/// (rows, K, N): size 1, odd sizes, sizes off the 32 × 32 tile and the 16-wide K step, the
/// model widths (2818 → 256, 1024 → 256) and a K that takes the vec4 path (K % 4 == 0).
const LINEAR_SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 1), (1, 7, 3), (5, 33, 31), (75, 256, 256), (37, 2818, 17), (64, 1024, 96), (3, 17, 65)];

fn act_cases() -> Vec<&'static str> {
    vec!["none", "relu", "prelu", "sigmoid"]
}

#[test]
fn linear_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    for &(m, k, n) in LINEAR_SHAPES {
        for (case, act_name) in act_cases().into_iter().enumerate() {
            let x = rng.vec(m * k, -1.0, 1.0);
            let w = rng.vec(n * k, -1.0, 1.0);
            let b = rng.vec(n, -1.0, 1.0);
            let residual = rng.vec(m * n, -1.0, 1.0);
            let with_bias = case != 1;
            let with_residual = case == 2;
            let build = |g: &mut moment_gpu::Graph| {
                let xi = g.input("x", &[m, k]);
                let wi = g.constant(w.clone().into(), &[n, k]).unwrap();
                let bi = with_bias.then(|| g.constant(b.clone().into(), &[n]).unwrap());
                let act = match act_name {
                    "relu" => Act::Relu,
                    "prelu" => Act::Prelu(g.constant(vec![0.25f32].into(), &[1]).unwrap()),
                    "sigmoid" => Act::Sigmoid,
                    _ => Act::None,
                };
                let ri = with_residual.then(|| g.input("r", &[m, n]));
                let y = linear_residual(g, xi, wi, bi, act, ri).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x), ("r", &residual)]);
            assert_close(&format!("linear {m}x{k}x{n} {act_name}"), gpu_out.get("y"), cpu.get("y"), TOL);
        }
    }
}

#[test]
fn batched_matmul_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    // (B, M, K, N): B = 1, B > 1, attention-like (L × d · d × L), odd sizes.
    for &(bt, m, k, n) in &[(1, 1, 1, 1), (3, 5, 7, 9), (2, 75, 32, 75), (4, 33, 64, 17), (32, 10, 256, 75)] {
        for transpose_b in [false, true] {
            let a = rng.vec(bt * m * k, -1.0, 1.0);
            let b = rng.vec(bt * k * n, -1.0, 1.0);
            let b_shape = if transpose_b { [bt, n, k] } else { [bt, k, n] };
            let build = |g: &mut moment_gpu::Graph| {
                let ai = g.input("a", &[bt, m, k]);
                let bi = g.input("b", &b_shape);
                let y = matmul(g, ai, bi, transpose_b).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("a", &a), ("b", &b)]);
            assert_close(
                &format!("matmul {bt}x{m}x{k}x{n} transpose_b={transpose_b}"),
                gpu_out.get("y"),
                cpu.get("y"),
                TOL,
            );
        }
    }
}

/// The CPU twin itself against an f64 product written independently here.
#[test]
fn linear_cpu_matches_f64_reference() {
    let mut rng = Rng::new(3);
    let (m, k, n) = (7, 45, 13);
    let x = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let b = rng.vec(n, -1.0, 1.0);
    let out = run_cpu(
        |g| {
            let xi = g.input("x", &[m, k]);
            let wi = g.constant(w.clone().into(), &[n, k]).unwrap();
            let bi = g.constant(b.clone().into(), &[n]).unwrap();
            let slope = g.constant(vec![0.1f32].into(), &[1]).unwrap();
            let y = linear(g, xi, wi, Some(bi), Act::Prelu(slope)).unwrap();
            g.output("y", y);
        },
        &[("x", &x)],
    );
    let want: Vec<f32> = (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            let v: f64 = (0..k).map(|j| x[r * k + j] as f64 * w[c * k + j] as f64).sum::<f64>() + b[c] as f64;
            (if v >= 0.0 { v } else { 0.1 * v }) as f32
        })
        .collect();
    assert_close("linear cpu vs f64", out.get("y"), &want, Tolerance::new(1e-5, 1e-6));
}

#[test]
fn mismatched_shapes_are_graph_errors() {
    let mut g = moment_gpu::Graph::new();
    let x = g.input("x", &[3, 5]);
    let w = g.constant(vec![0.0; 12].into(), &[4, 3]).unwrap();
    assert!(linear(&mut g, x, w, None, Act::None).is_err());
    let a = g.input("a", &[2, 3, 4]);
    let b = g.input("b", &[3, 4, 5]);
    assert!(matmul(&mut g, a, b, false).is_err());
}

/// The CPU backend's GEMM path against the reference twin, over the same shapes and epilogues.
#[test]
fn fast_cpu_matmul_matches_the_twin() {
    use moment_gpu::testing::run_cpu_fast;
    let mut rng = Rng::new(4);
    for &(m, k, n) in LINEAR_SHAPES {
        let x = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let b = rng.vec(n, -1.0, 1.0);
        let r = rng.vec(m * n, -1.0, 1.0);
        let build = |g: &mut moment_gpu::Graph| {
            let xi = g.input("x", &[m, k]);
            let wi = g.constant(w.clone().into(), &[n, k]).unwrap();
            let bi = g.constant(b.clone().into(), &[n]).unwrap();
            let slope = g.constant(vec![0.25f32].into(), &[1]).unwrap();
            let ri = g.input("r", &[m, n]);
            let y = linear_residual(g, xi, wi, Some(bi), Act::Prelu(slope), Some(ri)).unwrap();
            g.output("y", y);
        };
        let inputs: &[(&str, &[f32])] = &[("x", &x), ("r", &r)];
        assert_close(
            &format!("fast linear {m}x{k}x{n}"),
            run_cpu_fast(build, inputs).get("y"),
            run_cpu(build, inputs).get("y"),
            TOL,
        );
    }
    for &(bt, m, k, n) in &[(1, 1, 1, 1), (3, 5, 7, 9), (2, 75, 32, 75)] {
        for transpose_b in [false, true] {
            let a = rng.vec(bt * m * k, -1.0, 1.0);
            let b = rng.vec(bt * k * n, -1.0, 1.0);
            let b_shape = if transpose_b { [bt, n, k] } else { [bt, k, n] };
            let build = |g: &mut moment_gpu::Graph| {
                let ai = g.input("a", &[bt, m, k]);
                let bi = g.input("b", &b_shape);
                let y = matmul(g, ai, bi, transpose_b).unwrap();
                g.output("y", y);
            };
            let inputs: &[(&str, &[f32])] = &[("a", &a), ("b", &b)];
            let what = format!("fast matmul {bt}x{m}x{k}x{n} transpose_b={transpose_b}");
            assert_close(&what, run_cpu_fast(build, inputs).get("y"), run_cpu(build, inputs).get("y"), TOL);
        }
    }
}

/// With f16 weights the GPU reads each constant weight rounded to f16 and sums in f32: it must
/// equal the twin run on the f16-rounded weights (same tolerance as f32), while a product of
/// two activations (no constant) stays exact f32.
#[test]
fn f16_weights_are_the_rounded_weights_summed_in_f32() {
    use moment_gpu::testing::{gpu_f16_weights, run_cpu};
    use moment_gpu::Executable;
    let Some(device) = gpu_f16_weights() else { return };
    let mut rng = Rng::new(11);
    let (m, k, n) = (75, 256, 40);
    let x = rng.vec(m * k, -1.0, 1.0);
    let w = rng.vec(n * k, -1.0, 1.0);
    let bias = rng.vec(n, -1.0, 1.0);
    let rounded: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let build = |weights: &[f32]| {
        let weights = weights.to_vec();
        let bias = bias.clone();
        move |g: &mut moment_gpu::Graph| {
            let xi = g.input("x", &[m, k]);
            let wi = g.constant(weights.clone().into(), &[n, k]).unwrap();
            let bi = g.constant(bias.clone().into(), &[n]).unwrap();
            let y = linear(g, xi, wi, Some(bi), Act::Relu).unwrap();
            g.output("y", y);
            // An activation × activation product: its operands are never stored as f16.
            let a = g.input("a", &[1, m, k]);
            let z = matmul(g, a, a, true).unwrap();
            g.output("z", z);
        }
    };
    let inputs: &[(&str, &[f32])] = &[("x", &x), ("a", &x)];
    let mut g = moment_gpu::Graph::new();
    build(&w)(&mut g);
    let mut exe = Executable::new(g, &device, &moment_gpu::ConstCache::new()).unwrap();
    let got = exe.run(inputs).unwrap();
    let f32_weight_bytes = (n * k + n) * 4;
    assert!(exe.stats().weight_bytes < f32_weight_bytes * 6 / 10, "weights stored as f16");
    let want = run_cpu(build(&rounded), inputs);
    assert_close("linear with f16 weights", got.get("y"), want.get("y"), TOL);
    assert_close("activation product", got.get("z"), want.get("z"), TOL);
    let unrounded = run_cpu(build(&w), inputs);
    let moved = got.get("y").iter().zip(unrounded.get("y")).any(|(a, b)| (a - b).abs() > 1e-4);
    assert!(moved, "the weights were not rounded: f16 storage is not in effect");
}
