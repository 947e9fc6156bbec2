//! GRU (input projections + the one-dispatch recurrent loop): GPU kernel vs CPU twin, and the
//! CPU twin vs an f64 PyTorch-semantics GRU written here from the untransposed weights.

use moment_gpu::ops::gru::{gru, GruWeights};
use moment_gpu::testing::{assert_close, gpu, run_cpu, run_cpu_and_gpu, Rng, Tolerance};
use moment_gpu::weights::Tensor;
use moment_gpu::Graph;

/// Each step sums H ≤ 300 products per gate in a different order on the GPU (k in groups of
/// four, FMA) and CPU; h stays in (−1, 1) and the recurrence is contractive for these weights,
/// so the per-step rounding does not grow over T ≤ 75 steps.
const TOL: Tolerance = Tolerance::new(3e-5, 1e-5);

/// CPU twin (f32) vs f64: same argument, smaller sizes.
const F64_TOL: Tolerance = Tolerance::new(2e-5, 1e-5);

/// One layer's PyTorch-layout weights, initialised like PyTorch (U(−1/√H, 1/√H)).
struct Layer {
    input: usize,
    hidden: usize,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

impl Layer {
    fn random(rng: &mut Rng, input: usize, hidden: usize) -> Layer {
        let k = 1.0 / (hidden as f32).sqrt();
        Layer {
            input,
            hidden,
            w_ih: rng.vec(3 * hidden * input, -k, k),
            w_hh: rng.vec(3 * hidden * hidden, -k, k),
            b_ih: rng.vec(3 * hidden, -k, k),
            b_hh: rng.vec(3 * hidden, -k, k),
        }
    }
    fn weights(&self) -> GruWeights {
        let (i, h) = (self.input, self.hidden);
        GruWeights::from_tensors(
            &Tensor::new(vec![3 * h, i], self.w_ih.clone()),
            &Tensor::new(vec![3 * h, h], self.w_hh.clone()),
            &Tensor::new(vec![3 * h], self.b_ih.clone()),
            &Tensor::new(vec![3 * h], self.b_hh.clone()),
        )
        .unwrap()
    }
}

/// f64 stacked GRU with PyTorch packed-sequence semantics: returns (seq of the last layer,
/// last hidden of the last layer).
fn gru_f64(x: &[f32], b: usize, t_max: usize, layers: &[Layer], lengths: Option<&[usize]>) -> (Vec<f32>, Vec<f32>) {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let mut cur: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut last = Vec::new();
    for layer in layers {
        let (i_sz, hd) = (layer.input, layer.hidden);
        let mut seq = vec![0.0f64; b * t_max * hd];
        last = vec![0.0f64; b * hd];
        for bb in 0..b {
            let len = lengths.map_or(t_max, |l| l[bb].min(t_max));
            let mut h = vec![0.0f64; hd];
            for t in 0..len {
                let xt = &cur[(bb * t_max + t) * i_sz..][..i_sz];
                let gate = |row: usize| {
                    let gi: f64 = layer.b_ih[row] as f64
                        + (0..i_sz).map(|c| layer.w_ih[row * i_sz + c] as f64 * xt[c]).sum::<f64>();
                    let gh: f64 =
                        layer.b_hh[row] as f64 + (0..hd).map(|c| layer.w_hh[row * hd + c] as f64 * h[c]).sum::<f64>();
                    (gi, gh)
                };
                let mut h_new = vec![0.0f64; hd];
                for j in 0..hd {
                    let (ir, hr) = gate(j);
                    let (iz, hz) = gate(hd + j);
                    let (inn, hn) = gate(2 * hd + j);
                    let r = sig(ir + hr);
                    let z = sig(iz + hz);
                    let n = (inn + r * hn).tanh();
                    h_new[j] = (1.0 - z) * n + z * h[j];
                }
                h = h_new;
                seq[(bb * t_max + t) * hd..][..hd].copy_from_slice(&h);
            }
            last[bb * hd..][..hd].copy_from_slice(&h);
        }
        cur = seq;
    }
    (cur.iter().map(|&v| v as f32).collect(), last.iter().map(|&v| v as f32).collect())
}

fn lengths_f32(lengths: &[usize]) -> Vec<f32> {
    lengths.iter().map(|&l| l as f32).collect()
}

struct Case {
    b: usize,
    t: usize,
    input: usize,
    hidden: &'static [usize],
    lengths: Option<&'static [usize]>,
}

/// Size 1 everywhere; odd sizes; B > 1 with per-sample lengths 0, full and partial; two layers
/// (with and without lengths, and of different widths); the models' 256 → 256 over 75 steps;
/// H = 300 (more units than the 256 threads of a workgroup, not a multiple of 4).
const CASES: &[Case] = &[
    Case { b: 1, t: 1, input: 1, hidden: &[1], lengths: None },
    Case { b: 1, t: 5, input: 3, hidden: &[7], lengths: None },
    Case { b: 3, t: 9, input: 5, hidden: &[13, 6], lengths: Some(&[0, 9, 4]) },
    Case { b: 2, t: 12, input: 16, hidden: &[33, 33], lengths: None },
    Case { b: 4, t: 7, input: 10, hidden: &[300], lengths: Some(&[7, 1, 0, 3]) },
    Case { b: 1, t: 75, input: 256, hidden: &[256], lengths: None },
    Case { b: 2, t: 75, input: 256, hidden: &[256], lengths: Some(&[75, 40]) },
];

fn build_case<'a>(case: &'a Case, layers: &'a [GruWeights]) -> impl Fn(&mut Graph) + 'a {
    move |g: &mut Graph| {
        let x = g.input("x", &[case.b, case.t, case.input]);
        let len = case.lengths.map(|_| g.input("len", &[case.b]));
        let (seq, last) = gru(g, x, layers, len).unwrap();
        let h = *case.hidden.last().unwrap();
        assert_eq!(g.shape(seq), [case.b, case.t, h]);
        assert_eq!(g.shape(last), [case.b, h]);
        assert_eq!(g.dispatches(), 2 * layers.len(), "one projection and one recurrent dispatch per layer");
        g.output("seq", seq);
        g.output("last", last);
    }
}

fn layers_for(rng: &mut Rng, case: &Case) -> Vec<Layer> {
    let mut input = case.input;
    case.hidden
        .iter()
        .map(|&h| {
            let l = Layer::random(rng, input, h);
            input = h;
            l
        })
        .collect()
}

#[test]
fn gru_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(21);
    for case in CASES {
        let layers = layers_for(&mut rng, case);
        let weights: Vec<GruWeights> = layers.iter().map(Layer::weights).collect();
        let x = rng.vec(case.b * case.t * case.input, -1.0, 1.0);
        let len = case.lengths.map(lengths_f32).unwrap_or_default();
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build_case(case, &weights), &[("x", &x), ("len", &len)]);
        let what = format!("gru B{} T{} I{} H{:?} lengths {:?}", case.b, case.t, case.input, case.hidden, case.lengths);
        assert_close(&format!("{what} seq"), gpu_out.get("seq"), cpu.get("seq"), TOL);
        assert_close(&format!("{what} last"), gpu_out.get("last"), cpu.get("last"), TOL);
        // Defined results for samples of length 0 (and past every length): exact zeros.
        if let Some(lengths) = case.lengths {
            let h = *case.hidden.last().unwrap();
            for (b, &l) in lengths.iter().enumerate() {
                let seq = &gpu_out.get("seq")[b * case.t * h..(b + 1) * case.t * h];
                assert!(seq[l * h..].iter().all(|&v| v == 0.0), "{what}: sample {b} has output past its length");
                if l == 0 {
                    assert!(gpu_out.get("last")[b * h..(b + 1) * h].iter().all(|&v| v == 0.0), "{what}: sample {b}");
                }
            }
        }
    }
}

