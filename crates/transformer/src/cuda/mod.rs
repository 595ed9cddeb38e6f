//! The CUDA device runtime: a [`CudaDevice`] (context, stream, and every kernel of
//! `ferrolm-kernels` compiled by NVRTC for the GPU's own architecture, cached on disk by source
//! hash and architecture), weights kept on the device in their GGUF block format
//! ([`QuantMatrix`]), and one safe method per kernel on [`CudaDevice`].
//!
//! Everything is queued in order on the device's single stream; buffers are cudarc
//! [`CudaSlice`](cudarc::driver::CudaSlice)s, so the whole decode step can be captured as a
//! CUDA graph on [`CudaDevice::stream`]. Without a driver or GPU, [`CudaDevice::new`] returns
//! [`CudaError::DriverNotFound`] or [`CudaError::NoDevice`].
//!
//! A decode step for one token reads, per layer: `rmsnorm` → `quantize_q8` → `matvec` (Q, K,
//! V) → `rope` → `kv_append` → `attention` → `quantize_q8` → `matvec` with `accumulate` (output
//! projection and residual) → `rmsnorm` → `quantize_q8` → `matvec` (gate, up) → `swiglu` or
//! `geglu` → `quantize_q8` → `matvec` with `accumulate` (down projection and residual). A
//! mixture-of-experts layer replaces the gate, up and down products with `matvec` (router) →
//! `moe_route` → `matvec_experts` (gate, up) → `glu_q8` → `matvec_experts` (down) →
//! `moe_combine`, the experts' indices never leaving the device.

mod attention;
mod device;
mod error;
mod experts;
mod launch;
mod ops;
mod profile;
mod step;
mod weights;

pub use attention::{AttentionParams, AttentionWorkspace, PagedKvLayer, QueryBatch};
pub use device::{
    CudaDevice, DeviceGraph, DeviceOptions, compile_ptx, default_kernel_cache, gpu_available,
    module_ptx,
};
pub use error::CudaError;
pub use ops::RopeParams;
pub use profile::{KernelTiming, time_copy, time_matvec, time_op};
pub use step::{StepGraph, StepOutcome};
pub use weights::{Q8Activations, QuantMatrix, WeightType};
