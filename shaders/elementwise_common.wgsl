
// Shared by the elementwise kernels (appended by the Rust side): the unary functions, applied to
// four values at once. Codes (also used by `ops::elementwise::Unary`):
//   0 identity, 1 relu, 2 prelu (slope), 3 sigmoid, 4 tanh, 5 gelu (erf form),
//   6 inverse_sigmoid (p0 = eps), 7 scale-and-shift p0 * x + p1, 8 exp.

// erf with < 1.3 ulp error (N. Juffa's erff, the rational approximation MLX also ships); both
// branches are evaluated and selected per lane.
fn erf4(a: vec4<f32>) -> vec4<f32> {
    let t = abs(a);
    let s = a * a;
    var r = fma(vec4<f32>(-1.72853470e-5), t, vec4<f32>(3.83197126e-4));
    let u = fma(vec4<f32>(-3.88396438e-3), t, vec4<f32>(2.42546219e-2));
    r = fma(r, s, u);
    r = fma(r, t, vec4<f32>(-1.06777877e-1));
    r = fma(r, t, vec4<f32>(-6.34846687e-1));
    r = fma(r, t, vec4<f32>(-1.28717512e-1));
    r = fma(r, t, -t);
    let big = 1.0 - exp(r);
    let big_signed = select(big, -big, a < vec4<f32>(0.0));
    var q = vec4<f32>(-5.96761703e-4);
    q = fma(q, s, vec4<f32>(4.99119423e-3));
    q = fma(q, s, vec4<f32>(-2.67681349e-2));
    q = fma(q, s, vec4<f32>(1.12819925e-1));
    q = fma(q, s, vec4<f32>(-3.76125336e-1));
    q = fma(q, s, vec4<f32>(1.28379166e-1));
    q = fma(q, a, a);
    return select(q, big_signed, t > vec4<f32>(0.927734375));
}

fn unary4(x: vec4<f32>, code: u32, p0: f32, p1: f32, slope: f32) -> vec4<f32> {
    switch code {
        case 1u: { return max(x, vec4<f32>(0.0)); }
        case 2u: { return select(slope * x, x, x >= vec4<f32>(0.0)); }
        // Clamped so exp never overflows; the result is the same to f32 precision.
        case 3u: { return 1.0 / (1.0 + exp(-clamp(x, vec4<f32>(-80.0), vec4<f32>(80.0)))); }
        // Clamped: some drivers build tanh from exp and return NaN for large |x|; tanh(15)
        // rounds to 1 in f32.
        case 4u: { return tanh(clamp(x, vec4<f32>(-15.0), vec4<f32>(15.0))); }
        case 5u: { return x * 0.5 * (1.0 + erf4(x * 0.70710678118654752)); }
        case 6u: {
            let c = clamp(x, vec4<f32>(0.0), vec4<f32>(1.0));
            return log(max(c, vec4<f32>(p0)) / max(1.0 - c, vec4<f32>(p0)));
        }
        case 7u: { return p0 * x + p1; }
        case 8u: { return exp(x); }
        default: { return x; }
    }
}

// Binary operators: 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
fn binary4(a: vec4<f32>, b: vec4<f32>, op: u32) -> vec4<f32> {
    switch op {
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return max(a, b); }
        case 5u: { return min(a, b); }
        default: { return a + b; }
    }
}
