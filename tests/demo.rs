//! The bundled demo: the model trained on synthetic data (weights/demo.safetensors) finds the
//! planted moment of the bundled example on the CPU and on the GPU with the same windows, and the
//! `moment` binary's default run works, says which backend it used and writes the plot.

use std::path::{Path, PathBuf};
use std::process::Command;

use moment_gpu::io::read_array;
use moment_gpu::models::{Model, Prediction};
use moment_gpu::testing::gpu;
use moment_gpu::Device;

fn bundled(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

fn truth_windows() -> Vec<[f64; 2]> {
    let text = std::fs::read_to_string(bundled("example_truth.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["relevant_windows"].as_array().unwrap().iter().map(|w| [w[0].as_f64().unwrap(), w[1].as_f64().unwrap()]).collect()
}

fn predict(device: &Device) -> Prediction {
    let model = Model::load(bundled("demo.safetensors"), device).expect("load the bundled demo model");
    let video = read_array(bundled("example_video.npy"), None, &[]).unwrap();
    let query = read_array(bundled("example_query.npy"), None, &[]).unwrap();
    let video = model.video_from_sources(&[video], &["example_video.npy".into()]).unwrap();
    let query = model.query_from_sources(&[query], &["example_query.npy".into()]).unwrap();
    model.predict(&video, &query).unwrap()
}

fn iou(a: [f64; 2], b: [f64; 2]) -> f64 {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)
}

fn assert_finds_truth(p: &Prediction, backend: &str) {
    let top = p.windows[0];
    let best = truth_windows().iter().map(|t| iou([top.start, top.end], *t)).fold(0.0, f64::max);
    assert!(best >= 0.5, "{backend}: top window [{}, {}] has IoU {best:.3} with the planted truth", top.start, top.end);
}

#[test]
fn demo_model_finds_the_planted_moment_on_cpu_and_gpu_alike() {
    let cpu = predict(&Device::Cpu);
    assert_eq!(cpu.windows.len(), 10);
    assert_finds_truth(&cpu, "CPU");
    let Some(gpu) = gpu() else { return };
    let on_gpu = predict(&gpu);
    assert_finds_truth(&on_gpu, "GPU");
    for (rank, (c, g)) in cpu.windows.iter().zip(&on_gpu.windows).enumerate() {
        assert_eq!((c.start, c.end), (g.start, g.end), "window #{} differs between CPU and GPU", rank + 1);
        assert!((c.score - g.score).abs() <= 2e-4, "window #{} score: CPU {} vs GPU {}", rank + 1, c.score, g.score);
    }
    let argmax = |s: &[f32]| s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    assert_eq!(argmax(&cpu.saliency), argmax(&on_gpu.saliency), "top saliency clip differs between CPU and GPU");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moment-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_moment(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moment"))
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .expect("run the moment binary");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "moment {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

fn assert_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg") && svg.contains("</svg>") && svg.contains("time (s)"), "{}", path.display());
}

#[test]
fn default_command_runs_the_demo_and_writes_the_plot() {
    let dir = temp_dir("default");
    let (stdout, stderr) = run_moment(&dir, &["--device", "cpu"], &[]);
    assert!(stdout.contains("SYNTHETIC"), "the demo must say its model is synthetic:\n{stdout}");
    assert!(stdout.contains("backend: CPU backend"), "no backend line:\n{stdout}");
    assert!(stderr.contains("running on CPU backend"), "{stderr}");
    assert!(stdout.contains("planted truth windows"), "{stdout}");
    assert_svg(&dir.join("demo.svg"));

    let (stdout, _) = run_moment(&dir, &["--device", "cpu", "demo", "--out", "sub.svg", "--top", "3"], &[]);
    assert!(stdout.contains("#3") && !stdout.contains("#4"), "{stdout}");
    assert_svg(&dir.join("sub.svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn default_command_falls_back_to_the_cpu_without_an_adapter() {
    // No Vulkan/Metal/DX12 backend enabled: wgpu finds no adapter, as on a machine without a driver.
    let dir = temp_dir("fallback");
    let (stdout, stderr) = run_moment(&dir, &[], &[("WGPU_BACKEND", "gl"), ("MOMENT_ADAPTER", "")]);
    assert!(stderr.contains("falling back to the CPU backend"), "{stderr}");
    assert!(stdout.contains("backend: CPU backend (fell back"), "{stdout}");
    assert_svg(&dir.join("demo.svg"));
    let _ = std::fs::remove_dir_all(&dir);
}
