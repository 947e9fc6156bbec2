//! Conv1d (dense, strided, depthwise-separable, the LD-DETR conv block): GPU kernel vs CPU twin,
//! the CPU twin vs f64 convolutions written here, and `fold_batchnorm` vs an unfolded BatchNorm.

use moment_gpu::ops::conv1d::{
    conv1d, conv1d_strided, conv_bn_block, conv_out_len, depthwise_separable, fold_batchnorm,
};
use moment_gpu::ops::Act;
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::{Device, Graph, Outputs, Result, TensorId};

/// f32 accumulation over C_in·k ≤ 768 products of O(1) values; GPU and CPU sum in different
/// orders (taps outer vs channels outer), so allow a few ulps of the partial sums. Also the
/// masked convolution's (same kernel).
pub(super) const TOL: Tolerance = Tolerance::new(2e-5, 1e-5);

/// CPU twin (f32) vs an f64 loop: the same rounding argument as TOL, one order of magnitude
/// below it in size of the sums used.
pub(super) const F64_TOL: Tolerance = Tolerance::new(1e-5, 1e-5);

pub(super) fn act_named(g: &mut Graph, name: &str) -> Act {
    match name {
        "relu" => Act::Relu,
        "prelu" => Act::Prelu(g.constant(vec![0.2f32].into(), &[1]).unwrap()),
        "sigmoid" => Act::Sigmoid,
        _ => Act::None,
    }
}

/// f64 reference: x (B, L, Ci), w (Co, Ci/groups…) dense PyTorch layout (Co, Ci, k), zero
/// padding k/2, stride; returns (B, Lo, Co) without bias.
#[allow(clippy::too_many_arguments)]
fn conv_f64(x: &[f64], b: usize, l: usize, ci: usize, w: &[f64], co: usize, k: usize, stride: usize) -> Vec<f64> {
    let lo = (l + 2 * (k / 2) - k) / stride + 1;
    let mut out = vec![0.0; b * lo * co];
    for bb in 0..b {
        for t in 0..lo {
            for o in 0..co {
                let mut s = 0.0;
                for tap in 0..k {
                    let u = (t * stride + tap) as isize - (k / 2) as isize;
                    if u < 0 || u >= l as isize {
                        continue;
                    }
                    for c in 0..ci {
                        s += w[(o * ci + c) * k + tap] * x[(bb * l + u as usize) * ci + c];
                    }
                }
                out[(bb * lo + t) * co + o] = s;
            }
        }
    }
    out
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn to32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// (B, L, C_in, C_out, k, stride): size 1 everywhere, L = 1 with k = 3 (both taps padded), odd
/// sizes, sizes off the 32 × 32 tile and the 16-wide channel step, B > 1, the LD-DETR block
/// (75 × 256 → 256, k = 3), a k = 1 projection (VideoLights / TR-DETR 1024 → 256), k = 5 and
/// stride 2, and a single output channel (the ATSS heads' 256 → 1).
const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1),
    (1, 1, 3, 5, 3, 1),
    (2, 7, 5, 3, 3, 1),
    (3, 33, 17, 35, 3, 1),
    (1, 75, 256, 256, 3, 1),
    (2, 10, 1024, 40, 1, 1),
    (2, 9, 20, 7, 3, 2),
    (1, 8, 6, 9, 5, 1),
    (2, 13, 64, 1, 3, 1),
];

#[test]
fn conv1d_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for (n, &(b, l, ci, co, k, stride)) in SHAPES.iter().enumerate() {
        let name = format!("conv1d B{b} L{l} {ci}->{co} k{k} s{stride}");
        let case = [b, l, ci, co, k, conv_out_len(l, k, stride)];
        dense_matches_cpu(&gpu, &mut rng, n, &name, case, &[], |g, x, w, bias, residual, act| {
            conv1d_strided(g, x, w, bias, stride, residual, act).unwrap()
        });
    }
}

