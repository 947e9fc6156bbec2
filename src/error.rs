//! One error type for the whole crate. Every variant names the file, tensor, field or kernel at
//! fault, so a user can act on the message without reading our code.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a readable safetensors file: {reason}")]
    BadWeightsFile { path: PathBuf, reason: String },

    #[error("{path}: tensor `{key}` has dtype {dtype}; only F32, F16, BF16, F64, I64 and I32 are supported")]
    UnsupportedDtype { path: PathBuf, key: String, dtype: String },

    #[error("{path}: missing tensor `{key}`{hint}")]
    MissingTensor { path: PathBuf, key: String, hint: String },

    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    TensorShape { path: PathBuf, key: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("{path}: unexpected tensors not used by this model: {keys}")]
    UnexpectedTensors { path: PathBuf, keys: String },

    #[error("{path}: config: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("no usable GPU adapter: {reason}\n  to install a software Vulkan driver on Debian/Ubuntu: apt-get install -y mesa-vulkan-drivers libvulkan1\n  or run on the CPU backend with --device cpu")]
    NoAdapter { reason: String },

    #[error("GPU device request failed on `{adapter}`: {reason}")]
    DeviceRequest { adapter: String, reason: String },

    #[error("kernel `{kernel}`: {reason}")]
    Kernel { kernel: String, reason: String },

    #[error("graph: {0}")]
    Graph(String),

    #[error("GPU execution failed: {0}")]
    Gpu(String),

    #[error("{path}: {reason}")]
    Features { path: PathBuf, reason: String },

    #[error("input `{name}`: {reason}")]
    Input { name: String, reason: String },

    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
