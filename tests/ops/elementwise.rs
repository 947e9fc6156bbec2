//! Elementwise unary and broadcasting binary ops: GPU kernels vs CPU twins, and the CPU twins vs
//! f64 references written here (erf, GELU, sigmoid, inverse_sigmoid, broadcasting).

use moment_gpu::ops::elementwise::{
    add, binary, binary_fused, erf_f32, gelu_f32, inverse_sigmoid_f32, mul, unary, Binary, Unary,
};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::{Graph, TensorId};

/// Simple ops: the GPU's exp/tanh/log/division are within a few ulps; outputs are O(1)
/// (exp on [-6, 6] reaches 403, hence the relative part).
const TOL: Tolerance = Tolerance::new(1e-5, 1e-5);

/// Sizes: 1, odd, multiples of 4 and not, off the 256-thread workgroup.
const SIZES: &[&[usize]] = &[&[1], &[3], &[4], &[7, 5], &[2, 3, 1000], &[4097]];

fn unaries(slope: TensorId) -> Vec<(&'static str, Unary, f32, f32)> {
    vec![
        ("identity", Unary::Identity, -6.0, 6.0),
        ("relu", Unary::Relu, -6.0, 6.0),
        ("prelu", Unary::Prelu(slope), -6.0, 6.0),
        ("sigmoid", Unary::Sigmoid, -12.0, 12.0),
        ("tanh", Unary::Tanh, -6.0, 6.0),
        ("gelu", Unary::Gelu, -6.0, 6.0),
        ("inverse_sigmoid", Unary::InverseSigmoid { eps: 1e-3 }, -0.2, 1.2),
        ("scale_shift", Unary::ScaleShift { scale: -1.5, shift: 0.25 }, -6.0, 6.0),
        ("exp", Unary::Exp, -6.0, 6.0),
    ]
}

#[test]
fn unary_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    for &shape in SIZES {
        let n: usize = shape.iter().product();
        let names: Vec<(&str, f32, f32)> = {
            let mut g = Graph::new();
            let s = g.input("s", &[1]);
            unaries(s).into_iter().map(|(name, _, lo, hi)| (name, lo, hi)).collect()
        };
        for (index, (name, lo, hi)) in names.into_iter().enumerate() {
            let x = rng.vec(n, lo, hi);
            let build = |g: &mut Graph| {
                let xi = g.input("x", shape);
                let slope = g.constant(vec![0.2f32].into(), &[1]).unwrap();
                let f = unaries(slope)[index].1;
                let y = unary(g, xi, f).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
            assert_eq!(gpu_out.shape("y"), shape);
            assert_close(&format!("{name} {shape:?}"), gpu_out.get("y"), cpu.get("y"), TOL);
        }
    }
}

/// (a shape, b shape): equal shapes (odd and vec4 sizes), trailing-vector broadcast (bias-like),
/// a (B, L, 1) column broadcast on a vec4-friendly row (splat path), outer-product-like
/// broadcasts on both operands (strided path), rank 4, a scalar, b with fewer dims, and a rank-5
/// case that collapses to rank 1.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[1], &[1]),
    (&[7], &[7]),
    (&[3, 5], &[3, 5]),
    (&[2, 3, 5], &[5]),
    (&[2, 75, 256], &[256]),
    (&[2, 75, 256], &[2, 75, 1]),
    (&[2, 3, 5], &[2, 1, 5]),
    (&[4, 1, 6], &[1, 3, 1]),
    (&[3, 1], &[1, 4]),
    (&[2, 3, 4, 5], &[3, 1, 5]),
    (&[5, 7], &[1]),
    (&[1], &[3, 8]),
    (&[2, 1, 3, 1, 5], &[2, 1, 3, 1, 5]),
    (&[2, 33, 1], &[2, 33, 12]),
];

const OPS: &[Binary] = &[Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Max, Binary::Min];

#[test]
fn binary_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(32);
    for &(sa, sb) in PAIRS {
        for &op in OPS {
            let a = rng.vec(sa.iter().product(), -3.0, 3.0);
            // Divisors kept away from zero.
            let b: Vec<f32> = rng
                .vec(sb.iter().product(), 0.5, 3.0)
                .iter()
                .map(|v| v * if rng.below(2) == 0 { 1.0 } else { -1.0 })
                .collect();
            let build = |g: &mut Graph| {
                let ai = g.input("a", sa);
                let bi = g.input("b", sb);
                let y = binary(g, op, ai, bi).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("a", &a), ("b", &b)]);
            assert_close(&format!("{op:?} {sa:?} {sb:?}"), gpu_out.get("y"), cpu.get("y"), TOL);
        }
    }
}

