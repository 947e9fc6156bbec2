//! The GPU side of the executor: everything is created at plan time (buffers, pipelines, bind
//! groups, one uniform buffer holding every dispatch's parameters, one staging buffer for the
//! outputs). A forward writes the inputs, records all dispatches into one compute pass of one
//! encoder, copies the outputs into the staging buffer, submits once and maps once.
//!
//! `MOMENT_PROFILE=1` switches to a profiling mode (one pass per dispatch with timestamp writes,
//! where the adapter has timestamp queries) and prints per-op GPU time; it is never used for
//! the forward latency we report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::plan::{padded_bytes, Plan};
use super::{Graph, Outputs, RunCounters, Source};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::ops::gemm::PackedB;

/// Uniform blocks of consecutive dispatches sit 256 bytes apart (the WebGPU default
/// `min_uniform_buffer_offset_alignment`).
const PARAM_STRIDE: u64 = 256;

/// A constant's allocation, the layout its packing reads it in, and that layout's dimensions.
type PackedKey = (usize, &'static str, [usize; 4]);

/// Device copies of constants, shared by every graph a model plans (one per input shape), so
/// weights are uploaded once per device (GPU buffers) or packed once (the CPU GEMM's panels).
/// Keyed by the constant's `Arc` allocation.
#[derive(Default)]
pub struct ConstCache {
    buffers: Mutex<HashMap<usize, (Arc<[f32]>, Arc<wgpu::Buffer>)>>,
    /// The same constants stored as f16, for kernels that read f16 weights.
    f16_buffers: Mutex<HashMap<usize, (Arc<[f32]>, Arc<wgpu::Buffer>)>>,
    packed: Mutex<HashMap<PackedKey, (Arc<[f32]>, Arc<PackedB>)>>,
}

impl ConstCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// `values` packed as a right operand of the CPU GEMM by `pack`, once per (`values`,
    /// `layout`, `dims`): the layout names how `pack` reads `values`.
    pub(crate) fn packed(
        &self,
        values: &Arc<[f32]>,
        layout: &'static str,
        dims: [usize; 4],
        pack: impl FnOnce(&[f32]) -> PackedB,
    ) -> Arc<PackedB> {
        let key = (values.as_ptr() as usize, layout, dims);
        let mut packed = self.packed.lock().unwrap();
        packed.entry(key).or_insert_with(|| (values.clone(), Arc::new(pack(values)))).1.clone()
    }

    /// `data` as an `array<f16>` buffer (rounded to nearest), uploaded once.
    fn get_f16(&self, gpu: &Gpu, data: &Arc<[f32]>) -> Arc<wgpu::Buffer> {
        upload(&self.f16_buffers, gpu, data, "moment constant (f16)", |values| {
            let halves: Vec<u16> = values.iter().map(|&v| half::f16::from_f32(v).to_bits()).collect();
            bytemuck::cast_slice::<u16, u8>(&halves).to_vec()
        })
    }

    fn get(&self, gpu: &Gpu, data: &Arc<[f32]>) -> Arc<wgpu::Buffer> {
        upload(&self.buffers, gpu, data, "moment constant", |values| bytemuck::cast_slice::<f32, u8>(values).to_vec())
    }
}

/// The buffer of `data` in `buffers`, created from `encode(data)` (padded to 16 bytes) on first use.
fn upload(
    buffers: &Mutex<HashMap<usize, (Arc<[f32]>, Arc<wgpu::Buffer>)>>,
    gpu: &Gpu,
    data: &Arc<[f32]>,
    label: &str,
    encode: impl FnOnce(&[f32]) -> Vec<u8>,
) -> Arc<wgpu::Buffer> {
    let mut buffers = buffers.lock().unwrap();
    buffers
        .entry(data.as_ptr() as usize)
        .or_insert_with(|| {
            let mut bytes = encode(data);
            bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
            let buffer = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            });
            (data.clone(), Arc::new(buffer))
        })
        .1
        .clone()
}

pub(crate) struct GpuPlan {
    gpu: Arc<Gpu>,
    /// Bytes of the weight buffers this plan binds (f16 where the kernels read f16).
    pub weight_bytes: usize,
    pipelines: Vec<Arc<wgpu::ComputePipeline>>,
    bind_groups: Vec<wgpu::BindGroup>,
    workgroups: Vec<[u32; 3]>,
    /// Buffer of each graph input, in `Graph::input_ids` order.
    input_buffers: Vec<wgpu::Buffer>,
    /// (buffer, byte offset in the staging buffer, values) of each graph output.
    output_copies: Vec<(Arc<wgpu::Buffer>, u64, usize)>,
    staging: wgpu::Buffer,
    profile: Option<Profiler>,
    // Kept alive for the bind groups.
    _slots: Vec<Arc<wgpu::Buffer>>,
    _params: wgpu::Buffer,
    _dummy: Arc<wgpu::Buffer>,
}

