//! Official PyTorch checkpoints → moment-gpu weights files, without Python.
//!
//! A checkpoint of `torch.save` (torch ≥ 1.6) is a zip archive: `<dir>/data.pkl` (a pickle of the
//! saved object), `<dir>/data/<key>` (the raw bytes of each storage), `<dir>/version` and maybe
//! `<dir>/byteorder`. The pickle is read by a small stack machine ([`pickle`]) that never runs
//! anything; tensors come out as views of storages, and only the storages of the kept tensors are
//! read.
//!
//! Layouts read:
//! - **official** (TR-DETR, LD-DETR, VideoLights): `{"model": state_dict, "optimizer": …,
//!   "lr_scheduler": …, "epoch": int, "opt": argparse.Namespace}`. The tensors of `model` are kept
//!   under their keys (a `module.` prefix on every key is removed); the options are the
//!   JSON-serialisable entries of `opt`;
//! - **Lightning** (SG-DETR): `{"state_dict": {"model.<key>": tensor, …}, "hyper_parameters": …}`.
//!   The `model.` prefix is removed and other keys are dropped (sg-detr.md §4). The options are a
//!   nested Hydra-style config found in `hyper_parameters` (a dict, or an OmegaConf `DictConfig`,
//!   holding `model_dim`); the released runner does not save one there, so usually the options
//!   come from `--config` (or the QVHighlights defaults apply);
//! - a bare state dict (`torch.save(model.state_dict())`): tensors only, no options.
//!
//! Everything else in the checkpoint (optimizer moments, scheduler, epoch) is parsed through and
//! skipped. Tensors keep their dtype, except float64, which is written as float32 (the weights
//! loader reads F32/F16/BF16; SG-DETR's anchor buffers are float64); [`ConvertOptions::f32`]
//! writes every floating tensor as float32. Integer and bool tensors (BatchNorm
//! `num_batches_tracked`, LD-DETR's `queue_ptr`) are kept as they are. Non-contiguous views,
//! storage offsets and storages shared between tensors are read as the tensors they describe.
//!
//! The weights file gets the tensors by key and, in the metadata key `config`, a JSON object:
//! the options (official names) plus `"model"`. Option values that JSON cannot hold
//! (`torch.device`, other objects, NaN, bytes) are dropped and listed in the notices.
//!
//! Refused with a clear error: a file that is not a zip (legacy pre-1.6 `torch.save` files,
//! plain pickles, Git LFS pointers, safetensors), a truncated or corrupt zip, a zip without
//! `data.pkl` (TorchScript archives included), big-endian storages, a pickle with an unknown
//! opcode or a global no checkpoint uses, a checkpoint without a state dict, a state dict entry
//! that is not a plain tensor, and storage types other than float64/32/16, bfloat16 and the
//! integer/bool types.

pub mod pickle;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::{Dtype, View};
use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};
use pickle::{StorageRef, TensorRef, Value};

/// The four architectures a weights file can declare in its config's `model` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelName {
    TrDetr,
    LdDetr,
    VideoLights,
    SgDetr,
}

impl ModelName {
    pub const ALL: [ModelName; 4] = [ModelName::TrDetr, ModelName::LdDetr, ModelName::VideoLights, ModelName::SgDetr];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::TrDetr => "tr_detr",
            ModelName::LdDetr => "ld_detr",
            ModelName::VideoLights => "videolights",
            ModelName::SgDetr => "sg_detr",
        }
    }

    /// Key prefixes that only this model's state dict has (the key tables of the four specs).
    fn marker_prefixes(self) -> &'static [&'static str] {
        match self {
            ModelName::TrDetr => &["fuser.cq_attention.", "fuser.cq_concat."],
            ModelName::LdDetr => &["convolutional_fuser.", "loop_decoder.", "distill_align."],
            ModelName::VideoLights => {
                &["feature_refinement.", "global_rep_token", "transformer.t2v_encoder.layers.0.cross_"]
            }
            ModelName::SgDetr => &["local_saliency_head.", "txt2vis_sal_encoder.", "main_det_head.", "aux_det_head."],
        }
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelName::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown model `{s}`; expected one of tr_detr, ld_detr, videolights, sg_detr"))
    }
}

