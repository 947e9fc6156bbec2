//! Vectorised transcendental functions over slices for the CPU backend (softmax rows in
//! attention, GRU gates). libm's `expf` is a scalar call per value; here `exp` is a branch-free
//! range reduction plus polynomial that LLVM vectorises, compiled for AVX-512, AVX2 + FMA
//! (chosen at run time on x86-64) and portable. Accuracy: within 2 ulp of the correctly rounded
//! value for inputs up to 88 (tested against f64 below); `exp(-inf) = 0`; inputs above 88
//! saturate at `exp(88)`, which none of the callers reach (softmax rows are ≤ 0 after the max).

use std::sync::OnceLock;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that n · LN2_HI is exact for the |n| ≤ 128 used here (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `exp` underflows to 0 in f32 (denormals are not produced).
const EXP_MIN: f32 = -87.336_55;
const EXP_MAX: f32 = 88.0;

/// `a·b + c`, fused in the versions compiled with FMA (`mul_add` is a slow libm call elsewhere).
#[inline(always)]
fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn exp1<const F: bool>(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let n = (xc * LOG2_E).round_ties_even();
    let r = madd::<F>(n, -LN2_LO, madd::<F>(n, -LN2_HI, xc));
    // exp(r) on |r| ≤ ln2 / 2 by its Taylor series to r⁷ (truncation < 1e-9 relative).
    let mut p: f32 = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<F>(p, r, c);
    }
    // 2ⁿ built from the bits: adding 1.5·2²³ puts the integer n + 127 in the low mantissa
    // bits, which the shift moves into the exponent. (`n as i32` would saturate lane by lane
    // and keep the loop from vectorising.)
    let scale = f32::from_bits((n + (127.0 + 12_582_912.0)).to_bits() << 23);
    if x < EXP_MIN {
        0.0
    } else {
        p * scale
    }
}

#[inline(always)]
fn sigmoid1<const F: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp1::<F>(-x))
}

/// One GRU step's gates for one sample (PyTorch order r, z, n): `h ← (1 − z)·n + z·h` with
/// `r = σ(gi_r + gh_r)`, `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r·gh_n)`.
#[inline(always)]
fn gru_gates_body<const F: bool>(gi: &[f32], gh: &[f32], h: &mut [f32]) {
    let hd = h.len();
    let (gi_r, gi_z, gi_n) = (&gi[..hd], &gi[hd..2 * hd], &gi[2 * hd..3 * hd]);
    let (gh_r, gh_z, gh_n) = (&gh[..hd], &gh[hd..2 * hd], &gh[2 * hd..3 * hd]);
    for j in 0..hd {
        let r = sigmoid1::<F>(gi_r[j] + gh_r[j]);
        let z = sigmoid1::<F>(gi_z[j] + gh_z[j]);
        // tanh(v) = 2σ(2v) − 1
        let n = 2.0 * sigmoid1::<F>(2.0 * (gi_n[j] + r * gh_n[j])) - 1.0;
        h[j] = (1.0 - z) * n + z * h[j];
    }
}

/// Exact GELU `x/2 · (1 + erf(x/√2))`, erf by the same two polynomials as the twin's
/// `erf_f32`, evaluated branch-free (both sides, then a select) so it vectorises.
#[inline(always)]
fn gelu1<const F: bool>(x: f32) -> f32 {
    let a = x * std::f32::consts::FRAC_1_SQRT_2;
    let t = a.abs();
    let s = a * a;
    let mut r = madd::<F>(-1.728_534_7e-5, t, 3.831_971_3e-4);
    let u = madd::<F>(-3.883_964_4e-3, t, 2.425_462_2e-2);
    r = madd::<F>(r, s, u);
    r = madd::<F>(r, t, -1.067_778_8e-1);
    r = madd::<F>(r, t, -6.348_466_9e-1);
    r = madd::<F>(r, t, -1.287_175_1e-1);
    r = madd::<F>(r, t, -t);
    let far = (1.0 - exp1::<F>(r)).copysign(a);
    let mut q = -5.967_617e-4f32;
    for c in [4.991_194_2e-3, -2.676_813_5e-2, 1.128_199_3e-1, -3.761_253_4e-1, 1.283_791_7e-1] {
        q = madd::<F>(q, s, c);
    }
    let near = madd::<F>(q, a, a);
    let erf = if t > 0.927_734_4 { far } else { near };
    x * 0.5 * (1.0 + erf)
}

