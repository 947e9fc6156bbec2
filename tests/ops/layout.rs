//! Layout ops (concat, broadcast_to, slice, select, pad, permute, transpose, repeat_interleave,
//! gather_rows): GPU kernel vs CPU twin, and the CPU twins vs naive index arithmetic
//! written here.

use moment_gpu::ops::layout::{
    broadcast_to, concat, gather_rows, pad, permute, repeat_interleave, select, slice, slice_step, transpose,
};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::{Graph, TensorId};

/// Pure data movement: every output value is a copy of an input value or 0, so exact.
const EXACT: Tolerance = Tolerance::new(0.0, 0.0);

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = i % shape[d];
        i /= shape[d];
    }
    c
}

fn ravel(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(strides(shape)).map(|(a, s)| a * s).sum()
}

/// Runs a one-input, one-output layout op on CPU and GPU; asserts parity and, when given, the
/// CPU result against `want`.
fn check1(
    what: &str,
    shape: &[usize],
    op: impl Fn(&mut Graph, TensorId) -> TensorId,
    want: impl Fn(&[f32]) -> Vec<f32>,
) {
    let mut rng = Rng::new(what.len() as u64 + shape.iter().sum::<usize>() as u64);
    let n: usize = shape.iter().product();
    let x = rng.vec(n, -1.0, 1.0);
    let build = |g: &mut Graph| {
        let xi = g.input("x", shape);
        let y = op(g, xi);
        g.output("y", y);
    };
    let cpu = run_cpu(build, &[("x", &x)]);
    assert_close(&format!("{what} {shape:?} cpu vs naive"), cpu.get("y"), &want(&x), EXACT);
    if let Some(gpu) = gpu() {
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
        assert_close(&format!("{what} {shape:?} gpu vs cpu"), gpu_out.get("y"), cpu.get("y"), EXACT);
    }
}

/// Shapes with size 1, odd sizes, totals off the 256-thread workgroup, B > 1, rank 1 to 5.
const SHAPES: &[&[usize]] =
    &[&[1], &[7], &[1, 1, 1], &[3, 5, 7], &[2, 75, 33], &[2, 3, 4, 5], &[2, 1, 3, 1, 5], &[4, 257]];

#[test]
fn slice_and_select() {
    for &shape in SHAPES {
        for axis in 0..shape.len() {
            let n = shape[axis];
            // (start, len, step): the whole axis, a tail, and a strided pick where it fits.
            let mut cases = vec![(0, n, 1), (n / 2, n - n / 2, 1)];
            if n >= 3 {
                cases.push((1, (n - 1).div_ceil(2), 2));
            }
            for (start, len, step) in cases {
                let mut out = shape.to_vec();
                out[axis] = len;
                check1(
                    &format!("slice axis {axis} {start}+{len}x{step}"),
                    shape,
                    |g, x| slice_step(g, x, axis, start, len, step).unwrap(),
                    |x| {
                        (0..out.iter().product())
                            .map(|i| {
                                let mut c = unravel(i, &out);
                                c[axis] = start + c[axis] * step;
                                x[ravel(&c, shape)]
                            })
                            .collect()
                    },
                );
            }
            let index = n - 1;
            check1(
                &format!("select axis {axis} {index}"),
                shape,
                |g, x| select(g, x, axis, index).unwrap(),
                |x| {
                    let mut out = shape.to_vec();
                    out[axis] = 1;
                    (0..out.iter().product())
                        .map(|i| {
                            let mut c = unravel(i, &out);
                            c[axis] = index;
                            x[ravel(&c, shape)]
                        })
                        .collect()
                },
            );
        }
    }
}

#[test]
fn pad_and_repeat_interleave() {
    for &shape in SHAPES {
        for axis in 0..shape.len() {
            for (before, after) in [(0, 3), (2, 1), (1, 0)] {
                let mut out = shape.to_vec();
                out[axis] += before + after;
                check1(
                    &format!("pad axis {axis} ({before}, {after})"),
                    shape,
                    |g, x| pad(g, x, axis, before, after).unwrap(),
                    |x| {
                        (0..out.iter().product())
                            .map(|i| {
                                let mut c = unravel(i, &out);
                                if c[axis] < before || c[axis] >= before + shape[axis] {
                                    return 0.0;
                                }
                                c[axis] -= before;
                                x[ravel(&c, shape)]
                            })
                            .collect()
                    },
                );
            }
            for r in [1, 2, 3] {
                let mut out = shape.to_vec();
                out[axis] *= r;
                check1(
                    &format!("repeat_interleave axis {axis} x{r}"),
                    shape,
                    |g, x| repeat_interleave(g, x, axis, r).unwrap(),
                    |x| {
                        (0..out.iter().product())
                            .map(|i| {
                                let mut c = unravel(i, &out);
                                c[axis] /= r;
                                x[ravel(&c, shape)]
                            })
                            .collect()
                    },
                );
            }
        }
    }
}

