//! End-to-end model tests against fixtures from the float64 NumPy specs
//! (`../shared/reference/*_ref.py`, driven by `tools/fixtures.py`): raw outputs on the CPU and
//! GPU backends, padded batches against per-sample B = 1 runs, the post-processed JSON line,
//! the preprocessing of raw feature sources, and bad inputs.

mod common;
mod f16_weights;
mod ld_detr;
mod sg_detr;
mod tr_detr;
mod videolights;
