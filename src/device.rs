//! Where a forward runs: a wgpu adapter (Vulkan / Metal / DX12, software Vulkan included) or the
//! CPU backend built on the CPU twins of the kernels.
//!
//! Adapter choice: `--adapter NAME|INDEX` or `MOMENT_ADAPTER`, else the highest-ranked adapter
//! (discrete > integrated > virtual > other > CPU). The device asks for the WebGPU default
//! limits (the portable profile every kernel is written for), raising only buffer sizes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// The backend a model runs on.
#[derive(Clone, Debug)]
pub enum Device {
    Gpu(Arc<Gpu>),
    Cpu,
}

/// What the user asked for on the command line or in code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The chosen GPU adapter, else the CPU with a one-line notice.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceKind::Auto),
            "gpu" => Ok(DeviceKind::Gpu),
            "cpu" => Ok(DeviceKind::Cpu),
            other => Err(format!("unknown device `{other}` (use auto, gpu or cpu)")),
        }
    }
}

/// How a GPU device computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Store the weights of every Linear / matmul in f16 on the GPU (half the memory and
    /// bandwidth; products still accumulate in f32). Needs the adapter's SHADER_F16; has its own
    /// parity tolerance (README). The CPU backend always computes in f32.
    pub f16_weights: bool,
}

impl Device {
    /// Opens the device the user asked for. `adapter` overrides `MOMENT_ADAPTER`.
    pub fn open(kind: DeviceKind, adapter: Option<&str>) -> Result<Device> {
        Self::open_with(kind, adapter, DeviceOptions::default())
    }

    /// [`Device::open`] with options. Asking a GPU without SHADER_F16 for f16 weights is an
    /// error; on the CPU backend (chosen or fallen back to) the option is ignored with a notice.
    pub fn open_with(kind: DeviceKind, adapter: Option<&str>, options: DeviceOptions) -> Result<Device> {
        let device = Self::open_kind(kind, adapter, options)?;
        if options.f16_weights && matches!(device, Device::Cpu) {
            eprintln!("moment: f16 weights apply to GPU adapters; the CPU backend computes in f32");
        }
        Ok(device)
    }

