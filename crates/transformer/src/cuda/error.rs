use std::path::PathBuf;

use cudarc::driver::DriverError;

/// Everything that can go wrong on the CUDA path.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The CUDA driver library (libcuda) could not be loaded: no NVIDIA driver on this machine.
    #[error(
        "no CUDA driver found (libcuda could not be loaded); install an NVIDIA driver or use the CPU backend"
    )]
    DriverNotFound,
    /// The driver loaded but reports no GPU with the requested index.
    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoDevice {
        /// The device index asked for.
        ordinal: usize,
        /// How many devices the driver sees.
        count: usize,
    },
    /// NVRTC, which compiles the kernels at run time, could not be loaded.
    #[error(
        "NVRTC (libnvrtc) could not be loaded; it ships with the CUDA toolkit or the nvidia-cuda-nvrtc package"
    )]
    NvrtcNotFound,
    /// cuBLAS, used for prompt-sized matrix products, could not be loaded.
    #[error("cuBLAS (libcublas) could not be loaded; it ships with the CUDA toolkit")]
    CublasNotFound,
    /// A cuBLAS call failed.
    #[error("cuBLAS call failed during {op}: {message}")]
    Cublas {
        /// What was being done.
        op: &'static str,
        /// cuBLAS's status.
        message: String,
    },
    /// A driver call failed.
    #[error("CUDA driver call failed during {op}: {source}")]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The driver's error.
        source: DriverError,
    },
    /// NVRTC rejected a kernel module.
    #[error("NVRTC failed to compile kernel module {module} for {arch}: {log}")]
    Compile {
        /// The module's name.
        module: &'static str,
        /// The architecture compiled for, such as `sm_90`.
        arch: String,
        /// NVRTC's log or error.
        log: String,
    },
    /// Reading or writing the on-disk kernel cache failed.
    #[error("kernel cache {path}: {source}")]
    Cache {
        /// The file or folder involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A kernel that the runtime expects is not in the loaded modules.
    #[error("kernel {name} is not in any loaded module")]
    KernelMissing {
        /// The kernel's name.
        name: String,
    },
    /// A buffer is smaller than an operation needs, or a dimension does not fit.
    #[error("{op}: {what} is {got}, needs {expected}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// Which buffer or dimension.
        what: &'static str,
        /// The size needed.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// A parameter outside what the kernels support.
    #[error("{op}: {what}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is not supported.
        what: String,
    },
}

impl CudaError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn driver(op: &'static str) -> impl FnOnce(DriverError) -> Self {
        move |source| Self::Driver { op, source }
    }

    /// Whether the error only says that this machine has no usable GPU (no driver, or no
    /// device), as opposed to a failure on a GPU that is there.
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, Self::DriverNotFound | Self::NoDevice { .. })
    }
}
