//! The only unsafe code of the CUDA runtime: probing for the shared libraries, switching off
//! cudarc's per-buffer event tracking, and launching kernels.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::CudaError;

/// One kernel argument. Pointers travel as raw device addresses (0 for an absent optional
/// buffer), so every kernel signature is a plain list of addresses and scalars.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(crate) fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the NVRTC library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// All work goes to one stream, in order, so cudarc's cross-stream events are not needed; they
/// would also get in the way of graph capture.
pub(crate) fn disable_event_tracking(ctx: &Arc<CudaContext>) {
    // SAFETY: called right after the context is made, before any buffer exists, and the
    // runtime uses a single stream, so no cross-stream synchronisation is lost.
    unsafe { ctx.disable_event_tracking() }
}

/// Launches `func` with `args` on `stream`.
///
/// # Safety
/// `args` must match the kernel's parameter list in number, order and type, and every pointer
/// must address device memory large enough for what the kernel reads and writes with this
/// configuration.
pub(crate) unsafe fn launch(
    stream: &CudaStream,
    func: &CudaFunction,
    cfg: LaunchConfig,
    args: &[Arg],
) -> Result<(), CudaError> {
    let mut builder = stream.launch_builder(func);
    for a in args {
        match a {
            Arg::Ptr(p) => builder.arg(p),
            Arg::I32(v) => builder.arg(v),
            Arg::F32(v) => builder.arg(v),
        };
    }
    // SAFETY: forwarded to the caller (see above).
    unsafe { builder.launch(cfg) }.map_err(CudaError::driver("kernel launch"))?;
    Ok(())
}
