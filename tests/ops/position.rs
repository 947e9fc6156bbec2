//! Sine positional encodings: GPU kernels vs CPU twins (partly and fully masked rows), and the CPU
//! twins vs f64 formulas written here from the specs (tr-detr.md §3.3 and §3.7).

use std::f64::consts::PI;

use moment_gpu::ops::position::{dim_t, sine_embed_coords, sine_position_from_mask, SineConfig};
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// Values in [-1, 1] from sin/cos of arguments in [0, 2π]. Error budget for a real GPU: WGSL
/// division may be off by 2.5 ulp, and the argument goes through two divisions (c / (n + eps),
/// then x / dim_t) and a multiply: ≤ ~6 ulp of 2π ≈ 3e-6 in the argument, plus the hardware
/// sin/cos (≤ ~5e-7 on NVIDIA's approximations below 2π). lavapipe is within 1e-7.
const TOL: Tolerance = Tolerance::new(5e-6, 0.0);

/// (valid clips per sample, L, F): size 1, odd L, L off the 64-thread stride (75, 300), B > 1,
/// partly and fully padded samples, the model width 256 and a small F.
const MASK_CASES: &[(&[usize], usize, usize)] =
    &[(&[1], 1, 2), (&[7], 7, 256), (&[75, 40, 0], 75, 256), (&[0, 300], 300, 64), (&[3, 1], 5, 6), (&[129], 130, 10)];

#[test]
fn sine_from_mask_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    for &(valid, l, f) in MASK_CASES {
        for cfg in [SineConfig::detr(f, 10000.0), SineConfig { normalize: false, ..SineConfig::detr(f, 20.0) }] {
            let mask = padding_mask(valid, l);
            let build = |g: &mut Graph| {
                let m = g.input("m", &[valid.len(), l]);
                let y = sine_position_from_mask(g, m, cfg).unwrap();
                g.output("y", y);
            };
            let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("m", &mask)]);
            assert_eq!(gpu_out.shape("y"), [valid.len(), l, f]);
            // Without normalisation the arguments reach L (300), where sin/cos lose ~L·ulp.
            let tol = if cfg.normalize { TOL } else { Tolerance::new(4e-5, 0.0) };
            assert_close(&format!("sine from mask {valid:?} L={l} F={f} {cfg:?}"), gpu_out.get("y"), cpu.get("y"), tol);
        }
    }
}

#[test]
fn sine_embed_coords_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(41);
    // (shape of the coordinates, F): a single value, anchors (B, Q, 2) with F = 128 (B = 1, B > 1,
    // Q = 25), one coordinate, and a rank-2 input.
    for &(shape, f) in &[
        (&[1usize][..], 2usize),
        (&[1, 10, 2][..], 128),
        (&[3, 25, 2][..], 128),
        (&[1, 7, 1][..], 6),
        (&[5, 4][..], 16),
    ] {
        let v = rng.vec(shape.iter().product(), 0.0, 1.0);
        let build = |g: &mut Graph| {
            let vi = g.input("v", shape);
            let y = sine_embed_coords(g, vi, f, 10000.0, std::f32::consts::TAU).unwrap();
            g.output("y", y);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("v", &v)]);
        let mut out_shape = shape.to_vec();
        *out_shape.last_mut().unwrap() *= f;
        assert_eq!(gpu_out.shape("y"), out_shape);
        assert_close(&format!("sine coords {shape:?} F={f}"), gpu_out.get("y"), cpu.get("y"), TOL);
    }
}

/// The CPU twin against tr-detr.md §3.3 in f64: valid clip t of a sample with n valid clips sits at
/// 2π(t+1)/(n+1e-6), padded clips at 2πn/(n+1e-6), features interleave sin/cos of x/10000^(2⌊k/2⌋/F);
/// a fully padded sample is x = 0 → (0, 1, 0, 1, …).
#[test]
fn sine_from_mask_cpu_matches_spec_formula() {
    let (l, f) = (9, 16);
    let valid = [9usize, 4, 0];
    let mask = padding_mask(&valid, l);
    let out = run_cpu(
        |g| {
            let m = g.input("m", &[3, l]);
            let y = sine_position_from_mask(g, m, SineConfig::detr(f, 10000.0)).unwrap();
            g.output("y", y);
        },
        &[("m", &mask)],
    );
    let mut want = Vec::new();
    for &n in &valid {
        for t in 0..l {
            let c = (t + 1).min(n) as f64;
            let x = c / (n as f64 + 1e-6) * 2.0 * PI;
            for k in 0..f {
                let a = x / 10000f64.powf((2 * (k / 2)) as f64 / f as f64);
                want.push(if k % 2 == 0 { a.sin() } else { a.cos() } as f32);
            }
        }
    }
    assert_close("sine from mask cpu vs f64", out.get("y"), &want, Tolerance::new(2e-6, 0.0));
    let y = out.get("y");
    let empty = &y[2 * l * f..];
    assert!(empty.chunks(2).all(|p| p == [0.0, 1.0]), "fully masked sample is (0, 1, 0, 1, ...)");
}

/// The CPU twin against tr-detr.md §3.7 `anchor_sine` in f64: `[e(cx) | e(w)]`, 128 each.
#[test]
fn sine_coords_cpu_matches_spec_formula() {
    let anchors = [0.5f32, 0.1, 0.93, 0.7, 0.0, 1.0];
    let out = run_cpu(
        |g| {
            let v = g.input("v", &[1, 3, 2]);
            let y = sine_embed_coords(g, v, 128, 10000.0, std::f32::consts::TAU).unwrap();
            g.output("y", y);
        },
        &[("v", &anchors)],
    );
    let mut want = Vec::new();
    for q in 0..3 {
        for c in 0..2 {
            let x = anchors[q * 2 + c] as f64 * 2.0 * PI;
            for k in 0..128 {
                let a = x / 10000f64.powf((2 * (k / 2)) as f64 / 128.0);
                want.push(if k % 2 == 0 { a.sin() } else { a.cos() } as f32);
            }
        }
    }
    assert_eq!(out.shape("y"), [1, 3, 256]);
    assert_close("sine coords cpu vs f64", out.get("y"), &want, Tolerance::new(2e-6, 0.0));
}

#[test]
fn dim_t_table() {
    let t = dim_t(256, 10000.0);
    assert_eq!(t[0], 1.0);
    assert_eq!(t[1], 1.0);
    assert_eq!(t[2], t[3]);
    assert!((t[255] as f64 - 10000f64.powf(254.0 / 256.0)).abs() < 1e-3);
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let m3 = g.input("m3", &[1, 2, 3]);
    assert!(sine_position_from_mask(&mut g, m3, SineConfig::detr(256, 10000.0)).is_err());
    let m = g.input("m", &[2, 5]);
    assert!(sine_position_from_mask(&mut g, m, SineConfig::detr(7, 10000.0)).is_err());
    assert!(sine_embed_coords(&mut g, m, 0, 10000.0, 1.0).is_err());
    let s = g.input("s", &[]);
    assert!(sine_embed_coords(&mut g, s, 128, 10000.0, 1.0).is_err());
}
