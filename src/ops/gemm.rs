//! The CPU backend's GEMM for products with a constant right operand (every Linear, every 1×1
//! conv): `c = act(a · b + bias) + residual`.
//!
//! General-purpose SGEMM crates re-pack the right operand on every call; at inference batch
//! sizes (M = 10 to a few thousand rows) that packing costs as much as the arithmetic. Weights
//! are constants, so here they are packed once into column panels of [`PANEL`] columns laid
//! out K-major on 64-byte boundaries ([`Panels`]); a forward then only streams them. Linear
//! weights are held in this form from their first use on ([`linear_panels`]); other weights
//! are packed at plan time. The register-tiled micro-kernel is built three times: AVX-512 (in
//! intrinsics), AVX2 + FMA (plain Rust that LLVM vectorises; chosen at run time on x86-64) and
//! portable, each also as a few-rows build for one- and two-row products. The epilogue (bias,
//! activation, residual) is applied while the tile is still in cache. Tiles are spread over
//! the CPU backend's [`pool`]; small products stay on the calling thread.

use std::sync::{Arc, OnceLock};

use super::{activate, pool, SharedOut};

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

/// Below this many multiply-adds a product runs on one thread (fork/join costs more)...
pub(super) const PARALLEL_MIN_MACS: usize = 1 << 18;

/// ...unless `b` has this many values: a product of few rows is bound by reading `b`, and
/// two cores read it twice as fast (the GRU's one-row step).
const PARALLEL_MIN_WEIGHTS: usize = 1 << 17;

/// One panel row: [`PANEL`] values on a cache line of their own. Panels are built of these so
/// that no vector load straddles two lines (a 16-byte offset, as `malloc` gives, doubled the
/// time of a one-row product).
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
pub struct Line(pub [f32; PANEL]);

/// Packed panels on 64-byte boundaries, shared by every graph that reads them.
#[derive(Clone, Debug)]
pub struct Panels(Arc<[Line]>);

impl Panels {
    /// `len` values (a multiple of [`PANEL`]) written by `fill`.
    fn new(len: usize, fill: impl FnOnce(&mut [f32])) -> Self {
        // Allocated once, in place (a Vec turned into an Arc would be copied).
        let mut lines: Arc<[Line]> = std::iter::repeat_n(Line::default(), len / PANEL).collect();
        fill(bytemuck::cast_slice_mut(Arc::get_mut(&mut lines).expect("just made")));
        Panels(lines)
    }

    pub fn as_ptr(&self) -> *const f32 {
        self.0.as_ptr() as *const f32
    }
}

impl AsRef<[f32]> for Panels {
    fn as_ref(&self) -> &[f32] {
        bytemuck::cast_slice(&self.0)
    }
}

/// The right operand `b (K, N)`, packed: panel `p` holds columns `p·PANEL ..` as K rows of
/// `PANEL` values (zero-padded past N). Shares its panels (weights, packed once) or borrows
/// them (activations packed per call into scratch, as attention's keys and values).
#[derive(Debug)]
pub struct PackedB<D = Panels> {
    k: usize,
    n: usize,
    data: D,
}

/// Values a packed `(k, n)` operand occupies.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