#[inline(always)]
fn gelu_body<const F: bool>(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x = gelu1::<F>(*x));
}

#[inline(always)]
fn exp_body<const F: bool>(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x = exp1::<F>(*x));
}

/// Lanes of the partial maxima and sums in [`softmax_row_body`]: one AVX-512 register.
const LANES: usize = 16;

#[inline(always)]
fn larger(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `row ← factor · softmax(row · scale + bias)`; a row with no finite score becomes zeros.
/// Maximum and sum are kept per lane and the row's last partial group is padded to a whole one,
/// so every pass runs at full vector width.
#[inline(always)]
fn softmax_row_body<const F: bool>(row: &mut [f32], bias: &[f32], scale: f32, factor: f32) {
    let len = row.len();
    let whole = len / LANES * LANES;
    // The last partial group, padded with scores of −∞ (they add exp(−∞) = 0).
    let mut last = [f32::NEG_INFINITY; LANES];
    let mut last_bias = [0.0f32; LANES];
    last[..len - whole].copy_from_slice(&row[whole..]);
    last_bias[..len - whole].copy_from_slice(&bias[whole..len]);
    // Plain functions, not closures: closures do not inherit the caller's target features.
    #[inline(always)]
    fn scaled(c: &mut [f32; LANES], b: &[f32; LANES], scale: f32, maxima: &mut [f32; LANES]) {
        for j in 0..LANES {
            c[j] = c[j] * scale + b[j];
            maxima[j] = larger(c[j], maxima[j]);
        }
    }
    #[inline(always)]
    fn exps<const F: bool>(c: &mut [f32; LANES], max: f32, sums: &mut [f32; LANES]) {
        for j in 0..LANES {
            c[j] = exp1::<F>(c[j] - max); // masked: exp(−∞) = 0
            sums[j] += c[j];
        }
    }
    let mut maxima = [f32::NEG_INFINITY; LANES];
    for (c, b) in row[..whole].chunks_exact_mut(LANES).zip(bias.chunks_exact(LANES)) {
        scaled(c.try_into().unwrap(), b.try_into().unwrap(), scale, &mut maxima);
    }
    scaled(&mut last, &last_bias, scale, &mut maxima);
    let max = maxima.iter().fold(f32::NEG_INFINITY, |m, &v| larger(v, m));
    if max == f32::NEG_INFINITY {
        row.fill(0.0); // no valid key
        return;
    }
    let mut sums = [0.0f32; LANES];
    for c in row[..whole].chunks_exact_mut(LANES) {
        exps::<F>(c.try_into().unwrap(), max, &mut sums);
    }
    exps::<F>(&mut last, max, &mut sums);
    let f = factor / sums.iter().sum::<f32>();
    for c in row[..whole].chunks_exact_mut(LANES) {
        c.iter_mut().for_each(|c| *c *= f);
    }
    for (c, l) in row[whole..].iter_mut().zip(&last) {
        *c = l * f;
    }
}

/// `Σ f(x)` in 8 interleaved partial sums (vectorises; also more accurate than one running sum).
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One LayerNorm row: two-pass mean and biased variance in f32 lanes, then the affine map.
#[inline(always)]
fn layer_norm_row_body(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((out, &v), (&g, &b)) in y.iter_mut().zip(x).zip(gamma.iter().zip(beta)) {
        *out = (v - mean) * rstd * g + b;
    }
}

struct Kernels {
    layer_norm_row: unsafe fn(&[f32], &mut [f32], &[f32], &[f32], f32),
    softmax_row: unsafe fn(&mut [f32], &[f32], f32, f32),
    exp: unsafe fn(&mut [f32]),
    gelu: unsafe fn(&mut [f32]),
    gru_gates: unsafe fn(&[f32], &[f32], &mut [f32]),
}

macro_rules! versions {
    ($($module:ident: $features:literal;)*) => {
        $(
            #[cfg(target_arch = "x86_64")]
            mod $module {
                #[target_feature(enable = $features)]
                pub unsafe fn layer_norm_row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
                    super::layer_norm_row_body(x, y, gamma, beta, eps)
                }
                #[target_feature(enable = $features)]
                pub unsafe fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32, factor: f32) {
                    super::softmax_row_body::<true>(row, bias, scale, factor)
                }
                #[target_feature(enable = $features)]
                pub unsafe fn exp(xs: &mut [f32]) {
                    super::exp_body::<true>(xs)
                }
                #[target_feature(enable = $features)]
                pub unsafe fn gelu(xs: &mut [f32]) {
                    super::gelu_body::<true>(xs)
                }
                #[target_feature(enable = $features)]
                pub unsafe fn gru_gates(gi: &[f32], gh: &[f32], h: &mut [f32]) {
                    super::gru_gates_body::<true>(gi, gh, h)
                }
            }
        )*
    };
}

