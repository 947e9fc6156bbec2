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
    assert!(
        stdout.contains("backend: CPU backend (") && stdout.contains("(fell back: no usable GPU adapter)"),
        "{stdout}"
    );
    assert_svg(&dir.join("demo.svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A long input (longer than one window) whose planted moment straddles a window boundary:
/// 20 background clips (the example's last 5, four times) before the 32-clip example, so the
/// moment at example clips 8–12 lands on clips 28–32 and crosses the end of the first 32-clip
/// window. The merged prediction still finds a planted moment, and the saliency covers every clip.
#[test]
fn long_video_finds_a_moment_across_a_window_boundary() {
    use moment_gpu::io::Array;
    use moment_gpu::models::long::LongVideo;
    let model = Model::load(bundled("demo.safetensors"), &Device::Cpu).unwrap();
    let example = read_array(bundled("example_video.npy"), None, &[]).unwrap();
    let width = example.shape[1];
    let background = &example.data[27 * width..32 * width];
    let mut data: Vec<f32> = background.repeat(4);
    data.extend_from_slice(&example.data);
    let clips = data.len() / width;
    assert_eq!(clips, 52);
    let long = Array { shape: vec![clips, width], data };
    let query = read_array(bundled("example_query.npy"), None, &[]).unwrap();
    let query = model.query_from_sources(&[query], &["example_query.npy".into()]).unwrap();
    let opts = LongVideo { window: 32, ..LongVideo::default() };
    let p = model.predict_long(&[long], &["long.npy".into()], &query, None, &opts).unwrap();
    assert_eq!(p.saliency.len(), 52);
    assert!(p.windows.len() <= 10 && !p.windows.is_empty());
    let shifted: Vec<[f64; 2]> = truth_windows().iter().map(|w| [w[0] + 40.0, w[1] + 40.0]).collect();
    let top = p.windows[0];
    let best = shifted.iter().map(|t| iou([top.start, top.end], *t)).fold(0.0, f64::max);
    assert!(
        best >= 0.5,
        "top merged window [{}, {}] has IoU {best:.3} with the shifted truth {shifted:?}",
        top.start,
        top.end
    );
    // The moment across the boundary (56–66 s) is found among the merged windows.
    assert!(p.windows.iter().any(|w| iou([w.start, w.end], shifted[0]) >= 0.5), "{:?}", p.windows);
    // Windows never leave the video.
    assert!(p.windows.iter().all(|w| w.start >= 0.0 && w.end <= 104.0));
}

/// `moment eval` on the bundled example's prediction and its annotation: R1@t is 100 when the top
/// window's IoU with a planted window reaches t, else 0 (one query).
#[test]
fn eval_scores_the_bundled_example() {
    let dir = temp_dir("eval");
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundled("example_truth.json")).unwrap()).unwrap();
    let gt = dir.join("gt.jsonl");
    let line = serde_json::json!({
        "qid": truth["qid"], "query": truth["query"], "vid": truth["vid"], "duration": truth["duration"],
        "relevant_windows": truth["relevant_windows"], "relevant_clip_ids": truth["relevant_clip_ids"],
        "saliency_scores": truth["saliency_scores"],
    });
    std::fs::write(&gt, format!("{line}\n")).unwrap();
    let preds = dir.join("preds.jsonl");
    let s = |p: &Path| p.display().to_string();
    let qid = truth["qid"].to_string();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_moment")).args(args).output().unwrap();
    let o = run(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &s(&bundled("demo.safetensors")),
        "--video",
        &s(&bundled("example_video.npy")),
        "--query",
        &s(&bundled("example_query.npy")),
        "--duration",
        "64",
        "--qid",
        &qid,
        "--out",
        &s(&preds),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&preds).unwrap().trim()).unwrap();
    let top = [p["pred_relevant_windows"][0][0].as_f64().unwrap(), p["pred_relevant_windows"][0][1].as_f64().unwrap()];
    let best = truth_windows().iter().map(|t| iou(top, *t)).fold(0.0, f64::max);
    let o = run(&["eval", "--submission", &s(&preds), "--gt", &s(&gt)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let brief: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r1 = |t: f64| if best >= t { 100.0 } else { 0.0 };
    assert_eq!(brief["MR-full-R1@0.5"].as_f64(), Some(r1(0.5)), "IoU {best}: {brief}");
    assert_eq!(brief["MR-full-R1@0.7"].as_f64(), Some(r1(0.7)), "IoU {best}: {brief}");
    let _ = std::fs::remove_dir_all(&dir);
}