impl GpuPlan {
    pub fn new(graph: &Graph, plan: &Plan, gpu: Arc<Gpu>, consts: &ConstCache) -> Result<Self> {
        let device = &gpu.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        for bytes in &plan.slot_bytes {
            if *bytes as u64 > gpu.limits.max_storage_buffer_binding_size as u64 {
                return Err(Error::Gpu(format!(
                    "an intermediate tensor needs {bytes} bytes, above this device's max_storage_buffer_binding_size {}",
                    gpu.limits.max_storage_buffer_binding_size
                )));
            }
        }
        let slots: Vec<Arc<wgpu::Buffer>> = plan
            .slot_bytes
            .iter()
            .map(|&size| {
                Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("moment activation slot"),
                    size: size as u64,
                    usage: storage,
                    mapped_at_creation: false,
                }))
            })
            .collect();
        let dummy = Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("moment absent input"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));

        // With f16 weights, each node that can read a constant input as f16 gets that buffer and
        // its f16 shader; a constant only ever read that way gets no f32 buffer.
        let f16_inputs: Vec<Option<(usize, crate::ops::Shader)>> = graph
            .nodes
            .iter()
            .map(|node| {
                node.kernel.f16_weight().filter(|&(input, _)| {
                    gpu.f16_weights
                        && node.inputs[input]
                            .is_some_and(|t| matches!(graph.tensors[graph.root(t).0].source, Source::Const(_)))
                })
            })
            .collect();
        let mut read_as_f32 = vec![false; graph.tensors.len()];
        for (node, f16) in graph.nodes.iter().zip(&f16_inputs) {
            for (input, t) in node.inputs.iter().enumerate() {
                if let (Some(t), false) = (t, f16.is_some_and(|(f, _)| f == input)) {
                    read_as_f32[graph.root(*t).0] = true;
                }
            }
        }

        // Every tensor's buffer.
        let mut input_buffers = Vec::new();
        let mut buffer_of: Vec<Option<Arc<wgpu::Buffer>>> = vec![None; graph.tensors.len()];
        for (i, info) in graph.tensors.iter().enumerate() {
            buffer_of[i] = match &info.source {
                Source::Input(name) => {
                    let b = device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(name),
                        size: padded_bytes(info.numel()) as u64,
                        usage: storage,
                        mapped_at_creation: false,
                    });
                    input_buffers.push(b.clone());
                    Some(Arc::new(b))
                }
                Source::Const(data) => read_as_f32[i].then(|| consts.get(&gpu, data)),
                Source::Panels(_) => {
                    return Err(Error::Graph(
                        "weight panels are the CPU backend's layout; build GPU graphs with Graph::for_device".into(),
                    ))
                }
                Source::Node => plan.slot_of[i].map(|s| slots[s].clone()),
                // Roots come before their aliases.
                Source::Alias(root) => buffer_of[root.0].clone(),
            };
        }

        // All uniform blocks in one buffer.
        let mut param_bytes = vec![0u8; graph.nodes.len().max(1) * PARAM_STRIDE as usize];
        for (i, node) in graph.nodes.iter().enumerate() {
            let bytes = node.kernel.params().bytes();
            if bytes.len() > PARAM_STRIDE as usize {
                return Err(Error::Kernel {
                    kernel: node.kernel.label().into(),
                    reason: "uniform block over 256 bytes".into(),
                });
            }
            param_bytes[i * PARAM_STRIDE as usize..][..bytes.len()].copy_from_slice(&bytes);
        }
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("moment kernel parameters"),
            contents: &param_bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });

        let mut pipelines = Vec::new();
        let mut bind_groups = Vec::new();
        let mut workgroups = Vec::new();
        let mut weight_buffers: HashMap<usize, u64> = HashMap::new();
        for (t, info) in graph.tensors.iter().enumerate() {
            if let (Source::Const(_), Some(b)) = (&info.source, &buffer_of[t]) {
                weight_buffers.insert(Arc::as_ptr(b) as usize, b.size());
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            let f16_input = f16_inputs[i];
            let shader = f16_input.map_or_else(|| node.kernel.shader(), |(_, shader)| shader);
            let pipeline = gpu.pipeline(&shader, node.inputs.len(), node.outputs.len())?;
            let layout = gpu.layout(node.inputs.len(), node.outputs.len());
            let size = wgpu::BufferSize::new(node.kernel.params().bytes().len() as u64);
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: i as u64 * PARAM_STRIDE,
                    size,
                }),
            }];
            let bound: Vec<Arc<wgpu::Buffer>> = node
                .inputs
                .iter()
                .enumerate()
                .map(|(input, t)| match (t, f16_input) {
                    (None, _) => dummy.clone(),
                    (Some(t), Some((f16, _))) if f16 == input => {
                        let Source::Const(data) = &graph.tensors[graph.root(*t).0].source else { unreachable!() };
                        let b = consts.get_f16(&gpu, data);
                        weight_buffers.insert(Arc::as_ptr(&b) as usize, b.size());
                        b
                    }
                    (Some(t), _) => buffer_of[t.0].clone().expect("tensor without buffer"),
                })
                .chain(node.outputs.iter().map(|t| buffer_of[t.0].clone().expect("output without buffer")))
                .collect();
            for (b, buffer) in bound.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry { binding: 1 + b as u32, resource: buffer.as_entire_binding() });
            }
            bind_groups.push(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(node.kernel.label()),
                layout: &layout,
                entries: &entries,
            }));
            let groups = node.kernel.workgroups();
            if groups.iter().any(|&g| g > crate::ops::MAX_GROUPS_PER_DIM) {
                return Err(Error::Kernel {
                    kernel: node.kernel.label().into(),
                    reason: format!("dispatch of {groups:?} workgroups exceeds 65535 per dimension"),
                });
            }
            workgroups.push(groups);
            pipelines.push(pipeline);
        }

        let mut output_copies = Vec::new();
        let mut staging_bytes = 0u64;
        for (_, t) in &graph.outputs {
            let numel = graph.tensors[t.0].numel();
            let buffer = buffer_of[t.0].clone().expect("output without buffer");
            output_copies.push((buffer, staging_bytes, numel));
            staging_bytes += padded_bytes(numel) as u64;
        }
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("moment readback"),
            size: staging_bytes.max(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("planning the graph failed: {e}")));
        }
        let profile = super::profiling_requested().then(|| Profiler::new(&gpu, graph)).flatten();
        Ok(GpuPlan {
            gpu,
            weight_bytes: weight_buffers.values().sum::<u64>() as usize,
            pipelines,
            bind_groups,
            workgroups,
            input_buffers,
            output_copies,
            staging,
            profile,
            _slots: slots,
            _params: params,
            _dummy: dummy,
        })
    }

    pub fn run(&mut self, graph: &Graph, inputs: &[&[f32]]) -> Result<(Outputs, RunCounters)> {
        let gpu = &self.gpu;
        for (buffer, data) in self.input_buffers.iter().zip(inputs) {
            if !data.is_empty() {
                gpu.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
            }
        }
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        match &self.profile {
            None => {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("forward"),
                    timestamp_writes: None,
                });
                for i in 0..self.pipelines.len() {
                    pass.set_pipeline(&self.pipelines[i]);
                    pass.set_bind_group(0, &self.bind_groups[i], &[]);
                    let [x, y, z] = self.workgroups[i];
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            Some(profiler) => {
                for i in 0..self.pipelines.len() {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("profiled dispatch"),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &profiler.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    pass.set_pipeline(&self.pipelines[i]);
                    pass.set_bind_group(0, &self.bind_groups[i], &[]);
                    let [x, y, z] = self.workgroups[i];
                    pass.dispatch_workgroups(x, y, z);
                }
                let n = 2 * self.pipelines.len() as u32;
                encoder.resolve_query_set(&profiler.queries, 0..n, &profiler.resolve, 0);
                encoder.copy_buffer_to_buffer(&profiler.resolve, 0, &profiler.readback, 0, n as u64 * 8);
            }
        }
        for (buffer, offset, numel) in &self.output_copies {
            encoder.copy_buffer_to_buffer(buffer, 0, &self.staging, *offset, (*numel * 4) as u64);
        }
        let index = gpu.queue.submit([encoder.finish()]);
        let slice = self.staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if let Some(profiler) = &self.profile {
            profiler.readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        gpu.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the forward: {e}")))?;
        let mut outputs = Outputs::default();
        let mut bytes_read_back = 0;
        {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading the outputs back: {e}")))?;
            let words: &[f32] = bytemuck::cast_slice(&view);
            for ((name, t), (_, offset, numel)) in graph.outputs.iter().zip(&self.output_copies) {
                let start = *offset as usize / 4;
                outputs
                    .tensors
                    .insert(name.clone(), (graph.tensors[t.0].shape.clone(), words[start..start + numel].to_vec()));
                bytes_read_back += numel * 4;
            }
        }
        self.staging.unmap();
        if let Some(profiler) = &self.profile {
            profiler.report(gpu, graph);
        }
        Ok((outputs, RunCounters { submits: 1, readbacks: 1, bytes_read_back }))
    }
}

