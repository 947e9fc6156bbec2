//! Fused attention: GPU kernel vs CPU twin (outputs, head-averaged weights, batch quirk), and the
//! CPU twin vs a naive f64 attention written here.

use moment_gpu::ops::attention::{attention, attention_batch_quirk, attention_with_weights, Cols};
use moment_gpu::testing::{assert_close, gpu, padding_mask, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// GPU vs CPU: both accumulate in f32 but in different orders (online softmax with per-key
/// rescaling and split-key merges on the GPU, two-pass softmax on the CPU) and with different
/// `exp` implementations; outputs are convex combinations of values in [-1, 1], so a few ulps of
/// O(1) quantities.
const TOL: Tolerance = Tolerance::new(1e-5, 1e-5);
/// CPU twin (f32) vs the f64 reference: f32 rounding of dot products over ≤ 64 terms and of sums
/// over ≤ 108 keys.
const F64_TOL: Tolerance = Tolerance::new(2e-6, 1e-5);

/// One attention problem. q, k, v live in separate tensors of width `off + H·d + extra`, read
/// through windows at column `off` (so non-zero offsets and strides are exercised), unless
/// `fused`: then Lq = Lk and q, k, v are windows of ONE (B, L, ·) tensor, as from a packed
/// in_proj.
#[derive(Clone, Debug)]
pub struct Case {
    pub b: usize,
    pub lq: usize,
    pub lk: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub off: [usize; 3],
    pub extra: usize,
    /// Valid keys per sample (None = no mask).
    pub valid: Option<Vec<usize>>,
    pub fused: bool,
}

impl Case {
    pub fn new(b: usize, lq: usize, lk: usize, heads: usize, dk: usize, dv: usize) -> Self {
        Case { b, lq, lk, heads, dk, dv, off: [0; 3], extra: 0, valid: None, fused: false }
    }
    pub fn offsets(mut self, off: [usize; 3], extra: usize) -> Self {
        self.off = off;
        self.extra = extra;
        self
    }
    pub fn mask(mut self, valid: &[usize]) -> Self {
        self.valid = Some(valid.to_vec());
        self
    }
    pub fn fused(mut self) -> Self {
        assert_eq!(self.lq, self.lk);
        self.fused = true;
        self
    }
    pub fn name(&self) -> String {
        format!("{self:?}")
    }
}

/// Input tensors of a case: data and shapes, plus the windows into them.
pub struct Inputs {
    pub data: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// (tensor name, start, row width) of q, k, v.
    pub win: [(String, usize, usize); 3],
    pub mask: Option<Vec<f32>>,
}

pub fn make_inputs(c: &Case, rng: &mut Rng) -> Inputs {
    let (qw, kw, vw) = (c.heads * c.dk, c.heads * c.dk, c.heads * c.dv);
    let mut data = Vec::new();
    let win = if c.fused {
        // One tensor: [pad | q | k | v | extra].
        let width = c.off[0] + qw + kw + vw + c.extra;
        let t = rng.vec(c.b * c.lq * width, -1.5, 1.5);
        data.push(("x".to_string(), vec![c.b, c.lq, width], t));
        [
            ("x".to_string(), c.off[0], width),
            ("x".to_string(), c.off[0] + qw, width),
            ("x".to_string(), c.off[0] + qw + kw, width),
        ]
    } else {
        let widths = [c.off[0] + qw + c.extra, c.off[1] + kw + c.extra, c.off[2] + vw + c.extra];
        let rows = [c.lq, c.lk, c.lk];
        let names = ["q", "k", "v"];
        let ranges = [2.0, 1.0, 1.0];
        for t in 0..3 {
            let d = rng.vec(c.b * rows[t] * widths[t], -ranges[t], ranges[t]);
            data.push((names[t].to_string(), vec![c.b, rows[t], widths[t]], d));
        }
        [
            ("q".to_string(), c.off[0], widths[0]),
            ("k".to_string(), c.off[1], widths[1]),
            ("v".to_string(), c.off[2], widths[2]),
        ]
    };
    let mask = c.valid.as_ref().map(|v| padding_mask(v, c.lk));
    Inputs { data, win, mask }
}

/// Graph inputs + the q/k/v windows and the key mask of a case.
pub fn graph_inputs(g: &mut Graph, c: &Case, inp: &Inputs) -> (Cols, Cols, Cols, Option<moment_gpu::TensorId>) {
    let ids: Vec<_> = inp.data.iter().map(|(n, s, _)| (n.clone(), g.input(n, s))).collect();
    let id = |name: &str| ids.iter().find(|(n, _)| n == name).unwrap().1;
    let q = Cols::new(id(&inp.win[0].0), inp.win[0].1, c.heads * c.dk);
    let k = Cols::new(id(&inp.win[1].0), inp.win[1].1, c.heads * c.dk);
    let v = Cols::new(id(&inp.win[2].0), inp.win[2].1, c.heads * c.dv);
    let m = inp.mask.as_ref().map(|_| g.input("mask", &[c.b, c.lk]));
    (q, k, v, m)
}

pub fn feeds(inp: &Inputs) -> Vec<(&str, &[f32])> {
    let mut f: Vec<(&str, &[f32])> = inp.data.iter().map(|(n, _, d)| (n.as_str(), d.as_slice())).collect();
    if let Some(m) = &inp.mask {
        f.push(("mask", m));
    }
    f
}

/// Naive f64 multi-head attention over the case's inputs, written from the definition
/// (PyTorch semantics, except a query without valid keys gives zeros). `gate`: per-(b, i)
/// post-softmax row scale; `crossed`: (query mask, H) for the `attn_mask.repeat(H, 1, 1)` quirk,
/// built literally as PyTorch would: entry r of the repeated mask holds sample r mod B and
/// (b, h) reads entry b·H + h. Returns (output (B, Lq, H·dv), head-averaged weights (B, Lq, Lk)).
pub fn reference(
    c: &Case,
    inp: &Inputs,
    scale: f64,
    gate: Option<&[f32]>,
    query_mask: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let tensor = |name: &str| &inp.data.iter().find(|(n, _, _)| n == name).unwrap().2;
    let at = |w: &(String, usize, usize), b: usize, rows: usize, r: usize, col: usize| -> f64 {
        tensor(&w.0)[(b * rows + r) * w.2 + w.1 + col] as f64
    };
    let (b_n, h_n, lq, lk, dk, dv) = (c.b, c.heads, c.lq, c.lk, c.dk, c.dv);
    let key_pad = |b: usize, j: usize| inp.mask.as_ref().is_some_and(|m| m[b * lk + j] == 0.0);
    // attn_mask (B, Lq, Lk) = q_pad ⊗ k_pad, repeated H times along the batch axis.
    let attn_mask = |r: usize, i: usize, j: usize| -> bool {
        let Some(qm) = query_mask else { return false };
        let s = r % b_n;
        qm[s * lq + i] == 0.0 && key_pad(s, j)
    };
    let mut out = vec![0.0f32; b_n * lq * h_n * dv];
    let mut weights = vec![0.0f64; b_n * lq * lk];
    for b in 0..b_n {
        for h in 0..h_n {
            for i in 0..lq {
                let logits: Vec<Option<f64>> = (0..lk)
                    .map(|j| {
                        if key_pad(b, j) || attn_mask(b * h_n + h, i, j) {
                            return None;
                        }
                        let s: f64 = (0..dk)
                            .map(|d| {
                                at(&inp.win[0], b, lq, i, h * dk + d) * scale * at(&inp.win[1], b, lk, j, h * dk + d)
                            })
                            .sum();
                        Some(s)
                    })
                    .collect();
                let max = logits.iter().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let e: Vec<f64> = logits.iter().map(|s| s.map_or(0.0, |s| (s - max).exp())).collect();
                let sum: f64 = e.iter().sum();
                let g = gate.map_or(1.0, |g| 1.0 / (1.0 + (-(g[b * lq + i] as f64)).exp()));
                for d in 0..dv {
                    let o: f64 = (0..lk).map(|j| e[j] / sum * g * at(&inp.win[2], b, lk, j, h * dv + d)).sum();
                    out[(b * lq + i) * h_n * dv + h * dv + d] = o as f32;
                }
                for j in 0..lk {
                    weights[(b * lq + i) * lk + j] += e[j] / sum / h_n as f64;
                }
            }
        }
    }
    (out, weights.into_iter().map(|w| w as f32).collect())
}

/// The shapes of the parity tests: Lq = 1 and Lk = 1, odd sizes, Lk off every tile size (tiles
/// hold 64, 48, 32 or 24 keys), Lq over one 64-query tile, every key-split count (Lq 1 → 8 lanes
/// per query, 10 → 4, 25 → 2, ≥ 33 → 1), B > 1, partly and fully padded masks, the model head
/// dims (32/32 and the decoder's dk = 64, dv = 32), odd head dims, windows at non-zero offsets,
/// and q/k/v as windows of one fused tensor.
fn parity_cases() -> Vec<Case> {
    vec![
        Case::new(1, 1, 1, 1, 4, 4),
        Case::new(2, 1, 20, 2, 8, 8).mask(&[20, 9]),
        Case::new(2, 3, 7, 2, 8, 4).offsets([4, 8, 12], 4).mask(&[7, 3]),
        Case::new(3, 10, 76, 8, 64, 32).offsets([0, 256, 0], 64).mask(&[76, 41, 0]),
        Case::new(2, 25, 108, 8, 64, 32).offsets([256, 0, 32], 0).mask(&[108, 75]),
        Case::new(2, 76, 32, 8, 32, 32).mask(&[32, 5]),
        Case::new(1, 75, 75, 8, 32, 32).offsets([32, 0, 0], 0).mask(&[60]).fused(),
        Case::new(2, 33, 33, 2, 64, 64).offsets([4, 0, 0], 8).mask(&[33, 0]).fused(),
        Case::new(1, 5, 130, 3, 13, 7).offsets([1, 3, 5], 3).mask(&[97]),
        Case::new(4, 17, 49, 4, 20, 36).mask(&[49, 1, 0, 30]),
    ]
}

#[test]
fn attention_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(11);
    for c in parity_cases() {
        let inp = make_inputs(&c, &mut rng);
        let scale = 1.0 / (c.dk as f32).sqrt();
        let build = |g: &mut Graph| {
            let (q, k, v, m) = graph_inputs(g, &c, &inp);
            let y = attention(g, q, k, v, m, c.heads, scale).unwrap();
            g.output("y", y);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &feeds(&inp));
        assert_close(&format!("attention {}", c.name()), gpu_out.get("y"), cpu.get("y"), TOL);
        assert_eq!(gpu_out.shape("y"), [c.b, c.lq, c.heads * c.dv]);
        assert_fully_masked_rows_zero(&c, gpu_out.get("y"), c.heads * c.dv, "gpu output");
        assert_fully_masked_rows_zero(&c, cpu.get("y"), c.heads * c.dv, "cpu output");
    }
}

