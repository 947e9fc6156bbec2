// Shared by matmul.wgsl and matmul_vec4.wgsl: the Rust side appends this file to either.
// Parameters, output bindings, tiles, the epilogue and the multiply-accumulate of one K step;
// the including file declares the operand bindings `a` (1) and `w` (2) and its entry point.

struct Params {
    m: u32, n: u32, k: u32,
    a_batch: u32, a_m: u32, a_k: u32,
    w_batch: u32, w_k: u32, w_n: u32,
    has_bias: u32, act: u32, has_residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> slope: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> c: array<f32>;

const TILE: u32 = 32u;
const KSTEP: u32 = 16u;
// Stored k-major: tile[kk * TILE + row].
var<workgroup> a_tile: array<f32, 512>;
var<workgroup> w_tile: array<f32, 512>;

fn activate(x: f32, code: u32) -> f32 {
    switch code {
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(slope[0] * x, x, x >= 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        default: { return x; }
    }
}

fn store_row(batch: u32, row: u32, col0: u32, acc: vec4<f32>) {
    if (row >= p.m) { return; }
    let values = array<f32, 4>(acc.x, acc.y, acc.z, acc.w);
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < p.n) {
            var v = values[j];
            if (p.has_bias == 1u) { v += bias[col]; }
            v = activate(v, p.act);
            let at = (batch * p.m + row) * p.n + col;
            if (p.has_residual == 1u) { v += residual[at]; }
            c[at] = v;
        }
    }
}

// A thread's 4 x 4 outputs: rows row..row+3, columns col..col+3.
fn store_tile(batch: u32, row: u32, col: u32, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) {
    store_row(batch, row, col, c0);
    store_row(batch, row + 1u, col, c1);
    store_row(batch, row + 2u, col, c2);
    store_row(batch, row + 3u, col, c3);
}

// The multiply-accumulate over one staged K step, shared by both entry points.
fn accumulate(lid: vec3<u32>, c0: ptr<function, vec4<f32>>, c1: ptr<function, vec4<f32>>,
              c2: ptr<function, vec4<f32>>, c3: ptr<function, vec4<f32>>) {
    for (var kk = 0u; kk < KSTEP; kk++) {
        let ar = kk * TILE + lid.y * 4u;
        let wc = kk * TILE + lid.x * 4u;
        let av = vec4<f32>(a_tile[ar], a_tile[ar + 1u], a_tile[ar + 2u], a_tile[ar + 3u]);
        let wv = vec4<f32>(w_tile[wc], w_tile[wc + 1u], w_tile[wc + 2u], w_tile[wc + 3u]);
        *c0 += av.x * wv;
        *c1 += av.y * wv;
        *c2 += av.z * wv;
        *c3 += av.w * wv;
    }
}

