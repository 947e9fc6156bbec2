//! `moment convert`: an official PyTorch checkpoint → a weights file (safetensors with the
//! official keys and the config in its metadata), without Python. See `moment_gpu::convert`.

use std::path::PathBuf;

use clap::Args;
use moment_gpu::convert::{convert, read_checkpoint, read_options_file, ConvertOptions, ModelName};
use moment_gpu::{Error, Result};

use crate::write_atomically;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    moment convert model_best.ckpt --out tr_detr.safetensors\n  \
    moment convert model_best.ckpt --config opt.json --out tr_detr.safetensors\n  \
    moment convert sg_detr.ckpt --model sg_detr --config config.json --out sg_detr.safetensors\n\n\
    Reads torch.save checkpoints of torch >= 1.6 (zip archives): {\"model\": state_dict, \"opt\": Namespace, ...}\n\
    (TR-DETR, LD-DETR, VideoLights), Lightning checkpoints with `state_dict` (SG-DETR) and bare state dicts.\n\
    Tensors keep their dtype (float64 becomes float32); options JSON cannot hold (torch.device, ...) are dropped.")]
pub struct ConvertArgs {
    /// The checkpoint (`model_best.ckpt`, `.pth`, `.pt`).
    checkpoint: PathBuf,
    /// The weights file to write (.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The architecture (default: inferred from the state dict keys).
    #[arg(long, value_name = "tr_detr|ld_detr|videolights|sg_detr")]
    model: Option<ModelName>,
    /// An official options file (opt.json) merged over the options pickled in the checkpoint
    /// (its values win).
    #[arg(long, value_name = "JSON")]
    config: Option<PathBuf>,
    /// Take the options from --config only, ignoring the pickled ones.
    #[arg(long, requires = "config")]
    replace_config: bool,
    /// Write every floating tensor as float32 (default: float16/bfloat16 kept, float64 → float32).
    #[arg(long)]
    f32: bool,
}

pub fn run(args: &ConvertArgs) -> Result<()> {
    if args.out.exists() && std::fs::canonicalize(&args.out).ok() == std::fs::canonicalize(&args.checkpoint).ok() {
        return Err(Error::Checkpoint { path: args.out.clone(), reason: "--out is the checkpoint itself".into() });
    }
    let config = args.config.as_ref().map(read_options_file).transpose()?;
    let options = ConvertOptions { model: args.model, config, replace_config: args.replace_config, f32: args.f32 };
    let checkpoint = read_checkpoint(&args.checkpoint)?;
    let epoch = checkpoint.epoch.map(|e| format!(", epoch {e}")).unwrap_or_default();
    let layout = checkpoint.layout;
    let converted = convert(checkpoint, &options)?;
    for notice in &converted.notices {
        eprintln!("moment: {notice}");
    }
    write_atomically(&args.out, &converted.to_safetensors()?)?;
    let numbers: usize = converted.tensors.iter().map(|t| t.numel()).sum();
    eprintln!(
        "moment: {} ({}{epoch}) → {}: model {}, {} tensors ({numbers} numbers; {}), config of {} options from {}",
        args.checkpoint.display(),
        layout.describe(),
        args.out.display(),
        converted.model,
        converted.tensors.len(),
        converted.dtype_summary(),
        converted.config.len() - 1,
        converted.config_source,
    );
    Ok(())
}