/// GPU vs CPU of the dense op `conv(g, x, w, bias, residual, act)` for `case = [B, L, C_in,
/// C_out, k, L_out]` (input `(B, L, C_in)`, weight `(C_out, C_in, k)`, output `(B, L_out,
/// C_out)`), once per activation, the bias and residual rotated over the cases (`n` shifts the
/// rotation). `inputs` are the op's further graph inputs. Returns each case's name and (CPU, GPU)
/// outputs.
pub(super) fn dense_matches_cpu(
    gpu: &Device,
    rng: &mut Rng,
    n: usize,
    name: &str,
    [b, l, ci, co, k, lo]: [usize; 6],
    inputs: &[(&str, &[f32])],
    conv: impl Fn(&mut Graph, TensorId, TensorId, Option<TensorId>, Option<TensorId>, Act) -> TensorId,
) -> Vec<(String, Outputs, Outputs)> {
    let scale = 1.0 / ((ci * k) as f32).sqrt();
    let mut cases = Vec::new();
    for (case, act_name) in ["none", "relu", "prelu", "sigmoid"].into_iter().enumerate() {
        // Rotate the epilogue options over the shapes so each shape sees several.
        let with_bias = !(case + n).is_multiple_of(3);
        let with_residual = (case + n).is_multiple_of(2);
        let x = rng.vec(b * l * ci, -1.0, 1.0);
        let w = rng.vec(co * ci * k, -scale, scale);
        let bias = rng.vec(co, -1.0, 1.0);
        let residual = rng.vec(b * lo * co, -1.0, 1.0);
        let build = |g: &mut Graph| {
            let xi = g.input("x", &[b, l, ci]);
            let wi = g.constant(w.clone().into(), &[co, ci, k]).unwrap();
            let bi = with_bias.then(|| g.constant(bias.clone().into(), &[co]).unwrap());
            let ri = with_residual.then(|| g.input("r", &[b, lo, co]));
            let act = act_named(g, act_name);
            let y = conv(g, xi, wi, bi, ri, act);
            assert_eq!(g.shape(y), [b, lo, co]);
            g.output("y", y);
        };
        let inputs = [&[("x", &x[..]), ("r", &residual[..])], inputs].concat();
        let (cpu, gpu_out) = run_cpu_and_gpu(gpu, build, &inputs);
        let what = format!("{name} {act_name} bias={with_bias} residual={with_residual}");
        assert_close(&what, gpu_out.get("y"), cpu.get("y"), TOL);
        cases.push((what, cpu, gpu_out));
    }
    cases
}

/// (B, L, C_in, C_out, stride, upsample): the SG-DETR FPN forms (stride 2 on a multiple-of-4 L,
/// ×2 up-sampling, plain), size 1, odd sizes and odd L with stride 2, B > 1.
const SEPARABLE_SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1),
    (1, 1, 3, 2, 2, 2),
    (2, 7, 5, 9, 2, 1),
    (3, 13, 33, 17, 1, 2),
    (1, 76, 256, 256, 1, 2),
    (2, 38, 256, 256, 2, 1),
    (2, 19, 40, 35, 1, 1),
    // Enough output rows (720) for the CPU backend to split the depthwise taps over threads.
    (3, 120, 24, 20, 1, 2),
];

#[test]
fn depthwise_separable_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    for (n, &(b, l, ci, co, stride, up)) in SEPARABLE_SHAPES.iter().enumerate() {
        let lo = conv_out_len(l * up, 3, stride);
        let x = rng.vec(b * l * ci, -1.0, 1.0);
        let dw = rng.vec(ci * 3, -0.6, 0.6);
        let pw = rng.vec(co * ci, -1.0 / (ci as f32).sqrt(), 1.0 / (ci as f32).sqrt());
        let bias = rng.vec(co, -1.0, 1.0);
        let residual = rng.vec(b * lo * co, -1.0, 1.0);
        let (with_bias, with_residual) = (n % 2 == 1, n % 3 == 2);
        let act_name = ["none", "relu", "prelu"][n % 3];
        let build = |g: &mut Graph| {
            let xi = g.input("x", &[b, l, ci]);
            let dwi = g.constant(dw.clone().into(), &[ci, 1, 3]).unwrap();
            let pwi = g.constant(pw.clone().into(), &[co, ci, 1]).unwrap();
            let bi = with_bias.then(|| g.constant(bias.clone().into(), &[co]).unwrap());
            let ri = with_residual.then(|| g.input("r", &[b, lo, co]));
            let act = act_named(g, act_name);
            let y = depthwise_separable(g, xi, dwi, pwi, bi, stride, up, ri, act).unwrap();
            assert_eq!(g.shape(y), [b, lo, co]);
            g.output("y", y);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x), ("r", &residual)]);
        let what = format!("depthwise_separable B{b} L{l} {ci}->{co} s{stride} up{up} {act_name}");
        assert_close(&what, gpu_out.get("y"), cpu.get("y"), TOL);
    }
}

