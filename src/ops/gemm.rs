//! The CPU backend's GEMM for products with a constant right operand (every Linear, every 1×1
//! conv): `c = act(a · b + bias) + residual`.
//!
//! General-purpose SGEMM crates re-pack the right operand on every call; at inference batch
//! sizes (M = 10 to a few thousand rows) that packing costs as much as the arithmetic. Weights
//! are constants, so here they are packed once, at plan time, into column panels of
//! [`PANEL`] columns laid out K-major; a forward then only streams them. The register-tiled
//! micro-kernel is plain Rust that LLVM vectorises, compiled three times: for AVX-512, for
//! AVX2 + FMA (chosen at run time on x86-64) and portable. The epilogue (bias, activation,
//! residual) is applied while the tile is still in cache. Tiles are spread over the rayon
//! pool; small products stay on the calling thread.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::{activate, SharedOut};

/// Columns per packed panel: one AVX-512 register, two AVX2 registers. Micro-tiles are at most
/// two panels wide.
pub const PANEL: usize = 16;

/// Bytes of `a` per cache block: a row block stays in L2 while every panel of `b` passes over
/// it, so `b` is streamed once per block.
const ROW_BLOCK_BYTES: usize = 512 << 10;

/// Rows per cache block for a K-wide `a`: a multiple of every micro-tile height (12, 6).
fn row_block(k: usize) -> usize {
    (ROW_BLOCK_BYTES / 4 / k.max(1)).clamp(48, 768) / 12 * 12
}

/// Terms of the dot product summed in registers before they are added to the running sum.
const K_CHUNK: usize = 256;

/// Below this many multiply-adds a product runs on one thread (fork/join costs more).
const PARALLEL_MIN_MACS: usize = 1 << 22;

/// The right operand `b (K, N)`, packed: panel `p` holds columns `p·PANEL ..` as K rows of
/// `PANEL` values (zero-padded past N). Owns its panels (weights packed at plan time) or
/// borrows them (activations packed per call into scratch, as attention's keys and values).
#[derive(Debug)]
pub struct PackedB<D = Vec<f32>> {
    k: usize,
    n: usize,
    data: D,
}

/// Values a packed `(k, n)` operand occupies.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

impl<'a> PackedB<&'a [f32]> {
    /// Packs `b[k][n] = value(k, n)` into `buffer` (at least [`packed_len`] values).
    pub fn pack_into(buffer: &'a mut [f32], k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let data = &mut buffer[..packed_len(k, n)];
        fill_panels(data, k, n, value);
        PackedB { k, n, data }
    }
}

fn fill_panels(data: &mut [f32], k: usize, n: usize, value: impl Fn(usize, usize) -> f32) {
    for (p, panel) in data.chunks_exact_mut(k * PANEL).enumerate() {
        for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                let col = p * PANEL + j;
                *v = if col < n { value(kk, col) } else { 0.0 };
            }
        }
    }
}

impl<D: AsRef<[f32]>> PackedB<D> {
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held by the packed panels.
    pub fn bytes(&self) -> usize {
        self.data.as_ref().len() * 4
    }

    fn view(&self) -> PackedB<&[f32]> {
        PackedB { k: self.k, n: self.n, data: self.data.as_ref() }
    }
}

impl PackedB {
    /// Packs `b[k][n] = values[k·stride_k + n·stride_n]`.
    pub fn pack(values: &[f32], k: usize, n: usize, stride_k: usize, stride_n: usize) -> Self {
        Self::from_fn(k, n, |kk, nn| values[kk * stride_k + nn * stride_n])
    }

    /// Packs `b[k][n] = value(k, n)`.
    pub fn from_fn(k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let mut data = vec![0.0f32; packed_len(k, n)];
        fill_panels(&mut data, k, n, value);
        PackedB { k, n, data }
    }
}

/// What is applied to each output value: `act(x + bias[col]) + residual[row, col]` (matmul),
/// or `act(x + bias[col] + residual[row, col])` with `residual_first` (convolution blocks).
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// Activation code of [`super::activate`].
    pub act: u32,
    pub slope: f32,
    /// Same layout as the output.
    pub residual: Option<&'a [f32]>,
    pub residual_first: bool,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> =
        Epilogue { bias: None, act: 0, slope: 0.0, residual: None, residual_first: false };
}

/// `c (M, N) = epilogue(a · b)` with `a[i][k] = a[i·lda + k]` and `c` dense row-major.
pub fn gemm<D: AsRef<[f32]>>(m: usize, a: &[f32], lda: usize, b: &PackedB<D>, c: &mut [f32], epilogue: &Epilogue) {
    gemm_with(kernel().block, m, a, lda, &b.view(), c, epilogue)
}

