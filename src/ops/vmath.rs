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
    let n = (xc * LOG2_E).round();
    let r = madd::<F>(n, -LN2_LO, madd::<F>(n, -LN2_HI, xc));
    // exp(r) on |r| ≤ ln2 / 2 by its Taylor series to r⁷ (truncation < 1e-9 relative).
    let mut p: f32 = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<F>(p, r, c);
    }
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
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

struct Kernels {
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
                return Kernels { exp: avx512::exp, gelu: avx512::gelu, gru_gates: avx512::gru_gates };
            }
            if has!("avx2") && has!("fma") {
                return Kernels { exp: avx2::exp, gelu: avx2::gelu, gru_gates: avx2::gru_gates };
            }
        }
        Kernels { exp: exp_portable, gelu: gelu_portable, gru_gates: gru_gates_portable }
    })
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

    /// Every build this CPU can run.
    fn builds() -> Vec<(&'static str, unsafe fn(&mut [f32]))> {
        let mut builds: Vec<(&'static str, unsafe fn(&mut [f32]))> = vec![("portable", exp_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                builds.push(("AVX2+FMA", avx2::exp));
            }
            if has!("avx512f") && has!("fma") {
                builds.push(("AVX-512", avx512::exp));
            }
        }
        builds
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_range() {
        let mut xs: Vec<f32> = (0..200_001).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.0]);
        for (build, exp) in builds() {
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
}