#[test]
fn permute_and_transpose() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[0]),
        (&[3, 5], &[1, 0]),
        (&[2, 75, 33], &[0, 2, 1]),
        (&[2, 75, 33], &[1, 0, 2]),
        (&[3, 5, 7], &[2, 0, 1]),
        (&[2, 7, 8, 32], &[0, 2, 1, 3]), // (B, L, H, h) → (B, H, L, h)
        (&[2, 3, 4, 5], &[3, 2, 1, 0]),
        (&[1, 5, 1, 3], &[3, 1, 0, 2]),
        (&[2, 3, 1, 4, 5], &[0, 3, 1, 2, 4]), // rank 5 whose dims merge to ≤ 4
    ];
    for &(shape, perm) in cases {
        let out: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        check1(
            &format!("permute {perm:?}"),
            shape,
            |g, x| permute(g, x, perm).unwrap(),
            |x| {
                (0..out.iter().product())
                    .map(|i| {
                        let co = unravel(i, &out);
                        let mut ci = vec![0; shape.len()];
                        for (d, &a) in perm.iter().enumerate() {
                            ci[a] = co[d];
                        }
                        x[ravel(&ci, shape)]
                    })
                    .collect()
            },
        );
    }
    // transpose(1, 2) of (B, L, D) = permute [0, 2, 1].
    let shape = [3usize, 17, 9];
    check1(
        "transpose 1 2",
        &shape,
        |g, x| transpose(g, x, 1, 2).unwrap(),
        |x| (0..3 * 9 * 17).map(|i| x[(i / (9 * 17)) * 153 + (i % 17) * 9 + (i / 17) % 9]).collect(),
    );
}

#[test]
fn broadcast_to_matches_numpy_rules() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[5]),
        (&[25, 2], &[3, 25, 2]), // learnt anchors (Q, 2) → (B, Q, 2)
        (&[1, 1, 33], &[2, 75, 33]),
        (&[2, 1, 7], &[2, 9, 7]),
        (&[3, 1], &[2, 3, 5]),
        (&[1, 1, 1], &[1, 1, 1]),
    ];
    for &(shape, to) in cases {
        let lead = to.len() - shape.len();
        check1(
            &format!("broadcast_to {to:?}"),
            shape,
            |g, x| broadcast_to(g, x, to).unwrap(),
            |x| {
                (0..to.iter().product())
                    .map(|i| {
                        let co = unravel(i, to);
                        let ci: Vec<usize> =
                            shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { co[d + lead] }).collect();
                        x[ravel(&ci, shape)]
                    })
                    .collect()
            },
        );
    }
}

/// Concat cases: parts' shapes and the axis.
fn concat_cases() -> Vec<(Vec<Vec<usize>>, usize)> {
    vec![
        (vec![vec![1, 1, 1]], 0),
        (vec![vec![5], vec![3]], 0),
        (vec![vec![2, 3, 5], vec![2, 4, 5], vec![2, 1, 5]], 1),
        // TR-DETR: [X1, q̄ broadcast to every clip] along features.
        (vec![vec![3, 7, 4], vec![3, 1, 6]], 2),
        // VideoLights: [v, G, broadcast(s over l), C] (B, L, 4d).
        (vec![vec![2, 75, 33], vec![2, 75, 33], vec![2, 1, 33], vec![2, 75, 33]], 2),
        // A global token shared by the batch, prepended along the sequence.
        (vec![vec![1, 1, 8], vec![2, 5, 8]], 1),
        // SG-DETR: FPN levels along tokens.
        (vec![vec![2, 16, 9], vec![2, 8, 9], vec![2, 4, 9], vec![2, 2, 9]], 1),
        (vec![vec![2, 3, 5, 7], vec![2, 3, 2, 7]], 2),
        (vec![vec![2, 3, 4, 5, 6], vec![2, 3, 4, 5, 1]], 4),
        // More than six parts: two dispatches.
        ((1..=8).map(|i| vec![i, 3]).collect(), 0),
        (vec![vec![4, 1], vec![4, 2], vec![1, 1], vec![4, 3], vec![4, 1], vec![4, 5], vec![4, 1]], 1),
    ]
}

#[test]
fn concat_matches_cpu_and_naive() {
    let mut rng = Rng::new(7);
    for (shapes, axis) in concat_cases() {
        let xs: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(s.iter().product(), -1.0, 1.0)).collect();
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("x{i}")).collect();
        let inputs: Vec<(&str, &[f32])> = names.iter().map(|n| n.as_str()).zip(xs.iter().map(|v| &v[..])).collect();
        let build = |g: &mut Graph| {
            let ids: Vec<TensorId> = shapes.iter().zip(&names).map(|(s, n)| g.input(n, s)).collect();
            let y = concat(g, &ids, axis).unwrap();
            g.output("y", y);
        };
        // Naive: output dims are the parts' maxima, the axis their sum.
        let rank = shapes[0].len();
        let mut out: Vec<usize> = (0..rank).map(|d| shapes.iter().map(|s| s[d]).max().unwrap()).collect();
        out[axis] = shapes.iter().map(|s| s[axis]).sum();
        let want: Vec<f32> = (0..out.iter().product())
            .map(|i| {
                let mut c = unravel(i, &out);
                let mut k = 0;
                while c[axis] >= shapes[k][axis] {
                    c[axis] -= shapes[k][axis];
                    k += 1;
                }
                let ci: Vec<usize> = c.iter().zip(&shapes[k]).map(|(&a, &n)| if n == 1 { 0 } else { a }).collect();
                xs[k][ravel(&ci, &shapes[k])]
            })
            .collect();
        let cpu = run_cpu(build, &inputs);
        assert_eq!(cpu.shape("y"), &out[..]);
        assert_close(&format!("concat {shapes:?} axis {axis} cpu vs naive"), cpu.get("y"), &want, EXACT);
        if let Some(gpu) = gpu() {
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &inputs);
            assert_close(&format!("concat {shapes:?} axis {axis} gpu vs cpu"), gpu_out.get("y"), cpu.get("y"), EXACT);
        }
    }
}

