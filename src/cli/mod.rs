//! The `moment` subcommands, one file each.

pub mod bench;
pub mod convert;
pub mod demo;
pub mod eval;
pub mod info;
pub mod plot;
pub mod predict;