impl<'a> PackedB<&'a [f32]> {
    /// Packs `b (k, n)` whose row `kk` is the contiguous slice `row(kk)` (length ≥ n) into
    /// `buffer`: each row lands as whole 16-value runs (attention's values).
    pub fn pack_rows_into<'r>(buffer: &'a mut [f32], k: usize, n: usize, row: impl Fn(usize) -> &'r [f32]) -> Self {
        let data = &mut buffer[..packed_len(k, n)];
        for kk in 0..k {
            let src = &row(kk)[..n];
            for (p, chunk) in src.chunks(PANEL).enumerate() {
                let dst = &mut data[(p * k + kk) * PANEL..][..PANEL];
                dst[..chunk.len()].copy_from_slice(chunk);
                dst[chunk.len()..].fill(0.0);
            }
        }
        PackedB { k, n, data }
    }

    /// Packs `b (k, n)` whose column `j` is the contiguous slice `column(j)` (length ≥ k) into
    /// `buffer`: reads stay sequential (attention's keys, where `b = Kᵀ`).
    pub fn pack_columns_into<'c>(
        buffer: &'a mut [f32],
        k: usize,
        n: usize,
        column: impl Fn(usize) -> &'c [f32],
    ) -> Self {
        let data = &mut buffer[..packed_len(k, n)];
        for (p, panel) in data.chunks_exact_mut(k * PANEL).enumerate() {
            // The panel's columns (an empty one past n), then row by row: writes stay
            // sequential and each column's reads walk forward.
            let cols: [&[f32]; PANEL] = std::array::from_fn(|j| {
                let col = p * PANEL + j;
                if col < n {
                    &column(col)[..k]
                } else {
                    &[]
                }
            });
            for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
                for (v, col) in row.iter_mut().zip(&cols) {
                    *v = col.get(kk).copied().unwrap_or(0.0);
                }
            }
        }
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

    /// Where the panels lie (tells shared panels apart).
    pub fn data_ptr(&self) -> usize {
        self.data.as_ref().as_ptr() as usize
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
        let data = Panels::new(packed_len(k, n), |data| fill_panels(data, k, n, value));
        PackedB { k, n, data }
    }

    /// Panels already packed by [`linear_panels`], shared rather than copied.
    pub fn from_panels(data: Panels, k: usize, n: usize) -> Self {
        assert_eq!(data.as_ref().len(), packed_len(k, n), "panels of a ({k}, {n}) operand");
        PackedB { k, n, data }
    }
}

/// A PyTorch `Linear` weight `w (N, K)` as the panels of `b = wᵀ`: how the CPU backend holds
/// its weights (in place of the checkpoint layout, not beside it).
pub fn linear_panels(w: &[f32], n: usize, k: usize) -> Panels {
    PackedB::pack(w, k, n, 1, k).data
}

/// The `Linear` weight `w (N, K)` back from [`linear_panels`] (exact: packing only moves values).
pub fn linear_from_panels(panels: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; n * k];
    for (j, row) in w.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        let panel = &panels[(j / PANEL) * k * PANEL..];
        for (kk, v) in row.iter_mut().enumerate() {
            *v = panel[kk * PANEL + j % PANEL];
        }
    }
    w
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
    let kernel = kernel();
    let block = if m <= FEW_ROWS { kernel.few_rows } else { kernel.block };
    gemm_with(block, m, a, lda, &b.view(), c, epilogue)
}

/// [`gemm`] with a given micro-kernel build (tests run every build this CPU has).
fn gemm_with(block: BlockFn, m: usize, a: &[f32], lda: usize, b: &PackedB<&[f32]>, c: &mut [f32], epilogue: &Epilogue) {
    let (k, n) = (b.k, b.n);
    assert!(m == 0 || a.len() >= (m - 1) * lda + k, "left operand too short");
    assert!(c.len() >= m * n, "output too short");
    if m == 0 || n == 0 {
        return;
    }
    // Blocks of equal height (2400 rows at K = 256: 5 × 480, not 4 × 512 + 352), so the
    // pool's last tasks are not a lone short one.
    let row_blocks = m.div_ceil(row_block(k));
    let rb_rows = m.div_ceil(row_blocks).next_multiple_of(12);
    let panels = n.div_ceil(PANEL);
    let tile = |rows: std::ops::Range<usize>, panels: std::ops::Range<usize>, c: SharedOut| {
        // SAFETY: tasks write disjoint (rows × panel columns) regions of `c`, checked above.
        unsafe { block(a, lda, b, rows, panels, c, epilogue) }
    };
    let out = SharedOut::new(&mut c[..m * n]);
    let threads = pool::threads();
    if (m * n * k < PARALLEL_MIN_MACS && n * k < PARALLEL_MIN_WEIGHTS) || threads == 1 {
        for rb in 0..row_blocks {
            tile(rb * rb_rows..((rb + 1) * rb_rows).min(m), 0..panels, out);
        }
        return;
    }
    // Enough tasks to balance the pool, each a run of panels over one row block.
    let groups = (4 * threads).div_ceil(row_blocks).clamp(1, panels);
    let per_group = panels.div_ceil(groups);
    let groups = panels.div_ceil(per_group);
    // Inside another kernel's task (attention's heads) this runs serially on that thread.
    pool::for_each(row_blocks * groups, |t| {
        let (rb, g) = (t / groups, t % groups);
        let rows = rb * rb_rows..((rb + 1) * rb_rows).min(m);
        tile(rows, g * per_group..((g + 1) * per_group).min(panels), out);
    });
}