/// The model whose distinguishing keys `keys` contain, with the first such key; `None` when no
/// model's or several models' markers occur.
pub fn infer_model<'a>(keys: impl IntoIterator<Item = &'a str>) -> std::result::Result<(ModelName, String), String> {
    let mut found: Vec<(ModelName, String)> = Vec::new();
    for key in keys {
        for m in ModelName::ALL {
            if !found.iter().any(|(f, _)| *f == m) && m.marker_prefixes().iter().any(|p| key.starts_with(p)) {
                found.push((m, key.to_string()));
            }
        }
    }
    match found.len() {
        1 => Ok(found.pop().unwrap()),
        0 => Err("its keys match none of tr_detr, ld_detr, videolights, sg_detr".into()),
        _ => Err(format!(
            "its keys match several models ({})",
            found.iter().map(|(m, k)| format!("{m}: `{k}`")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// How the checkpoint stores its state dict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `{"model": state_dict, "opt": Namespace, …}` (TR-DETR, LD-DETR, VideoLights, Lighthouse).
    Official,
    /// PyTorch Lightning: `{"state_dict": {"model.<key>": …}, "hyper_parameters": …}` (SG-DETR).
    Lightning,
    /// `torch.save(model.state_dict())`.
    StateDict,
}

impl Layout {
    /// `official layout`, `Lightning layout`, `bare state dict`.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Official => "official layout",
            Layout::Lightning => "Lightning layout",
            Layout::StateDict => "bare state dict",
        }
    }
}

/// One tensor, contiguous, row-major, little-endian, in its safetensors dtype.
#[derive(Clone, Debug)]
pub struct CheckpointTensor {
    pub key: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl CheckpointTensor {
    /// The values as f64 (for checks and tests); integer types converted exactly up to 2^53.
    pub fn to_f64(&self) -> Vec<f64> {
        let d = &self.data;
        match self.dtype {
            Dtype::F32 => d.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f64()).collect(),
            Dtype::I64 => d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::I32 => d.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
            Dtype::I16 => d.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f64).collect(),
            Dtype::I8 => d.iter().map(|&b| b as i8 as f64).collect(),
            Dtype::U8 | Dtype::BOOL => d.iter().map(|&b| b as f64).collect(),
            _ => Vec::new(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl View for &CheckpointTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// What a checkpoint holds, read.
#[derive(Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub layout: Layout,
    /// The state dict's tensors in the checkpoint's order, under their official keys.
    pub tensors: Vec<CheckpointTensor>,
    /// The options the checkpoint carries, JSON-serialisable entries only (`None`: no options).
    pub options: Option<Map<String, Json>>,
    /// Options (dotted paths) left out because JSON cannot hold them, with what they were.
    pub dropped_options: Vec<String>,
    /// `epoch` of an official checkpoint.
    pub epoch: Option<i64>,
    /// What the reader changed or skipped (prefixes removed, keys dropped, …).
    pub notices: Vec<String>,
}

/// Reads an official checkpoint (see the module docs).
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(512);
    (&mut file).take(512).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    file.rewind().map_err(|e| Error::io(path, e))?;
    sniff(path, &head)?;
    read_zip(path, file)
}

/// Reads a checkpoint held in memory; `path` only names it in errors.
pub fn read_checkpoint_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Checkpoint> {
    let path = path.as_ref();
    sniff(path, &bytes[..bytes.len().min(512)])?;
    read_zip(path, std::io::Cursor::new(bytes))
}

fn fail<T>(path: &Path, reason: impl Into<String>) -> Result<T> {
    Err(Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() })
}

const RESAVE: &str = "re-save it with torch >= 1.6: python -c \"import torch; \
torch.save(torch.load('OLD', map_location='cpu', weights_only=False), 'NEW')\"";

/// Recognises what the file is from its first bytes; refuses everything but a zip archive.
fn sniff(path: &Path, head: &[u8]) -> Result<()> {
    // torch.save's legacy format: a pickle of the magic number 0x1950a86a20f9469cfc6c first.
    const LEGACY_MAGIC: &[u8] = b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if head.is_empty() {
        return fail(path, "empty file, not a PyTorch checkpoint");
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(());
    }
    if head.starts_with(b"version https://git-lfs") {
        return fail(path, "this is a Git LFS pointer, not the checkpoint: fetch the real file (git lfs pull)");
    }
    if head.len() >= 2 + LEGACY_MAGIC.len() && head[0] == 0x80 && head[2..].starts_with(LEGACY_MAGIC) {
        return fail(path, format!("legacy torch.save format (torch < 1.6, or _use_new_zipfile_serialization=False), which is not read; {RESAVE}"));
    }
    if head.len() > 262 && &head[257..262] == b"ustar" {
        return fail(path, format!("tar archive: the torch.save format of torch <= 0.3, which is not read; {RESAVE}"));
    }
    if head[0] == 0x80 {
        return fail(
            path,
            format!("a plain pickle, not a torch.save zip archive (pickle.dump, or legacy torch.save); {RESAVE}"),
        );
    }
    if head.len() >= 9 && head[8] == b'{' {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap());
        if n > 1 && n < 100_000_000 {
            return fail(path, "this is already a safetensors file; nothing to convert");
        }
    }
    fail(path, "not a PyTorch checkpoint: no zip signature (a torch.save file of torch >= 1.6 is a zip archive)")
}

fn storage_dtype(class: &str) -> Option<(Dtype, usize)> {
    Some(match class {
        "FloatStorage" => (Dtype::F32, 4),
        "DoubleStorage" => (Dtype::F64, 8),
        "HalfStorage" => (Dtype::F16, 2),
        "BFloat16Storage" => (Dtype::BF16, 2),
        "LongStorage" => (Dtype::I64, 8),
        "IntStorage" => (Dtype::I32, 4),
        "ShortStorage" => (Dtype::I16, 2),
        "CharStorage" => (Dtype::I8, 1),
        "ByteStorage" => (Dtype::U8, 1),
        "BoolStorage" => (Dtype::BOOL, 1),
        _ => return None,
    })
}

struct Archive<R: Read + Seek> {
    path: PathBuf,
    zip: zip::ZipArchive<R>,
    prefix: String,
    storages: HashMap<String, Arc<Vec<u8>>>,
}

impl<R: Read + Seek> Archive<R> {
    fn record(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let full = format!("{}{}", self.prefix, name);
        let mut f = match self.zip.by_name(&full) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return fail(&self.path, format!("zip record `{full}`: {e}")),
        };
        let mut out = Vec::with_capacity(f.size().min(1 << 30) as usize);
        f.read_to_end(&mut out)
            .or_else(|e| fail(&self.path, format!("zip record `{full}` is truncated or corrupt: {e}")))?;
        Ok(Some(out))
    }

    fn storage(&mut self, s: &StorageRef, elem: usize) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.storages.get(&s.key) {
            return Ok(b.clone());
        }
        let Some(bytes) = self.record(&format!("data/{}", s.key))? else {
            return fail(&self.path, format!("storage record `{}data/{}` is missing", self.prefix, s.key));
        };
        let need = s.numel.saturating_mul(elem as u64);
        if (bytes.len() as u64) < need {
            return fail(
                &self.path,
                format!(
                    "storage `data/{}` holds {} bytes; its {} {} elements need {need}",
                    s.key,
                    bytes.len(),
                    s.numel,
                    s.class
                ),
            );
        }
        let bytes = Arc::new(bytes);
        self.storages.insert(s.key.clone(), bytes.clone());
        Ok(bytes)
    }

    /// The bytes of a tensor view, contiguous.
    fn tensor(&mut self, key: &str, t: &TensorRef) -> Result<CheckpointTensor> {
        let Some((dtype, elem)) = storage_dtype(&t.storage.class) else {
            return fail(
                &self.path,
                format!(
                    "tensor `{key}`: unsupported storage type torch.{} (supported: Float, Double, Half, BFloat16, Long, Int, Short, Char, Byte and Bool storages)",
                    t.storage.class
                ),
            );
        };
        let bad = |reason: String| fail::<CheckpointTensor>(&self.path, format!("tensor `{key}`: {reason}"));
        let mut numel: u64 = 1;
        let mut last: u64 = t.offset; // offset of the last element
        for (&n, &s) in t.shape.iter().zip(&t.stride) {
            numel = match numel.checked_mul(n) {
                Some(v) => v,
                None => return bad(format!("size {:?} overflows", t.shape)),
            };
            if n > 0 {
                last = match (n - 1).checked_mul(s).and_then(|x| x.checked_add(last)) {
                    Some(v) => v,
                    None => return bad(format!("stride {:?} overflows", t.stride)),
                };
            }
        }
        // A view may repeat elements (stride 0) but not grow without bound.
        const MAX_BYTES: u64 = 1 << 36;
        if numel.saturating_mul(elem as u64) > MAX_BYTES.max(t.storage.numel.saturating_mul(elem as u64)) {
            return bad(format!("size {:?} is larger than its storage and than 64 GiB", t.shape));
        }
        let shape: Vec<usize> = t.shape.iter().map(|&n| n as usize).collect();
        if numel == 0 {
            return Ok(CheckpointTensor { key: key.into(), dtype, shape, data: Vec::new() });
        }
        if last >= t.storage.numel {
            return bad(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {}",
                t.offset, t.shape, t.stride, t.storage.numel
            ));
        }
        let storage = self.storage(&t.storage, elem)?;
        let mut data = Vec::with_capacity(numel as usize * elem);
        // Row-major strides of the same shape: a contiguous view is one copy.
        let mut contiguous = true;
        let mut expect = 1u64;
        for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
            if n != 1 && s != expect {
                contiguous = false;
            }
            expect *= n;
        }
        let start = t.offset as usize * elem;
        if contiguous {
            data.extend_from_slice(&storage[start..start + numel as usize * elem]);
        } else {
            let rank = shape.len();
            let mut index = vec![0usize; rank];
            let mut at = t.offset as usize;
            for _ in 0..numel {
                data.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
                // odometer increment, innermost dimension first
                for d in (0..rank).rev() {
                    index[d] += 1;
                    at += t.stride[d] as usize;
                    if index[d] < shape[d] {
                        break;
                    }
                    at -= t.stride[d] as usize * shape[d];
                    index[d] = 0;
                }
            }
        }
        Ok(CheckpointTensor { key: key.into(), dtype, shape, data })
    }
}

