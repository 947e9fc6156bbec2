//! Weights files: official keys, F32/F16/BF16, config metadata, and typed errors for malformed
//! files (truncated, wrong dtype, missing or mis-shaped keys, LFS pointers).

use std::collections::HashMap;

use moment_gpu::weights::Weights;
use moment_gpu::Error;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], config: Option<&str>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| (name.to_string(), TensorView::new(*dtype, shape.clone(), bytes).unwrap()))
        .collect();
    let metadata = config.map(|c| HashMap::from([("config".to_string(), c.to_string())]));
    safetensors::serialize(views, metadata).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn sample() -> Vec<u8> {
    let f16: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    let bf16: Vec<u8> = [0.25f32, 3.0, -1.0].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
    file(
        &[
            ("input_txt_proj.0.LayerNorm.weight", Dtype::F32, vec![2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
            ("query_embed.weight", Dtype::F16, vec![2], f16),
            ("class_embed.bias", Dtype::BF16, vec![3], bf16),
        ],
        Some(r#"{"model": "tr_detr", "hidden_dim": 256}"#),
    )
}

#[test]
fn loads_f32_f16_bf16_by_official_key_and_config() {
    let w = Weights::from_bytes("sample.safetensors", &sample()).unwrap();
    assert_eq!(w.get("input_txt_proj.0.LayerNorm.weight", &[2, 2]).unwrap().data[..], [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(w.get("query_embed.weight", &[2]).unwrap().data[..], [1.5, -2.0]);
    assert_eq!(w.get("class_embed.bias", &[3]).unwrap().data[..], [0.25, 3.0, -1.0]);
    assert_eq!(w.config()["model"], "tr_detr");
    assert_eq!(w.config()["hidden_dim"], 256);
}

#[test]
fn missing_and_mis_shaped_keys_name_file_and_key() {
    let w = Weights::from_bytes("sample.safetensors", &sample()).unwrap();
    let err = w.get("class_embed.weight", &[2, 256]).unwrap_err();
    assert!(matches!(err, Error::MissingTensor { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("sample.safetensors") && msg.contains("class_embed.weight") && msg.contains("class_embed.bias"),
        "{msg}"
    );

    let err = w.get("query_embed.weight", &[10, 2]).unwrap_err();
    assert!(matches!(err, Error::TensorShape { .. }));
    let msg = err.to_string();
    assert!(msg.contains("query_embed.weight") && msg.contains("[10, 2]") && msg.contains("[2]"), "{msg}");

    let expected = vec![
        ("query_embed.weight".to_string(), vec![2]),
        ("a.weight".to_string(), vec![1]),
        ("b.weight".to_string(), vec![1]),
    ];
    let msg = w.check(&expected).unwrap_err().to_string();
    assert!(msg.contains("a.weight") && msg.contains("b.weight"), "every missing key is listed: {msg}");
}

#[test]
fn truncated_file_is_a_typed_error() {
    let bytes = sample();
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = Weights::from_bytes("cut.safetensors", &bytes[..cut]).unwrap_err();
        assert!(matches!(err, Error::BadWeightsFile { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("cut.safetensors"));
    }
}

/// `load` reads the header, then each tensor straight from the file: it gives what
/// `from_bytes` gives, and a cut file, a bad header or an LFS pointer is a typed error naming
/// the file.
#[test]
fn loading_from_a_file_matches_from_bytes_and_rejects_bad_files() {
    let dir = std::env::temp_dir().join(format!("moment-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = sample();
    let path = dir.join("sample.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let (loaded, parsed) = (Weights::load(&path).unwrap(), Weights::from_bytes("x", &bytes).unwrap());
    assert_eq!(loaded.keys().collect::<Vec<_>>(), parsed.keys().collect::<Vec<_>>());
    for key in parsed.keys() {
        let (a, b) = (loaded.get_any(key).unwrap(), parsed.get_any(key).unwrap());
        assert_eq!((&a.shape, &a.data[..]), (&b.shape, &b.data[..]), "{key}");
    }
    assert_eq!(loaded.config(), parsed.config());

    let mut garbage = bytes.clone();
    garbage[9] = b'!';
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 33000000\n".to_vec();
    let mut cases: Vec<(String, Vec<u8>)> = [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1]
        .iter()
        .map(|&cut| (format!("cut{cut}"), bytes[..cut].to_vec()))
        .collect();
    cases.push(("garbage".into(), garbage));
    cases.push(("lfs".into(), lfs));
    for (name, content) in cases {
        let path = dir.join(format!("{name}.safetensors"));
        std::fs::write(&path, &content).unwrap();
        let err = Weights::load(&path).unwrap_err();
        assert!(matches!(err, Error::BadWeightsFile { .. }), "{name}: {err}");
        assert!(err.to_string().contains(&format!("{name}.safetensors")), "{name}: {err}");
        if name == "lfs" {
            assert!(err.to_string().contains("Git LFS pointer"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_header_and_lfs_pointer_are_typed_errors() {
    let mut bytes = sample();
    bytes[9] = b'!';
    assert!(matches!(Weights::from_bytes("bad.safetensors", &bytes), Err(Error::BadWeightsFile { .. })));
    let lfs = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 33000000\n";
    let msg = Weights::from_bytes("model.safetensors", lfs).unwrap_err().to_string();
    assert!(msg.contains("Git LFS pointer"), "{msg}");
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let bytes = file(&[("span_embed.layers.0.weight", Dtype::BOOL, vec![2], vec![1, 0])], None);
    let err = Weights::from_bytes("bools.safetensors", &bytes).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDtype { .. }));
    let msg = err.to_string();
    assert!(msg.contains("span_embed.layers.0.weight") && msg.contains("BOOL"), "{msg}");
}

/// Integer tensors of PyTorch state_dicts (BatchNorm's `num_batches_tracked`, LD-DETR's
/// `queue_ptr`) load as f32 counters instead of failing the whole file.
#[test]
fn integer_counters_load_as_f32() {
    let bytes = file(
        &[
            ("bn.num_batches_tracked", Dtype::I64, vec![], 1234i64.to_le_bytes().to_vec()),
            ("ptr", Dtype::I32, vec![2], [-3i32, 7].iter().flat_map(|x| x.to_le_bytes()).collect()),
        ],
        None,
    );
    let w = Weights::from_bytes("ints.safetensors", &bytes).unwrap();
    assert_eq!(w.get("bn.num_batches_tracked", &[]).unwrap().data[..], [1234.0]);
    assert_eq!(w.get("ptr", &[2]).unwrap().data[..], [-3.0, 7.0]);
    let kept = w.filtered(|k| k == "ptr");
    assert!(kept.contains("ptr") && !kept.contains("bn.num_batches_tracked"));
}

#[test]
fn f64_tensors_load_as_f32() {
    let values = [-1.25f64, 0.1, 3.0];
    let bytes = file(
        &[(
            "aux_det_head.anchor_generator.cell_anchors.0",
            Dtype::F64,
            vec![1, 3],
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )],
        None,
    );
    let w = Weights::from_bytes("f64.safetensors", &bytes).unwrap();
    let t = w.get("aux_det_head.anchor_generator.cell_anchors.0", &[1, 3]).unwrap();
    assert_eq!(&t.data[..], &[-1.25f32, 0.1, 3.0]);
}

#[test]
fn bad_config_json_is_a_config_error() {
    let bytes = file(&[("x", Dtype::F32, vec![1], f32_bytes(&[1.0]))], Some("{not json"));
    let err = Weights::from_bytes("cfg.safetensors", &bytes).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let msg = Weights::load("/nonexistent/model.safetensors").unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/model.safetensors"), "{msg}");
}
