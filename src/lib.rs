//! moment-gpu: video moment retrieval and highlight detection on any GPU through wgpu and
//! hand-written WGSL kernels, with a CPU backend built from the kernels' CPU twins.

pub mod convert;
pub mod device;
pub mod error;
pub mod eval;
pub mod graph;
pub mod io;
pub mod models;
pub mod ops;
pub mod plot;
pub mod testing;
pub mod weights;

pub use device::{Device, DeviceKind, DeviceOptions};
pub use error::{Error, Result};
pub use graph::{ConstCache, Executable, ForwardStats, Graph, Outputs, TensorId};