versions! {
    avx512: "avx512f,fma";
    avx2: "avx2,fma";
}

/// Whether the portable build's target has a fused multiply-add instruction.
const PORTABLE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

unsafe fn layer_norm_row_portable(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_row_body(x, y, gamma, beta, eps)
}

unsafe fn softmax_row_portable(row: &mut [f32], bias: &[f32], scale: f32, factor: f32) {
    softmax_row_body::<PORTABLE_FMA>(row, bias, scale, factor)
}

unsafe fn exp_portable(xs: &mut [f32]) {
    exp_body::<PORTABLE_FMA>(xs)
}

unsafe fn gelu_portable(xs: &mut [f32]) {
    gelu_body::<PORTABLE_FMA>(xs)
}

unsafe fn gru_gates_portable(gi: &[f32], gh: &[f32], h: &mut [f32]) {
    gru_gates_body::<PORTABLE_FMA>(gi, gh, h)
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("fma") {
                return Kernels {
                    layer_norm_row: avx512::layer_norm_row,
                    softmax_row: avx512::softmax_row,
                    exp: avx512::exp,
                    gelu: avx512::gelu,
                    gru_gates: avx512::gru_gates,
                };
            }
            if has!("avx2") && has!("fma") {
                return Kernels {
                    layer_norm_row: avx2::layer_norm_row,
                    softmax_row: avx2::softmax_row,
                    exp: avx2::exp,
                    gelu: avx2::gelu,
                    gru_gates: avx2::gru_gates,
                };
            }
        }
        Kernels {
            layer_norm_row: layer_norm_row_portable,
            softmax_row: softmax_row_portable,
            exp: exp_portable,
            gelu: gelu_portable,
            gru_gates: gru_gates_portable,
        }
    })
}

/// `y = (x − mean) / sqrt(var + eps) · gamma + beta` over one row (`gamma`, `beta`, `y` as
/// long as `x`).
pub fn layer_norm_row(x: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    assert!(y.len() == x.len() && gamma.len() == x.len() && beta.len() == x.len(), "layer norm row lengths");
    // SAFETY: as in `exp_in_place`.
    unsafe { (kernels().layer_norm_row)(x, y, gamma, beta, eps) }
}

/// `row ← factor · softmax(row · scale + bias)` (`bias`: 0 or −∞ per key, at least as long as
/// the row); a row whose scores are all −∞ becomes zeros.
pub fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32, factor: f32) {
    assert!(bias.len() >= row.len(), "softmax bias shorter than the row");
    // SAFETY: as in `exp_in_place`.
    unsafe { (kernels().softmax_row)(row, bias, scale, factor) }
}

/// `x ← exp(x)` for every value.
pub fn exp_in_place(xs: &mut [f32]) {
    // SAFETY: the chosen version's target features were detected on this CPU.
    unsafe { (kernels().exp)(xs) }
}

/// `x ← GELU(x)` (exact, erf form) for every value.
pub fn gelu_in_place(xs: &mut [f32]) {
    // SAFETY: as in `exp_in_place`.
    unsafe { (kernels().gelu)(xs) }
}

