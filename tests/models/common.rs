//! Fixture access: generates `target/fixtures/<model>` with `tools/fixtures.py` (idempotent, a
//! fraction of a second when up to date) and reads its manifest and arrays.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use moment_gpu::io::{read_array, Array};
use moment_gpu::models::{Model, Prediction, QueryInput, VideoInput};
use moment_gpu::testing::assert_close;
use serde_json::Value;

/// The fixture directory of `model`, generated on first use in this test binary.
pub fn fixtures(model: &str) -> PathBuf {
    static DONE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target").join("fixtures");
    let mut done = DONE.lock().unwrap();
    if !done.get_or_insert_with(HashSet::new).contains(model) {
        let status = std::process::Command::new("python3")
            .arg(root.join("tools").join("fixtures.py"))
            .arg("--out")
            .arg(&out)
            .arg(model)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 for the fixtures ({e}); install Python 3 with: pip install numpy safetensors"
                )
            });
        assert!(
            status.success(),
            "tools/fixtures.py {model} failed ({status}); it needs `pip install numpy safetensors` and the specs in ../shared/reference"
        );
        done.as_mut().unwrap().insert(model.to_string());
    }
    out.join(model)
}

pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub weights: PathBuf,
    pub value: Value,
}

impl Case {
    pub fn batch(&self) -> usize {
        self.value["B"].as_u64().unwrap() as usize
    }
    pub fn clips(&self, b: usize) -> usize {
        self.value["L"][b].as_u64().unwrap() as usize
    }
    pub fn tokens(&self, b: usize) -> usize {
        self.value["N"][b].as_u64().unwrap() as usize
    }
    pub fn meta(&self, b: usize) -> &Value {
        &self.value["meta"][b]
    }
    /// An array of `expected.npz`.
    pub fn expected(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let a = read_array(self.dir.join("expected.npz"), Some(name), &[]).unwrap();
        (a.shape, a.data)
    }
    /// The expected JSON lines, one per sample.
    pub fn expected_json(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("expected.jsonl")).unwrap().lines().map(str::to_string).collect()
    }
    fn input(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let a = read_array(self.dir.join(self.value["inputs"][name].as_str().unwrap()), None, &[]).unwrap();
        (a.shape, a.data)
    }
    /// Model-ready inputs of every sample, cut to its own length, with the annotated duration.
    pub fn inputs(&self) -> Vec<(VideoInput, QueryInput)> {
        let (vs, video) = self.input("video");
        let (qs, query) = self.input("query");
        let (l, dv, n, dt) = (vs[1], vs[2], qs[1], qs[2]);
        (0..self.batch())
            .map(|b| {
                let (lb, nb) = (self.clips(b), self.tokens(b));
                let duration = self.meta(b)["duration"].as_f64().map(|d| d as f32);
                (
                    VideoInput { clips: lb, width: dv, data: video[b * l * dv..][..lb * dv].to_vec(), duration },
                    QueryInput { tokens: nb, width: dt, data: query[b * n * dt..][..nb * dt].to_vec() },
                )
            })
            .collect()
    }
}

pub fn cases(model: &str) -> Vec<Case> {
    let dir = fixtures(model);
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            dir: dir.join(c["dir"].as_str().unwrap()),
            weights: dir.join(c["weights"].as_str().unwrap()),
            value: c.clone(),
        })
        .collect()
}

/// Sample `b`'s raw feature sources of `kind` (`"video"` / `"query"`), in order, with their names.
pub fn raw_sources(case: &Case, b: usize, kind: &str) -> (Vec<Array>, Vec<String>) {
    let paths: Vec<PathBuf> = case.value["raw_inputs"][b][kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| case.dir.join(f.as_str().unwrap()))
        .collect();
    let arrays = paths.iter().map(|p| read_array(p, None, &[]).unwrap()).collect();
    (arrays, paths.iter().map(|p| p.display().to_string()).collect())
}

/// `video_from_sources` / `query_from_sources` on every sample's raw sources give the case's
/// model-ready inputs: same clips and tokens, values within 1e-6 (float32 normalisation in a
/// different summation order than NumPy's).
pub fn assert_preprocessing(model: &Model, case: &Case) {
    let ready = case.inputs();
    for (b, (video_ready, query_ready)) in ready.iter().enumerate() {
        let (vs, vn) = raw_sources(case, b, "video");
        let (qs, qn) = raw_sources(case, b, "query");
        let video = model.video_from_sources(&vs, &vn).unwrap();
        let query = model.query_from_sources(&qs, &qn).unwrap();
        assert_eq!(video.clips, video_ready.clips, "{} sample {b}: clips", case.name);
        assert_eq!(query.tokens, query_ready.tokens, "{} sample {b}: tokens", case.name);
        let tol = Tolerance::new(1e-6, 1e-6);
        assert_close(&format!("{} sample {b}: video", case.name), &video.data, &video_ready.data, tol);
        assert_close(&format!("{} sample {b}: query", case.name), &query.data, &query_ready.data, tol);
    }
}