type BlockFn =
    unsafe fn(&[f32], usize, &PackedB<&[f32]>, std::ops::Range<usize>, std::ops::Range<usize>, SharedOut, &Epilogue);

struct Kernel {
    block: BlockFn,
    /// For products of at most [`FEW_ROWS`] rows: tiles wider in panels, so enough independent
    /// sums are in flight to hide the multiply-add latency (the GRU's one-row step).
    few_rows: BlockFn,
    isa: &'static str,
}

/// Products of this many rows or fewer use [`Kernel::few_rows`]. Those builds prefetch
/// nothing: their loop then keeps its pointers in registers (with the prefetch arithmetic it
/// spilled them and ran at half speed), and their main case, the GRU's recurrent weights,
/// sits in L2 anyway.
const FEW_ROWS: usize = 2;

/// The best micro-kernel this CPU runs, chosen once.
fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel { block: x86::block_avx512, few_rows: x86::few_rows_avx512, isa: "AVX-512" };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel { block: x86::block_avx2, few_rows: x86::few_rows_avx2, isa: "AVX2+FMA" };
            }
        }
        Kernel { block: block_portable, few_rows: few_rows_portable, isa: "portable" }
    })
}

/// Name of the micro-kernel in use (for `moment info` and bench reports).
pub fn isa() -> &'static str {
    kernel().isa
}

/// One row block × a run of panels, with micro-tiles of `MR` rows × `NP` panels.
///
/// Weights are read once per forward, mostly from memory: while the row tiles of one run of
/// `NP` panels compute, they prefetch the next run (one cache line per step of the dot
/// product, spread over the tiles), so its first tile does not wait on memory.
///
/// # Safety
/// `out` must address an `(rows.end) × n` row-major matrix no other thread writes in these
/// rows × panel columns.
#[inline(always)]
unsafe fn block<const MR: usize, const NP: usize, const ISA: u8, const PF: bool>(
    a: &[f32],
    lda: usize,
    b: &PackedB<&[f32]>,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    out: SharedOut,
    epilogue: &Epilogue,
) {
    let tiles = rows.len().div_ceil(MR);
    let (base_rows, extra_rows) = (rows.len() / tiles.max(1), rows.len() % tiles.max(1));
    // Lines of the next run: one per panel row (PANEL floats = 64 bytes). Tile `r` at step
    // `kk` prefetches line `(r·k + kk) >> shift`, which covers them all once spread. Tall
    // blocks reuse each run long enough for the hardware prefetcher: none there.
    let shift = (tiles / NP).max(1).ilog2();
    let mut p = panels.start;
    while p < panels.end {
        let np = NP.min(panels.end - p);
        let next_np = NP.min(panels.end.saturating_sub(p + np));
        let ahead = Prefetch {
            lines: b.data[(p + np).min(b.n.div_ceil(PANEL)) * b.k * PANEL..].as_ptr(),
            count: if tiles > PREFETCH_MAX_TILES { 0 } else { next_np * b.k },
            first: 0,
            shift,
        };
        let mut i = rows.start;
        let mut r = 0;
        while i < rows.end {
            // Rows spread evenly over the tiles (75 rows: 5 × 11 + 2 × 10, not 6 × 12 + 3): a
            // thin last tile has too few sums to keep the FMA units busy.
            let mr = base_rows + usize::from(r < extra_rows);
            let a = unsafe { a.as_ptr().add(i * lda) };
            let ahead = Prefetch { first: r * b.k, ..ahead };
            // SAFETY: rows i .. i + mr and panels p .. p + np exist.
            if np == NP {
                unsafe { tile::<MR, NP, ISA, PF>(mr, a, lda, b, p, i, out, epilogue, ahead) }
            } else {
                for q in p..p + np {
                    unsafe { tile::<MR, 1, ISA, PF>(mr, a, lda, b, q, i, out, epilogue, ahead) }
                }
            }
            i += mr;
            r += 1;
        }
        p += NP;
    }
}

