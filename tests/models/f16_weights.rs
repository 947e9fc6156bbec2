//! `DeviceOptions::f16_weights`: every model at its official default size on the GPU with its
//! matmul weights stored as f16, against the float64 spec at the f16 tolerances the README
//! states (weights rounded to f16 move outputs by ~1e-3, VideoLights' saliency ~50× more), with
//! the weight memory halved.

use moment_gpu::models::Model;
use moment_gpu::testing::{assert_close, gpu_f16_weights, Tolerance};
use moment_gpu::Device;

use crate::common;

/// (model, logits / spans, saliency) tolerances with f16 weights.
const TOLERANCES: [(&str, Tolerance, Tolerance); 4] = [
    ("tr_detr", Tolerance::new(1e-2, 1e-2), Tolerance::new(1e-2, 1e-2)),
    ("ld_detr", Tolerance::new(1e-2, 1e-2), Tolerance::new(1e-2, 1e-2)),
    // Bi-CMF and the encoder amplify rounding ~50× at the default sizes (see the f32 case).
    ("videolights", Tolerance::new(3e-2, 1e-2), Tolerance::new(2e-1, 1e-2)),
    ("sg_detr", Tolerance::new(1e-2, 1e-2), Tolerance::new(1e-2, 1e-2)),
];

#[test]
fn default_models_with_f16_weights_match_the_spec() {
    let Some(device) = gpu_f16_weights() else { return };
    for (name, logits_spans, saliency) in TOLERANCES {
        let case = common::cases(name).into_iter().find(|c| c.name == "default_l75_n32").expect("default case");
        let model = Model::load(&case.weights, &device).unwrap();
        let predictions = common::predict(&model, &case);
        let raw = &predictions[0].raw;
        let what = |x: &str| format!("{name} with f16 weights: {x}");
        // One sample (B = 1): the expected arrays are that sample's, whatever their widths.
        assert_close(&what("pred_logits"), &raw.logits, &case.expected("pred_logits").1, logits_spans);
        assert_close(&what("pred_spans"), &raw.spans, &case.expected("pred_spans").1, logits_spans);
        let clips = case.clips(0);
        assert_close(
            &what("saliency"),
            &predictions[0].saliency,
            &case.expected("saliency_scores").1[..clips],
            saliency,
        );
        let f16_bytes = model.last_stats().weight_bytes;
        let cpu = Model::load(&case.weights, &Device::Cpu).unwrap();
        common::predict(&cpu, &case);
        let f32_bytes = cpu.last_stats().weight_bytes;
        assert!(f16_bytes * 10 < f32_bytes * 6, "{name}: {f16_bytes} weight bytes with f16 vs {f32_bytes} in f32");
    }
}
