//! Reductions (sum, mean, max, min, argmax), window pooling and top-k: GPU kernels vs CPU twins,
//! and the CPU twins vs naive f64 loops and hand-computed values.

use moment_gpu::ops::reduce::{argmax, max, mean, min, pool1d, reduce, sum, top_k_indices, topk, ReduceOp};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::{Graph, TensorId};

/// Sums of up to 1000 values in [-1, 1]: the GPU adds in f32 (a 256-way strided split plus a
/// tree, or four interleaved serial partial sums), the CPU twin in f64. The f32 rounding error
/// grows like √n·ε·|partial sums|: about 1.5e-5 for four partials of 250 terms with partial sums
/// of ≈ 15 (measured worst on lavapipe: 7.6e-6 at n = 1000). Means divide it by n.
const SUM_TOL: Tolerance = Tolerance::new(2e-5, 1e-6);
// max / min / argmax / top-k pick an input value or index: compared exactly (assert_same).

const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Argmax];

/// Exact equality that also accepts matching infinities and NaN (`assert_close` measures
/// |got − want|, which is NaN for two equal infinities).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()), "{what}: index {i}: got {g}, expected {w}");
    }
}

fn compare(what: &str, op: ReduceOp, got: &[f32], want: &[f32]) {
    if matches!(op, ReduceOp::Sum | ReduceOp::Mean) {
        assert_close(what, got, want, SUM_TOL);
    } else {
        assert_same(what, got, want);
    }
}

/// (shape, axis): size 1, odd sizes, B > 1, middle axes (one thread per output), last axes of
/// ≥ 64 values (workgroup tree) including 64 itself, 257 and 1000 (not multiples of 256).
const CASES: &[(&[usize], usize)] = &[
    (&[1], 0),
    (&[1, 1, 1], 1),
    (&[3, 5, 7], 0),
    (&[3, 5, 7], 1),
    (&[3, 5, 7], 2),
    (&[2, 75, 33], 1),
    (&[2, 64], 1),
    (&[5, 257], 1),
    (&[2, 3, 1000], 2),
    (&[4, 300, 2], 1),
    (&[2, 1000, 3], 1),
];

/// Values with many exact ties (quarters in [-2, 2]) when `ties`, else uniform in [-1, 1].
fn data(rng: &mut Rng, n: usize, ties: bool) -> Vec<f32> {
    if ties {
        (0..n).map(|_| rng.below(17) as f32 * 0.25 - 2.0).collect()
    } else {
        rng.vec(n, -1.0, 1.0)
    }
}

#[test]
fn reductions_match_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    for &(shape, axis) in CASES {
        for ties in [false, true] {
            let x = data(&mut rng, shape.iter().product(), ties);
            for op in OPS {
                let build = |g: &mut Graph| {
                    let xi = g.input("x", shape);
                    let y = reduce(g, xi, axis, op).unwrap();
                    g.output("y", y);
                };
                let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
                compare(&format!("{op:?} {shape:?} axis {axis} ties={ties}"), op, gpu_out.get("y"), cpu.get("y"));
            }
        }
    }
}

