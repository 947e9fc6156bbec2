//! The `moment` subcommands, one file each.

pub mod bench;
pub mod demo;
pub mod info;
pub mod predict;