/// Samples without a valid key must give exactly zero rows (the documented result).
fn assert_fully_masked_rows_zero(c: &Case, y: &[f32], row: usize, what: &str) {
    let Some(valid) = &c.valid else { return };
    for (b, &n) in valid.iter().enumerate() {
        if n == 0 {
            let rows = &y[b * c.lq * row..(b + 1) * c.lq * row];
            assert!(rows.iter().all(|&x| x == 0.0), "{what} {}: sample {b} fully masked but not zero", c.name());
        }
    }
}

#[test]
fn attention_with_weights_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(12);
    let cases = [
        Case::new(1, 1, 1, 1, 4, 4),
        Case::new(2, 3, 7, 2, 8, 4).offsets([4, 8, 12], 4).mask(&[7, 3]),
        Case::new(3, 10, 76, 8, 64, 32).offsets([0, 256, 0], 64).mask(&[76, 41, 0]),
        Case::new(1, 5, 130, 3, 13, 7).offsets([1, 3, 5], 3).mask(&[97]),
        Case::new(2, 33, 33, 2, 64, 64).offsets([4, 0, 0], 8).mask(&[33, 0]).fused(),
        Case::new(2, 9, 70, 8, 32, 32),
    ];
    for c in cases {
        let inp = make_inputs(&c, &mut rng);
        let scale = 1.0 / (c.dk as f32).sqrt();
        let build = |g: &mut Graph| {
            let (q, k, v, m) = graph_inputs(g, &c, &inp);
            let (y, w) = attention_with_weights(g, q, k, v, m, c.heads, scale).unwrap();
            g.output("y", y);
            g.output("w", w);
        };
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &feeds(&inp));
        assert_close(&format!("attention+weights out {}", c.name()), gpu_out.get("y"), cpu.get("y"), TOL);
        assert_close(&format!("attention weights {}", c.name()), gpu_out.get("w"), cpu.get("w"), TOL);
        assert_eq!(gpu_out.shape("w"), [c.b, c.lq, c.lk]);
        // Rows sum to 1, or are all zero where every key is padded.
        for (r, row) in gpu_out.get("w").chunks(c.lk).enumerate() {
            let b = r / c.lq;
            let valid = c.valid.as_ref().map_or(c.lk, |v| v[b]);
            let sum: f32 = row.iter().sum();
            let want = if valid == 0 { 0.0 } else { 1.0 };
            assert!((sum - want).abs() < 1e-5, "weights row {r} of {} sums to {sum}", c.name());
            assert!(row[valid..].iter().all(|&x| x == 0.0), "masked keys got weight in {}", c.name());
        }
    }
}