/// Rows with −∞ and NaN: max/min/argmax ignore NaN; an all −∞ / NaN row gives max −∞, argmax 0.
#[test]
fn special_values_match_cpu_and_rule() {
    let inf = f32::INFINITY;
    let nan = f32::NAN;
    // 4 rows of 70 along the last axis (workgroup tree), and the same rows as the columns of a
    // (70, 4) tensor along axis 0 (one thread per output).
    let mut x = vec![0.0f32; 4 * 70];
    x[..70].fill(-inf); // all −∞
    x[70..140].fill(nan); // all NaN
    x[140..210].copy_from_slice(&[-inf; 70]);
    x[140 + 33] = nan;
    x[140 + 50] = -3.0; // single finite value
    for (j, v) in x[210..280].iter_mut().enumerate() {
        *v = if j % 2 == 0 { nan } else { j as f32 * -0.5 };
    }
    let want_argmax = [0.0, 0.0, 50.0, 1.0];
    let want_max = [-inf, -inf, -3.0, -0.5];
    let want_min = [-inf, inf, -inf, -34.5];
    let xt: Vec<f32> = (0..280).map(|i| x[(i % 4) * 70 + i / 4]).collect();
    for (shape, axis, x) in [(&[4usize, 70][..], 1, &x), (&[70, 4][..], 0, &xt)] {
        for (op, want) in [(ReduceOp::Argmax, want_argmax), (ReduceOp::Max, want_max), (ReduceOp::Min, want_min)] {
            let build = |g: &mut Graph| {
                let xi = g.input("x", shape);
                let y = reduce(g, xi, axis, op).unwrap();
                g.output("y", y);
            };
            let cpu = run_cpu(build, &[("x", x)]);
            assert_eq!(cpu.get("y"), &want, "{op:?} {shape:?} cpu");
            if let Some(gpu) = gpu() {
                let (_, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", x)]);
                assert_eq!(gpu_out.get("y"), &want, "{op:?} {shape:?} gpu");
            }
        }
    }
}

#[test]
fn pool1d_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(22);
    // (shape, axis, window): SG-DETR level masks (B, 76) with stride 2 and 4, a trailing partial
    // window (10 / 3), windows of the tree kernel (≥ 64), window 1 and a full-axis window.
    let cases: &[(&[usize], usize, usize)] = &[
        (&[2, 76], 1, 2),
        (&[2, 76], 1, 4),
        (&[3, 10, 5], 1, 3),
        (&[1, 200], 1, 100),
        (&[2, 7], 1, 1),
        (&[3, 130], 1, 65),
        (&[2, 9, 4], 1, 9),
    ];
    for &(shape, axis, window) in cases {
        let x = data(&mut rng, shape.iter().product(), true);
        for op in OPS {
            let build = |g: &mut Graph| {
                let xi = g.input("x", shape);
                let y = pool1d(g, xi, axis, window, op).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
            let mut out = shape.to_vec();
            out[axis] /= window;
            assert_eq!(gpu_out.shape("y"), &out[..]);
            compare(&format!("pool {op:?} {shape:?} axis {axis} window {window}"), op, gpu_out.get("y"), cpu.get("y"));
        }
    }
}

type Builder = fn(&mut Graph, TensorId, usize) -> moment_gpu::Result<TensorId>;

/// The CPU twin against naive f64 loops over (outer, axis, inner).
#[test]
fn cpu_matches_naive() {
    let mut rng = Rng::new(23);
    let shape = [3usize, 37, 5];
    let x = rng.vec(shape.iter().product(), -1.0, 1.0);
    for axis in 0..3 {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let n = shape[axis];
        let at = |o: usize, j: usize, i: usize| x[(o * n + j) * inner + i] as f64;
        let mut want: [Vec<f32>; 5] = Default::default();
        for o in 0..outer {
            for i in 0..inner {
                let vals: Vec<f64> = (0..n).map(|j| at(o, j, i)).collect();
                let s: f64 = vals.iter().sum();
                let mx = vals.iter().cloned().fold(f64::MIN, f64::max);
                let mn = vals.iter().cloned().fold(f64::MAX, f64::min);
                want[0].push(s as f32);
                want[1].push((s / n as f64) as f32);
                want[2].push(mx as f32);
                want[3].push(mn as f32);
                want[4].push(vals.iter().position(|&v| v == mx).unwrap() as f32);
            }
        }
        let builders: [Builder; 5] = [sum, mean, max, min, argmax];
        for (k, f) in builders.iter().enumerate() {
            let out = run_cpu(
                |g| {
                    let xi = g.input("x", &shape);
                    let y = f(g, xi, axis).unwrap();
                    g.output("y", y);
                },
                &[("x", &x)],
            );
            assert_close(
                &format!("{:?} axis {axis} cpu vs naive", OPS[k]),
                out.get("y"),
                &want[k],
                Tolerance::new(1e-6, 1e-6),
            );
        }
    }
}

#[test]
fn hand_values() {
    let x = [1.0f32, 3.0, 3.0, 2.0, -1.0, -1.0, -5.0, 0.5];
    let run = |op: ReduceOp| {
        run_cpu(
            |g| {
                let xi = g.input("x", &[2, 4]);
                let y = reduce(g, xi, 1, op).unwrap();
                g.output("y", y);
            },
            &[("x", &x)],
        )
        .get("y")
        .to_vec()
    };
    assert_eq!(run(ReduceOp::Sum), [9.0, -6.5]);
    assert_eq!(run(ReduceOp::Mean), [2.25, -1.625]);
    assert_eq!(run(ReduceOp::Max), [3.0, 0.5]);
    assert_eq!(run(ReduceOp::Min), [1.0, -5.0]);
    assert_eq!(run(ReduceOp::Argmax), [1.0, 3.0]); // the first of the tied 3s
                                                   // max_pool1d(kernel 2, stride 2) of a mask (1, 7): the odd tail is dropped.
    let out = run_cpu(
        |g| {
            let m = g.input("m", &[1, 7]);
            let y = pool1d(g, m, 1, 2, ReduceOp::Max).unwrap();
            g.output("y", y);
        },
        &[("m", &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])],
    );
    assert_eq!(out.shape("y"), &[1, 3]);
    assert_eq!(out.get("y"), &[1.0, 1.0, 0.0]);
}

