//! TR-DETR against the NumPy spec (tr-detr.md §9: the float64 reference agrees with the official
//! float32 PyTorch model to ~1e-6 on logits/spans and ~7e-6 on saliency).

use moment_gpu::models::Model;
use moment_gpu::testing::gpu;
use moment_gpu::weights::Weights;
use moment_gpu::{Device, Error};

use crate::common::{
    assert_json_lines, assert_one_submit, assert_preprocessing, assert_raw_outputs, assert_same_outputs, cases,
    predict, Case, Tolerance,
};

/// Logits and spans: 1e-4 absolute, the bound for a float32 runtime vs the float64 spec.
const LOGITS_SPANS: Tolerance = Tolerance::new(1e-4, 0.0);
/// Saliency: 1e-4 absolute; values reach ~10, so add 1e-5 relative for the f32 sums of 256
/// channels (folded into one dot product) over three chained encoders.
const SALIENCY: Tolerance = Tolerance::new(1e-4, 1e-5);

fn load(case: &Case, device: &Device) -> Model {
    Model::load(&case.weights, device).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn check_backend(device: &Device, backend: &str) {
    for case in cases("tr_detr") {
        let model = load(&case, device);
        let predictions = predict(&model, &case);
        assert_raw_outputs(&case, &predictions, LOGITS_SPANS, SALIENCY, backend);
        assert_json_lines(&case, &predictions, SALIENCY);
        assert_one_submit(&model, &case.name);
    }
}

#[test]
fn cpu_matches_the_spec() {
    check_backend(&Device::Cpu, "cpu");
}

#[test]
fn gpu_matches_the_spec() {
    let Some(gpu) = gpu() else { return };
    check_backend(&gpu, "gpu");
}

/// `video_from_sources` / `query_from_sources` reproduce the dataset preprocessing: per-source
/// L2 normalisation (eps added to the norm), truncation to `max_v_l` and to the shortest source,
/// TEF appended after normalisation.
#[test]
fn raw_sources_preprocess_like_the_official_loader() {
    for case in cases("tr_detr").iter().filter(|c| c.name.starts_with("small")) {
        assert_preprocessing(&load(case, &Device::Cpu), case);
    }
}

/// Each sample of a padded batch gives exactly its own B = 1 result on the same backend.
#[test]
fn padded_batch_equals_single_runs() {
    let case = cases("tr_detr").into_iter().find(|c| c.name == "small_batch3").unwrap();
    let model = load(&case, &Device::Cpu);
    let batched = predict(&model, &case);
    for (b, (v, q)) in case.inputs().iter().enumerate() {
        let alone = model.predict(v, q).unwrap();
        assert_same_outputs(&format!("sample {b}"), &batched[b], &alone, Tolerance::new(2e-6, 1e-6));
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let case = cases("tr_detr").into_iter().find(|c| c.name == "small_l7_n1").unwrap();
    let model = load(&case, &Device::Cpu);
    let (video, query) = case.inputs().remove(0);

    let mut wrong_width = video.clone();
    wrong_width.width += 1;
    let msg = model.predict(&wrong_width, &query).unwrap_err().to_string();
    assert!(msg.contains("video #0") && msg.contains("width"), "{msg}");

    let empty = moment_gpu::models::VideoInput { clips: 0, width: video.width, data: vec![], duration: None };
    let msg = model.predict(&empty, &query).unwrap_err().to_string();
    assert!(msg.contains("L = 0"), "{msg}");

    let no_tokens = moment_gpu::models::QueryInput { tokens: 0, width: query.width, data: vec![] };
    let msg = model.predict(&video, &no_tokens).unwrap_err().to_string();
    assert!(msg.contains("query #0") && msg.contains("empty"), "{msg}");

    let mut nan = video.clone();
    nan.data[5] = f32::NAN;
    let msg = model.predict(&nan, &query).unwrap_err().to_string();
    assert!(msg.contains("non-finite"), "{msg}");

    let long = moment_gpu::models::QueryInput { tokens: 33, width: query.width, data: vec![0.1; 33 * query.width] };
    let msg = model.predict(&video, &long).unwrap_err().to_string();
    assert!(msg.contains("33 rows") && msg.contains("limit of 32"), "{msg}");

    let raw = moment_gpu::io::Array { shape: vec![4, 3], data: vec![0.5; 12] };
    let msg = model.video_from_sources(&[raw], &["clip.npy".into()]).unwrap_err().to_string();
    assert!(msg.contains("clip.npy") && msg.contains("sum to 3"), "{msg}");
}

#[test]
fn weights_missing_a_key_or_misnamed_model_are_config_errors() {
    let case = cases("tr_detr").into_iter().next().unwrap();
    let bytes = std::fs::read(&case.weights).unwrap();
    let weights = Weights::from_bytes(&case.weights, &bytes).unwrap();
    // Rebuild the file without one inference key.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(k, _)| k != "transformer.decoder.layers.1.sa_v_proj.bias").collect();
    let cut = safetensors::serialize(kept, meta.metadata().clone()).unwrap();
    let err = Model::from_weights(&Weights::from_bytes("cut.safetensors", &cut).unwrap(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }), "{err}");
    assert!(err.to_string().contains("transformer.decoder.layers.1.sa_v_proj.bias"), "{err}");

    let mut config = weights.config().clone();
    config["model"] = "not_a_model".into();
    let mut metadata = meta.metadata().clone().unwrap();
    metadata.insert("config".into(), config.to_string());
    let renamed = safetensors::serialize(st.tensors(), Some(metadata)).unwrap();
    let err =
        Model::from_weights(&Weights::from_bytes("renamed.safetensors", &renamed).unwrap(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("unknown `model` \"not_a_model\""), "{err}");
}
