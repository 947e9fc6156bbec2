//! Helpers shared by the test suites and benches: the one shared GPU device, the
//! "fail under CI, skip loudly elsewhere" rule, tolerance checks and a seeded generator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::device::{Device, Gpu};
use crate::graph::{ConstCache, Executable, Graph, Outputs};

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Whether the environment demands a GPU (`CI` set, or `MOMENT_REQUIRE_GPU=1`).
pub fn gpu_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
        || std::env::var("MOMENT_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// The one device all tests of a binary share (opening several devices concurrently is
/// unreliable). `None` means "skip": only allowed when no GPU is demanded; otherwise this panics
/// with the reason and how to install a software adapter.
pub fn gpu() -> Option<Device> {
    static GPU: OnceLock<Option<Arc<Gpu>>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| match Gpu::open(None, Default::default()) {
        Ok(g) => {
            eprintln!("moment-gpu tests: adapter {} ({:?}, {:?})", g.info.name, g.info.backend, g.info.device_type);
            Some(Arc::new(g))
        }
        Err(e) if gpu_required() => panic!(
            "CI or MOMENT_REQUIRE_GPU=1 demands a GPU adapter, and none is usable: {e}\n\
             install the software Vulkan driver (Debian/Ubuntu: apt-get install -y mesa-vulkan-drivers libvulkan1) or unset MOMENT_REQUIRE_GPU"
        ),
        Err(e) => {
            eprintln!("\n*** SKIPPING GPU TESTS: no usable adapter ({e}) ***\n");
            None
        }
    });
    match gpu {
        Some(g) => Some(Device::Gpu(g.clone())),
        None => {
            let n = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("*** SKIPPED GPU test #{n} in this binary: no adapter (set MOMENT_REQUIRE_GPU=1 to make this a failure) ***");
            None
        }
    }
}

/// Absolute + relative tolerance: `|got − want| ≤ atol + rtol·|want|` element-wise.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Tolerance {
    pub const fn new(atol: f32, rtol: f32) -> Self {
        Tolerance { atol, rtol }
    }
}

/// A second shared device on the same adapter, with f16 weights
/// ([`crate::DeviceOptions::f16_weights`]). `None` (skip, with a notice) where [`gpu`] skips or
/// the adapter lacks SHADER_F16 (a capability, not a missing GPU).
pub fn gpu_f16_weights() -> Option<Device> {
    let Device::Gpu(base) = gpu()? else { return None };
    if !base.features.contains(wgpu::Features::SHADER_F16) {
        eprintln!("*** SKIPPED f16-weights test: adapter {} has no SHADER_F16 ***", base.info.name);
        return None;
    }
    static GPU_F16: OnceLock<Arc<Gpu>> = OnceLock::new();
    let options = crate::DeviceOptions { f16_weights: true };
    let gpu = GPU_F16.get_or_init(|| Arc::new(Gpu::open(None, options).expect("open the adapter with f16 weights")));
    Some(Device::Gpu(gpu.clone()))
}

/// Panics with the worst element (index, values, error) when `got` and `want` differ by more
/// than `tol`, or differ in length, or `got` has a NaN where `want` has none.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs expected {}", got.len(), want.len());
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let bound = tol.atol + tol.rtol * w.abs();
        let bad = if w.is_nan() { !g.is_nan() } else { !(g == w || err <= bound) };
        if bad && worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        let bad =
            got.iter().zip(want).filter(|(g, w)| !(g == w || (*g - *w).abs() <= tol.atol + tol.rtol * w.abs())).count();
        panic!(
            "{what}: {bad} of {} values outside atol {} + rtol {}; worst at index {i}: got {}, expected {} (error {err})",
            got.len(),
            tol.atol,
            tol.rtol,
            got[i],
            want[i]
        );
    }
}

/// How far the CPU backend's fast kernels (packed GEMMs, other summation orders) may be from
/// the reference twins on every op test: float32 rounding of reordered sums, well inside every
/// op's GPU tolerance.
pub const FAST_CPU_TOLERANCE: Tolerance = Tolerance::new(2e-5, 2e-5);

/// Plans the graph `build` makes with the CPU reference twins and on `gpu`, runs both on
/// `inputs`, and returns (reference, gpu) outputs. On the way it also runs the CPU backend's
/// fast kernels and asserts them within [`FAST_CPU_TOLERANCE`] of the twins, so every op test
/// covers the fast path too.
pub fn run_cpu_and_gpu(gpu: &Device, build: impl Fn(&mut Graph), inputs: &[(&str, &[f32])]) -> (Outputs, Outputs) {
    let mut g = Graph::new();
    build(&mut g);
    let mut gpu_exe = Executable::new(g, gpu, &ConstCache::new()).expect("plan the graph");
    let reference = run_cpu(&build, inputs);
    let fast = run_cpu_fast(&build, inputs);
    let mut names: Vec<&String> = reference.tensors.keys().collect();
    names.sort();
    for name in names {
        let what = format!("CPU backend vs reference twin, output `{name}`");
        assert_close(&what, fast.get(name), reference.get(name), FAST_CPU_TOLERANCE);
    }
    (reference, gpu_exe.run(inputs).expect("run the graph"))
}

/// Runs a graph with the CPU reference twins.
pub fn run_cpu(build: impl Fn(&mut Graph), inputs: &[(&str, &[f32])]) -> Outputs {
    let mut g = Graph::new();
    build(&mut g);
    let mut exe = Executable::new_cpu_reference(g).expect("plan the graph");
    exe.run(inputs).expect("run the graph")
}

/// Runs a graph on the CPU backend's fast kernels.
pub fn run_cpu_fast(build: impl Fn(&mut Graph), inputs: &[(&str, &[f32])]) -> Outputs {
    let mut g = Graph::new();
    build(&mut g);
    let mut exe = Executable::new(g, &Device::Cpu, &ConstCache::new()).expect("plan the graph");
    exe.run(inputs).expect("run the graph")
}

/// A small seeded generator (xorshift64*), so fixtures need no extra crate.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A key-padding mask `(B, S)` (1 = valid, 0 = padded) with the given number of valid keys per
/// sample; a count of 0 makes a fully padded row.
pub fn padding_mask(valid: &[usize], s: usize) -> Vec<f32> {
    valid.iter().flat_map(|&v| (0..s).map(move |j| if j < v { 1.0 } else { 0.0 })).collect()
}