#[test]
fn gru_cpu_matches_f64_reference() {
    let mut rng = Rng::new(22);
    for case in &CASES[..5] {
        let layers = layers_for(&mut rng, case);
        let weights: Vec<GruWeights> = layers.iter().map(Layer::weights).collect();
        let x = rng.vec(case.b * case.t * case.input, -1.0, 1.0);
        let len = case.lengths.map(lengths_f32).unwrap_or_default();
        let out = run_cpu(build_case(case, &weights), &[("x", &x), ("len", &len)]);
        let (seq, last) = gru_f64(&x, case.b, case.t, &layers, case.lengths);
        let what = format!("gru cpu vs f64 B{} T{} H{:?} lengths {:?}", case.b, case.t, case.hidden, case.lengths);
        assert_close(&format!("{what} seq"), out.get("seq"), &seq, F64_TOL);
        assert_close(&format!("{what} last"), out.get("last"), &last, F64_TOL);
    }
}

/// Lengths are floored and clamped: 2.7 → 2, −1 → 0, 99 → T; the same as integer lengths.
#[test]
fn gru_lengths_are_floored_and_clamped() {
    let mut rng = Rng::new(23);
    let (b, t, i, h) = (3, 4, 3, 5);
    let layer = Layer::random(&mut rng, i, h);
    let weights = [layer.weights()];
    let x = rng.vec(b * t * i, -1.0, 1.0);
    let build = |g: &mut Graph| {
        let xi = g.input("x", &[b, t, i]);
        let len = g.input("len", &[b]);
        let (seq, last) = gru(g, xi, &weights, Some(len)).unwrap();
        g.output("seq", seq);
        g.output("last", last);
    };
    let odd = run_cpu(build, &[("x", &x), ("len", &[2.7, -1.0, 99.0])]);
    let (seq, last) = gru_f64(&x, b, t, std::slice::from_ref(&layer), Some(&[2, 0, 4]));
    assert_close("floored lengths seq", odd.get("seq"), &seq, F64_TOL);
    assert_close("floored lengths last", odd.get("last"), &last, F64_TOL);
    if let Some(gpu) = gpu() {
        let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x), ("len", &[2.7, -1.0, 99.0])]);
        assert_close("floored lengths gpu seq", gpu_out.get("seq"), cpu.get("seq"), TOL);
        assert_close("floored lengths gpu last", gpu_out.get("last"), cpu.get("last"), TOL);
    }
}