/// One GRU step for one sample; `gi`, `gh` hold `3·H` gate pre-activations, `h` the `H` state.
pub fn gru_gates(gi: &[f32], gh: &[f32], h: &mut [f32]) {
    assert!(gi.len() >= 3 * h.len() && gh.len() >= 3 * h.len(), "GRU gates need 3·H values");
    // SAFETY: as in `exp_in_place`.
    unsafe { (kernels().gru_gates)(gi, gh, h) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Every build of function `$f` this CPU can run (`$portable` is its portable build).
    macro_rules! builds {
        ($f:ident, $portable:expr, $ty:ty) => {{
            let mut builds: Vec<(&'static str, $ty)> = vec![("portable", $portable)];
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx2") && has!("fma") {
                    builds.push(("AVX2+FMA", avx2::$f));
                }
                if has!("avx512f") && has!("fma") {
                    builds.push(("AVX-512", avx512::$f));
                }
            }
            builds
        }};
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_range() {
        let mut xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.0]);
        for (build, exp) in builds!(exp, exp_portable, unsafe fn(&mut [f32])) {
            let mut ys = xs.clone();
            // SAFETY: only builds whose features were detected.
            unsafe { exp(&mut ys) };
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp() as f32;
                assert!(ulps(y, want) <= 2, "{build}: exp({x}) = {y}, correctly rounded {want}");
            }
        }
    }

    #[test]
    fn gelu_matches_the_twin() {
        let xs: Vec<f32> = (0..20_001).map(|i| -10.0 + 20.0 * i as f32 / 20_000.0).collect();
        let mut ys = xs.clone();
        gelu_in_place(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = crate::ops::elementwise::gelu_f32(x);
            assert!((y - want).abs() <= 2e-7 * (1.0 + want.abs()), "gelu({x}) = {y}, twin {want}");
        }
    }

    #[test]
    fn exp_of_large_negatives_and_minus_infinity_is_zero() {
        let mut ys = [f32::NEG_INFINITY, -1e30, -100.0, -87.4];
        exp_in_place(&mut ys);
        assert_eq!(ys, [0.0; 4]);
    }

    #[test]
    fn gru_gates_match_f64() {
        let hd = 37;
        let mut rng = crate::testing::Rng::new(9);
        let (gi, gh, h0) = (rng.vec(3 * hd, -6.0, 6.0), rng.vec(3 * hd, -6.0, 6.0), rng.vec(hd, -1.0, 1.0));
        let mut h = h0.clone();
        gru_gates(&gi, &gh, &mut h);
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        for j in 0..hd {
            let r = s(gi[j] as f64 + gh[j] as f64);
            let z = s(gi[hd + j] as f64 + gh[hd + j] as f64);
            let n = (gi[2 * hd + j] as f64 + r * gh[2 * hd + j] as f64).tanh();
            let want = (1.0 - z) * n + z * h0[j] as f64;
            assert!((h[j] as f64 - want).abs() < 1e-6, "h[{j}] = {}, f64 {want}", h[j]);
        }
    }

    /// Every build: rows shorter and longer than a lane group, masked keys, a fully masked row
    /// (zeros) and the factor, against f64.
    #[test]
    fn softmax_row_matches_f64_on_every_build() {
        let builds = builds!(softmax_row, softmax_row_portable, unsafe fn(&mut [f32], &[f32], f32, f32));
        let mut rng = crate::testing::Rng::new(11);
        for len in [1, 5, 16, 17, 75, 100] {
            let scores = rng.vec(len, -20.0, 20.0);
            let bias: Vec<f32> = (0..len).map(|j| if j % 3 == 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
            for (build, softmax_row) in &builds {
                for (bias, factor) in [(&bias, 0.7f32), (&vec![f32::NEG_INFINITY; len], 1.0)] {
                    let mut row = scores.clone();
                    // SAFETY: only builds whose features were detected.
                    unsafe { softmax_row(&mut row, bias, 0.3, factor) };
                    let logits: Vec<f64> =
                        scores.iter().zip(bias.iter()).map(|(&s, &b)| s as f64 * 0.3 + b as f64).collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                    for (j, (&got, l)) in row.iter().zip(&logits).enumerate() {
                        let want = if max == f64::NEG_INFINITY { 0.0 } else { factor as f64 * (l - max).exp() / sum };
                        assert!(
                            (got as f64 - want).abs() <= 1e-6 * (1.0 + want),
                            "{build} len {len} [{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