/// Per-dispatch GPU timestamps (profiling mode only).
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
}

impl Profiler {
    fn new(gpu: &Gpu, graph: &Graph) -> Option<Profiler> {
        if !gpu.has_timestamps() {
            eprintln!("MOMENT_PROFILE: adapter `{}` has no timestamp queries; no per-op times", gpu.info.name);
            return None;
        }
        let count = 2 * graph.nodes.len() as u32;
        if count == 0 || count > wgpu::QUERY_SET_MAX_QUERIES {
            eprintln!("MOMENT_PROFILE: {} dispatches is more than one query set can time", graph.nodes.len());
            return None;
        }
        let size = count as u64 * 8;
        Some(Profiler {
            queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile readback"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        })
    }

    /// Prints total GPU time per op label, largest first.
    fn report(&self, gpu: &Gpu, graph: &Graph) {
        let period_ns = gpu.queue.get_timestamp_period() as f64;
        let times: Vec<f64> = {
            let Ok(view) = self.readback.slice(..).get_mapped_range() else {
                eprintln!("MOMENT_PROFILE: timestamps could not be read back");
                return;
            };
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            (0..graph.nodes.len())
                .map(|i| ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns / 1000.0)
                .collect()
        };
        self.readback.unmap();
        super::print_profile(&gpu.info.name, graph, &times);
    }
}