/// [`gemm`] with a given micro-kernel build (tests run every build this CPU has).
fn gemm_with(block: BlockFn, m: usize, a: &[f32], lda: usize, b: &PackedB<&[f32]>, c: &mut [f32], epilogue: &Epilogue) {
    let (k, n) = (b.k, b.n);
    assert!(m == 0 || a.len() >= (m - 1) * lda + k, "left operand too short");
    assert!(c.len() >= m * n, "output too short");
    if m == 0 || n == 0 {
        return;
    }
    let rb_rows = row_block(k);
    let row_blocks = m.div_ceil(rb_rows);
    let panels = n.div_ceil(PANEL);
    let tile = |rows: std::ops::Range<usize>, panels: std::ops::Range<usize>, c: SharedOut| {
        // SAFETY: tasks write disjoint (rows × panel columns) regions of `c`, checked above.
        unsafe { block(a, lda, b, rows, panels, c, epilogue) }
    };
    let out = SharedOut::new(&mut c[..m * n]);
    let threads = rayon::current_num_threads();
    // Already on a pool thread (a kernel parallel over heads or samples): stay there.
    if m * n * k < PARALLEL_MIN_MACS || threads == 1 || rayon::current_thread_index().is_some() {
        for rb in 0..row_blocks {
            tile(rb * rb_rows..((rb + 1) * rb_rows).min(m), 0..panels, out);
        }
        return;
    }
    // Enough tasks to balance the pool, each a run of panels over one row block.
    let groups = (4 * threads).div_ceil(row_blocks).clamp(1, panels);
    let per_group = panels.div_ceil(groups);
    let groups = panels.div_ceil(per_group);
    (0..row_blocks * groups).into_par_iter().for_each(|t| {
        let (rb, g) = (t / groups, t % groups);
        let rows = rb * rb_rows..((rb + 1) * rb_rows).min(m);
        tile(rows, g * per_group..((g + 1) * per_group).min(panels), out);
    });
}

type BlockFn =
    unsafe fn(&[f32], usize, &PackedB<&[f32]>, std::ops::Range<usize>, std::ops::Range<usize>, SharedOut, &Epilogue);

struct Kernel {
    block: BlockFn,
    isa: &'static str,
}

/// The best micro-kernel this CPU runs, chosen once.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel { block: x86::block_avx512, isa: "AVX-512" };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel { block: x86::block_avx2, isa: "AVX2+FMA" };
            }
        }
        Kernel { block: block_portable, isa: "portable" }
    })
}

/// Name of the micro-kernel in use (for `moment info` and bench reports).
pub fn isa() -> &'static str {
    kernel().isa
}

/// One row block × a run of panels, with micro-tiles of `MR` rows × `NP` panels.
///
/// # Safety
/// `out` must address an `(rows.end) × n` row-major matrix no other thread writes in these
/// rows × panel columns.
#[inline(always)]
unsafe fn block<const MR: usize, const NP: usize, const FUSED: bool>(
    a: &[f32],
    lda: usize,
    b: &PackedB<&[f32]>,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    out: SharedOut,
    epilogue: &Epilogue,
) {
    let mut p = panels.start;
    while p < panels.end {
        let np = NP.min(panels.end - p);
        let mut i = rows.start;
        while i < rows.end {
            let mr = MR.min(rows.end - i);
            let mut acc = [[[0.0f32; PANEL]; NP]; MR];
            let a = unsafe { a.as_ptr().add(i * lda) };
            // SAFETY (all arms): rows i .. i + mr and panels p .. p + np exist.
            match (np == NP, mr) {
                (true, _) if mr == MR => unsafe { micro::<MR, NP, FUSED>(a, lda, b, p, &mut acc) },
                (true, _) => unsafe { edge_rows::<MR, NP, NP, FUSED>(mr, a, lda, b, p, &mut acc) },
                (false, _) => unsafe { edge_rows::<MR, NP, 1, FUSED>(mr, a, lda, b, p, &mut acc) },
            }
            store(&acc, i, mr, p, np, b.n, out, epilogue);
            i += MR;
        }
        p += NP;
    }
}