fn read_zip<R: Read + Seek>(path: &Path, reader: R) -> Result<Checkpoint> {
    let zip = zip::ZipArchive::new(reader).or_else(|e| {
        fail(
            path,
            format!("truncated or corrupt zip archive ({e}); the checkpoint was not fully downloaded or written"),
        )
    })?;
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    let pkl: Vec<&String> = names
        .iter()
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .collect();
    if names.iter().any(|n| n.ends_with("constants.pkl") || n.contains("/code/")) {
        return fail(path, "a TorchScript archive (torch.jit.save), not a torch.save checkpoint");
    }
    let prefix = match pkl.as_slice() {
        [one] => one.trim_end_matches("data.pkl").to_string(),
        [] => return fail(path, "a zip archive without `data.pkl`: not a torch.save checkpoint"),
        _ => return fail(path, format!("a zip archive with several `data.pkl` records ({})", pkl.len())),
    };
    let mut archive = Archive { path: path.to_path_buf(), zip, prefix, storages: HashMap::new() };
    if let Some(order) = archive.record("byteorder")? {
        if order.trim_ascii() != b"little" {
            return fail(
                path,
                format!(
                    "storages in `{}` byte order: only little-endian checkpoints are read",
                    String::from_utf8_lossy(&order)
                ),
            );
        }
    }
    let pickled = archive.record("data.pkl")?.unwrap_or_default();
    let root = pickle::parse(&pickled).or_else(|e| fail(path, format!("data.pkl: {e}")))?;
    let mut notices = Vec::new();

    let Some(top) = root.as_dict() else {
        return fail(path, format!("the checkpoint holds {}, not a dict with a state dict", describe(&root)));
    };
    let all_tensors = !top.is_empty() && top.iter().all(|(_, v)| matches!(v, Value::Tensor(_)));
    let (layout, state) = if let Some(model) = root.get("model") {
        (Layout::Official, model)
    } else if let Some(sd) = root.get("state_dict") {
        (Layout::Lightning, sd)
    } else if all_tensors {
        (Layout::StateDict, &root)
    } else {
        let keys: Vec<String> = top.iter().map(|(k, _)| key_text(k)).collect();
        return fail(
            path,
            format!(
                "no `model` entry (top-level keys: {}); expected torch.save({{\"model\": state_dict, \"opt\": …}}), a Lightning checkpoint with `state_dict`, or a bare state dict",
                if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
            ),
        );
    };
    let entry = match layout {
        Layout::Official => "`model`",
        Layout::Lightning => "`state_dict`",
        Layout::StateDict => "the state dict",
    };
    let Some(items) = state.as_dict() else {
        let hint = if matches!(state, Value::Object { .. }) {
            " (a whole pickled nn.Module: save `model.state_dict()` instead)"
        } else {
            ""
        };
        return fail(path, format!("{entry} is {}, not a state dict{hint}", describe(state)));
    };

    // Keys: strings; Lightning keeps `model.*` without the prefix; `module.` everywhere goes.
    let mut entries: Vec<(String, &Value)> = Vec::new();
    for (k, v) in items {
        let Value::Str(k) = k else {
            return fail(path, format!("{entry} has a key that is {}, not a str", k.kind()));
        };
        entries.push((k.clone(), v));
    }
    if layout == Layout::Lightning {
        let (kept, other): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k.starts_with("model."));
        if !other.is_empty() {
            notices.push(format!(
                "dropped {} state_dict entries outside `model.` ({})",
                other.len(),
                abbreviate(other.iter().map(|(k, _)| k.as_str()))
            ));
        }
        entries = kept.into_iter().map(|(k, v)| (k["model.".len()..].to_string(), v)).collect();
    } else if !entries.is_empty() && entries.iter().all(|(k, _)| k.starts_with("module.")) {
        notices.push("removed the `module.` (DataParallel) prefix of every key".into());
        entries = entries.into_iter().map(|(k, v)| (k["module.".len()..].to_string(), v)).collect();
    }
    if entries.is_empty() {
        return fail(path, format!("{entry} holds no tensors"));
    }
    let mut tensors = Vec::with_capacity(entries.len());
    for (key, v) in &entries {
        match v {
            Value::Tensor(t) => tensors.push(archive.tensor(key, t)?),
            other => {
                return fail(path, format!("{entry} entry `{key}` is {}, not a tensor", describe(other)));
            }
        }
    }

    // Options.
    let mut dropped = Vec::new();
    let options = match layout {
        Layout::Official => match root.get("opt") {
            None | Some(Value::None) => None,
            Some(opt) => match options_object(opt) {
                Some(items) => Some(json_object(items, "", &mut dropped)),
                None => {
                    notices.push(format!("`opt` is {}, not options; ignored", describe(opt)));
                    None
                }
            },
        },
        Layout::Lightning => {
            // Lightning's `AttributeDict` (a dict subclass) arrives as an object whose items are
            // its state.
            let found = root.get("hyper_parameters").and_then(options_object).and_then(|items| {
                let json = Json::Object(json_object(items, "", &mut Vec::new()));
                find_nested_config(&json).cloned()
            });
            if found.is_none() {
                notices.push(
                    "the checkpoint's hyper_parameters carry no model config (no `model_dim`); pass the run's config as JSON with --config, else the QVHighlights defaults apply".into(),
                );
            }
            found
        }
        Layout::StateDict => None,
    };
    let epoch = match root.get("epoch") {
        Some(Value::Int(e)) => Some(*e),
        _ => None,
    };
    Ok(Checkpoint { path: path.to_path_buf(), layout, tensors, options, dropped_options: dropped, epoch, notices })
}