/// Case, query valid counts, key valid counts for the batch quirk.
fn quirk_cases() -> Vec<(Case, Vec<usize>)> {
    vec![
        (Case::new(3, 12, 9, 8, 32, 32).mask(&[9, 4, 6]), vec![12, 7, 3]),
        (Case::new(2, 20, 31, 4, 16, 8).offsets([8, 0, 4], 4).mask(&[31, 2]), vec![5, 20]),
        (Case::new(5, 7, 40, 8, 64, 32).mask(&[40, 1, 17, 40, 3]), vec![7, 2, 7, 1, 4]),
        (Case::new(1, 6, 11, 8, 8, 8).mask(&[5]), vec![4]),
        // Sample 0, head 1 crosses into sample 1, whose keys are all padded: query 1 of sample 0
        // loses every key in that head (a zero half-row).
        (Case::new(2, 2, 3, 2, 4, 4).mask(&[2, 0]), vec![2, 1]),
    ]
}

#[test]
fn attention_batch_quirk_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(13);
    for (c, q_valid) in quirk_cases() {
        let inp = make_inputs(&c, &mut rng);
        let qmask = padding_mask(&q_valid, c.lq);
        let build = |g: &mut Graph| {
            let (q, k, v, m) = graph_inputs(g, &c, &inp);
            let qm = g.input("qmask", &[c.b, c.lq]);
            let y = attention_batch_quirk(g, q, k, v, m.unwrap(), qm, c.heads, 0.3).unwrap();
            g.output("y", y);
        };
        let mut f = feeds(&inp);
        f.push(("qmask", &qmask));
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &f);
        assert_close(&format!("attention quirk {}", c.name()), gpu_out.get("y"), cpu.get("y"), TOL);
    }
}

