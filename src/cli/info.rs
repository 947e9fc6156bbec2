//! `moment info`: every adapter wgpu sees, its capabilities, and the one `auto` picks.

use moment_gpu::device::{auto_choice, choose_adapter, list_adapters};
use moment_gpu::DeviceKind;

pub fn run(kind: DeviceKind, adapter: Option<&str>) -> moment_gpu::Result<()> {
    let reports = list_adapters();
    if reports.is_empty() {
        println!("no GPU adapters found");
    }
    for r in &reports {
        let f = r.features;
        let yes = |b: bool| if b { "yes" } else { "no" };
        println!("[{}] {} — {:?}, {:?}", r.index, r.info.name, r.info.backend, r.info.device_type);
        println!("    driver: {} {}", r.info.driver, r.info.driver_info);
        println!(
            "    f16: {}   subgroups: {} (size {}..{})   timestamp queries: {}",
            yes(f.contains(wgpu::Features::SHADER_F16)),
            yes(f.contains(wgpu::Features::SUBGROUP)),
            r.info.subgroup_min_size,
            r.info.subgroup_max_size,
            yes(f.contains(wgpu::Features::TIMESTAMP_QUERY))
        );
        let l = &r.limits;
        println!(
            "    limits: {} storage buffers/stage, {} MiB per storage binding, {} MiB max buffer, {} KiB workgroup memory, {} invocations/workgroup",
            l.max_storage_buffers_per_shader_stage,
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup
        );
    }
    let chosen = match kind {
        DeviceKind::Cpu => "the CPU backend (--device cpu)".to_string(),
        DeviceKind::Auto => match auto_choice(&reports, adapter) {
            Ok(i) => format!("[{i}] {}", reports[i].info.name),
            Err(why) => format!("the CPU backend ({why})"),
        },
        DeviceKind::Gpu => {
            let i = choose_adapter(&reports, adapter)?;
            format!("[{i}] {}", reports[i].info.name)
        }
    };
    println!("--device {} picks {chosen}", format!("{kind:?}").to_lowercase());
    Ok(())
}