fn key_text(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => other.kind(),
    }
}

fn abbreviate<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let keys: Vec<&str> = keys.collect();
    if keys.len() <= 5 {
        keys.join(", ")
    } else {
        format!("{}, … {} more", keys[..5].join(", "), keys.len() - 5)
    }
}

/// A value for a message: `a torch.device object ('cuda')` etc.
fn describe(v: &Value) -> String {
    match v {
        Value::Object { module, name, args, .. } if module == "torch" && name == "device" => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match a {
                    Value::Str(s) => format!("'{s}'"),
                    Value::Int(i) => i.to_string(),
                    other => other.kind(),
                })
                .collect();
            format!("a torch.device({})", a.join(", "))
        }
        other => other.kind(),
    }
}

/// The attribute dict of an options object: an `argparse.Namespace` (its BUILD state), any
/// other object with a dict state (e.g. `easydict.EasyDict`), or a plain dict.
fn options_object(v: &Value) -> Option<&[(Value, Value)]> {
    match v {
        Value::Dict(items) => Some(items),
        Value::Object { state: Some(state), .. } => state.as_dict(),
        Value::Object { state: None, .. } => Some(&[]),
        _ => None,
    }
}

fn json_object(items: &[(Value, Value)], path: &str, dropped: &mut Vec<String>) -> Map<String, Json> {
    let mut out = Map::new();
    for (k, v) in items {
        let key = match k {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => {
                dropped.push(format!("{path}<{}> (a non-string key)", other.kind()));
                continue;
            }
        };
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if let Some(j) = to_json(v, &here, dropped) {
            out.insert(key, j);
        }
    }
    out
}