/// The CPU twin (through the graph's CPU backend) against the f64 reference, on every parity
/// shape: outputs, head-averaged weights, and the batch quirk.
#[test]
fn attention_cpu_matches_f64_reference() {
    let mut rng = Rng::new(14);
    for c in parity_cases() {
        let inp = make_inputs(&c, &mut rng);
        let scale = 1.0 / (c.dk as f64).sqrt();
        let out = run_cpu(
            |g| {
                let (q, k, v, m) = graph_inputs(g, &c, &inp);
                let (y, w) = attention_with_weights(g, q, k, v, m, c.heads, scale as f32).unwrap();
                g.output("y", y);
                g.output("w", w);
            },
            &feeds(&inp),
        );
        let (want_y, want_w) = reference(&c, &inp, scale, None, None);
        assert_close(&format!("cpu vs f64 {}", c.name()), out.get("y"), &want_y, F64_TOL);
        assert_close(&format!("cpu weights vs f64 {}", c.name()), out.get("w"), &want_w, F64_TOL);
    }
    for (c, q_valid) in quirk_cases() {
        let inp = make_inputs(&c, &mut rng);
        let qmask = padding_mask(&q_valid, c.lq);
        let mut f = feeds(&inp);
        f.push(("qmask", &qmask));
        let out = run_cpu(
            |g| {
                let (q, k, v, m) = graph_inputs(g, &c, &inp);
                let qm = g.input("qmask", &[c.b, c.lq]);
                let y = attention_batch_quirk(g, q, k, v, m.unwrap(), qm, c.heads, 0.3).unwrap();
                g.output("y", y);
            },
            &f,
        );
        let (want, _) = reference(&c, &inp, 0.3f32 as f64, None, Some(&qmask));
        assert_close(&format!("cpu quirk vs f64 {}", c.name()), out.get("y"), &want, F64_TOL);
    }
}

