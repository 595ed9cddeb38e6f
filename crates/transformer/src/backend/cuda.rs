//! Entry point of the CUDA backend.
//!
//! This build has no CUDA backend: [`CudaBackend::new`] reports that, so callers (and model
//! code) handle the device choice as an ordinary error and need no conditional compilation.

use crate::error::{Result, TransformerError};

/// The CUDA backend (unavailable in this build).
#[derive(Debug)]
pub struct CudaBackend {
    _private: (),
}

impl CudaBackend {
    /// Opens GPU `ordinal`.
    pub fn new(ordinal: usize) -> Result<Self> {
        Err(TransformerError::DeviceUnavailable {
            device: format!("cuda:{ordinal}"),
            reason: "this build of ferrolm has no CUDA support; rebuild with `--features cuda`"
                .into(),
        })
    }
}
