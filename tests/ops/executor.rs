//! The graph executor: a multi-op graph planned once runs many forwards with one submit and one
//! readback each, reuses buffers, matches the op-by-op CPU result, and the GPU-test rule
//! (fail under MOMENT_REQUIRE_GPU=1, skip loudly otherwise) holds.

use moment_gpu::ops::matmul::{linear, linear_residual, matmul};
use moment_gpu::ops::Act;
use moment_gpu::testing::{assert_close, gpu, run_cpu, Rng, Tolerance};
use moment_gpu::{ConstCache, Device, Executable, Graph};

const TOL: Tolerance = Tolerance::new(2e-5, 1e-5);

struct Mlp {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
}

const ROWS: usize = 11;
const D_IN: usize = 19;
const D_HID: usize = 40;

impl Mlp {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Mlp {
            w1: rng.vec(D_HID * D_IN, -0.5, 0.5),
            b1: rng.vec(D_HID, -0.5, 0.5),
            w2: rng.vec(D_IN * D_HID, -0.5, 0.5),
        }
    }

    /// y = x + W2·relu(W1·x + b1);  s = y·yᵀ  — three dispatches, two outputs.
    fn build(&self, g: &mut Graph) {
        let x = g.input("x", &[1, ROWS, D_IN]);
        let w1 = g.constant(self.w1.clone().into(), &[D_HID, D_IN]).unwrap();
        let b1 = g.constant(self.b1.clone().into(), &[D_HID]).unwrap();
        let w2 = g.constant(self.w2.clone().into(), &[D_IN, D_HID]).unwrap();
        let h = linear(g, x, w1, Some(b1), Act::Relu).unwrap();
        let y = linear_residual(g, h, w2, None, Act::None, Some(x)).unwrap();
        let s = matmul(g, y, y, true).unwrap();
        g.output("y", y);
        g.output("s", s);
    }

    /// The same forward computed one op at a time, each op its own CPU graph.
    fn op_by_op(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let h = run_cpu(
            |g| {
                let xi = g.input("x", &[ROWS, D_IN]);
                let w1 = g.constant(self.w1.clone().into(), &[D_HID, D_IN]).unwrap();
                let b1 = g.constant(self.b1.clone().into(), &[D_HID]).unwrap();
                let h = linear(g, xi, w1, Some(b1), Act::Relu).unwrap();
                g.output("h", h);
            },
            &[("x", x)],
        );
        let y = run_cpu(
            |g| {
                let hi = g.input("h", &[ROWS, D_HID]);
                let xi = g.input("x", &[ROWS, D_IN]);
                let w2 = g.constant(self.w2.clone().into(), &[D_IN, D_HID]).unwrap();
                let y = linear_residual(g, hi, w2, None, Act::None, Some(xi)).unwrap();
                g.output("y", y);
            },
            &[("h", h.get("h")), ("x", x)],
        );
        let s = run_cpu(
            |g| {
                let yi = g.input("y", &[1, ROWS, D_IN]);
                let s = matmul(g, yi, yi, true).unwrap();
                g.output("s", s);
            },
            &[("y", y.get("y"))],
        );
        (y.get("y").to_vec(), s.get("s").to_vec())
    }
}

#[test]
fn one_submit_one_readback_and_matches_op_by_op() {
    let Some(gpu) = gpu() else { return };
    let mlp = Mlp::new(7);
    let mut g = Graph::new();
    mlp.build(&mut g);
    let consts = ConstCache::new();
    let mut exe = Executable::new(g, &gpu, &consts).unwrap();
    let mut rng = Rng::new(8);
    for forward in 0..2 {
        let x = rng.vec(ROWS * D_IN, -1.0, 1.0);
        let out = exe.run(&[("x", &x)]).unwrap();
        let (y, s) = mlp.op_by_op(&x);
        assert_close(&format!("forward {forward}: y"), out.get("y"), &y, TOL);
        assert_close(&format!("forward {forward}: s"), out.get("s"), &s, Tolerance::new(1e-4, 1e-5));
        assert_eq!(out.shape("s"), &[1, ROWS, ROWS]);
        let stats = exe.stats();
        assert_eq!(stats.dispatches, 3);
        assert_eq!(stats.submits, 1, "one submit per forward");
        assert_eq!(stats.readbacks, 1, "one readback per forward");
        assert_eq!(stats.bytes_read_back, 4 * (ROWS * D_IN + ROWS * ROWS), "only the outputs come back");
    }
}

#[test]
fn cpu_backends_run_the_same_graph() {
    let mlp = Mlp::new(9);
    let x = Rng::new(10).vec(ROWS * D_IN, -1.0, 1.0);
    let (y, s) = mlp.op_by_op(&x);
    // The reference twins, planned as one graph: bit-identical to running them op by op.
    let mut g = Graph::new();
    mlp.build(&mut g);
    let out = Executable::new_cpu_reference(g).unwrap().run(&[("x", &x)]).unwrap();
    assert_eq!(out.get("y"), &y[..]);
    assert_eq!(out.get("s"), &s[..]);
    // The CPU backend's fast kernels (GEMM library): within the matmul tolerance.
    let mut g = Graph::new();
    mlp.build(&mut g);
    let out = Executable::new(g, &Device::Cpu, &ConstCache::new()).unwrap().run(&[("x", &x)]).unwrap();
    assert_close("fast y", out.get("y"), &y, TOL);
    assert_close("fast s", out.get("s"), &s, Tolerance::new(1e-4, 1e-5));
}

