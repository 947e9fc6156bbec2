//! The kernel library. One file per op family holds, together, the op's graph builder (shape
//! checks), its dispatch geometry and uniform parameters, and its CPU twin; its WGSL lives in
//! `shaders/<family>.wgsl`. The CPU twin is the parity oracle for the WGSL kernel and also what
//! the CPU backend runs.
//!
//! Binding convention shared by every shader: `@group(0) @binding(0)` is the kernel's uniform
//! parameter block, then one `var<storage, read>` binding per input in order, then one
//! `var<storage, read_write>` per output. An absent optional input is bound to a small dummy
//! buffer (and arrives as an empty slice on the CPU); its kernel learns that from a flag.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use crate::graph::ConstCache;

/// What a kernel prepared for the CPU backend at plan time (see [`Kernel::cpu_prepare`]).
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// A constant input as [`Kernel::cpu_prepare`] sees it.
#[derive(Clone, Copy)]
pub enum Const<'a> {
    Dense(&'a Arc<[f32]>),
    /// A `Linear` weight held as the GEMM's panels.
    Panels(&'a gemm::Panels),
}

impl<'a> Const<'a> {
    /// The values of a dense constant (`None` for panels).
    pub fn dense(self) -> Option<&'a Arc<[f32]>> {
        match self {
            Const::Dense(values) => Some(values),
            Const::Panels(_) => None,
        }
    }
}

pub mod attention;
pub mod conv1d;
pub mod elementwise;
pub mod gated_attention;
pub mod gemm;
pub mod gru;
pub mod layout;
pub mod masked_conv1d;
pub mod matmul;
pub mod moment_rows;
pub mod norm;
pub mod pool;
pub mod position;
pub mod proposals;
pub mod reduce;
pub mod softmax;
pub mod span;
pub mod vmath;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<gemm::Line>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with `N` scratch slices of the given lengths, carved from one per-thread buffer
/// that only ever grows: the fast CPU kernels allocate nothing per call once warm. The slices
/// hold whatever the last user left (the caller initialises what it reads). Not re-entrant (a
/// kernel's scratch user must not call another).
pub(crate) fn with_scratch<const N: usize, R>(lens: [usize; N], f: impl FnOnce([&mut [f32]; N]) -> R) -> R {
    SCRATCH.with_borrow_mut(|buf| {
        // Each part starts on a cache line (packed panels are read a line at a time).
        let total = lens.iter().map(|len| len.div_ceil(gemm::PANEL)).sum();
        if buf.len() < total {
            // NaN, so a read before a write shows in every test.
            buf.resize(total, gemm::Line([f32::NAN; gemm::PANEL]));
        }
        let mut rest = &mut buf[..];
        let parts = lens.map(|len| {
            let (lines, tail) = std::mem::take(&mut rest).split_at_mut(len.div_ceil(gemm::PANEL));
            rest = tail;
            &mut bytemuck::cast_slice_mut::<_, f32>(lines)[..len]
        });
        f(parts)
    })
}

/// An output that several pool threads write at once, each its own disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: users write disjoint parts (the contract of `part`), and the slice outlives the
// parallel loop that shares it.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub fn new(out: &mut [f32]) -> Self {
        SharedOut { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// `out[start .. start + len]`.
    ///
    /// # Safety
    /// No other thread reads or writes this range while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "shared output range out of bounds");
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// A WGSL entry point.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// Name of the `.wgsl` file (without extension): shows up in errors and profiles.
    pub name: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
}