/// (rows shape, k): k = n = 1, k = n, SG-DETR's 25 of 285 proposal tokens, the largest k (32),
/// rows longer than the workgroup (600), B > 1.
const TOPK_CASES: &[(&[usize], usize)] =
    &[(&[1, 1], 1), (&[3, 7], 7), (&[2, 285], 25), (&[4, 300], 32), (&[2, 600], 5), (&[2, 3, 17], 4), (&[9], 3)];

#[test]
fn topk_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(24);
    for &(shape, k) in TOPK_CASES {
        for ties in [false, true] {
            let mut x = data(&mut rng, shape.iter().product(), ties);
            // SG-DETR masks invalid tokens with −∞; some NaN as well.
            for i in (0..x.len()).step_by(5) {
                x[i] = f32::NEG_INFINITY;
            }
            if x.len() > 10 {
                x[3] = f32::NAN;
            }
            let build = |g: &mut Graph| {
                let xi = g.input("x", shape);
                let (v, i) = topk(g, xi, k).unwrap();
                g.output("v", v);
                g.output("i", i);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
            let what = format!("topk {shape:?} k {k} ties={ties}");
            assert_same(&format!("{what} indices"), gpu_out.get("i"), cpu.get("i"));
            assert_same(&format!("{what} values"), gpu_out.get("v"), cpu.get("v"));
        }
    }
}

/// All −∞ rows (fewer valid tokens than k): the lowest indices come first.
#[test]
fn topk_all_masked_row() {
    let x = vec![f32::NEG_INFINITY; 2 * 30];
    let build = |g: &mut Graph| {
        let xi = g.input("x", &[2, 30]);
        let (v, i) = topk(g, xi, 25).unwrap();
        g.output("v", v);
        g.output("i", i);
    };
    let want: Vec<f32> = (0..2).flat_map(|_| (0..25).map(|j| j as f32)).collect();
    let cpu = run_cpu(build, &[("x", &x)]);
    assert_eq!(cpu.get("i"), &want[..]);
    if let Some(gpu) = gpu() {
        let (_, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
        assert_eq!(gpu_out.get("i"), &want[..]);
        assert!(gpu_out.get("v").iter().all(|&v| v == f32::NEG_INFINITY));
    }
}

#[test]
fn topk_hand_values_and_stable_sort() {
    let x = [0.5f32, 2.0, 2.0, -1.0, 7.0];
    let out = run_cpu(
        |g| {
            let xi = g.input("x", &[1, 5]);
            let (v, i) = topk(g, xi, 3).unwrap();
            g.output("v", v);
            g.output("i", i);
        },
        &[("x", &x)],
    );
    assert_eq!(out.get("v"), &[7.0, 2.0, 2.0]);
    assert_eq!(out.get("i"), &[4.0, 1.0, 2.0]);
    // Against a stable descending sort (NumPy argsort(-x, kind="stable"), as the SG-DETR
    // reference selects its queries).
    let mut rng = Rng::new(25);
    for n in [1usize, 10, 285] {
        let row: Vec<f32> = (0..n).map(|_| rng.below(9) as f32).collect();
        let mut stable: Vec<usize> = (0..n).collect();
        stable.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        let k = n.min(25);
        assert_eq!(top_k_indices(&row, k), stable[..k].to_vec(), "n = {n}");
    }
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5]);
    assert!(sum(&mut g, x, 2).is_err());
    assert!(pool1d(&mut g, x, 1, 0, ReduceOp::Max).is_err());
    assert!(pool1d(&mut g, x, 1, 6, ReduceOp::Max).is_err());
    assert!(topk(&mut g, x, 0).is_err());
    assert!(topk(&mut g, x, 6).is_err());
    let e = g.input("e", &[2, 0]);
    assert!(mean(&mut g, e, 1).is_err());
}
