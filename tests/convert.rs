//! `moment convert` and `moment_gpu::convert` on the small checkpoints that
//! `tools/make_test_checkpoint.py` wrote with `torch.save` (committed under
//! tests/fixtures/convert/, with the values torch itself read from them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moment_gpu::convert::{
    convert, convert_file, read_checkpoint, read_checkpoint_bytes, read_options_file, Checkpoint, CheckpointTensor,
    ConvertOptions, Layout, ModelName,
};
use moment_gpu::weights::Weights;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert").join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moment-convert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tr_detr_expected.json")).unwrap()).unwrap()
}

/// Dtype of every tensor and the metadata of a written file.
fn dtypes_and_metadata(path: &Path) -> (Vec<(String, Dtype)>, std::collections::HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dtypes = st.tensors().into_iter().map(|(k, v)| (k, v.dtype())).collect();
    (dtypes, meta.metadata().clone().unwrap_or_default())
}

fn error_of(name: &str) -> String {
    match read_checkpoint(fixture(name)) {
        Ok(_) => panic!("{name} was read"),
        Err(e) => e.to_string(),
    }
}

/// The TR-DETR fixture: every tensor equals torch's own values, whatever its layout in the
/// storages (transposed, permuted, strided rows, storage offset, shared storage, 0-d), and the
/// config metadata holds the JSON-serialisable options plus "model".
#[test]
fn tr_detr_checkpoint_matches_torch() {
    let dir = temp_dir("tr");
    let out = dir.join("tr_detr.safetensors");
    let converted = convert_file(fixture("tr_detr.ckpt"), &out, &ConvertOptions::default()).unwrap();
    assert_eq!(converted.model, ModelName::TrDetr);
    let exp = expected();

    let weights = Weights::load(&out).unwrap();
    let tensors = exp["tensors"].as_object().unwrap();
    assert_eq!(weights.keys().count(), tensors.len());
    for (key, t) in tensors {
        let w = weights.get_any(key).unwrap();
        let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(w.shape, shape, "{key}");
        let values: Vec<f64> = t["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(w.data.len(), values.len().max(shape.iter().product()), "{key}");
        for (i, (&got, &want)) in w.data.iter().zip(&values).enumerate() {
            // F32/F16/BF16 are exact in f32; float64 was narrowed to the nearest f32.
            assert_eq!(got, want as f32, "{key}[{i}]");
        }
    }

    let config = weights.config();
    assert_eq!(config, &exp["config"], "config metadata");
    assert_eq!(config["model"], "tr_detr");
    assert_eq!(config["v_feat_dim"], 2818);
    assert_eq!(config["betas"], json!([0.9, 0.999]));
    assert_eq!(config["np_scale"], 0.5);
    assert_eq!(config["tag"], "é — 🎬");
    assert!(config.get("device").is_none() && config.get("not_a_number").is_none());

    // Dtypes kept: float16 and bfloat16 as they are, float64 narrowed to float32.
    let (dtypes, meta) = dtypes_and_metadata(&out);
    let dtype = |k: &str| dtypes.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(dtype("transformer.t2v_encoder.layers.0.self_attn.in_proj_bias"), Dtype::F16);
    assert_eq!(dtype("fuser.cq_attention.w4mlu"), Dtype::BF16);
    assert_eq!(dtype("input_vid_proj.0.LayerNorm.weight"), Dtype::F32);
    assert_eq!(dtype("fuser.cq_attention.w4C"), Dtype::F32);
    assert_eq!(meta["converted_from"], "tr_detr.ckpt");
    assert!(converted.notices.iter().any(|n| n.contains("float64") && n.contains("input_vid_proj.0.LayerNorm.weight")));
    assert!(converted.notices.iter().any(|n| n.contains("device (a torch.device('cuda'))")), "{:?}", converted.notices);

    // --f32: every floating tensor as float32, same values.
    let out32 = dir.join("f32.safetensors");
    convert_file(fixture("tr_detr.ckpt"), &out32, &ConvertOptions { f32: true, ..Default::default() }).unwrap();
    let (dtypes, _) = dtypes_and_metadata(&out32);
    assert!(dtypes.iter().all(|(_, d)| *d == Dtype::F32), "{dtypes:?}");
    let w32 = Weights::load(&out32).unwrap();
    for key in weights.keys() {
        assert_eq!(w32.get_any(key).unwrap().data, weights.get_any(key).unwrap().data, "{key}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The reader alone: tensors in state_dict order, the options, what was dropped, the epoch.
#[test]
fn reader_returns_tensors_and_options() {
    let ckpt = read_checkpoint(fixture("tr_detr.ckpt")).unwrap();
    let exp = expected();
    assert_eq!(ckpt.layout, Layout::Official);
    assert_eq!(ckpt.epoch, Some(154));
    let keys: Vec<&str> = ckpt.tensors.iter().map(|t| t.key.as_str()).collect();
    let order: Vec<&str> = exp["key_order"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, order);
    let dropped: Vec<&str> = ckpt.dropped_options.iter().map(|d| d.split(' ').next().unwrap()).collect();
    assert_eq!(dropped, ["device", "not_a_number"]);
    for t in &ckpt.tensors {
        let e = &exp["tensors"][&t.key];
        let values: Vec<f64> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = t.to_f64();
        assert_eq!(got.len(), values.len(), "{}", t.key);
        for (i, (&g, &w)) in got.iter().zip(&values).enumerate() {
            // serde_json parses decimals to within an ulp of f64: exact after rounding to f32,
            // and within 1e-15 for the float64 tensor.
            assert!((g - w).abs() <= 1e-15 * w.abs() && g as f32 == w as f32, "{}[{i}]: {g} vs {w}", t.key);
        }
    }
    let f64_tensor = ckpt.tensors.iter().find(|t| t.key == "input_vid_proj.0.LayerNorm.weight").unwrap();
    assert_eq!(f64_tensor.dtype, Dtype::F64, "the reader keeps float64; convert() narrows it");
    let options = ckpt.options.unwrap();
    assert_eq!(options["results_dir"], "results/hl-video_tef-exp");
    assert!(options["a_feat_dim"].is_null());

    // The same from memory.
    let bytes = std::fs::read(fixture("tr_detr.ckpt")).unwrap();
    assert_eq!(read_checkpoint_bytes("mem.ckpt", &bytes).unwrap().tensors.len(), keys.len());
}

/// `--config opt.json`: merged over the pickled options (its values win), or alone.
#[test]
fn config_file_merges_over_pickled_options() {
    let opt = read_options_file(fixture("opt.json")).unwrap();
    let options = ConvertOptions { config: Some(opt.clone()), ..Default::default() };
    let c = convert(read_checkpoint(fixture("tr_detr.ckpt")).unwrap(), &options).unwrap();
    assert_eq!(c.config["v_feat_dim"], 2816);
    assert_eq!(c.config["results_dir"], "results/from-opt-json");
    assert_eq!(c.config["seed"], 2017);
    assert_eq!(c.config["model"], "tr_detr");
    assert!(c.config_source.contains("merged"), "{}", c.config_source);

    // --replace-config: the file alone (a pickled-only option disappears).
    let mut opt_only = opt.clone();
    opt_only.remove("max_v_l");
    let options = ConvertOptions { config: Some(opt_only), replace_config: true, ..Default::default() };
    let c = convert(read_checkpoint(fixture("tr_detr.ckpt")).unwrap(), &options).unwrap();
    assert!(c.config.get("max_v_l").is_none());
    assert_eq!(c.config["v_feat_dim"], 2816);

    // A config naming another model is refused, so is --model against the file's "model".
    let mut other = opt.clone();
    other.insert("model".into(), json!("sg_detr"));
    let options = ConvertOptions { config: Some(other.clone()), model: Some(ModelName::TrDetr), ..Default::default() };
    let e = convert(read_checkpoint(fixture("tr_detr.ckpt")).unwrap(), &options).unwrap_err().to_string();
    assert!(e.contains("--model tr_detr") && e.contains("sg_detr"), "{e}");
    other.insert("model".into(), json!("nonsense"));
    let options = ConvertOptions { config: Some(other), ..Default::default() };
    let e = convert(read_checkpoint(fixture("tr_detr.ckpt")).unwrap(), &options).unwrap_err().to_string();
    assert!(e.contains("unknown model `nonsense`"), "{e}");
}

/// The model from the keys (each spec's distinguishing prefixes), or from --model.
#[test]
fn model_name_inference_and_flag() {
    let ld = convert(read_checkpoint(fixture("ld_detr.ckpt")).unwrap(), &ConvertOptions::default()).unwrap();
    assert_eq!(ld.model, ModelName::LdDetr);
    // A bare state dict with a `module.` prefix on every key: VideoLights keys.
    let sd = read_checkpoint(fixture("state_dict.ckpt")).unwrap();
    assert_eq!(sd.layout, Layout::StateDict);
    assert!(sd.options.is_none());
    let vl = convert(sd, &ConvertOptions::default()).unwrap();
    assert_eq!(vl.model, ModelName::VideoLights);
    assert_eq!(vl.tensors[0].key, "feature_refinement.sim_w");
    assert!(vl.notices.iter().any(|n| n.contains("module.")));
    assert_eq!(serde_json::Value::Object(vl.config.clone()), json!({"model": "videolights"}));

    // --model wins, with a warning when the keys say otherwise.
    let forced = ConvertOptions { model: Some(ModelName::LdDetr), ..Default::default() };
    let c = convert(read_checkpoint(fixture("tr_detr.ckpt")).unwrap(), &forced).unwrap();
    assert_eq!(c.model, ModelName::LdDetr);
    assert_eq!(c.config["model"], "ld_detr");
    assert!(c.notices.iter().any(|n| n.contains("warning") && n.contains("look like tr_detr")), "{:?}", c.notices);

    // Keys shared by several models and no --model: an error asking for it.
    let plain = || Checkpoint {
        path: "plain.ckpt".into(),
        layout: Layout::StateDict,
        tensors: vec![CheckpointTensor {
            key: "query_embed.weight".into(),
            dtype: Dtype::F32,
            shape: vec![1],
            data: 1f32.to_le_bytes().to_vec(),
        }],
        options: None,
        dropped_options: Vec::new(),
        epoch: None,
        notices: Vec::new(),
    };
    let e = convert(plain(), &ConvertOptions::default()).unwrap_err().to_string();
    assert!(e.contains("cannot tell the model") && e.contains("--model"), "{e}");
    let c = convert(plain(), &ConvertOptions { model: Some(ModelName::SgDetr), ..Default::default() }).unwrap();
    assert_eq!(c.config["model"], "sg_detr");
}

/// LD-DETR: int64 buffers kept as int64, the training-only queue converted as it is, `opt` as a
/// plain dict.
#[test]
fn ld_detr_keeps_integer_buffers_and_queues() {
    let dir = temp_dir("ld");
    let out = dir.join("ld.safetensors");
    let c = convert_file(fixture("ld_detr.ckpt"), &out, &ConvertOptions::default()).unwrap();
    assert_eq!(c.tensors.len(), 5);
    let (dtypes, meta) = dtypes_and_metadata(&out);
    let dtype = |k: &str| dtypes.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(dtype("distill_align.queue_ptr"), Dtype::I64);
    assert_eq!(dtype("convolutional_fuser.convolutional_block.blocks.0.bn1.num_batches_tracked"), Dtype::I64);
    assert_eq!(dtype("distill_align.vid_queue"), Dtype::F32);
    let counter = c.tensors.iter().find(|t| t.key.ends_with("num_batches_tracked")).unwrap();
    assert_eq!((counter.shape.clone(), counter.to_f64()), (vec![], vec![1234.0]));
    let config: Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(config, json!({"v_feat_dim": 2818, "t_feat_dim": 512, "queue_length": 8, "model": "ld_detr"}));
    std::fs::remove_dir_all(dir).unwrap();
}

/// SG-DETR's Lightning layout: `model.` removed, other keys dropped, float64 anchors as float32,
/// the nested config found in hyper_parameters (functools.partial and friends skipped).
#[test]
fn sg_detr_lightning_checkpoint() {
    let ckpt = read_checkpoint(fixture("sg_detr.ckpt")).unwrap();
    assert_eq!(ckpt.layout, Layout::Lightning);
    assert_eq!(ckpt.epoch, Some(7));
    let keys: Vec<&str> = ckpt.tensors.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "local_saliency_head.temp",
            "aux_det_head.anchor_generator.cell_anchors.0",
            "input_vid_proj.linear_mapper.0.weight"
        ]
    );
    assert!(ckpt.notices.iter().any(|n| n.contains("losses.empty_weight")), "{:?}", ckpt.notices);
    let c = convert(ckpt, &ConvertOptions::default()).unwrap();
    assert_eq!(c.model, ModelName::SgDetr);
    assert_eq!(c.config["model_dim"], 256);
    assert_eq!(c.config["mrdetr"]["vid_dim"], 34);
    assert_eq!(c.config["mrdetr"]["pos_temp"], "${pos_temp}");
    assert_eq!(c.config["model"], "sg_detr");
    let anchors = c.tensors.iter().find(|t| t.key.contains("cell_anchors")).unwrap();
    assert_eq!((anchors.dtype, anchors.shape.clone(), anchors.to_f64()), (Dtype::F32, vec![1, 2], vec![-1.25, 1.75]));
    let temp = &c.tensors[0];
    assert_eq!((temp.shape.clone(), temp.to_f64()), (vec![], vec![0.07f32 as f64]));

    // A full Hydra config pickled as an OmegaConf DictConfig: read from its nodes, the `model`
    // group lifted to the top level so that "model" names the architecture.
    let c = convert(read_checkpoint(fixture("sg_detr_omegaconf.ckpt")).unwrap(), &ConvertOptions::default()).unwrap();
    let config = Value::Object(c.config.clone());
    assert_eq!(config["model"], "sg_detr");
    assert_eq!(config["model_dim"], 256);
    assert_eq!(config["detr_detector"], json!({"num_queries": "${model.num_queries}", "num_decoder_layers": 2}));
    assert_eq!(config["mrdetr"]["pos_temp"], "${pos_temp}");
    assert_eq!(config["data"], json!({"batch_size": 128}));
    assert_eq!(config["trainer"], json!({"max_epochs": 150}));
    assert!(c.notices.iter().any(|n| n.contains("lifted")), "{:?}", c.notices);

    // The same lift for a --config file holding a full Hydra config.
    let hydra = json!({"model": {"model_dim": 128, "num_queries": 25}, "data": {"clip_len": 2}});
    let options = ConvertOptions { config: Some(hydra.as_object().unwrap().clone()), ..Default::default() };
    let c = convert(read_checkpoint(fixture("sg_detr.ckpt")).unwrap(), &options).unwrap();
    assert_eq!((c.config["model_dim"].clone(), c.config["model"].clone()), (json!(128), json!("sg_detr")));
    assert_eq!(c.config["num_queries"], 25);
    assert_eq!(c.config["data"], json!({"clip_len": 2}));
    assert_eq!(c.config["mrdetr"]["vid_dim"], 34, "the pickled config stays under the file's values");
}

/// Files that cannot be read are refused with a message that says why.
#[test]
fn refuses_what_it_cannot_read() {
    let dir = temp_dir("bad");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let err = |p: PathBuf| read_checkpoint(&p).unwrap_err().to_string();

    let e = err(write("text.ckpt", b"hello, I am not a checkpoint"));
    assert!(e.contains("not a PyTorch checkpoint") && e.contains("text.ckpt"), "{e}");
    let e = error_of("legacy.ckpt");
    assert!(e.contains("legacy torch.save format") && e.contains("torch >= 1.6"), "{e}");
    let good = std::fs::read(fixture("tr_detr.ckpt")).unwrap();
    let e = err(write("truncated.ckpt", &good[..good.len() / 2]));
    assert!(e.contains("truncated or corrupt zip"), "{e}");
    let e = err(write("lfs.ckpt", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 100\n"));
    assert!(e.contains("Git LFS pointer"), "{e}");
    let safetensors_file = dir.join("already.safetensors");
    convert_file(fixture("ld_detr.ckpt"), &safetensors_file, &ConvertOptions::default()).unwrap();
    assert!(err(safetensors_file).contains("already a safetensors file"));

    let e = error_of("no_model.ckpt");
    assert!(e.contains("no `model` entry") && e.contains("epoch, opt"), "{e}");
    let e = error_of("complex.ckpt");
    assert!(e.contains("unsupported storage type torch.ComplexFloatStorage") && e.contains("w4C"), "{e}");
    let e = error_of("bad_opcode.ckpt");
    assert!(e.contains("unknown pickle opcode 0xff") && e.contains("pickle byte 2"), "{e}");
    let e = error_of("bad_global.ckpt");
    assert!(e.contains("refusing the global `posix.system`"), "{e}");
    let e = error_of("torchscript.pt");
    assert!(e.contains("TorchScript archive"), "{e}");
    let e = error_of("module.ckpt");
    assert!(e.contains("torch.nn.modules.linear.Linear") && e.contains("state_dict()"), "{e}");

    // A zip that is not a torch.save archive.
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("notes.txt", zip::write::FileOptions::default()).unwrap();
    std::io::Write::write_all(&mut zip, b"hi").unwrap();
    let e = err(write("other.zip", &zip.finish().unwrap().into_inner()));
    assert!(e.contains("without `data.pkl`"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn moment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moment")).args(args).output().expect("run moment")
}

/// The command: converts, prints a summary and the notices; a failure exits non-zero and leaves
/// no output file.
#[test]
fn cli_convert() {
    let dir = temp_dir("cli");
    let out = dir.join("model.safetensors");
    let ckpt = fixture("tr_detr.ckpt");
    let opt = fixture("opt.json");
    let o =
        moment(&["convert", ckpt.to_str().unwrap(), "--out", out.to_str().unwrap(), "--config", opt.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("model tr_detr, 13 tensors"), "{stderr}");
    assert!(stderr.contains("epoch 154") && stderr.contains("merged"), "{stderr}");
    assert!(stderr.contains("options not carried over (not JSON): device"), "{stderr}");
    let w = Weights::load(&out).unwrap();
    assert_eq!(w.config()["v_feat_dim"], 2816);
    assert_eq!(w.config()["model"], "tr_detr");

    let bad = dir.join("bad.safetensors");
    let legacy = fixture("legacy.ckpt");
    let o = moment(&["convert", legacy.to_str().unwrap(), "--out", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("moment: error:") && stderr.contains("legacy torch.save format"), "{stderr}");
    assert!(!bad.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary files left");

    let o = moment(&["convert", ckpt.to_str().unwrap(), "--out", bad.to_str().unwrap(), "--model", "detr"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown model `detr`"));
    std::fs::remove_dir_all(dir).unwrap();
}
