// The recurrent part of one PyTorch GRU layer, the whole time loop in one dispatch:
//   gh = W_hh h + b_hh   (gate rows r, z, n)
//   r = σ(gi_r + gh_r),  z = σ(gi_z + gh_z),  n = tanh(gi_n + r ⊙ gh_n),  h' = (1 − z) ⊙ n + z ⊙ h
// where gi = x W_ihᵀ + b_ih was computed for every step beforehand by one matmul.
// Layouts: gi (B, T, 3H); w_hh_t = W_hhᵀ, (H, 3H) (transposed at load so that, for a fixed k, the
// threads of a workgroup read consecutive addresses); b_hh (3H); lengths (B) f32 (optional);
// seq (B, T, H) and last (B, H) outputs.
// Lengths: sample b runs len = clamp(floor(lengths[b]), 0, T) steps (T without lengths); at steps
// t >= len its h stays as it is and seq[b, t] = 0; last[b] = h after len steps (0 when len = 0).
// One workgroup (256 threads) per sample; h is double-buffered in workgroup memory (the step
// reads one half and writes the other, so one barrier per step); thread i owns hidden units
// i, i + 256, ... and computes their three gate rows against W_hh from global memory.
// H <= MAX_HIDDEN = 2040 (2 x 2040 floats + wg_len = 16324 bytes of the portable 16 KiB).

struct Params {
    batch: u32, steps: u32, hidden: u32, has_lengths: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gi: array<f32>;
@group(0) @binding(2) var<storage, read> w_hh_t: array<f32>;
@group(0) @binding(3) var<storage, read> b_hh: array<f32>;
@group(0) @binding(4) var<storage, read> lengths: array<f32>;
@group(0) @binding(5) var<storage, read_write> seq: array<f32>;
@group(0) @binding(6) var<storage, read_write> last: array<f32>;

const THREADS: u32 = 256u;
const MAX_HIDDEN: u32 = 2040u;
var<workgroup> hbuf: array<f32, 4080>;
var<workgroup> wg_len: u32;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

// tanh through exp(−2|v|), which cannot overflow (some drivers' tanh returns NaN for large |v|).
fn tanh_stable(v: f32) -> f32 {
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(256, 1, 1)
fn gru(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let b = wid.x + wid.y * 65535u;
    if (b >= p.batch) { return; }
    let tid = lid.x;
    let hd = p.hidden;
    let t_max = p.steps;
    if (tid == 0u) {
        var len = t_max;
        if (p.has_lengths == 1u) {
            len = u32(clamp(floor(lengths[b]), 0.0, f32(t_max)));
        }
        wg_len = len;
    }
    for (var j = tid; j < hd; j += THREADS) {
        hbuf[j] = 0.0;
    }
    // Also the barrier that publishes h0.
    let len = workgroupUniformLoad(&wg_len);
    let g3 = 3u * hd;
    for (var t = 0u; t < len; t++) {
        let cur = (t & 1u) * hd;
        let nxt = hd - cur;
        let gi_row = (b * t_max + t) * g3;
        for (var j = tid; j < hd; j += THREADS) {
            var ar = b_hh[j];
            var az = b_hh[hd + j];
            var an = b_hh[2u * hd + j];
            var k = 0u;
            // Four k per iteration: fat loop body, h read from workgroup memory (a broadcast).
            for (; k + 4u <= hd; k += 4u) {
                let h4 = vec4<f32>(hbuf[cur + k], hbuf[cur + k + 1u], hbuf[cur + k + 2u], hbuf[cur + k + 3u]);
                let w0 = k * g3 + j;
                let w1 = w0 + g3;
                let w2 = w1 + g3;
                let w3 = w2 + g3;
                ar += dot(h4, vec4<f32>(w_hh_t[w0], w_hh_t[w1], w_hh_t[w2], w_hh_t[w3]));
                az += dot(h4, vec4<f32>(w_hh_t[w0 + hd], w_hh_t[w1 + hd], w_hh_t[w2 + hd], w_hh_t[w3 + hd]));
                an += dot(h4, vec4<f32>(w_hh_t[w0 + 2u * hd], w_hh_t[w1 + 2u * hd], w_hh_t[w2 + 2u * hd],
                                        w_hh_t[w3 + 2u * hd]));
            }
            for (; k < hd; k++) {
                let hk = hbuf[cur + k];
                let w0 = k * g3 + j;
                ar += hk * w_hh_t[w0];
                az += hk * w_hh_t[w0 + hd];
                an += hk * w_hh_t[w0 + 2u * hd];
            }
            let r = sigmoid(gi[gi_row + j] + ar);
            let z = sigmoid(gi[gi_row + hd + j] + az);
            let n = tanh_stable(gi[gi_row + 2u * hd + j] + r * an);
            let h_new = (1.0 - z) * n + z * hbuf[cur + j];
            hbuf[nxt + j] = h_new;
            seq[(b * t_max + t) * hd + j] = h_new;
        }
        workgroupBarrier();
    }
    // Steps past the sample's length output zeros.
    let tail = (t_max - len) * hd;
    let tail0 = (b * t_max + len) * hd;
    for (var e = tid; e < tail; e += THREADS) {
        seq[tail0 + e] = 0.0;
    }
    let fin = (len & 1u) * hd;
    for (var j = tid; j < hd; j += THREADS) {
        last[b * hd + j] = hbuf[fin + j];
    }
}