/// JSON for a pickled value; `None` (recorded in `dropped` under `path`) when JSON cannot hold
/// it. Namespaces and OmegaConf containers become objects.
fn to_json(v: &Value, path: &str, dropped: &mut Vec<String>) -> Option<Json> {
    let drop = |dropped: &mut Vec<String>, what: String| {
        dropped.push(format!("{path} ({what})"));
        None
    };
    match v {
        Value::None => Some(Json::Null),
        Value::Bool(b) => Some(Json::Bool(*b)),
        Value::Int(i) => Some(Json::from(*i)),
        Value::Float(x) => match serde_json::Number::from_f64(*x) {
            Some(n) => Some(Json::Number(n)),
            None => drop(dropped, format!("{x}")),
        },
        Value::Str(s) => Some(Json::String(s.clone())),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) => {
            let mut scratch = Vec::new();
            let out: Option<Vec<Json>> =
                items.iter().enumerate().map(|(i, x)| to_json(x, &format!("{path}[{i}]"), &mut scratch)).collect();
            match out {
                Some(a) => Some(Json::Array(a)),
                None => drop(dropped, format!("a list holding {}", scratch.join(", "))),
            }
        }
        Value::Dict(items) => Some(Json::Object(json_object(items, path, dropped))),
        Value::Object { module, name, state, .. } if module == "argparse" && name == "Namespace" => match state {
            Some(s) => to_json(s, path, dropped),
            None => Some(Json::Object(Map::new())),
        },
        Value::Object { module, state: Some(state), .. } if module.starts_with("omegaconf") => {
            omegaconf_json(state, path, dropped).or_else(|| drop(dropped, format!("an unreadable {}", v.kind())))
        }
        other => drop(dropped, describe(other)),
    }
}

