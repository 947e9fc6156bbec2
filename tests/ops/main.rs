//! GPU-vs-CPU parity of every kernel, one module per op family (named as in `src/ops/`).
//! Each case runs the same one-op graph on the CPU twin and on the shared GPU device and
//! compares with the tolerance stated in the case. GPU cases fail when CI or
//! MOMENT_REQUIRE_GPU=1 demands a GPU and none exists, and skip loudly otherwise.

mod attention;
mod conv1d;
mod elementwise;
mod executor;
mod gated_attention;
mod gru;
mod layout;
mod masked_conv1d;
mod matmul;
mod moment_rows;
mod norm;
mod position;
mod proposals;
mod reduce;
mod softmax;
mod span;
mod weights;