/// Random BatchNorm parameters (gamma ≠ 1, beta ≠ 0, running stats ≠ (0, 1)).
struct Bn {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl Bn {
    fn random(rng: &mut Rng, c: usize) -> Bn {
        Bn {
            gamma: rng.vec(c, 0.5, 1.5),
            beta: rng.vec(c, -0.5, 0.5),
            mean: rng.vec(c, -0.3, 0.3),
            var: rng.vec(c, 0.05, 2.0),
        }
    }
    /// f64 eval-mode BatchNorm of (…, C) rows, in PyTorch's order of operations.
    fn apply(&self, y: &mut [f64], eps: f64) {
        let c = self.gamma.len();
        for (i, v) in y.iter_mut().enumerate() {
            let o = i % c;
            *v = (*v - self.mean[o] as f64) / (self.var[o] as f64 + eps).sqrt() * self.gamma[o] as f64
                + self.beta[o] as f64;
        }
    }
    fn fold(&self, w: &[f32], b: Option<&[f32]>, eps: f32) -> (Vec<f32>, Vec<f32>) {
        fold_batchnorm(w, b, &self.gamma, &self.beta, &self.mean, &self.var, eps).unwrap()
    }
}

#[test]
fn fold_batchnorm_matches_unfolded_batchnorm() {
    let mut rng = Rng::new(13);
    let (b, l, ci, co, k) = (2, 9, 7, 5, 3);
    let x = rng.vec(b * l * ci, -1.0, 1.0);
    let w = rng.vec(co * ci * k, -0.5, 0.5);
    let bias = rng.vec(co, -0.5, 0.5);
    let bn = Bn::random(&mut rng, co);
    for (with_bias, eps) in [(true, 1e-5f32), (false, 1e-3)] {
        // conv (+ bias) then BN, all in f64 with the original parameters.
        let mut want = conv_f64(&to64(&x), b, l, ci, &to64(&w), co, k, 1);
        if with_bias {
            for (i, v) in want.iter_mut().enumerate() {
                *v += bias[i % co] as f64;
            }
        }
        bn.apply(&mut want, eps as f64);
        // conv with the folded parameters, in f64.
        let (wf, bf) = bn.fold(&w, with_bias.then_some(&bias[..]), eps);
        assert_eq!((wf.len(), bf.len()), (w.len(), co));
        let mut got = conv_f64(&to64(&x), b, l, ci, &to64(&wf), co, k, 1);
        for (i, v) in got.iter_mut().enumerate() {
            *v += bf[i % co] as f64;
        }
        // Only the f32 rounding of the folded parameters separates the two.
        assert_close(
            &format!("fold_batchnorm bias={with_bias} eps={eps}"),
            &to32(&got),
            &to32(&want),
            Tolerance::new(1e-6, 1e-6),
        );
    }
    // Hand-checked single channel: w = 2, b = 1, mean 0.5, var 3, eps 1, gamma 4, beta -1:
    // s = 4 / 2 = 2, w' = 4, b' = (1 - 0.5)·2 - 1 = 0.
    let (wf, bf) = fold_batchnorm(&[2.0], Some(&[1.0]), &[4.0], &[-1.0], &[0.5], &[3.0], 1.0).unwrap();
    assert_eq!((wf, bf), (vec![4.0], vec![0.0]));
    assert!(fold_batchnorm(&[1.0; 6], None, &[1.0; 4], &[0.0; 4], &[0.0; 4], &[1.0; 4], 1e-5).is_err());
    assert!(fold_batchnorm(&[1.0; 8], None, &[1.0; 4], &[0.0; 3], &[0.0; 4], &[1.0; 4], 1e-5).is_err());
}

/// The LD-DETR block, folded, through the graph (CPU twin) against the unfolded f64 block
/// `ReLU(x + BN₂(conv₂(ReLU(BN₁(conv₁ x)))))`; and GPU vs CPU, in two dispatches.
#[test]
fn conv_bn_block_matches_f64_and_gpu() {
    let mut rng = Rng::new(14);
    for &(b, l, c) in &[(1, 1, 1), (2, 11, 19), (1, 75, 256), (3, 6, 40)] {
        let scale = 1.0 / ((3 * c) as f32).sqrt();
        let x = rng.vec(b * l * c, -1.0, 1.0);
        let (w1, b1, w2, b2) = (
            rng.vec(c * c * 3, -scale, scale),
            rng.vec(c, -0.5, 0.5),
            rng.vec(c * c * 3, -scale, scale),
            rng.vec(c, -0.5, 0.5),
        );
        let (bn1, bn2) = (Bn::random(&mut rng, c), Bn::random(&mut rng, c));
        let eps = 1e-5;

        let mut y = conv_f64(&to64(&x), b, l, c, &to64(&w1), c, 3, 1);
        y.iter_mut().enumerate().for_each(|(i, v)| *v += b1[i % c] as f64);
        bn1.apply(&mut y, eps);
        y.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut z = conv_f64(&y, b, l, c, &to64(&w2), c, 3, 1);
        z.iter_mut().enumerate().for_each(|(i, v)| *v += b2[i % c] as f64);
        bn2.apply(&mut z, eps);
        let want: Vec<f32> = z.iter().zip(&x).map(|(v, &xi)| (v + xi as f64).max(0.0) as f32).collect();

        let (w1f, b1f) = bn1.fold(&w1, Some(&b1), eps as f32);
        let (w2f, b2f) = bn2.fold(&w2, Some(&b2), eps as f32);
        let build = |g: &mut Graph| {
            let xi = g.input("x", &[b, l, c]);
            let w1i = g.constant(w1f.clone().into(), &[c, c, 3]).unwrap();
            let b1i = g.constant(b1f.clone().into(), &[c]).unwrap();
            let w2i = g.constant(w2f.clone().into(), &[c, c, 3]).unwrap();
            let b2i = g.constant(b2f.clone().into(), &[c]).unwrap();
            let y = conv_bn_block(g, xi, w1i, b1i, w2i, b2i).unwrap();
            assert_eq!(g.dispatches(), 2, "the conv block must take two dispatches");
            g.output("y", y);
        };
        let cpu = run_cpu(build, &[("x", &x)]);
        assert_close(&format!("conv block cpu vs f64 B{b} L{l} C{c}"), cpu.get("y"), &want, Tolerance::new(3e-5, 1e-5));
        if let Some(gpu) = gpu() {
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
            assert_close(&format!("conv block gpu vs cpu B{b} L{l} C{c}"), gpu_out.get("y"), cpu.get("y"), TOL);
        }
    }
}

/// The dense CPU twin (stride 2, k = 5, bias, PReLU) against the f64 loop above.
#[test]
fn conv1d_cpu_matches_f64_reference() {
    let mut rng = Rng::new(15);
    for &(b, l, ci, co, k, stride) in &[(2, 9, 7, 5, 3, 1), (1, 10, 6, 4, 5, 2), (3, 4, 3, 8, 1, 1)] {
        let x = rng.vec(b * l * ci, -1.0, 1.0);
        let w = rng.vec(co * ci * k, -0.5, 0.5);
        let bias = rng.vec(co, -0.5, 0.5);
        let lo = conv_out_len(l, k, stride);
        let out = run_cpu(
            |g| {
                let xi = g.input("x", &[b, l, ci]);
                let wi = g.constant(w.clone().into(), &[co, ci, k]).unwrap();
                let bi = g.constant(bias.clone().into(), &[co]).unwrap();
                let slope = g.constant(vec![0.1f32].into(), &[1]).unwrap();
                let y = conv1d_strided(g, xi, wi, Some(bi), stride, None, Act::Prelu(slope)).unwrap();
                g.output("y", y);
            },
            &[("x", &x)],
        );
        let want: Vec<f32> = conv_f64(&to64(&x), b, l, ci, &to64(&w), co, k, stride)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let v = v + bias[i % co] as f64;
                (if v >= 0.0 { v } else { 0.1 * v }) as f32
            })
            .collect();
        assert_eq!(want.len(), b * lo * co);
        assert_close(&format!("conv1d cpu vs f64 B{b} L{l} k{k} s{stride}"), out.get("y"), &want, F64_TOL);
    }
}