/// [`micro`] on the last `mr < MR` rows (and `Q ≤ NP` panels) of a block, with a micro-tile
/// of exactly that height so edge rows still run at full vector width.
///
/// # Safety
/// As [`micro`] for `mr` rows and `Q` panels.
#[inline(always)]
unsafe fn edge_rows<const MR: usize, const NP: usize, const Q: usize, const FUSED: bool>(
    mr: usize,
    a: *const f32,
    lda: usize,
    b: &PackedB<&[f32]>,
    p: usize,
    acc: &mut [[[f32; PANEL]; NP]; MR],
) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                $($r if $r <= MR => {
                    let mut part = [[[0.0f32; PANEL]; Q]; $r];
                    unsafe { micro::<$r, Q, FUSED>(a, lda, b, p, &mut part) };
                    for (row, part) in acc.iter_mut().zip(&part) {
                        row[..Q].copy_from_slice(part);
                    }
                })*
                _ => unreachable!("micro-tiles are at most 12 rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// `acc[r][q][j] = Σ_k a[r·lda + k] · panel(p + q)[k][j]`.
///
/// # Safety
/// Rows `0..MR` of `a` (stride `lda`) hold `b.k` values each and panels `p .. p + NP` exist.
#[inline(always)]
unsafe fn micro<const MR: usize, const NP: usize, const FUSED: bool>(
    a: *const f32,
    lda: usize,
    b: &PackedB<&[f32]>,
    p: usize,
    acc: &mut [[[f32; PANEL]; NP]; MR],
) {
    let k = b.k;
    let panels = unsafe { b.data.as_ptr().add(p * k * PANEL) };
    // K in chunks, each summed in registers from zero and then added to `acc`: a long dot
    // product then rounds like a sum of short ones (as blocked BLAS and the GPU tiles do).
    let mut k0 = 0;
    while k0 < k {
        let k1 = (k0 + K_CHUNK).min(k);
        let mut part = [[[0.0f32; PANEL]; NP]; MR];
        for kk in k0..k1 {
            // SAFETY: in bounds by the contract above; raw reads keep bounds checks out of
            // the loop LLVM turns into broadcast-FMAs.
            let bv: [[f32; PANEL]; NP] =
                std::array::from_fn(|q| unsafe { *(panels.add((q * k + kk) * PANEL) as *const [f32; PANEL]) });
            for (r, part) in part.iter_mut().enumerate() {
                let x = unsafe { *a.add(r * lda + kk) };
                for q in 0..NP {
                    for j in 0..PANEL {
                        // `mul_add` is one instruction only where the target has FMA; elsewhere
                        // it is a libm call, so the portable build multiplies and adds.
                        part[q][j] = if FUSED { x.mul_add(bv[q][j], part[q][j]) } else { x * bv[q][j] + part[q][j] };
                    }
                }
            }
        }
        for (acc, part) in acc.iter_mut().zip(&part) {
            for (acc, part) in acc.iter_mut().zip(part) {
                acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
            }
        }
        k0 = k1;
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store<const MR: usize, const NP: usize>(
    acc: &[[[f32; PANEL]; NP]; MR],
    row0: usize,
    mr: usize,
    p: usize,
    np: usize,
    n: usize,
    out: SharedOut,
    e: &Epilogue,
) {
    let col0 = p * PANEL;
    let cols = (np * PANEL).min(n - col0);
    let bias = e.bias.map(|b| &b[col0..col0 + cols]);
    for (r, acc_row) in acc.iter().enumerate().take(mr) {
        let at = (row0 + r) * n + col0;
        // The epilogue runs on a copy of the tile row in registers / L1, one branch-free pass
        // per part so each vectorises; the output row is then written once.
        let mut row = [0.0f32; 2 * PANEL];
        let row = &mut row[..cols];
        for (q, chunk) in row.chunks_mut(PANEL).enumerate() {
            chunk.copy_from_slice(&acc_row[q.min(NP - 1)][..chunk.len()]);
        }
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
        let residual = e.residual.map(|res| &res[at..at + cols]);
        if let (Some(res), true) = (residual, e.residual_first) {
            row.iter_mut().zip(res).for_each(|(x, r)| *x += r);
        }
        match e.act {
            0 => {}
            1 => row.iter_mut().for_each(|x| *x = x.max(0.0)),
            // PReLU as a select, so it vectorises like the others.
            2 => row.iter_mut().for_each(|x| *x = if *x >= 0.0 { *x } else { e.slope * *x }),
            _ => row.iter_mut().for_each(|x| *x = activate(*x, e.act, e.slope)),
        }
        if let (Some(res), false) = (residual, e.residual_first) {
            row.iter_mut().zip(res).for_each(|(x, r)| *x += r);
        }
        // SAFETY: (row0 + r, col0 .. col0 + cols) lies inside this task's region of `out`.
        unsafe { out.part(at, cols) }.copy_from_slice(row);
    }
}

/// Portable build: 6 rows × 1 panel (NEON and SSE both hold it in registers).
unsafe fn block_portable(
    a: &[f32],
    lda: usize,
    b: &PackedB<&[f32]>,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    out: SharedOut,
    e: &Epilogue,
) {
    unsafe { block::<6, 1, PORTABLE_FMA>(a, lda, b, rows, panels, out, e) }
}

/// Whether the portable build's target has a fused multiply-add instruction.
const PORTABLE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// A [`block`] build for one instruction set: `$name` with `$features`, micro-tile `$mr` rows ×
/// `$np` panels.
macro_rules! block_build {
    ($(#[$doc:meta])* $name:ident, $features:literal, $mr:literal, $np:literal) => {
        $(#[$doc])*
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            a: &[f32],
            lda: usize,
            b: &PackedB<&[f32]>,
            rows: std::ops::Range<usize>,
            panels: std::ops::Range<usize>,
            out: SharedOut,
            e: &Epilogue,
        ) {
            unsafe { block::<$mr, $np, true>(a, lda, b, rows, panels, out, e) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    block_build!(
        /// 12 rows × 2 panels: 24 of the 32 zmm registers accumulate.
        block_avx512, "avx512f,fma", 12, 2
    );
    block_build!(
        /// 6 rows × 1 panel (two ymm each): 12 of the 16 ymm registers accumulate.
        block_avx2, "avx2,fma", 6, 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn reference(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], e: &Epilogue) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut x: f64 = (0..k).map(|kk| a[i * k + kk] as f64 * w[j * k + kk] as f64).sum();
                if let Some(b) = e.bias {
                    x += b[j] as f64;
                }
                match e.residual {
                    Some(r) if e.residual_first => {
                        x = activate((x + r[i * n + j] as f64) as f32, e.act, e.slope) as f64
                    }
                    Some(r) => x = activate(x as f32, e.act, e.slope) as f64 + r[i * n + j] as f64,
                    None => x = activate(x as f32, e.act, e.slope) as f64,
                }
                c[i * n + j] = x;
            }
        }
        c
    }

    /// Every micro-kernel build this CPU can run.
    fn builds() -> Vec<(&'static str, BlockFn)> {
        let mut builds: Vec<(&'static str, BlockFn)> = vec![("portable", block_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                builds.push(("AVX2+FMA", x86::block_avx2));
            }
            if has!("avx512f") && has!("fma") {
                builds.push(("AVX-512", x86::block_avx512));
            }
        }
        builds
    }

    /// Every edge: rows not a multiple of the micro-tile or of the row block (several blocks at
    /// 1100 × 300), columns not a
    /// multiple of a panel, K of 1 and K over one chunk, single- and multi-threaded sizes, every
    /// epilogue part, on every micro-kernel build this CPU runs.
    #[test]
    fn packed_gemm_matches_f64_on_edge_shapes() {
        let mut rng = Rng::new(3);
        for &(m, k, n) in
            &[(1, 1, 1), (5, 7, 3), (13, 33, 17), (75, 300, 40), (97, 64, 33), (250, 96, 100), (1100, 300, 20)]
        {
            let a = rng.vec(m * k, -1.0, 1.0);
            let w = rng.vec(n * k, -1.0, 1.0); // PyTorch Linear layout (N, K)
            let bias = rng.vec(n, -1.0, 1.0);
            let residual = rng.vec(m * n, -1.0, 1.0);
            let packed = PackedB::pack(&w, k, n, 1, k);
            for e in [
                Epilogue::NONE,
                Epilogue { bias: Some(&bias), act: 1, ..Epilogue::NONE },
                Epilogue { bias: Some(&bias), act: 2, slope: 0.25, residual: Some(&residual), residual_first: false },
                Epilogue { act: 3, residual: Some(&residual), ..Epilogue::NONE },
                Epilogue {
                    bias: Some(&bias),
                    act: 1,
                    residual: Some(&residual),
                    residual_first: true,
                    ..Epilogue::NONE
                },
            ] {
                let want = reference(m, k, n, &a, &w, &e);
                for (build, block) in builds() {
                    let mut c = vec![f32::NAN; m * n];
                    gemm_with(block, m, &a, k, &packed.view(), &mut c, &e);
                    for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + want.abs());
                        let what = format!("{build} {m}x{k}x{n} act {} at {i}: {got} vs {want}", e.act);
                        assert!((*got as f64 - want).abs() <= tol, "{what}");
                    }
                }
            }
        }
    }

    /// A row stride wider than K (a view into a wider tensor) reads only each row's first K.
    #[test]
    fn packed_gemm_honours_the_row_stride() {
        let mut rng = Rng::new(4);
        let (m, k, n, lda) = (9, 20, 18, 31);
        let a = rng.vec(m * lda, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let dense: Vec<f32> = (0..m).flat_map(|i| a[i * lda..i * lda + k].to_vec()).collect();
        let packed = PackedB::pack(&w, k, n, 1, k);
        let mut c = vec![0.0; m * n];
        gemm(m, &a, lda, &packed, &mut c, &Epilogue::NONE);
        let want = reference(m, k, n, &dense, &w, &Epilogue::NONE);
        for (got, want) in c.iter().zip(&want) {
            assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
        }
    }
}