/// The fused forms: DAB refinement `sigmoid(t + inverse_sigmoid(r))`, a PReLU after a residual
/// add, and GELU after a broadcast multiply.
#[test]
fn binary_fused_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(33);
    for &(sa, sb) in
        &[(&[3usize, 10, 2][..], &[3usize, 10, 2][..]), (&[1, 7], &[1, 7]), (&[2, 5, 8], &[8]), (&[4, 3], &[4, 1])]
    {
        for case in 0..3 {
            let a = rng.vec(sa.iter().product(), -3.0, 3.0);
            let b = rng.vec(sb.iter().product(), -0.1, 1.1);
            let build = |g: &mut Graph| {
                let ai = g.input("a", sa);
                let bi = g.input("b", sb);
                let slope = g.constant(vec![0.3f32].into(), &[1]).unwrap();
                let y = match case {
                    0 => binary_fused(g, Binary::Add, ai, bi, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid),
                    1 => binary_fused(g, Binary::Add, ai, bi, Unary::Identity, Unary::Prelu(slope)),
                    _ => binary_fused(g, Binary::Mul, ai, bi, Unary::Tanh, Unary::Gelu),
                }
                .unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("a", &a), ("b", &b)]);
            assert_close(&format!("fused case {case} {sa:?} {sb:?}"), gpu_out.get("y"), cpu.get("y"), TOL);
        }
    }
}

/// erf in f64 by its Maclaurin series (exact to ~1e-12 for |x| ≤ 4; erf is ±1 to f32 beyond).
fn erf_f64(x: f64) -> f64 {
    if x.abs() > 4.0 {
        return x.signum();
    }
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn unary_cpu_matches_f64_references() {
    for i in 0..=2000 {
        let x = -6.0 + 12.0 * i as f32 / 2000.0;
        let e = erf_f64(x as f64);
        // Juffa's erff: < 1.3 ulp; allow 2 ulps of the result.
        assert!((erf_f32(x) as f64 - e).abs() <= 2.0 * f32::EPSILON as f64 * e.abs().max(1e-30), "erf({x})");
        let gelu = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / 2f64.sqrt()));
        assert!((gelu_f32(x) as f64 - gelu).abs() <= 1e-6 * gelu.abs().max(1.0), "gelu({x})");
    }
    // inverse_sigmoid: clamps to [0, 1] and floors both sides at eps.
    let eps = 1e-3f32;
    let want = |x: f64| -> f64 {
        let c = x.clamp(0.0, 1.0);
        (c.max(1e-3) / (1.0 - c).max(1e-3)).ln()
    };
    for x in [-0.5f32, 0.0, 1e-4, 0.25, 0.5, 0.9, 0.9999, 1.0, 2.0] {
        assert!((inverse_sigmoid_f32(x, eps) as f64 - want(x as f64)).abs() < 1e-5, "inverse_sigmoid({x})");
    }
    assert!(inverse_sigmoid_f32(0.5, eps).abs() < 1e-7);
    assert!((inverse_sigmoid_f32(5.0, eps) - 1000f32.ln()).abs() < 1e-5);

    // The graph op against f64 formulas.
    let x: Vec<f32> = (0..41).map(|i| -5.0 + 0.25 * i as f32).collect();
    for (name, f, reference) in [
        ("sigmoid", Unary::Sigmoid, (|v: f64| 1.0 / (1.0 + (-v).exp())) as fn(f64) -> f64),
        ("tanh", Unary::Tanh, |v: f64| v.tanh()),
        ("gelu", Unary::Gelu, |v: f64| 0.5 * v * (1.0 + erf_f64(v / 2f64.sqrt()))),
        ("relu", Unary::Relu, |v: f64| v.max(0.0)),
        ("scale_shift", Unary::ScaleShift { scale: 2.0, shift: -1.0 }, |v: f64| 2.0 * v - 1.0),
        ("exp", Unary::Exp, |v: f64| v.exp()),
    ] {
        let out = run_cpu(
            |g| {
                let xi = g.input("x", &[41]);
                let y = unary(g, xi, f).unwrap();
                g.output("y", y);
            },
            &[("x", &x)],
        );
        let want: Vec<f32> = x.iter().map(|&v| reference(v as f64) as f32).collect();
        assert_close(&format!("{name} cpu vs f64"), out.get("y"), &want, Tolerance::new(1e-6, 1e-6));
    }
}