/// Hand-computed: one head, two keys with logits 0 and ln 3 → weights 1/4, 3/4.
#[test]
fn attention_hand_computed() {
    let q = [1.0f32, 0.0];
    let k = [0.0f32, 5.0, 3f32.ln(), 7.0];
    let v = [4.0f32, 8.0];
    let out = run_cpu(
        |g| {
            let qi = g.input("q", &[1, 1, 2]);
            let ki = g.input("k", &[1, 2, 2]);
            let vi = g.input("v", &[1, 2, 1]);
            let (qc, kc, vc) = (Cols::all(g, qi), Cols::all(g, ki), Cols::all(g, vi));
            let (y, w) = attention_with_weights(g, qc, kc, vc, None, 1, 1.0).unwrap();
            g.output("y", y);
            g.output("w", w);
        },
        &[("q", &q), ("k", &k), ("v", &v)],
    );
    assert_close("hand y", out.get("y"), &[0.25 * 4.0 + 0.75 * 8.0], Tolerance::new(1e-6, 0.0));
    assert_close("hand w", out.get("w"), &[0.25, 0.75], Tolerance::new(1e-6, 0.0));
}

/// For B = 1 the quirk changes nothing: same values as plain attention (same CPU code path
/// would prove little, so compare against the f64 reference without the query mask).
#[test]
fn batch_quirk_is_identity_for_one_sample() {
    let mut rng = Rng::new(15);
    let c = Case::new(1, 9, 13, 4, 8, 8).mask(&[10]);
    let inp = make_inputs(&c, &mut rng);
    let qmask = padding_mask(&[5], c.lq);
    let mut f = feeds(&inp);
    f.push(("qmask", &qmask));
    let out = run_cpu(
        |g| {
            let (q, k, v, m) = graph_inputs(g, &c, &inp);
            let qm = g.input("qmask", &[c.b, c.lq]);
            let y = attention_batch_quirk(g, q, k, v, m.unwrap(), qm, c.heads, 0.5).unwrap();
            g.output("y", y);
        },
        &f,
    );
    let (want, _) = reference(&c, &inp, 0.5, None, None);
    assert_close("quirk B=1", out.get("y"), &want, F64_TOL);
}

#[test]
fn bad_shapes_are_graph_errors() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5, 64]);
    let y = g.input("y", &[3, 5, 64]);
    let flat = g.input("flat", &[10, 64]);
    let wide = g.input("wide", &[2, 5, 130]);
    let m = g.input("m", &[2, 4]);
    let all = Cols::all(&g, x);
    // Window past the end.
    assert!(attention(&mut g, Cols::new(x, 32, 64), all, all, None, 2, 1.0).is_err());
    // Batch mismatch.
    let ya = Cols::all(&g, y);
    assert!(attention(&mut g, all, ya, ya, None, 2, 1.0).is_err());
    // Not rank 3.
    let fa = Cols::all(&g, flat);
    assert!(attention(&mut g, fa, all, all, None, 2, 1.0).is_err());
    // Heads do not divide the width; q/k widths differ.
    assert!(attention(&mut g, Cols::new(x, 0, 30), Cols::new(x, 0, 30), all, None, 4, 1.0).is_err());
    assert!(attention(&mut g, Cols::new(x, 0, 32), all, all, None, 2, 1.0).is_err());
    // Head dim over 64.
    let w = Cols::all(&g, wide);
    assert!(attention(&mut g, w, w, w, None, 1, 1.0).is_err());
    assert!(attention(&mut g, w, w, w, None, 2, 1.0).is_err());
    assert!(attention(&mut g, all, all, all, None, 1, 1.0).is_ok());
    // Mask of the wrong shape; quirk mask of the wrong shape.
    assert!(attention(&mut g, all, all, all, Some(m), 2, 1.0).is_err());
    let km = g.input("km", &[2, 5]);
    assert!(attention_batch_quirk(&mut g, all, all, all, km, m, 2, 1.0).is_err());
    assert!(attention(&mut g, all, all, all, Some(km), 2, 1.0).is_ok());
}