/// Which lines of the next panels a micro-tile prefetches: line `(first + kk) >> shift` at
/// step `kk`, while it is below `count`.
#[derive(Clone, Copy)]
struct Prefetch {
    lines: *const f32,
    count: usize,
    first: usize,
    shift: u32,
}

impl Prefetch {
    #[inline(always)]
    fn at(&self, kk: usize) {
        let line = (self.first + kk) >> self.shift;
        if line < self.count {
            // SAFETY: the line lies inside the packed panels (count lines from `lines`).
            prefetch::<false>(unsafe { self.lines.add(line * PANEL) });
        }
    }
}

/// Blocks of more micro-tiles than this do not prefetch the next run of panels.
const PREFETCH_MAX_TILES: usize = 8;

/// Steps of the dot product a short tile asks for its lines of `b` ahead.
const L1_AHEAD: usize = 24;

/// Asks for the cache line at `p` into L1 or L2 (a hint: no fault, no effect on results).
#[inline(always)]
fn prefetch<const L1: bool>(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; any address is allowed.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        if L1 {
            _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
        } else {
            _mm_prefetch::<_MM_HINT_T1>(p as *const i8)
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The micro-tile of `mr ≤ MR` rows × `Q` panels at row `row0`, panel `p`: the height is a
/// type parameter, so edge rows run at full vector width too.
///
/// # Safety
/// As [`micro`] for `mr` rows and `Q` panels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const MR: usize, const Q: usize, const ISA: u8, const PF: bool>(
    mr: usize,
    a: *const f32,
    lda: usize,
    b: &PackedB<&[f32]>,
    p: usize,
    row0: usize,
    out: SharedOut,
    e: &Epilogue,
    ahead: Prefetch,
) {
    macro_rules! rows {
        ($($r:literal)*) => {
            match mr {
                $($r if $r <= MR => unsafe { micro::<$r, Q, ISA, PF>(a, lda, b, p, row0, out, e, ahead) },)*
                _ => unreachable!("micro-tiles are at most 12 rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// Rows `row0 .. row0 + MR`, panels `p .. p + NP` of the output: `Σ_k a[r·lda + k] ·
/// panel(p + q)[k][j]` in registers, then [`store`] with the epilogue.
///
/// # Safety
/// Rows `0..MR` of `a` (stride `lda`) hold `b.k` values each, panels `p .. p + NP` exist, and
/// `out` is as in [`block`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const MR: usize, const NP: usize, const ISA: u8, const PF: bool>(
    a: *const f32,
    lda: usize,
    b: &PackedB<&[f32]>,
    p: usize,
    row0: usize,
    out: SharedOut,
    e: &Epilogue,
    ahead: Prefetch,
) {
    let k = b.k;
    // K in chunks, each summed in registers from zero and then added to the total: a long dot
    // product then rounds like a sum of short ones (as blocked BLAS and the GPU tiles do).
    let mut total = unsafe { chunk::<MR, NP, ISA, PF>(a, lda, b, p, 0..k.min(K_CHUNK), ahead) };
    let mut k0 = K_CHUNK;
    while k0 < k {
        let part = unsafe { chunk::<MR, NP, ISA, PF>(a, lda, b, p, k0..(k0 + K_CHUNK).min(k), ahead) };
        for (total, part) in total.iter_mut().zip(&part) {
            for (total, part) in total.iter_mut().zip(part) {
                total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
            }
        }
        k0 += K_CHUNK;
    }
    unsafe { store(&total, row0, MR, p, NP, b.n, out, e) }
}

/// Few rows reuse each line of `b` too little to hide its trip from L2: such tiles ask for
/// their lines early, into L1.
#[inline(always)]
fn prefetch_short_tile<const MR: usize, const NP: usize>(panels: *const f32, k: usize, kk: usize) {
    if MR * NP <= 4 {
        (0..NP).for_each(|q| prefetch::<true>(panels.wrapping_add((q * k + kk + L1_AHEAD) * PANEL)));
    }
}

/// How a [`block`] build computes: multiplies then adds (no FMA instruction), fused
/// multiply-adds in code LLVM vectorises, or AVX-512 intrinsics (LLVM split some tile shapes
/// of the vectorised code, the one-row tile among them, into 128- and 256-bit pieces).
const PLAIN: u8 = 0;
const FMA: u8 = 1;
const ZMM: u8 = 2;

/// `Σ_{k ∈ ks} a[r·lda + k] · panel(p + q)[k][j]` from zero.
///
/// # Safety
/// As [`micro`].
#[inline(always)]
unsafe fn chunk<const MR: usize, const NP: usize, const ISA: u8, const PF: bool>(
    a: *const f32,
    lda: usize,
    b: &PackedB<&[f32]>,
    p: usize,
    ks: std::ops::Range<usize>,
    ahead: Prefetch,
) -> [[[f32; PANEL]; NP]; MR] {
    #[cfg(target_arch = "x86_64")]
    if ISA == ZMM {
        return unsafe { x86::chunk_zmm::<MR, NP, PF>(a, lda, b, p, ks, ahead) };
    }
    let k = b.k;
    let panels = unsafe { b.data.as_ptr().add(p * k * PANEL) };
    // One running sum per output, in K order, whatever the tile height: a row's result must
    // not depend on how many rows share its tile (a padded batch equals its single runs).
    let mut part = [[[0.0f32; PANEL]; NP]; MR];
    for kk in ks {
        if PF {
            ahead.at(kk);
            prefetch_short_tile::<MR, NP>(panels, k, kk);
        }
        // SAFETY: in bounds by the contract above; raw reads keep bounds checks out of the loop
        // LLVM turns into broadcast-FMAs.
        let bv: [[f32; PANEL]; NP] =
            std::array::from_fn(|q| unsafe { *(panels.add((q * k + kk) * PANEL) as *const [f32; PANEL]) });
        for (r, part) in part.iter_mut().enumerate() {
            let x = unsafe { *a.add(r * lda + kk) };
            for q in 0..NP {
                for j in 0..PANEL {
                    // `mul_add` is one instruction only where the target has FMA; elsewhere it
                    // is a libm call, so the portable build multiplies and adds.
                    part[q][j] = if ISA == PLAIN { x * bv[q][j] + part[q][j] } else { x.mul_add(bv[q][j], part[q][j]) };
                }
            }
        }
    }
    part
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
    for (r, acc_row) in acc.iter().enumerate().take(mr) {
        let at = (row0 + r) * n + col0;
        // SAFETY: (row0 + r, col0 .. col0 + cols) lies inside this task's region of `out`.
        let dst = unsafe { out.part(at, cols) };
        for (q, values) in acc_row.iter().enumerate().take(np) {
            let c = q * PANEL;
            let bias = e.bias.map(|b| &b[col0 + c..]);
            let residual = e.residual.map(|res| &res[at + c..]);
            if cols - c >= PANEL {
                // A whole panel: fixed-size arrays, so the epilogue stays in one register and
                // the store is one vector write (no memmove call per row).
                let mut v = *values;
                epilogue(&mut v, bias.map(|b| &b[..PANEL]), residual.map(|r| &r[..PANEL]), e);
                *<&mut [f32; PANEL]>::try_from(&mut dst[c..c + PANEL]).unwrap() = v;
            } else {
                let w = cols - c;
                let mut v = *values;
                epilogue(&mut v[..w], bias.map(|b| &b[..w]), residual.map(|r| &r[..w]), e);
                dst[c..].copy_from_slice(&v[..w]);
            }
        }
    }
}

/// `act(x + bias) + residual` (or `act(x + bias + residual)`) over one run of output values;
/// one branch-free pass per part, so each vectorises.
#[inline(always)]
fn epilogue(x: &mut [f32], bias: Option<&[f32]>, residual: Option<&[f32]>, e: &Epilogue) {
    if let Some(bias) = bias {
        x.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
    if let (Some(res), true) = (residual, e.residual_first) {
        x.iter_mut().zip(res).for_each(|(x, r)| *x += r);
    }
    match e.act {
        0 => {}
        1 => x.iter_mut().for_each(|x| *x = x.max(0.0)),
        // PReLU as a select, so it vectorises like the others.
        2 => x.iter_mut().for_each(|x| *x = if *x >= 0.0 { *x } else { e.slope * *x }),
        _ => x.iter_mut().for_each(|x| *x = activate(*x, e.act, e.slope)),
    }
    if let (Some(res), false) = (residual, e.residual_first) {
        x.iter_mut().zip(res).for_each(|(x, r)| *x += r);
    }
}

/// The portable build fuses where its target has a multiply-add instruction.
const PORTABLE_ISA: u8 = if cfg!(any(target_arch = "aarch64", target_feature = "fma")) { FMA } else { PLAIN };

/// A [`block`] build: `$name`, compiled with `$features` (none: the portable build), micro-tile
/// `$mr` rows × `$np` panels, computing as `$isa` says; `$prefetch`: whether it prefetches
/// the weights ahead (not the few-rows builds, see [`FEW_ROWS`]).
macro_rules! block_build {
    ($(#[$doc:meta])* $name:ident, [$($features:literal)?], $mr:literal, $np:literal, $isa:expr, $prefetch:literal) => {
        $(#[$doc])*
        $(#[target_feature(enable = $features)])?
        pub(super) unsafe fn $name(
            a: &[f32],
            lda: usize,
            b: &PackedB<&[f32]>,
            rows: std::ops::Range<usize>,
            panels: std::ops::Range<usize>,
            out: SharedOut,
            e: &Epilogue,
        ) {
            unsafe { block::<$mr, $np, $isa, $prefetch>(a, lda, b, rows, panels, out, e) }
        }
    };
}

block_build!(
    /// Portable build: 6 rows × 1 panel (NEON and SSE both hold it in registers).
    block_portable, [], 6, 1, PORTABLE_ISA, true
);
block_build!(
    /// Portable build for few rows: 2 rows × 2 panels.
    few_rows_portable, [], 2, 2, PORTABLE_ISA, false
);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    block_build!(
        /// 12 rows × 2 panels: 24 of the 32 zmm registers accumulate.
        block_avx512, ["avx512f,fma"], 12, 2, ZMM, true
    );
    block_build!(
        /// 6 rows × 1 panel (two ymm each): 12 of the 16 ymm registers accumulate.
        block_avx2, ["avx2,fma"], 6, 1, FMA, true
    );
    block_build!(
        /// 2 rows × 4 panels: one row keeps 4 zmm sums in flight.
        few_rows_avx512, ["avx512f,fma"], 2, 4, ZMM, false
    );
    block_build!(
        /// 2 rows × 3 panels (two ymm each).
        few_rows_avx2, ["avx2,fma"], 2, 3, FMA, false
    );

    /// [`chunk`] in AVX-512 intrinsics: one zmm register per panel row of each output row,
    /// the same operations in the same order (so the same results).
    ///
    /// # Safety
    /// As [`chunk`], on a CPU with AVX-512F and FMA (only inlined into `block_avx512`).
    #[inline(always)]
    pub(super) unsafe fn chunk_zmm<const MR: usize, const NP: usize, const PF: bool>(
        a: *const f32,
        lda: usize,
        b: &PackedB<&[f32]>,
        p: usize,
        ks: std::ops::Range<usize>,
        ahead: Prefetch,
    ) -> [[[f32; PANEL]; NP]; MR] {
        use std::arch::x86_64::{
            _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        };
        let k = b.k;
        // SAFETY (all below): in bounds by the contract of `chunk`; the caller runs AVX-512F.
        unsafe {
            let panels = b.data.as_ptr().add(p * k * PANEL);
            let mut acc = [[_mm512_setzero_ps(); NP]; MR];
            for kk in ks {
                if PF {
                    ahead.at(kk);
                    prefetch_short_tile::<MR, NP>(panels, k, kk);
                }
                let bv: [_; NP] = std::array::from_fn(|q| _mm512_loadu_ps(panels.add((q * k + kk) * PANEL)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * lda + kk));
                    for q in 0..NP {
                        acc[q] = _mm512_fmadd_ps(x, bv[q], acc[q]);
                    }
                }
            }
            let mut part = [[[0.0f32; PANEL]; NP]; MR];
            for (part, acc) in part.iter_mut().zip(&acc) {
                for (part, acc) in part.iter_mut().zip(acc) {
                    _mm512_storeu_ps(part.as_mut_ptr(), *acc);
                }
            }
            part
        }
    }
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

    /// The packers for activations lay values out exactly as the one for weights.
    #[test]
    fn row_and_column_packers_match_from_fn() {
        let mut rng = Rng::new(5);
        let (k, n) = (7, 37);
        let b = rng.vec(k * n, -1.0, 1.0); // b[kk][j] row-major
        let bt: Vec<f32> = (0..n).flat_map(|j| (0..k).map(|kk| b[kk * n + j]).collect::<Vec<_>>()).collect();
        let want = PackedB::from_fn(k, n, |kk, j| b[kk * n + j]);
        let mut buf = vec![f32::NAN; packed_len(k, n)];
        let rows = PackedB::pack_rows_into(&mut buf, k, n, |kk| &b[kk * n..(kk + 1) * n]);
        assert_eq!(rows.data, want.data.as_ref());
        let mut buf = vec![f32::NAN; packed_len(k, n)];
        let cols = PackedB::pack_columns_into(&mut buf, k, n, |j| &bt[j * k..(j + 1) * k]);
        assert_eq!(cols.data, want.data.as_ref());
    }

    /// A Linear weight survives the trip to panels and back exactly, ragged last panel included.
    #[test]
    fn linear_panels_round_trip() {
        let mut rng = Rng::new(6);
        for (n, k) in [(1, 1), (16, 3), (37, 5), (64, 9)] {
            let w = rng.vec(n * k, -1.0, 1.0);
            let panels = linear_panels(&w, n, k);
            assert_eq!(panels.as_ref().len(), packed_len(k, n));
            assert_eq!(panels.as_ptr() as usize % 64, 0, "panels start on a cache line");
            assert_eq!(linear_from_panels(panels.as_ref(), n, k), w, "({n}, {k})");
        }
    }

    /// A row's result does not depend on the product it is part of: one or two rows (the
    /// few-rows builds) give bit for bit what the same rows give inside a tall product, so a
    /// padded batch equals its single runs.
    #[test]
    fn few_row_products_equal_their_rows_in_a_tall_one() {
        let mut rng = Rng::new(8);
        let (m, k, n) = (30, 300, 72);
        let a = rng.vec(m * k, -1.0, 1.0);
        let w = rng.vec(n * k, -1.0, 1.0);
        let bias = rng.vec(n, -1.0, 1.0);
        let packed = PackedB::pack(&w, k, n, 1, k);
        let e = Epilogue { bias: Some(&bias), act: 1, ..Epilogue::NONE };
        let mut tall = vec![0.0; m * n];
        gemm(m, &a, k, &packed, &mut tall, &e);
        for rows in [1, 2] {
            for first in [0, 13, m - rows] {
                let mut few = vec![0.0; rows * n];
                gemm(rows, &a[first * k..], k, &packed, &mut few, &e);
                assert_eq!(few, tall[first * n..(first + rows) * n], "{rows} rows from row {first}");
            }
        }
    }

    /// Every micro-kernel build this CPU can run.
    fn builds() -> Vec<(&'static str, BlockFn)> {
        let mut builds: Vec<(&'static str, BlockFn)> =
            vec![("portable", block_portable), ("portable few rows", few_rows_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                builds.push(("AVX2+FMA", x86::block_avx2));
                builds.push(("AVX2+FMA few rows", x86::few_rows_avx2));
            }
            if has!("avx512f") && has!("fma") {
                builds.push(("AVX-512", x86::block_avx512));
                builds.push(("AVX-512 few rows", x86::few_rows_avx512));
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
