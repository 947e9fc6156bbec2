//! Masked Conv1d (each sample's valid clips only) and the masked LD-DETR conv block: GPU kernel vs
//! CPU twin, the CPU twin vs an f64 convolution of each sample's valid clips written here, and
//! the masked block on a padded batch vs the unmasked `conv_bn_block` on every sample alone.

use super::conv1d::{assert_dense_shape_errors, dense_matches_cpu, F64_TOL};
use moment_gpu::ops::conv1d::conv_bn_block;
use moment_gpu::ops::masked_conv1d::{masked_conv1d, masked_conv_bn_block};
use moment_gpu::ops::Act;
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu, Rng, Tolerance};
use moment_gpu::Graph;

/// Masked block (padded batch) vs the unmasked block on the sample alone: the same kernel
/// arithmetic on the same values, only the padded rows are skipped, so the results agree to the
/// last bits (GPU: both run the same tiles in the same order; CPU: identical loops).
const SAME_SUMS: Tolerance = Tolerance::new(1e-6, 1e-6);

/// (valid clips per sample, L, C_in, C_out, k): size 1, a fully padded sample, odd sizes and
/// sizes off the 32 × 32 tile and the 16-wide channel step, B > 1, the LD-DETR block shape
/// (75 × 256 → 256, k = 3) with a padded batch, k = 1 and k = 5.
const SHAPES: &[(&[usize], usize, usize, usize, usize)] = &[
    (&[1], 1, 1, 1, 3),
    (&[0, 1], 1, 3, 5, 3),
    (&[7, 3], 7, 5, 3, 3),
    (&[33, 0, 20], 33, 17, 35, 3),
    (&[75, 30, 7], 75, 256, 256, 3),
    (&[10, 4], 10, 40, 36, 1),
    (&[8, 5, 1], 8, 6, 9, 5),
];

#[test]
fn masked_conv1d_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    for (n, &(valid, l, ci, co, k)) in SHAPES.iter().enumerate() {
        let b = valid.len();
        // Padded rows of x hold garbage: the kernel must never read them.
        let mask = padding_mask(valid, l);
        let name = format!("masked_conv1d valid {valid:?} L{l} {ci}->{co} k{k}");
        let cases = dense_matches_cpu(
            &gpu,
            &mut rng,
            n,
            &name,
            [b, l, ci, co, k, l],
            &[("mask", &mask)],
            |g, x, w, bias, residual, act| {
                let mi = g.input("mask", &[b, l]);
                masked_conv1d(g, x, mi, w, bias, residual, act).unwrap()
            },
        );
        for (what, cpu, gpu_out) in cases {
            // Padded rows (and every row of a fully padded sample) are exactly 0 on both.
            for (bb, &v) in valid.iter().enumerate() {
                let pad = (bb * l + v) * co..(bb + 1) * l * co;
                assert!(
                    gpu_out.get("y")[pad.clone()].iter().all(|&y| y == 0.0),
                    "{what}: sample {bb} padded rows not 0"
                );
                assert!(cpu.get("y")[pad].iter().all(|&y| y == 0.0));
            }
        }
    }
}

/// The CPU twin against an f64 convolution of each sample's valid clips alone (zero padding at
/// both ends of the valid prefix), with bias, residual and ReLU; padded rows 0.
#[test]
fn masked_conv1d_cpu_matches_f64_reference() {
    let mut rng = Rng::new(22);
    for &(valid, l, ci, co, k) in &[(&[5usize, 2, 0][..], 5usize, 4usize, 3usize, 3usize), (&[6, 1], 6, 3, 2, 5)] {
        let b = valid.len();
        let x = rng.vec(b * l * ci, -1.0, 1.0);
        let w = rng.vec(co * ci * k, -1.0, 1.0);
        let bias = rng.vec(co, -1.0, 1.0);
        let residual = rng.vec(b * l * co, -1.0, 1.0);
        let mut want = vec![0.0f32; b * l * co];
        for (bb, &v) in valid.iter().enumerate() {
            for t in 0..v {
                for o in 0..co {
                    let mut s = bias[o] as f64 + residual[(bb * l + t) * co + o] as f64;
                    for tap in 0..k {
                        let u = (t + tap) as isize - (k / 2) as isize;
                        if u < 0 || u >= v as isize {
                            continue;
                        }
                        for c in 0..ci {
                            s += w[(o * ci + c) * k + tap] as f64 * x[(bb * l + u as usize) * ci + c] as f64;
                        }
                    }
                    want[(bb * l + t) * co + o] = s.max(0.0) as f32;
                }
            }
        }
        let mask = padding_mask(valid, l);
        let out = run_cpu(
            |g| {
                let xi = g.input("x", &[b, l, ci]);
                let mi = g.input("mask", &[b, l]);
                let wi = g.constant(w.clone().into(), &[co, ci, k]).unwrap();
                let bi = g.constant(bias.clone().into(), &[co]).unwrap();
                let ri = g.input("r", &[b, l, co]);
                let y = masked_conv1d(g, xi, mi, wi, Some(bi), Some(ri), Act::Relu).unwrap();
                g.output("y", y);
            },
            &[("x", &x), ("mask", &mask), ("r", &residual)],
        );
        assert_close(&format!("masked_conv1d cpu vs f64 valid {valid:?} k{k}"), out.get("y"), &want, F64_TOL);
    }
}