/// Saturated gates (large weights and inputs): tanh and σ at ±large arguments stay finite and
/// match the CPU.
#[test]
fn gru_saturated_gates_stay_finite() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(24);
    let (b, t, i, h) = (2, 6, 4, 9);
    let mut layer = Layer::random(&mut rng, i, h);
    layer.w_ih.iter_mut().for_each(|v| *v *= 200.0);
    layer.w_hh.iter_mut().for_each(|v| *v *= 200.0);
    let weights = [layer.weights()];
    let x = rng.vec(b * t * i, -1.0, 1.0);
    let build = |g: &mut Graph| {
        let xi = g.input("x", &[b, t, i]);
        let (seq, last) = gru(g, xi, &weights, None).unwrap();
        g.output("seq", seq);
        g.output("last", last);
    };
    let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
    assert!(gpu_out.get("seq").iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    assert_close("saturated gru seq", gpu_out.get("seq"), cpu.get("seq"), TOL);
    assert_close("saturated gru last", gpu_out.get("last"), cpu.get("last"), TOL);
}

#[test]
fn mismatched_shapes_are_errors() {
    let mut rng = Rng::new(25);
    let l0 = Layer::random(&mut rng, 4, 6).weights();
    let l1 = Layer::random(&mut rng, 5, 3).weights();
    let mut g = Graph::new();
    let x = g.input("x", &[2, 3, 4]);
    let x_bad = g.input("xb", &[2, 3, 5]);
    let len_bad = g.input("len", &[3]);
    assert!(gru(&mut g, x, &[], None).is_err());
    assert!(gru(&mut g, x_bad, std::slice::from_ref(&l0), None).is_err());
    assert!(gru(&mut g, x, &[l0.clone(), l1], None).is_err());
    assert!(gru(&mut g, x, std::slice::from_ref(&l0), Some(len_bad)).is_err());
    assert!(gru(&mut g, x, std::slice::from_ref(&l0), None).is_ok());
    let t = |shape: Vec<usize>| Tensor::new(shape.clone(), vec![0.0; shape.iter().product()]);
    assert!(GruWeights::from_tensors(&t(vec![9, 4]), &t(vec![9, 2]), &t(vec![9]), &t(vec![9])).is_err());
    assert!(GruWeights::from_tensors(&t(vec![8, 4]), &t(vec![8, 8]), &t(vec![8]), &t(vec![8])).is_err());
    assert!(GruWeights::from_tensors(&t(vec![9, 4]), &t(vec![9, 3]), &t(vec![9]), &t(vec![6])).is_err());
    assert!(GruWeights::new(4, 3000, &[], &[], None, None).is_err());
}

/// The largest hidden size (h fills the workgroup-memory double buffer), a few steps.
#[test]
fn gru_max_hidden_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(26);
    let case = Case { b: 2, t: 3, input: 3, hidden: &[moment_gpu::ops::gru::MAX_HIDDEN], lengths: Some(&[3, 2]) };
    let layers = layers_for(&mut rng, &case);
    let weights: Vec<GruWeights> = layers.iter().map(Layer::weights).collect();
    let x = rng.vec(case.b * case.t * case.input, -1.0, 1.0);
    let len = lengths_f32(case.lengths.unwrap());
    let (cpu, gpu_out) = run_cpu_and_gpu(&gpu, build_case(&case, &weights), &[("x", &x), ("len", &len)]);
    assert_close("gru max hidden seq", gpu_out.get("seq"), cpu.get("seq"), TOL);
    assert_close("gru max hidden last", gpu_out.get("last"), cpu.get("last"), TOL);
}