/// One dispatch of one kernel, with everything fixed at graph-build time.
pub trait Kernel: Debug + Send + Sync {
    /// Op name used by `MOMENT_PROFILE=1` and in errors.
    fn label(&self) -> &'static str;
    fn shader(&self) -> Shader;
    /// The uniform parameter block, as 32-bit words in WGSL struct order.
    fn params(&self) -> Params;
    fn workgroups(&self) -> [u32; 3];
    /// The CPU twin: same inputs, same outputs (each output slice has exactly its length). It is
    /// the reference the GPU kernel and the fast CPU kernel are tested against.
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]);

    /// With f16 weights on (`DeviceOptions::f16_weights`): `(i, shader)` when this kernel can
    /// read input `i` stored as `array<f16>` with `shader` — the GPU plan does so where that
    /// input is a constant.
    fn f16_weight(&self) -> Option<(usize, Shader)> {
        None
    }

    /// Whether input `i` is a `Linear` weight this node reads as the CPU GEMM's panels.
    fn reads_weight_panels(&self, _input: usize) -> bool {
        false
    }

    /// What the CPU backend prepares once at plan time from this node's constant inputs
    /// (`consts[i]` is input `i` when it is a constant), e.g. a GEMM's packed weights. Handed
    /// back to every [`Kernel::cpu_fast`] call.
    fn cpu_prepare(&self, _consts: &[Option<Const>], _cache: &ConstCache) -> Option<Prepared> {
        None
    }

    /// What the CPU backend runs: the twin unless the op has a faster CPU kernel (packed GEMM,
    /// threads), which is then tested against the twin.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _prepared: Option<&Prepared>) {
        self.cpu(inputs, outputs)
    }
}

/// A kernel's uniform block, built field by field in the WGSL struct's order. WGSL structs used
/// here hold only 4-byte scalars, so the layout is a packed array of words padded to 16 bytes.
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }
    pub fn u(mut self, v: usize) -> Self {
        self.0.push(u32::try_from(v).expect("kernel parameter exceeds u32"));
        self
    }
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    pub fn flag(self, v: bool) -> Self {
        self.u(v as usize)
    }
    /// The bytes uploaded to the uniform buffer: padded to a multiple of 16 bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut words = self.0.clone();
        words.resize(words.len().div_ceil(4).max(1) * 4, 0);
        bytemuck::cast_slice(&words).to_vec()
    }
}

/// Largest workgroup count per grid dimension (WebGPU default limit).
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// A 1-D grid of `groups` workgroups folded into (x, y) so that x stays within the per-dimension
/// limit; shaders rebuild the linear index as `wid.x + wid.y * MAX_GROUPS_PER_DIM`.
pub fn grid_1d(groups: usize) -> [u32; 3] {
    let groups = groups.max(1) as u32;
    if groups <= MAX_GROUPS_PER_DIM {
        [groups, 1, 1]
    } else {
        [MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM), 1]
    }
}

/// Fused activation of matmul-like kernels, as the graph builders take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// PyTorch `nn.PReLU()`: one learnt slope, read on the GPU from this 1-element tensor.
    Prelu(crate::graph::TensorId),
    Sigmoid,
}

impl Act {
    /// Code shared with the WGSL `activate` helpers.
    pub fn code(self) -> u32 {
        match self {
            Act::None => 0,
            Act::Relu => 1,
            Act::Prelu(_) => 2,
            Act::Sigmoid => 3,
        }
    }

    pub fn slope(self) -> Option<crate::graph::TensorId> {
        match self {
            Act::Prelu(t) => Some(t),
            _ => None,
        }
    }
}

/// CPU twin of the WGSL `activate(x, code, slope)` helper.
pub fn activate(x: f32, code: u32, slope: f32) -> f32 {
    match code {
        1 => x.max(0.0),
        2 => {
            if x >= 0.0 {
                x
            } else {
                slope * x
            }
        }
        3 => sigmoid(x),
        _ => x,
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    /// Scratch parts start on cache lines (the GEMM reads packed panels a line at a time) and
    /// have exactly the lengths asked for.
    #[test]
    fn scratch_parts_are_line_aligned() {
        super::with_scratch([5, 40, 17], |parts| {
            for (part, len) in parts.iter().zip([5, 40, 17]) {
                assert_eq!(part.len(), len);
                assert_eq!(part.as_ptr() as usize % 64, 0);
            }
        });
    }
}
