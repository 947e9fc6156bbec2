//! `moment`: the command-line front end of moment-gpu.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use moment_gpu::{Device, DeviceKind, DeviceOptions};

#[derive(Parser)]
#[command(
    name = "moment",
    version,
    about = "Video moment retrieval and highlight detection (TR-DETR) on any GPU through wgpu, or on the CPU",
    after_help = "With no subcommand, runs the demo (`moment demo`). Then `moment info` lists the adapters, `moment predict --help` explains prediction."
)]
struct Cli {
    #[command(flatten)]
    device: DeviceArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// Backend: auto (the chosen GPU adapter, else the CPU with a notice), gpu, or cpu.
    #[arg(long, global = true, default_value = "auto", value_name = "auto|gpu|cpu")]
    device: DeviceKind,
    /// GPU adapter by name substring or index (see `moment info`); overrides MOMENT_ADAPTER.
    #[arg(long, global = true, value_name = "NAME|INDEX")]
    adapter: Option<String>,
    /// Store matmul weights in f16 on the GPU (half the weight memory and bandwidth; sums stay
    /// f32). Needs an adapter with SHADER_F16; outputs move by up to ~1e-2 (see the README).
    #[arg(long, global = true)]
    f16_weights: bool,
}

impl DeviceArgs {
    pub fn open(&self) -> moment_gpu::Result<Device> {
        let options = DeviceOptions { f16_weights: self.f16_weights };
        let device = Device::open_with(self.device, self.adapter.as_deref(), options)?;
        eprintln!("moment: running on {}", device.name());
        Ok(device)
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter with its capabilities, and which one `--device auto` picks.
    Info,
    /// Predict moments and saliency for one query over one video, or for a whole annotation file.
    Predict(cli::predict::PredictArgs),
    /// Time warm forwards of a model at a given shape (random inputs).
    Bench(cli::bench::BenchArgs),
    /// Convert an official PyTorch checkpoint to a weights file (safetensors + config), no Python.
    Convert(cli::convert::ConvertArgs),
    /// Run the bundled demo model (trained on synthetic data) on the bundled example; the default.
    Demo(cli::demo::DemoArgs),
    /// Draw the saliency curve with the predicted (and ground-truth) moments as SVG, per query.
    Plot(cli::plot::PlotArgs),
    /// Score a predictions JSONL against QVHighlights annotations (R1, mAP, HD mAP, HIT@1).
    Eval(cli::eval::EvalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => cli::demo::run(&cli.device, &cli::demo::DemoArgs::default()),
        Some(Command::Info) => cli::info::run(cli.device.device, cli.device.adapter.as_deref()),
        Some(Command::Predict(args)) => cli::predict::run(&cli.device, args),
        Some(Command::Bench(args)) => cli::bench::run(&cli.device, args),
        Some(Command::Demo(args)) => cli::demo::run(&cli.device, args),
        Some(Command::Convert(args)) => cli::convert::run(args),
        Some(Command::Eval(args)) => cli::eval::run(args),
        Some(Command::Plot(args)) => cli::plot::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moment: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a model and shows its notices.
pub fn load_model(path: &std::path::Path, device: &Device) -> moment_gpu::Result<moment_gpu::models::Model> {
    let model = moment_gpu::models::Model::load(path, device)?;
    for notice in model.notices() {
        eprintln!("moment: {notice}");
    }
    Ok(model)
}

/// Writes `contents` to `path` atomically: a temporary file beside it, renamed on success, so a
/// failed run never leaves a half-written output.
pub fn write_atomically(path: &PathBuf, contents: &[u8]) -> moment_gpu::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents).map_err(|e| moment_gpu::Error::io(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        moment_gpu::Error::io(path, e)
    })
}
