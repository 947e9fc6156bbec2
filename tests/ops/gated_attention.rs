//! Saliency-guided (row-gated) attention: GPU kernel vs CPU twin, and the CPU twin vs the f64
//! reference attention with SG-DETR's post-softmax `row_scale = σ(S_loc)`.

use super::attention::{feeds, graph_inputs, make_inputs, reference, Case};
use moment_gpu::ops::attention::attention;
use moment_gpu::ops::gated_attention::gated_attention;
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::Graph;

/// Same reasoning as the attention parity tolerance: f32 in different orders and `exp`
/// implementations on O(1) outputs; the gate is one extra sigmoid and multiply.
const TOL: Tolerance = Tolerance::new(1e-5, 1e-5);
/// CPU twin vs f64: f32 rounding of dot products over ≤ 64 terms and sums over ≤ 108 keys.
const F64_TOL: Tolerance = Tolerance::new(2e-6, 1e-5);

/// (case, gate given as (B, Lq, 1) instead of (B, Lq)). Includes SGCA's shape (76 clip queries
/// over 32 text tokens, 8 heads of 32, q and k/v from different tensors), Lq = 1, Lk = 1, odd
/// sizes, partly and fully padded masks, B > 1, dk ≠ dv and windows at non-zero offsets.
fn cases() -> Vec<(Case, bool)> {
    vec![
        (Case::new(1, 1, 1, 1, 4, 4), false),
        (Case::new(2, 76, 32, 8, 32, 32).mask(&[32, 7]), false),
        (Case::new(3, 12, 23, 8, 32, 32).offsets([0, 32, 64], 32).mask(&[23, 0, 11]), true),
        (Case::new(2, 1, 40, 2, 8, 8).mask(&[40, 3]), false),
        (Case::new(2, 25, 108, 8, 64, 32).mask(&[108, 50]), false),
        (Case::new(1, 37, 37, 4, 16, 16).offsets([4, 0, 0], 4).mask(&[20]).fused(), true),
        (Case::new(2, 7, 5, 3, 12, 20).mask(&[5, 1]), false),
    ]
}

/// Saliency logits over a wide range so that gates span ~0 to ~1.
fn gate_logits(c: &Case, rng: &mut Rng) -> Vec<f32> {
    rng.vec(c.b * c.lq, -6.0, 6.0)
}

fn build<'a>(c: &'a Case, inp: &'a super::attention::Inputs, as_column: bool, scale: f32) -> impl Fn(&mut Graph) + 'a {
    move |g: &mut Graph| {
        let (q, k, v, m) = graph_inputs(g, c, inp);
        let shape = if as_column { vec![c.b, c.lq, 1] } else { vec![c.b, c.lq] };
        let s = g.input("s", &shape);
        let y = gated_attention(g, q, k, v, m, s, c.heads, scale).unwrap();
        g.output("y", y);
    }
}

#[test]
fn gated_attention_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    for (c, as_column) in cases() {
        let inp = make_inputs(&c, &mut rng);
        let s = gate_logits(&c, &mut rng);
        let mut f = feeds(&inp);
        f.push(("s", &s));
        let scale = 1.0 / (c.dk as f32).sqrt();
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build(&c, &inp, as_column, scale), &f);
        assert_close(&format!("gated attention {c:?}"), gpu_out.get("y"), cpu.get("y"), TOL);
        // Fully padded samples: zero rows, whatever the gate.
        if let Some(valid) = &c.valid {
            let row = c.lq * c.heads * c.dv;
            for (b, _) in valid.iter().enumerate().filter(|(_, &n)| n == 0) {
                assert!(gpu_out.get("y")[b * row..(b + 1) * row].iter().all(|&x| x == 0.0));
                assert!(cpu.get("y")[b * row..(b + 1) * row].iter().all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn gated_attention_cpu_matches_f64_reference() {
    let mut rng = Rng::new(22);
    for (c, as_column) in cases() {
        let inp = make_inputs(&c, &mut rng);
        let s = gate_logits(&c, &mut rng);
        let mut f = feeds(&inp);
        f.push(("s", &s));
        let scale = 1.0 / (c.dk as f64).sqrt();
        let out = run_cpu(build(&c, &inp, as_column, scale as f32), &f);
        let (want, _) = reference(&c, &inp, scale, Some(&s), None);
        assert_close(&format!("gated cpu vs f64 {c:?}"), out.get("y"), &want, F64_TOL);
    }
}

/// The gate scales rows without renormalising: gated = σ(s_i) · ungated, row by row (GPU).
#[test]
fn gate_scales_rows_without_renormalising() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(23);
    let c = Case::new(2, 9, 14, 2, 8, 8).mask(&[14, 6]);
    let inp = make_inputs(&c, &mut rng);
    let s = [0.0, 40.0, -40.0, 1.0, -1.0, 2.5, -3.0, 0.3, 7.0].repeat(2);
    let mut f = feeds(&inp);
    f.push(("s", &s));
    let (_, out) = run_cpu_and_gpu(
        &gpu,
        |g| {
            let (q, k, v, m) = graph_inputs(g, &c, &inp);
            let si = g.input("s", &[c.b, c.lq]);
            let y = gated_attention(g, q, k, v, m, si, c.heads, 0.35).unwrap();
            let plain = attention(g, q, k, v, m, c.heads, 0.35).unwrap();
            g.output("y", y);
            g.output("plain", plain);
        },
        &f,
    );
    let row = c.heads * c.dv;
    let want: Vec<f32> =
        out.get("plain").iter().enumerate().map(|(e, &x)| x * (1.0 / (1.0 + (-s[e / row]).exp()))).collect();
    assert_close("gated = sigmoid(s) * plain", out.get("y"), &want, TOL);
    // s = -40: the row is (almost exactly) zero, not renormalised back to a convex combination.
    assert!(out.get("y")[2 * row..3 * row].iter().all(|x| x.abs() < 1e-15));
}

#[test]
fn bad_gate_shape_is_a_graph_error() {
    let mut g = Graph::new();
    let x = g.input("x", &[2, 5, 32]);
    let s = g.input("s", &[2, 4]);
    let all = moment_gpu::ops::attention::Cols::all(&g, x);
    assert!(gated_attention(&mut g, all, all, all, None, s, 4, 1.0).is_err());
    let s_ok = g.input("s2", &[2, 5, 1]);
    assert!(gated_attention(&mut g, all, all, all, None, s_ok, 4, 1.0).is_ok());
}