/// On a GPU, the last forward was one submit and one readback.
pub fn assert_one_submit(model: &Model, what: &str) {
    if let moment_gpu::Device::Gpu(_) = model.device() {
        let stats = model.last_stats();
        assert_eq!((stats.submits, stats.readbacks), (1, 1), "{what}: one submit and one readback per forward");
    }
}

/// One sample's outputs from two runs (in a padded batch and alone) agree within `tol`: logits,
/// spans, saliency and, where the model has them, quality logits. Returns the largest |difference|.
pub fn assert_same_outputs(what: &str, got: &Prediction, want: &Prediction, tol: Tolerance) -> f32 {
    let mut parts = vec![
        ("logits", &got.raw.logits, &want.raw.logits),
        ("spans", &got.raw.spans, &want.raw.spans),
        ("saliency", &got.saliency, &want.saliency),
    ];
    if let (Some(g), Some(w)) = (&got.raw.quality, &want.raw.quality) {
        parts.push(("quality", g, w));
    }
    let mut worst = 0.0f32;
    for (part, g, w) in parts {
        worst = g.iter().zip(w.iter()).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        assert_close(&format!("{what}: {part}"), g, w, tol);
    }
    worst
}

/// Runs every sample of `case` in one padded batch.
pub fn predict(model: &Model, case: &Case) -> Vec<Prediction> {
    let inputs = case.inputs();
    let items: Vec<(&VideoInput, &QueryInput)> = inputs.iter().map(|(v, q)| (v, q)).collect();
    model.predict_batch(&items).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// Compares the raw outputs of every sample with the reference (`pred_logits`, `pred_spans`,
/// `saliency_scores` over the sample's valid clips).
pub fn assert_raw_outputs(
    case: &Case,
    predictions: &[Prediction],
    logits_spans: Tolerance,
    saliency: Tolerance,
    backend: &str,
) {
    use moment_gpu::testing::assert_close;
    let (ls, logits) = case.expected("pred_logits");
    let (_, spans) = case.expected("pred_spans");
    let (ss, sal) = case.expected("saliency_scores");
    let q2 = ls[1] * ls[2];
    for (b, p) in predictions.iter().enumerate() {
        let what = |x: &str| format!("{} sample {b} on {backend}: {x}", case.name);
        assert_close(&what("pred_logits"), &p.raw.logits, &logits[b * q2..(b + 1) * q2], logits_spans);
        assert_close(&what("pred_spans"), &p.raw.spans, &spans[b * q2..(b + 1) * q2], logits_spans);
        let l = case.clips(b);
        assert_close(&what("saliency"), &p.saliency, &sal[b * ss[1]..][..l], saliency);
    }
}

/// The post-processed JSON line of every sample equals the reference's byte for byte, except
/// that a float16 saliency value may be the neighbouring float16 when the reference's float64
/// saliency lies within `saliency` tolerance of the rounding midpoint between the two: there a
/// float32 runtime can legitimately round the other way (tr-detr.md §9).
pub fn assert_json_lines(case: &Case, predictions: &[Prediction], saliency: Tolerance) {
    use moment_gpu::models::postprocess::{prediction_json, saliency_f16};
    use moment_gpu::models::Qid;
    let expected = case.expected_json();
    let (ss, reference) = case.expected("saliency_scores");
    for (b, p) in predictions.iter().enumerate() {
        let meta = case.meta(b);
        let qid = match &meta["qid"] {
            Value::String(s) => Qid::Str(s.clone()),
            v => Qid::Int(v.as_i64().unwrap()),
        };
        let want: Value = serde_json::from_str(&expected[b]).unwrap();
        let want_sal: Vec<f32> =
            want["pred_saliency_scores"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut ours = saliency_f16(&p.saliency);
        for (i, (o, w)) in ours.iter_mut().zip(&want_sal).enumerate() {
            if o != w {
                let (lo, hi) = (o.min(*w), o.max(*w));
                let adjacent = half::f16::from_f32(lo).to_bits().abs_diff(half::f16::from_f32(hi).to_bits()) == 1;
                let midpoint = (lo + hi) / 2.0;
                let r = reference[b * ss[1] + i];
                let near = (r - midpoint).abs() <= saliency.atol + saliency.rtol * r.abs();
                assert!(
                    adjacent && near,
                    "{} sample {b}: saliency {i} is {o} in float16, the reference {w} (float64 {r}) is not a rounding tie",
                    case.name
                );
                *o = *w;
            }
        }
        let line =
            prediction_json(&qid, meta["query"].as_str().unwrap(), meta["vid"].as_str().unwrap(), &p.windows, &ours);
        assert_eq!(line, expected[b], "{} sample {b}: JSON line differs", case.name);
    }
}

pub use moment_gpu::testing::Tolerance;
