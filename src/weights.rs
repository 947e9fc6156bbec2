//! Weights: a safetensors file whose tensor names are the official PyTorch state_dict keys and
//! whose metadata holds the model config as a JSON string under `config`. F32, F16, BF16 and
//! F64 tensors load (converted to f32 once, at load), and so do integer tensors (I64, I32:
//! counters and pointers such as BatchNorm's `num_batches_tracked`; exact up to 2^24); every
//! problem names the file and the key.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One named tensor, f32, row-major.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Arc<[f32]>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data: data.into() }
    }
}

/// The tensors and config of one weights file.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    config: serde_json::Value,
}

impl Weights {
    /// Reads and checks a safetensors file. The header is parsed first, then each tensor is read
    /// straight into its f32 array: the file's bytes are never held whole beside the weights
    /// (which would double the load's peak memory).
    pub fn load(path: impl AsRef<Path>) -> Result<Weights> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let bad = |reason: String| Error::BadWeightsFile { path: path.to_path_buf(), reason };
        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut prefix = vec![0u8; file_len.min(LFS_POINTER.len() as u64) as usize];
        file.read_exact(&mut prefix).map_err(io)?;
        if prefix.starts_with(LFS_POINTER) {
            return Err(bad(LFS_REASON.into()));
        }
        if file_len < 8 {
            return Err(bad(format!("{file_len} bytes: too short for a safetensors header")));
        }
        let n = u64::from_le_bytes(prefix[..8].try_into().unwrap());
        if n > MAX_HEADER || 8 + n > file_len {
            return Err(bad(format!("header length {n} does not fit the file's {file_len} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(8)).and_then(|_| file.read_exact(&mut header)).map_err(io)?;
        let metadata: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
        let data_start = 8 + n;
        if data_start + metadata.data_len() as u64 != file_len {
            return Err(bad(format!(
                "the header describes {} bytes of tensors, the file holds {} (truncated or not safetensors)",
                metadata.data_len(),
                file_len - data_start
            )));
        }
        let mut raw = Vec::new();
        let mut tensors = BTreeMap::new();
        for key in metadata.offset_keys() {
            let info = metadata.info(&key).expect("offset_keys lists the header's tensors");
            let (from, to) = info.data_offsets;
            raw.resize(to - from, 0);
            file.seek(SeekFrom::Start(data_start + from as u64)).and_then(|_| file.read_exact(&mut raw)).map_err(io)?;
            let tensor = to_f32(path, &key, info.dtype, info.shape.clone(), &raw)?;
            tensors.insert(key, tensor);
        }
        let config = config_of(path, metadata.metadata())?;
        Ok(Weights { path: path.to_path_buf(), tensors, config })
    }

    /// Parses safetensors bytes; `path` is only used to name the file in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Weights> {
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| Error::BadWeightsFile { path: path.clone(), reason };
        if bytes.starts_with(LFS_POINTER) {
            return Err(bad(LFS_REASON.into()));
        }
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e}")))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e}")))?;
        let config = config_of(&path, metadata.metadata())?;
        let mut tensors = BTreeMap::new();
        for (key, view) in st.tensors() {
            let tensor = to_f32(&path, &key, view.dtype(), view.shape().to_vec(), view.data())?;
            tensors.insert(key, tensor);
        }
        Ok(Weights { path, tensors, config })
    }

    /// The config JSON from the file's metadata (`null` when the file has none).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `key`, which must have exactly `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.get_any(key)?;
        if t.shape != shape {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                key: key.into(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t)
    }

    /// The tensor `key`, whatever its shape.
    pub fn get_any(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            key: key.into(),
            hint: self.near_miss(key),
        })
    }

    /// Checks every expected key and shape at once, so one error lists every missing key, then
    /// every mis-shaped one, rather than the first problem only.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let missing: Vec<&str> = expected.iter().filter(|(k, _)| !self.contains(k)).map(|(k, _)| k.as_str()).collect();
        if !missing.is_empty() {
            let hint = if missing.len() > 1 {
                format!(" (and {} more: {})", missing.len() - 1, missing[1..].join(", "))
            } else {
                self.near_miss(missing[0])
            };
            return Err(Error::MissingTensor { path: self.path.clone(), key: missing[0].into(), hint });
        }
        for (key, shape) in expected {
            self.get(key, shape)?;
        }
        Ok(())
    }

    /// The same file restricted to the tensors whose key passes `keep` (the tensor data is shared,
    /// not copied): a model keeps only what it uses, so dropped tensors are freed with the file.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Weights {
        let tensors = self.tensors.iter().filter(|(k, _)| keep(k)).map(|(k, t)| (k.clone(), t.clone())).collect();
        Weights { path: self.path.clone(), tensors, config: self.config.clone() }
    }

    /// Keys of the file outside `used` (for models that refuse or report unexpected tensors).
    pub fn unused<'a>(&'a self, used: &'a std::collections::HashSet<String>) -> Vec<&'a str> {
        self.keys().filter(|k| !used.contains(*k)).collect()
    }

    fn near_miss(&self, key: &str) -> String {
        let last = key.rsplit('.').next().unwrap_or(key);
        let stem = key.trim_end_matches(last);
        let similar: Vec<&str> = self.keys().filter(|k| k.starts_with(stem) && !stem.is_empty()).take(3).collect();
        if similar.is_empty() {
            String::new()
        } else {
            format!(" (the file has {})", similar.join(", "))
        }
    }
}

/// How a Git LFS pointer file (checked in instead of the weights) begins.
const LFS_POINTER: &[u8] = b"version https://git-lfs";
const LFS_REASON: &str = "this is a Git LFS pointer, not the weights: fetch the real file (git lfs pull)";
/// The safetensors format's bound on the JSON header.
const MAX_HEADER: u64 = 100_000_000;

/// The model config from the metadata's `config` entry (`null` when absent).
fn config_of(path: &Path, metadata: &Option<HashMap<String, String>>) -> Result<serde_json::Value> {
    match metadata.as_ref().and_then(|m| m.get("config")) {
        Some(text) => serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: format!("metadata `config` is not valid JSON: {e}"),
        }),
        None => Ok(serde_json::Value::Null),
    }
}

/// Tensor `key` from its little-endian bytes, converted to f32.
fn to_f32(path: &Path, key: &str, dtype: Dtype, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor> {
    let data: Vec<f32> = match dtype {
        Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        // Buffers some checkpoints keep in double precision (SG-DETR's ATSS anchors).
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                key: key.into(),
                dtype: format!("{other:?}"),
            })
        }
    };
    Ok(Tensor::new(shape, data))
}