/// Broadcasting on the CPU twin against an index computation written here.
#[test]
fn binary_cpu_matches_naive_broadcast() {
    let mut rng = Rng::new(34);
    let (sa, sb) = ([2usize, 1, 4, 3], [3usize, 1, 3]);
    let out_shape = [2usize, 3, 4, 3];
    let a = rng.vec(24, -1.0, 1.0);
    let b = rng.vec(9, -1.0, 1.0);
    let out = run_cpu(
        |g| {
            let ai = g.input("a", &sa);
            let bi = g.input("b", &sb);
            let y = binary(g, Binary::Sub, ai, bi).unwrap();
            g.output("y", y);
        },
        &[("a", &a), ("b", &b)],
    );
    assert_eq!(out.shape("y"), out_shape);
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                for l in 0..3 {
                    // a (2,1,4,3) ignores j; b (3,1,3) ignores i and k.
                    want.push(a[(i * 4 + k) * 3 + l] - b[j * 3 + l]);
                }
            }
        }
    }
    assert_eq!(out.get("y"), &want[..]);
    // Hand values for a fused op: max(a, relu-free) and mul by a scalar.
    let out = run_cpu(
        |g| {
            let ai = g.input("a", &[2, 2]);
            let bi = g.input("b", &[1]);
            let m = mul(g, ai, bi).unwrap();
            let y = add(g, m, ai).unwrap();
            g.output("y", y);
        },
        &[("a", &[1.0, -2.0, 3.0, 0.5]), ("b", &[2.0])],
    );
    assert_eq!(out.get("y"), &[3.0, -6.0, 9.0, 1.5]);
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let a = g.input("a", &[2, 3]);
    let b = g.input("b", &[3, 2]);
    assert!(add(&mut g, a, b).is_err());
    let c = g.input("c", &[2, 1, 2, 1, 2, 1, 2, 1, 2]);
    let d = g.input("d", &[1, 2, 1, 2, 1, 2, 1, 2, 1]);
    assert!(add(&mut g, c, d).is_err(), "more than 4 dims after merging");
    let slope = g.input("slope", &[2]);
    assert!(unary(&mut g, a, Unary::Prelu(slope)).is_err());
    let s1 = g.input("s1", &[1]);
    assert!(binary_fused(&mut g, Binary::Add, a, a, Unary::Prelu(s1), Unary::Identity).is_err());
    assert!(binary_fused(&mut g, Binary::Add, a, a, Unary::Identity, Unary::Prelu(s1)).is_ok());
}

/// Tensors large enough for the CPU backend to split rows over threads (SG-DETR's
/// `x · GELU(y)` with one factor broadcast along the features, and a plain add), against the twin.
#[test]
fn large_broadcast_binary_on_the_cpu_backend_matches_the_twin() {
    use moment_gpu::testing::run_cpu_fast;
    let mut rng = Rng::new(21);
    let (rows, width) = (1000, 256);
    let x = rng.vec(rows, -2.0, 2.0);
    let y = rng.vec(rows * width, -3.0, 3.0);
    let z = rng.vec(rows * width, -1.0, 1.0);
    let build = |g: &mut Graph| {
        let xi = g.input("x", &[rows, 1]);
        let yi = g.input("y", &[rows, width]);
        let zi = g.input("z", &[rows, width]);
        let gated = binary_fused(g, Binary::Mul, xi, yi, Unary::Gelu, Unary::Identity).unwrap();
        g.output("gated", gated);
        let sum = binary_fused(g, Binary::Add, yi, zi, Unary::Identity, Unary::Relu).unwrap();
        g.output("sum", sum);
    };
    let inputs: &[(&str, &[f32])] = &[("x", &x), ("y", &y), ("z", &z)];
    let (fast, twin) = (run_cpu_fast(build, inputs), run_cpu(build, inputs));
    for name in ["gated", "sum"] {
        assert_close(name, fast.get(name), twin.get(name), Tolerance::new(1e-6, 1e-6));
    }
}