/// A chain of 6 linears: with liveness planning only two activation slots are needed, so the
/// peak is far below the sum of all intermediates; the weight they share (six graph constants
/// of one `Arc`, as a model's shared head) counts once.
#[test]
fn plan_reuses_buffers() {
    let mut g = Graph::new();
    let d = 64;
    let x = g.input("x", &[8, d]);
    let shared: std::sync::Arc<[f32]> = vec![0.01; d * d].into();
    let mut h = x;
    for _ in 0..6 {
        let w = g.constant(shared.clone(), &[d, d]).unwrap();
        h = linear(&mut g, h, w, None, Act::Relu).unwrap();
    }
    g.output("h", h);
    let exe = Executable::new(g, &Device::Cpu, &ConstCache::new()).unwrap();
    let one = 8 * d * 4;
    // input + two ping-pong slots (the output keeps one of them)
    assert_eq!(exe.stats().peak_activation_bytes, 3 * one);
    assert_eq!(exe.stats().weight_bytes, d * d * 4);
}

#[test]
fn missing_or_mis_sized_inputs_are_errors() {
    let mlp = Mlp::new(11);
    let mut g = Graph::new();
    mlp.build(&mut g);
    let mut exe = Executable::new(g, &Device::Cpu, &ConstCache::new()).unwrap();
    let err = exe.run(&[]).unwrap_err().to_string();
    assert!(err.contains("input `x`") && err.contains("not given"), "{err}");
    let err = exe.run(&[("x", &[1.0, 2.0])]).unwrap_err().to_string();
    assert!(err.contains("input `x`") && err.contains("expected 209 values"), "{err}");
}

/// Re-runs one GPU test of this binary in a child process with no Vulkan driver visible.
fn run_without_adapter(require: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["executor::one_submit_one_readback_and_matches_op_by_op", "--exact", "--nocapture"])
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("WGPU_BACKEND", "vulkan")
        .env_remove("CI")
        .env_remove("MOMENT_REQUIRE_GPU");
    if require {
        cmd.env("MOMENT_REQUIRE_GPU", "1");
    }
    cmd.output().unwrap()
}

#[test]
fn gpu_tests_fail_when_a_gpu_is_required_and_skip_loudly_otherwise() {
    let required = run_without_adapter(true);
    let text = String::from_utf8_lossy(&required.stdout).to_string() + &String::from_utf8_lossy(&required.stderr);
    assert!(!required.status.success(), "with MOMENT_REQUIRE_GPU=1 and no adapter the GPU test must fail:\n{text}");
    assert!(
        text.contains("apt-get install -y mesa-vulkan-drivers libvulkan1"),
        "failure must say how to install:\n{text}"
    );

    let optional = run_without_adapter(false);
    let text = String::from_utf8_lossy(&optional.stdout).to_string() + &String::from_utf8_lossy(&optional.stderr);
    assert!(optional.status.success(), "without MOMENT_REQUIRE_GPU a missing adapter skips:\n{text}");
    assert!(text.contains("SKIPPING GPU TESTS"), "the skip must be loud:\n{text}");
}

/// Reshapes are free aliases: a reshaped input feeds a kernel and a reshaped result is an output.
#[test]
fn reshape_aliases_share_storage() {
    let w: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
    let build = |g: &mut Graph| {
        let x = g.input("x", &[2, 6]);
        let x3 = g.reshape(x, &[3, 4]).unwrap();
        let wi = g.constant(w.clone().into(), &[2, 4]).unwrap();
        let y = linear(g, x3, wi, None, Act::None).unwrap();
        let flat = g.reshape(y, &[6]).unwrap();
        g.output("flat", flat);
    };
    let x: Vec<f32> = (0..12).map(|i| i as f32).collect();
    // Row r of x3 is x[4r..4r+4]; output (r, c) = Σ_k x3[r,k]·w[c,k].
    let want: Vec<f32> = (0..6).map(|i| (0..4).map(|k| x[(i / 2) * 4 + k] * w[(i % 2) * 4 + k]).sum()).collect();
    let cpu = run_cpu(build, &[("x", &x)]);
    assert_eq!(cpu.shape("flat"), &[6]);
    assert_close("reshape cpu", cpu.get("flat"), &want, Tolerance::new(1e-6, 0.0));
    if let Some(gpu) = gpu() {
        let (_, gpu_out) = moment_gpu::testing::run_cpu_and_gpu(&gpu, build, &[("x", &x)]);
        assert_close("reshape gpu", gpu_out.get("flat"), &want, Tolerance::new(1e-6, 0.0));
    }
}