/// An OmegaConf node or container from its pickled `__dict__`: a `DictConfig`/`ListConfig`
/// keeps its children in `_content`, a value node its value in `_val`.
fn omegaconf_json(state: &Value, path: &str, dropped: &mut Vec<String>) -> Option<Json> {
    if let Some(val) = state.get("_val") {
        return to_json(val, path, dropped);
    }
    match state.get("_content")? {
        Value::Dict(items) => Some(Json::Object(json_object(items, path, dropped))),
        content => to_json(content, path, dropped),
    }
}

/// A nested (Hydra-style) SG-DETR config in Lightning hyper-parameters: an object holding
/// `model_dim`, or `model` holding it, at the top or one level down.
fn find_nested_config(j: &Json) -> Option<&Map<String, Json>> {
    let is_config = |m: &Map<String, Json>| {
        m.contains_key("model_dim")
            || m.get("model").and_then(Json::as_object).is_some_and(|x| x.contains_key("model_dim"))
    };
    let top = j.as_object()?;
    if is_config(top) {
        return Some(top);
    }
    top.values().filter_map(Json::as_object).find(|m| is_config(m))
}

/// Choices of a conversion beyond the checkpoint itself.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// The architecture; inferred from the state dict keys when `None`.
    pub model: Option<ModelName>,
    /// An official options file (`opt.json`), merged over the pickled options (its values win).
    pub config: Option<Map<String, Json>>,
    /// Use `config` alone, ignoring the options pickled in the checkpoint.
    pub replace_config: bool,
    /// Write every floating tensor as float32 (default: F16/BF16 kept, F64 → F32).
    pub f32: bool,
}

