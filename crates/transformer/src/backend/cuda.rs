//! The CUDA backend.
//!
//! With the `cuda` feature, [`CudaBackend`] runs the forward pass on an NVIDIA GPU: weights
//! are uploaded once in their GGUF block formats and multiplied by quantized mat-vec kernels
//! (decode) or dequantized tiles on the tensor cores (prompts), the KV cache lives in device
//! memory in a paged f16 layout kept by `ferrolm-kvcache`'s block ledger, and a single-token
//! step is replayed as one CUDA graph after its first run.
//!
//! Without the feature the same names exist: [`CudaBackend::new`] reports that the build has
//! no CUDA support, so callers (and model code) handle the device choice as an ordinary error
//! and need no conditional compilation.

#[cfg(feature = "cuda")]
mod experts;
#[cfg(feature = "cuda")]
mod gpu;
#[cfg(feature = "cuda")]
mod kv;
#[cfg(feature = "cuda")]
mod staging;
#[cfg(not(feature = "cuda"))]
mod unavailable;

#[cfg(feature = "cuda")]
pub use gpu::{CudaBackend, CudaBuffer, CudaPrepared};
#[cfg(feature = "cuda")]
pub use kv::CudaKv;
#[cfg(not(feature = "cuda"))]
pub use unavailable::{CudaBackend, Unavailable};

/// Options of the CUDA backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Index of the GPU.
    pub ordinal: usize,
    /// Replay single-token steps as CUDA graphs (on by default; off runs every kernel launch
    /// from the host, which is slower and only useful to compare the two).
    pub graphs: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            graphs: true,
        }
    }
}