#[test]
fn concat_hand_values() {
    // [[1, 2], [3, 4]] ‖ [[9]] (broadcast over rows) along axis 1.
    let out = run_cpu(
        |g| {
            let a = g.input("a", &[2, 2]);
            let b = g.input("b", &[1, 1]);
            let y = concat(g, &[a, b], 1).unwrap();
            g.output("y", y);
        },
        &[("a", &[1.0, 2.0, 3.0, 4.0]), ("b", &[9.0])],
    );
    assert_eq!(out.shape("y"), &[2, 3]);
    assert_eq!(out.get("y"), &[1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
}

#[test]
fn gather_rows_matches_cpu_and_naive() {
    let mut rng = Rng::new(11);
    // (x batch (1 = shared table), B, L, K, D)
    for &(xb, b, l, k, d) in
        &[(1, 1, 1, 1, 1), (2, 2, 5, 3, 7), (3, 3, 76, 25, 33), (1, 4, 9, 11, 5), (2, 2, 75, 75, 256)]
    {
        let x = rng.vec(xb * l * d, -1.0, 1.0);
        // Indices in range, out of range on both sides, fractional and NaN.
        let idx: Vec<f32> = (0..b * k)
            .map(|i| match i % 7 {
                0 => -1.0,
                1 => l as f32,
                2 => f32::NAN,
                3 => rng.below(l) as f32 + 0.5,
                _ => rng.below(l) as f32,
            })
            .collect();
        let build = |g: &mut Graph| {
            let xi = g.input("x", &[xb, l, d]);
            let ii = g.input("idx", &[b, k]);
            let y = gather_rows(g, xi, ii).unwrap();
            g.output("y", y);
        };
        let want: Vec<f32> = (0..b * k * d)
            .map(|i| {
                let (row, c) = (i / d, i % d);
                let j = idx[row];
                if j.is_nan() || j < 0.0 || j >= l as f32 {
                    0.0
                } else {
                    x[(if xb == 1 { 0 } else { row / k }) * l * d + (j.trunc() as usize) * d + c]
                }
            })
            .collect();
        let inputs: &[(&str, &[f32])] = &[("x", &x), ("idx", &idx)];
        let cpu = run_cpu(build, inputs);
        assert_close(&format!("gather {xb}x{b}x{l}x{k}x{d} cpu vs naive"), cpu.get("y"), &want, EXACT);
        if let Some(gpu) = gpu() {
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, inputs);
            assert_close(&format!("gather {xb}x{b}x{l}x{k}x{d} gpu vs cpu"), gpu_out.get("y"), cpu.get("y"), EXACT);
        }
    }
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 4]);
    let y = g.input("y", &[2, 5, 3]);
    let i = g.input("i", &[3, 2]);
    assert!(concat(&mut g, &[], 0).is_err());
    assert!(concat(&mut g, &[x, y], 1).is_err()); // axis 2 neither matches nor broadcasts
    assert!(concat(&mut g, &[x, i], 0).is_err()); // rank differs
    assert!(concat(&mut g, &[x, x], 3).is_err());
    assert!(slice(&mut g, x, 1, 2, 2).is_err());
    assert!(slice(&mut g, x, 1, 0, 0).is_err());
    assert!(slice_step(&mut g, x, 2, 1, 2, 3).is_err());
    assert!(select(&mut g, x, 0, 2).is_err());
    assert!(permute(&mut g, x, &[0, 0, 1]).is_err());
    assert!(permute(&mut g, x, &[0, 1]).is_err());
    assert!(transpose(&mut g, x, 0, 3).is_err());
    assert!(repeat_interleave(&mut g, x, 1, 0).is_err());
    assert!(broadcast_to(&mut g, x, &[2, 3, 5]).is_err());
    assert!(broadcast_to(&mut g, x, &[3, 4]).is_err());
    assert!(gather_rows(&mut g, x, i).is_err()); // batch 2 vs 3
    assert!(gather_rows(&mut g, i, x).is_err()); // indices must be rank 2
    assert!(pad(&mut g, x, 3, 1, 1).is_err());
    // A permute of 5 dims that cannot merge exceeds the 4-dim view.
    let z = g.input("z", &[2, 3, 4, 5, 6]);
    assert!(permute(&mut g, z, &[4, 3, 2, 1, 0]).is_err());
}