/// A checkpoint ready to be written as a weights file.
#[derive(Debug)]
pub struct Converted {
    pub model: ModelName,
    pub tensors: Vec<CheckpointTensor>,
    /// The `config` metadata: options plus `"model"`.
    pub config: Map<String, Json>,
    /// Where the options came from, for the summary (`the checkpoint's opt`, …).
    pub config_source: String,
    pub notices: Vec<String>,
    /// Name of the checkpoint file, stored in the metadata as `converted_from`.
    pub source: String,
}

/// A full Hydra config nests the model group under `model`: its entries move to the top level
/// (top-level entries win, as in the SG-DETR config reader, sg-detr.md §8) so that `model` can
/// name the architecture. Returns whether there was such a group.
fn lift_model_group(config: &mut Map<String, Json>) -> bool {
    let Some(Json::Object(group)) = config.get("model").cloned() else {
        return false;
    };
    config.remove("model");
    for (k, v) in group {
        config.entry(k).or_insert(v);
    }
    true
}

/// Picks the model, builds the config and applies the dtype policy.
pub fn convert(checkpoint: Checkpoint, options: &ConvertOptions) -> Result<Converted> {
    let Checkpoint { path, mut tensors, options: pickled, dropped_options, mut notices, layout, .. } = checkpoint;
    let cfg_err = |reason: String| Error::Config { path: path.clone(), reason };

    let inferred = infer_model(tensors.iter().map(|t| t.key.as_str()));
    let file_model = match options.config.as_ref().and_then(|c| c.get("model")) {
        // null, or a full Hydra config's model group (lifted below)
        None | Some(Json::Null) | Some(Json::Object(_)) => None,
        Some(Json::String(s)) => Some(s.parse::<ModelName>().map_err(|e| cfg_err(format!("--config: {e}")))?),
        Some(other) => return Err(cfg_err(format!("--config: `model` = {other} is not a model name"))),
    };
    let model = match (options.model, file_model) {
        (Some(m), Some(f)) if m != f => {
            return Err(cfg_err(format!("--model {m} but the --config file says \"model\": \"{f}\"")));
        }
        (Some(m), _) | (None, Some(m)) => {
            if let Ok((found, key)) = &inferred {
                if *found != m {
                    notices.push(format!("warning: converting as {m}, but the keys look like {found} (`{key}`)"));
                }
            }
            m
        }
        (None, None) => match inferred {
            Ok((m, _)) => m,
            Err(why) => {
                return Err(Error::Checkpoint {
                    path,
                    reason: format!(
                        "cannot tell the model: {why} (first keys: {}); pass --model tr_detr|ld_detr|videolights|sg_detr",
                        abbreviate(tensors.iter().take(6).map(|t| t.key.as_str()))
                    ),
                });
            }
        },
    };

    let mut pickled = if options.replace_config { None } else { pickled };
    let mut file = options.config.clone();
    let mut lifted = false;
    for source in [pickled.as_mut(), file.as_mut()].into_iter().flatten() {
        lifted |= lift_model_group(source);
    }
    if lifted {
        notices.push("lifted the config's `model` group (a full Hydra config) to the top level".into());
    }
    let mut config = pickled.clone().unwrap_or_default();
    let mut sources = Vec::new();
    if pickled.is_some() {
        sources.push(match layout {
            Layout::Lightning => "the checkpoint's hyper_parameters",
            _ => "the checkpoint's `opt`",
        });
        if !dropped_options.is_empty() {
            notices.push(format!("options not carried over (not JSON): {}", dropped_options.join(", ")));
        }
    }
    if let Some(file) = file {
        config.extend(file);
        sources.push(if pickled.is_some() { "--config merged over them" } else { "--config" });
    }
    if let Some(old) = config.get("model").filter(|v| v.as_str() != Some(model.as_str()) && !v.is_null()) {
        notices.push(format!("option `model` = {old} replaced by \"{model}\""));
    }
    config.insert("model".into(), Json::String(model.as_str().into()));
    let config_source =
        if sources.is_empty() { "none (the model's defaults apply)".to_string() } else { sources.join(", ") };

    // Dtypes.
    let mut narrowed = Vec::new();
    for t in &mut tensors {
        let to_f32 = match t.dtype {
            Dtype::F64 => true,
            Dtype::F16 | Dtype::BF16 => options.f32,
            _ => false,
        };
        if to_f32 {
            if t.dtype == Dtype::F64 {
                narrowed.push(t.key.clone());
            }
            let values = t.to_f64();
            t.data = values.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
            t.dtype = Dtype::F32;
        }
    }
    if !narrowed.is_empty() {
        notices
            .push(format!("float64 tensors written as float32: {}", abbreviate(narrowed.iter().map(String::as_str))));
    }
    let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Converted { model, tensors, config, config_source, notices, source })
}