/// Two stacked masked blocks over a padded batch give every sample what two unmasked
/// `conv_bn_block`s give on its valid clips alone (the property LD-DETR needs), on both backends.
#[test]
fn masked_block_on_a_padded_batch_equals_unmasked_blocks_per_sample() {
    let mut rng = Rng::new(23);
    let (valid, l, c) = ([9usize, 4, 1], 9usize, 20usize);
    let b = valid.len();
    let scale = 1.0 / ((3 * c) as f32).sqrt();
    let weights: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(c * c * 3, -scale, scale)).collect();
    let biases: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(c, -0.5, 0.5)).collect();
    let x = rng.vec(b * l * c, -1.0, 1.0);
    let mask = padding_mask(&valid, l);
    let stack = |g: &mut Graph, x: moment_gpu::TensorId, mask: Option<moment_gpu::TensorId>| {
        let mut x = x;
        for blk in 0..2 {
            let ids: Vec<_> = (0..2)
                .map(|j| {
                    let i = 2 * blk + j;
                    (
                        g.constant(weights[i].clone().into(), &[c, c, 3]).unwrap(),
                        g.constant(biases[i].clone().into(), &[c]).unwrap(),
                    )
                })
                .collect();
            let dispatches = g.dispatches();
            x = match mask {
                Some(m) => masked_conv_bn_block(g, x, m, ids[0].0, ids[0].1, ids[1].0, ids[1].1).unwrap(),
                None => conv_bn_block(g, x, ids[0].0, ids[0].1, ids[1].0, ids[1].1).unwrap(),
            };
            assert_eq!(g.dispatches() - dispatches, 2, "a conv block is two dispatches");
        }
        x
    };
    let devices: Vec<_> = std::iter::once(moment_gpu::Device::Cpu).chain(gpu()).collect();
    for device in &devices {
        let run = |build: &dyn Fn(&mut Graph), inputs: &[(&str, &[f32])]| {
            let mut g = Graph::new();
            build(&mut g);
            let mut exe = moment_gpu::Executable::new(g, device, &moment_gpu::ConstCache::new()).unwrap();
            exe.run(inputs).unwrap()
        };
        let batched = run(
            &|g| {
                let xi = g.input("x", &[b, l, c]);
                let mi = g.input("mask", &[b, l]);
                let y = stack(g, xi, Some(mi));
                g.output("y", y);
            },
            &[("x", &x), ("mask", &mask)],
        );
        for (bb, &v) in valid.iter().enumerate() {
            let alone_x = &x[bb * l * c..(bb * l + v) * c];
            let alone = run(
                &|g| {
                    let xi = g.input("x", &[1, v, c]);
                    let y = stack(g, xi, None);
                    g.output("y", y);
                },
                &[("x", alone_x)],
            );
            let got = &batched.get("y")[bb * l * c..][..l * c];
            assert_close(&format!("sample {bb} on {}", device.name()), &got[..v * c], alone.get("y"), SAME_SUMS);
            assert!(got[v * c..].iter().all(|&y| y == 0.0), "sample {bb}: padded rows not 0");
        }
    }
}

#[test]
fn mismatched_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5, 4]);
    let mask = g.input("mask", &[2, 5]);
    let w = assert_dense_shape_errors(&mut g, |g, w, bias, residual| {
        masked_conv1d(g, x, mask, w, bias, residual, Act::Relu)
    });
    let mask_bad = g.input("mask_bad", &[2, 4]);
    assert!(masked_conv1d(&mut g, x, mask_bad, w, None, None, Act::None).is_err());
    // Block weights whose channels differ from the input's cannot take the residual.
    let b3 = g.constant(vec![0.0; 3].into(), &[3]).unwrap();
    assert!(masked_conv_bn_block(&mut g, x, mask, w, b3, w, b3).is_err());
}
