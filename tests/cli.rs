//! The `moment` binary: info, one-query predict, batch predict over an annotation file in the
//! official layout, and bad inputs (typed message, non-zero exit, no partial output).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moment_gpu::io::read_array;
use npyz::WriterBuilder;

#[path = "models/common.rs"]
#[allow(dead_code)]
mod common;

fn moment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moment")).args(args).output().expect("run moment")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moment-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_npz(path: &Path, key: &str, shape: &[usize], data: &[f32]) {
    let mut npz = npyz::npz::NpzWriter::create(path).unwrap();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npz.array::<f32>(key, Default::default()).unwrap().default_dtype().shape(&shape).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn info_lists_adapters_and_the_choice() {
    let o = moment(&["info"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--device auto picks"), "{}", text(&o));
    let o = moment(&["--device", "cpu", "info"]);
    assert!(text(&o).contains("picks the CPU backend"), "{}", text(&o));
}

/// One query from raw feature sources: the windows of the JSON line are the spec's.
#[test]
fn predict_one_query_from_raw_sources() {
    let case = common::cases("tr_detr").into_iter().find(|c| c.name == "small_l75_n32").unwrap();
    let raw = &case.value["raw_inputs"][0];
    let file = |kind: &str, i: usize| case.dir.join(raw[kind][i].as_str().unwrap()).display().to_string();
    let weights = case.weights.display().to_string();
    let (v0, v1, q0) = (file("video", 0), file("video", 1), file("query", 0));
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &weights,
        "--video",
        &v0,
        "--video",
        &v1,
        "--query",
        &q0,
        "--duration",
        "126",
        // The fixture's sources are longer than max_v_l: cut them as the official loader does.
        "--truncate",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ours: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let want: serde_json::Value = serde_json::from_str(&case.expected_json()[0]).unwrap();
    assert_eq!(ours["pred_relevant_windows"], want["pred_relevant_windows"]);
    assert_eq!(ours["pred_saliency_scores"].as_array().unwrap().len(), 75);
}

/// `--raw-out` writes the forward's raw outputs under the official names: the float64 spec's
/// values within the TR-DETR tolerance; a video that would run as windows is refused (no file).
#[test]
fn predict_writes_raw_outputs_for_comparison() {
    use moment_gpu::testing::{assert_close, Tolerance};
    let case = common::cases("tr_detr").into_iter().find(|c| c.name == "small_l75_n32").unwrap();
    let raw = &case.value["raw_inputs"][0];
    let file = |kind: &str, i: usize| case.dir.join(raw[kind][i].as_str().unwrap()).display().to_string();
    let weights = case.weights.display().to_string();
    let (v0, v1, q0) = (file("video", 0), file("video", 1), file("query", 0));
    let dir = temp_dir("raw-out");
    let out = dir.join("raw.npz");
    let out_s = out.display().to_string();
    let base = ["--device", "cpu", "predict", "--weights", &weights, "--video", &v0, "--video", &v1, "--query", &q0];
    let o = moment(&[&base[..], &["--raw-out", &out_s]].concat());
    assert!(!o.status.success() && text(&o).contains("--truncate"), "{}", text(&o));
    assert!(!out.exists(), "no output file after an error");
    let o = moment(&[&base[..], &["--truncate", "--raw-out", &out_s]].concat());
    assert!(o.status.success(), "{}", text(&o));
    for (name, tol) in [
        ("pred_logits", Tolerance::new(1e-4, 1e-4)),
        ("pred_spans", Tolerance::new(1e-4, 1e-4)),
        ("saliency_scores", Tolerance::new(1e-4, 1e-5)),
    ] {
        let got = read_array(&out, Some(name), &[]).unwrap();
        let (shape, want) = case.expected(name);
        assert_eq!(got.shape, shape, "{name}");
        assert_close(name, &got.data, &want, tol);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Batch mode over the official layout; a query whose features are missing is reported and the
/// others are still written, in annotation order.
#[test]
fn predict_batch_over_an_annotation_file() {
    let case = common::cases("tr_detr").into_iter().find(|c| c.name == "small_batch3").unwrap();
    let dir = temp_dir("batch");
    let (sf, cf, tf) = (dir.join("video_a"), dir.join("video_b"), dir.join("text"));
    for d in [&sf, &cf, &tf] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut annotations = String::new();
    for b in 0..3 {
        let raw = &case.value["raw_inputs"][b];
        let meta = case.meta(b);
        let vid = meta["vid"].as_str().unwrap();
        let qid = meta["qid"].as_i64().unwrap();
        for (k, d) in [&sf, &cf].iter().enumerate() {
            let a = read_array(case.dir.join(raw["video"][k].as_str().unwrap()), None, &[]).unwrap();
            write_npz(&d.join(format!("{vid}.npz")), "features", &a.shape, &a.data);
        }
        let a = read_array(case.dir.join(raw["query"][0].as_str().unwrap()), None, &[]).unwrap();
        write_npz(&tf.join(format!("qid{qid}.npz")), "last_hidden_state", &a.shape, &a.data);
        annotations +=
            &serde_json::json!({"qid": qid, "query": meta["query"], "vid": vid, "duration": meta["duration"]})
                .to_string();
        annotations += "\n";
    }
    annotations += "{\"qid\": 99, \"query\": \"no features\", \"vid\": \"missing\", \"duration\": 150}\n";
    annotations += "this line is not JSON\n";
    let ann = dir.join("ann.jsonl");
    std::fs::write(&ann, annotations).unwrap();
    let out = dir.join("preds.jsonl");
    let s = |p: &Path| p.display().to_string();
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &s(&case.weights),
        "--annotations",
        &s(&ann),
        "--video-dir",
        &s(&sf),
        "--video-dir",
        &s(&cf),
        "--query-dir",
        &s(&tf),
        "--out",
        &s(&out),
        "--batch-size",
        "2",
        "--truncate",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("line 4 skipped") && text(&o).contains("missing.npz"), "{}", text(&o));
    assert!(text(&o).contains("ann.jsonl:5") && text(&o).contains("not a JSON object"), "{}", text(&o));
    let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    let expected = case.expected_json();
    for (b, line) in lines.iter().enumerate() {
        let ours: serde_json::Value = serde_json::from_str(line).unwrap();
        let want: serde_json::Value = serde_json::from_str(&expected[b]).unwrap();
        assert_eq!(ours["qid"], want["qid"]);
        assert_eq!(ours["vid"], want["vid"]);
        assert_eq!(ours["pred_relevant_windows"], want["pred_relevant_windows"], "sample {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_fail_with_a_message_and_no_output() {
    let dir = temp_dir("bad");
    let out = dir.join("never.jsonl");
    // Missing weights file.
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        "/nonexistent/w.safetensors",
        "--video",
        "v.npy",
        "--query",
        "q.npy",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/w.safetensors"), "{}", text(&o));
    // A file that is not safetensors.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a safetensors file").unwrap();
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &junk.display().to_string(),
        "--video",
        "v.npy",
        "--query",
        "q.npy",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("junk.safetensors") && text(&o).contains("not a readable safetensors file"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "no output file on failure");
    // Feature width mismatch names the file.
    let case = common::cases("tr_detr").into_iter().next().unwrap();
    let q = case.dir.join(case.value["raw_inputs"][0]["query"][0].as_str().unwrap());
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &case.weights.display().to_string(),
        "--video",
        &q.display().to_string(),
        "--query",
        &q.display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("sum to 16, but the model takes 40"), "{}", text(&o));
    // Output directory that does not exist (batch mode): refused before any work.
    let o = moment(&[
        "--device",
        "cpu",
        "predict",
        "--weights",
        &case.weights.display().to_string(),
        "--annotations",
        "/dev/null",
        "--video-dir",
        "/tmp",
        "--query-dir",
        "/tmp",
        "--out",
        "/nonexistent/dir/preds.jsonl",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/dir/preds.jsonl"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `moment plot` draws one SVG per query, with the ground truth when given.
#[test]
fn plot_writes_one_svg_per_query() {
    let dir = temp_dir("plot");
    let preds = dir.join("preds.jsonl");
    std::fs::write(
        &preds,
        "{\"qid\": 7, \"query\": \"a dog runs\", \"vid\": \"v1\", \"pred_relevant_windows\": [[2.0, 6.0, 0.9], [0.0, 4.0, 0.4]], \"pred_saliency_scores\": [0.1, 0.8, 0.9, -0.2]}\n\
         {\"qid\": 8, \"query\": \"a cat\", \"vid\": \"v2\", \"pred_relevant_windows\": [[0.0, 2.0, 0.5]], \"pred_saliency_scores\": [0.3, 0.2]}\n",
    )
    .unwrap();
    let gt = dir.join("gt.jsonl");
    std::fs::write(&gt, "{\"qid\": 7, \"query\": \"a dog runs\", \"vid\": \"v1\", \"duration\": 8, \"relevant_windows\": [[2, 6]], \"relevant_clip_ids\": [1, 2], \"saliency_scores\": [[4, 3, 4], [2, 2, 2]]}\n").unwrap();
    let one = dir.join("q7.svg");
    let s = |p: &Path| p.display().to_string();
    let o = moment(&["plot", "--prediction", &s(&preds), "--gt", &s(&gt), "--qid", "7", "--out", &s(&one)]);
    assert!(o.status.success(), "{}", text(&o));
    let svg = std::fs::read_to_string(&one).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "not an SVG");
    assert!(svg.contains("qid 7") && svg.contains("a dog runs"), "title missing");
    let all = dir.join("all");
    let o = moment(&["plot", "--prediction", &s(&preds), "--out", &s(&all)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(all.join("7.svg").exists() && all.join("8.svg").exists());
    let o = moment(&["plot", "--prediction", &s(&preds), "--qid", "99", "--out", &s(&one)]);
    assert!(!o.status.success() && text(&o).contains("no prediction with qid 99"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