/// The separable CPU twin against an f64 loop: explicit nearest up-sampling (`np.repeat`), a
/// depthwise conv with zero padding and stride, then the pointwise product.
#[test]
fn depthwise_separable_cpu_matches_f64_reference() {
    let mut rng = Rng::new(16);
    for &(b, l, ci, co, stride, up) in &[(2, 7, 5, 4, 2, 1), (1, 5, 3, 6, 1, 2), (2, 6, 4, 3, 2, 2)] {
        let x = rng.vec(b * l * ci, -1.0, 1.0);
        let dw = rng.vec(ci * 3, -1.0, 1.0);
        let pw = rng.vec(co * ci, -1.0, 1.0);
        let lu = l * up;
        let lo = (lu - 1) / stride + 1;
        let mut want = vec![0.0f32; b * lo * co];
        for bb in 0..b {
            let xu: Vec<f64> = (0..lu * ci).map(|i| x[(bb * l + (i / ci) / up) * ci + i % ci] as f64).collect();
            for t in 0..lo {
                let d: Vec<f64> = (0..ci)
                    .map(|c| {
                        (0..3)
                            .filter_map(|tap| {
                                let u = (t * stride + tap) as isize - 1;
                                (u >= 0 && (u as usize) < lu).then(|| dw[c * 3 + tap] as f64 * xu[u as usize * ci + c])
                            })
                            .sum()
                    })
                    .collect();
                for o in 0..co {
                    let v: f64 = (0..ci).map(|c| pw[o * ci + c] as f64 * d[c]).sum();
                    want[(bb * lo + t) * co + o] = v as f32;
                }
            }
        }
        let out = run_cpu(
            |g| {
                let xi = g.input("x", &[b, l, ci]);
                let dwi = g.constant(dw.clone().into(), &[ci, 1, 3]).unwrap();
                let pwi = g.constant(pw.clone().into(), &[co, ci]).unwrap();
                let y = depthwise_separable(g, xi, dwi, pwi, None, stride, up, None, Act::None).unwrap();
                g.output("y", y);
            },
            &[("x", &x)],
        );
        assert_close(&format!("separable cpu vs f64 B{b} L{l} s{stride} up{up}"), out.get("y"), &want, F64_TOL);
    }
}

