//! The only unsafe code of the CUDA runtime: probing for the shared libraries, switching off
//! cudarc's per-buffer event tracking, and launching kernels.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::CudaError;

/// One kernel argument. Pointers travel as raw device addresses (0 for an absent optional
/// buffer), so every kernel signature is a plain list of addresses and scalars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(crate) fn cublas_present() -> bool {
    // SAFETY: only tries to dlopen the cuBLAS library.
    unsafe { cudarc::cublas::sys::is_culib_present() }
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

/// The element type of the operands of [`gemm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GemmInput {
    /// f16 operands, on the tensor cores.
    F16,
    /// f32 operands (no TF32: the handle keeps cuBLAS's default math mode).
    F32,
}

/// Row-major `c[n][m] (ldc) = x[n][k] · w[m][k]ᵀ` with operands of `input` and f32
/// accumulation and output, through cuBLAS.
///
/// # Safety
/// `w` must hold `m × k` and `x` `n × k` values of `input`, and `c` must hold
/// `(n - 1) · ldc + m` f32 values, all on the device of `handle`'s stream.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    handle: &CudaBlas,
    input: GemmInput,
    w: u64,
    x: u64,
    c: u64,
    m: i32,
    n: i32,
    k: i32,
    ldc: i32,
) -> Result<(), CudaError> {
    let alpha = 1.0f32;
    let beta = 0.0f32;
    let ty = match input {
        GemmInput::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
        GemmInput::F32 => blas_sys::cudaDataType_t::CUDA_R_32F,
    };
    // Column-major view: C (m × n) = Wᵀ-as-stored (k × m)ᵀ · X-as-stored (k × n).
    // SAFETY: pointers and sizes as the caller guarantees; alpha and beta outlive the call.
    unsafe {
        blas::gemm_ex(
            *handle.handle(),
            blas_sys::cublasOperation_t::CUBLAS_OP_T,
            blas_sys::cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            (&raw const alpha).cast(),
            w as *const std::ffi::c_void,
            ty,
            k,
            x as *const std::ffi::c_void,
            ty,
            k,
            (&raw const beta).cast(),
            c as *mut std::ffi::c_void,
            blas_sys::cudaDataType_t::CUDA_R_32F,
            ldc,
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| CudaError::Cublas {
        op: "gemm",
        message: e.to_string(),
    })
}

// SAFETY: a graph and its executable instance are driver objects of the context, not of a
// thread; every use (launch, drop) goes through cudarc, which binds the context to the calling
// thread first, and the runtime keeps graphs behind a lock, so one thread uses a graph at a time.
unsafe impl Send for super::DeviceGraph {}
