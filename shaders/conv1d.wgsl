// 1-D convolution over time on channels-last activations, as an implicit GEMM with a fused
// epilogue (residual add BEFORE the activation, as in the LD-DETR conv block):
//   out[b, t, o] = act( sum_{tap, c} W[o, c, tap] * A(b, t, tap, c) + bias[o] + residual[b, t, o] )
// Layouts: x (B, L_in, C_in), out and residual (B, L_out, C_out), mask (B, L_in) (mode 2 only), row-major.
// Virtual input with zero "same" padding and optional nearest up-sampling by `up`:
//   xin(b, u, c) = x[b, u / up, c] for 0 <= u < L_in * up, else 0;   position u = t*stride + tap - pad.
// mode 0 (dense Conv1d): W is PyTorch's (C_out, C_in, k) weight; A(b, t, tap, c) = xin(b, u, c).
// mode 1 (depthwise-separable, SG-DETR's DWS): one tap; A(b, t, 0, c) = sum_k dw[c, k] xin(b, t*stride+k-pad, c)
//   (the depthwise conv, dw of shape (C_in, 1, k), computed while staging the A tile), then W is the pointwise
//   weight (C_out, C_in, 1).
// mode 2 (masked, LD-DETR on padded batches): mode 0 with stride 1, up 1 and a row mask, valid(b, u) =
//   mask[b, u] > 0.5: padded clips read as the zero padding (xin = 0 there) and padded output rows are 0,
//   so each sample of a padded batch gets exactly the result of its valid clips run alone (for the usual
//   prefix masks); a fully padded sample gives all zeros.
// W[o, c, tap] is read at o * w_o + c * w_c + tap (dense: w_o = C_in * k, w_c = k; separable: C_in, 1).
// GEMM view: rows = (b, t) flattened (M = B * L_out), cols = o, reduction over (tap, c), taps outer.
// Tile: 32 x 32 outputs per workgroup of 8 x 8 threads, 4 x 4 outputs per thread held in four named vec4
// accumulators, C_in consumed 16 at a time through workgroup memory (2 x 2 KiB).

struct Params {
    batch: u32, l_in: u32, l_out: u32, c_in: u32, c_out: u32,
    ksize: u32, stride: u32, pad: u32, up: u32,
    mode: u32, w_o: u32, w_c: u32,
    has_bias: u32, act: u32, has_residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> dw: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> slope: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read> mask: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

const TILE: u32 = 32u;
const KSTEP: u32 = 16u;
// Stored k-major: tile[kk * TILE + row].
var<workgroup> a_tile: array<f32, 512>;
var<workgroup> w_tile: array<f32, 512>;

fn activate(v: f32, code: u32) -> f32 {
    switch code {
        case 1u: { return max(v, 0.0); }
        case 2u: { return select(slope[0] * v, v, v >= 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
}

// Whether row r = (b, t) of the mask is a valid clip; every row is in modes 0 and 1.
fn valid(r: u32) -> bool {
    return p.mode != 2u || mask[r] > 0.5;
}

// The (virtually up-sampled, zero-padded) input at position u of sample b, channel c.
fn xin(b: u32, u: i32, c: u32) -> f32 {
    if (u < 0 || u >= i32(p.l_in * p.up)) { return 0.0; }
    let r = b * p.l_in + u32(u) / p.up;
    if (!valid(r)) { return 0.0; }
    return x[r * p.c_in + c];
}

// One element of the implicit A operand: GEMM row `row` = (b, t), channel c, tap `tap`.
fn load_a(row: u32, c: u32, tap: u32) -> f32 {
    let b = row / p.l_out;
    let t = row % p.l_out;
    let u0 = i32(t * p.stride) - i32(p.pad);
    if (p.mode != 1u) {
        return xin(b, u0 + i32(tap), c);
    }
    var s = 0.0;
    for (var k = 0u; k < p.ksize; k++) {
        s += dw[c * p.ksize + k] * xin(b, u0 + i32(k), c);
    }
    return s;
}

fn store_row(row: u32, col0: u32, acc: vec4<f32>) {
    if (row >= p.batch * p.l_out) { return; }
    let keep = valid(row);
    let values = array<f32, 4>(acc.x, acc.y, acc.z, acc.w);
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < p.c_out) {
            var v = values[j];
            if (p.has_bias == 1u) { v += bias[col]; }
            let at = row * p.c_out + col;
            if (p.has_residual == 1u) { v += residual[at]; }
            out[at] = select(0.0, activate(v, p.act), keep);
        }
    }
}

@compute @workgroup_size(8, 8, 1)
fn conv1d(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tid = lid.y * 8u + lid.x;
    let rows = p.batch * p.l_out;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    let taps = select(p.ksize, 1u, p.mode == 1u);
    for (var tap = 0u; tap < taps; tap++) {
        for (var k0 = 0u; k0 < p.c_in; k0 += KSTEP) {
            // 512 values per operand tile, 8 per thread; consecutive threads walk along C_in,
            // which is contiguous in x.
            for (var i = 0u; i < 8u; i++) {
                let e = tid + i * 64u;
                let kk = e % KSTEP;
                let r = e / KSTEP;
                let c = k0 + kk;
                var av = 0.0;
                var wv = 0.0;
                if (c < p.c_in) {
                    if (row0 + r < rows) { av = load_a(row0 + r, c, tap); }
                    if (col0 + r < p.c_out) { wv = w[(col0 + r) * p.w_o + c * p.w_c + tap]; }
                }
                a_tile[kk * TILE + r] = av;
                w_tile[kk * TILE + r] = wv;
            }
            workgroupBarrier();
            for (var kk = 0u; kk < KSTEP; kk++) {
                let ar = kk * TILE + lid.y * 4u;
                let wc = kk * TILE + lid.x * 4u;
                let av = vec4<f32>(a_tile[ar], a_tile[ar + 1u], a_tile[ar + 2u], a_tile[ar + 3u]);
                let wv = vec4<f32>(w_tile[wc], w_tile[wc + 1u], w_tile[wc + 2u], w_tile[wc + 3u]);
                c0 += av.x * wv;
                c1 += av.y * wv;
                c2 += av.z * wv;
                c3 += av.w * wv;
            }
            workgroupBarrier();
        }
    }
    let row = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    store_row(row, col, c0);
    store_row(row + 1u, col, c1);
    store_row(row + 2u, col, c2);
    store_row(row + 3u, col, c3);
}