#[test]
fn mismatched_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5, 4]);
    let w = assert_dense_shape_errors(&mut g, |g, w, bias, residual| conv1d(g, x, w, bias, residual, Act::None));
    assert!(conv1d_strided(&mut g, x, w, None, 0, None, Act::None).is_err());
    let x2 = g.input("x2", &[5, 4]);
    assert!(conv1d(&mut g, x2, w, None, None, Act::None).is_err());
    let dw = g.constant(vec![0.0; 12].into(), &[4, 1, 3]).unwrap();
    let pw = g.constant(vec![0.0; 24].into(), &[6, 4, 1]).unwrap();
    assert!(depthwise_separable(&mut g, x, w, pw, None, 1, 1, None, Act::None).is_err());
    assert!(depthwise_separable(&mut g, x, dw, w, None, 1, 1, None, Act::None).is_err());
    assert!(depthwise_separable(&mut g, x, dw, pw, None, 1, 0, None, Act::None).is_err());
    let y = depthwise_separable(&mut g, x, dw, pw, None, 2, 2, None, Act::None).unwrap();
    assert_eq!(g.shape(y), [2, 5, 6]);
    // Block weights whose channels differ from the input's cannot take the residual.
    let b3 = g.constant(vec![0.0; 3].into(), &[3]).unwrap();
    assert!(conv_bn_block(&mut g, x, w, b3, w, b3).is_err());
}

/// The shape errors of a dense op `conv(g, w, bias, residual)` on an input `(2, 5, 4)`: a weight
/// of another C_in or an even k, a bias or residual of another size. Returns a valid weight
/// `(3, 4, 3)`.
pub(super) fn assert_dense_shape_errors(
    g: &mut Graph,
    conv: impl Fn(&mut Graph, TensorId, Option<TensorId>, Option<TensorId>) -> Result<TensorId>,
) -> TensorId {
    let w_bad_cin = g.constant(vec![0.0; 3 * 3 * 3].into(), &[3, 3, 3]).unwrap();
    let w_even = g.constant(vec![0.0; 3 * 4 * 2].into(), &[3, 4, 2]).unwrap();
    let w = g.constant(vec![0.0; 3 * 4 * 3].into(), &[3, 4, 3]).unwrap();
    let bias_bad = g.constant(vec![0.0; 4].into(), &[4]).unwrap();
    let res_bad = g.input("r", &[2, 5, 4]);
    assert!(conv(g, w_bad_cin, None, None).is_err());
    assert!(conv(g, w_even, None, None).is_err());
    assert!(conv(g, w, Some(bias_bad), None).is_err());
    assert!(conv(g, w, None, Some(res_bad)).is_err());
    let y = conv(g, w, None, None).unwrap();
    assert_eq!(g.shape(y), [2, 5, 3]);
    w
}