    fn open_kind(kind: DeviceKind, adapter: Option<&str>, options: DeviceOptions) -> Result<Device> {
        match kind {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Gpu => Ok(Device::Gpu(Arc::new(Gpu::open(adapter, options)?))),
            DeviceKind::Auto => match auto_choice(&list_adapters(), adapter) {
                Ok(_) => match Gpu::open(adapter, options) {
                    Ok(gpu) => Ok(Device::Gpu(Arc::new(gpu))),
                    Err(e) => {
                        eprintln!(
                            "moment: {}; falling back to the CPU backend",
                            e.to_string().lines().next().unwrap_or_default()
                        );
                        Ok(Device::Cpu)
                    }
                },
                Err(why) => {
                    eprintln!("moment: {why}; falling back to the CPU backend");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    /// A short human name: the adapter name and backend, or `CPU backend (<GEMM build>, <n>
    /// threads)`.
    pub fn name(&self) -> String {
        match self {
            Device::Gpu(gpu) if gpu.f16_weights => format!("{} ({:?}, f16 weights)", gpu.info.name, gpu.info.backend),
            Device::Gpu(gpu) => format!("{} ({:?})", gpu.info.name, gpu.info.backend),
            Device::Cpu => {
                format!("CPU backend ({}, {} threads)", crate::ops::gemm::isa(), crate::ops::pool::threads())
            }
        }
    }
}

/// An opened wgpu device with its queue and the pipelines compiled on it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// Matmul weights are stored in f16 (see [`DeviceOptions::f16_weights`]).
    pub f16_weights: bool,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<(usize, usize), Arc<wgpu::BindGroupLayout>>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.info.name).field("backend", &self.info.backend).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    inputs: usize,
    outputs: usize,
}

/// One line of `moment info`.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub index: usize,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
}

fn rank(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu can see, in enumeration order (the order `--adapter INDEX` counts in).
pub fn list_adapters() -> Vec<AdapterReport> {
    let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    adapters
        .into_iter()
        .enumerate()
        .map(|(index, a)| AdapterReport { index, info: a.get_info(), features: a.features(), limits: a.limits() })
        .collect()
}

/// Index (into [`list_adapters`]) of the adapter that `selector` (or `MOMENT_ADAPTER`, or the
/// default ranking) picks.
pub fn choose_adapter(reports: &[AdapterReport], selector: Option<&str>) -> Result<usize> {
    let env = std::env::var("MOMENT_ADAPTER").ok().filter(|s| !s.is_empty());
    let selector = selector.map(str::to_string).or(env);
    if reports.is_empty() {
        return Err(Error::NoAdapter { reason: no_adapter_reason() });
    }
    match selector {
        Some(sel) => {
            if let Ok(index) = sel.parse::<usize>() {
                return if index < reports.len() {
                    Ok(index)
                } else {
                    Err(Error::NoAdapter {
                        reason: format!(
                            "adapter index {index} requested, but only {} adapter(s) exist (see `moment info`)",
                            reports.len()
                        ),
                    })
                };
            }
            let wanted = sel.to_lowercase();
            reports
                .iter()
                .filter(|r| r.info.name.to_lowercase().contains(&wanted))
                .max_by_key(|r| rank(r.info.device_type))
                .map(|r| r.index)
                .ok_or_else(|| Error::NoAdapter {
                    reason: format!(
                        "no adapter name contains `{sel}`; available: {}",
                        reports.iter().map(|r| r.info.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                })
        }
        // max_by_key keeps the last maximum; reverse so ties go to the first enumerated.
        None => Ok(reports.iter().rev().max_by_key(|r| rank(r.info.device_type)).map(|r| r.index).unwrap()),
    }
}

/// What `--device auto` uses: the chosen adapter's index, or why the CPU backend is used
/// instead. A software adapter (lavapipe, llvmpipe, WARP: device type CPU) is only used when
/// named: the CPU backend is much faster than a GPU emulated on the same cores.
pub fn auto_choice(reports: &[AdapterReport], selector: Option<&str>) -> std::result::Result<usize, String> {
    let named = selector.is_some() || std::env::var("MOMENT_ADAPTER").is_ok_and(|s| !s.is_empty());
    match choose_adapter(reports, selector) {
        Ok(i) if reports[i].info.device_type == wgpu::DeviceType::Cpu && !named => Err(format!(
            "only a software adapter ({}) is present, slower than the CPU backend (name it with --adapter to use it)",
            reports[i].info.name
        )),
        Ok(i) => Ok(i),
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

fn no_adapter_reason() -> String {
    match pollster::block_on(instance().request_adapter(&wgpu::RequestAdapterOptions::default())) {
        Err(e) => e.to_string(),
        Ok(_) => "wgpu enumerated no adapters".to_string(),
    }
}

impl Gpu {
    /// Opens the adapter `selector` (or `MOMENT_ADAPTER`, or the best-ranked one) picks.
    pub fn open(selector: Option<&str>, options: DeviceOptions) -> Result<Gpu> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let reports: Vec<AdapterReport> = adapters
            .iter()
            .enumerate()
            .map(|(index, a)| AdapterReport { index, info: a.get_info(), features: a.features(), limits: a.limits() })
            .collect();
        let index = choose_adapter(&reports, selector)?;
        let adapter = &adapters[index];
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        let features = adapter.features() & (wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY);
        if options.f16_weights && !features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::DeviceRequest {
                adapter: info.name.clone(),
                reason: "f16 weights need the SHADER_F16 feature, which this adapter lacks".into(),
            });
        }
        // The portable WebGPU profile, with buffer sizes raised to what the adapter has: our
        // largest weight (2818 × 256 f32) is far below either, but big batches are not.
        let limits = wgpu::Limits {
            max_buffer_size: adapter_limits.max_buffer_size,
            max_storage_buffer_binding_size: adapter_limits.max_storage_buffer_binding_size,
            ..wgpu::Limits::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("moment-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::DeviceRequest { adapter: info.name.clone(), reason: e.to_string() })?;
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            f16_weights: options.f16_weights,
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
        })
    }

    /// Bind-group layout for a kernel: binding 0 = its uniform parameters, then `inputs`
    /// read-only storage buffers, then `outputs` read-write storage buffers.
    pub(crate) fn layout(&self, inputs: usize, outputs: usize) -> Arc<wgpu::BindGroupLayout> {
        let mut layouts = self.layouts.lock().unwrap();
        layouts
            .entry((inputs, outputs))
            .or_insert_with(|| {
                let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                entries.extend((0..inputs).map(|i| storage(1 + i as u32, true)));
                entries.extend((0..outputs).map(|o| storage(1 + (inputs + o) as u32, false)));
                Arc::new(self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("moment kernel layout"),
                    entries: &entries,
                }))
            })
            .clone()
    }

    /// The compiled pipeline of a kernel entry point, compiled once per device. Compilation
    /// errors come back typed, naming the shader, instead of reaching wgpu's panicking handler.
    pub(crate) fn pipeline(
        &self,
        shader: &crate::ops::Shader,
        inputs: usize,
        outputs: usize,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey { shader: shader.name, entry: shader.entry, inputs, outputs };
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if inputs + outputs > self.limits.max_storage_buffers_per_shader_stage as usize {
            return Err(Error::Kernel {
                kernel: shader.name.to_string(),
                reason: format!(
                    "needs {} storage buffers, the device allows {} (max_storage_buffers_per_shader_stage)",
                    inputs + outputs,
                    self.limits.max_storage_buffers_per_shader_stage
                ),
            });
        }
        let layout = self.layout(inputs, outputs);
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(shader.source.into()),
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(shader.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(shader.name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(shader.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Kernel { kernel: format!("{}::{}", shader.name, shader.entry), reason: e.to_string() });
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
}