impl Converted {
    /// The safetensors bytes: every tensor by key, metadata `config` (JSON string),
    /// `converted_from` (the checkpoint's file name) and `format` = `pt`.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        safetensors_bytes(&self.tensors, &self.config, &self.source)
    }

    /// Writes the weights file atomically (a temporary file beside it, renamed).
    pub fn save(&self, out: impl AsRef<Path>) -> Result<()> {
        write_atomically(out.as_ref(), &self.to_safetensors()?)
    }

    /// Tensor count per dtype, e.g. `F32 184, I64 2`.
    pub fn dtype_summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &self.tensors {
            *counts.entry(format!("{:?}", t.dtype)).or_default() += 1;
        }
        counts.iter().map(|(d, n)| format!("{d} {n}")).collect::<Vec<_>>().join(", ")
    }
}

/// Serialises tensors and a config as a moment-gpu weights file.
pub fn safetensors_bytes(tensors: &[CheckpointTensor], config: &Map<String, Json>, source: &str) -> Result<Vec<u8>> {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("config".to_string(), Json::Object(config.clone()).to_string());
    metadata.insert("format".to_string(), "pt".to_string());
    if !source.is_empty() {
        metadata.insert("converted_from".to_string(), source.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        if !seen.insert(t.key.as_str()) {
            return Err(Error::Checkpoint { path: source.into(), reason: format!("tensor `{}` appears twice", t.key) });
        }
    }
    safetensors::serialize(tensors.iter().map(|t| (t.key.as_str(), t)), Some(metadata))
        .map_err(|e| Error::Checkpoint { path: source.into(), reason: format!("cannot serialise: {e}") })
}

/// Writes `contents` to `path` through a temporary file beside it, renamed on success.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Reads `input`, converts it and writes `output` atomically.
pub fn convert_file(input: impl AsRef<Path>, output: impl AsRef<Path>, options: &ConvertOptions) -> Result<Converted> {
    let converted = convert(read_checkpoint(input)?, options)?;
    converted.save(output)?;
    Ok(converted)
}

/// Reads an official options file (`opt.json`): a JSON object.
pub fn read_options_file(path: impl AsRef<Path>) -> Result<Map<String, Json>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    match serde_json::from_str(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(other) => Err(Error::Config { path: path.into(), reason: format!("not a JSON object but {other}") }),
        Err(e) => Err(Error::Config { path: path.into(), reason: format!("not valid JSON: {e}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_inference() {
        assert_eq!(infer_model(["a", "fuser.cq_attention.w4C"]).unwrap().0, ModelName::TrDetr);
        assert_eq!(infer_model(["convolutional_fuser.x"]).unwrap().0, ModelName::LdDetr);
        assert_eq!(infer_model(["feature_refinement.sim_w"]).unwrap().0, ModelName::VideoLights);
        assert_eq!(infer_model(["local_saliency_head.temp"]).unwrap().0, ModelName::SgDetr);
        assert!(infer_model(["query_embed.weight"]).is_err());
        assert!(infer_model(["fuser.cq_attention.w4C", "loop_decoder.x"]).unwrap_err().contains("several"));
    }

    #[test]
    fn sniffing() {
        let p = Path::new("x.ckpt");
        let legacy = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02";
        assert!(sniff(p, legacy).unwrap_err().to_string().contains("legacy torch.save"));
        assert!(sniff(p, b"version https://git-lfs.github.com/spec/v1").unwrap_err().to_string().contains("LFS"));
        assert!(sniff(p, b"hello").unwrap_err().to_string().contains("no zip signature"));
        assert!(sniff(p, b"PK\x03\x04").is_ok());
    }
}
