//! The `moment` subcommands, one file each.

pub mod bench;
pub mod eval;
pub mod info;
pub mod predict;
