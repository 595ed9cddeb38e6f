use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUresult, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaStream};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use ferrolm_kernels::{KernelModule, MODULES};

use super::CudaError;
use super::launch;
use super::step::StepState;

/// How to open a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceOptions {
    /// Index of the GPU.
    pub ordinal: usize,
    /// Folder for compiled kernels; `None` picks [`default_kernel_cache`]. Compilation is
    /// skipped when a file for the same sources and architecture is there.
    pub kernel_cache: Option<PathBuf>,
    /// Do not read or write any cache: always compile.
    pub no_cache: bool,
}

/// A GPU with its context, the one stream all work is queued on, and every kernel compiled for
/// its architecture.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    name: String,
    functions: HashMap<&'static str, CudaFunction>,
    blas: Option<CudaBlas>,
    pub(crate) step: StepState,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("arch", &self.arch)
            .field("kernels", &self.functions.len())
            .finish_non_exhaustive()
    }
}

/// `$FERROLM_HOME/kernels`, else `<cache dir>/ferrolm/kernels` (`$XDG_CACHE_HOME`, else
/// `$HOME/.cache`), or `None` when none of these variables is set.
pub fn default_kernel_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("FERROLM_HOME") {
        return Some(home.join("kernels"));
    }
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("ferrolm").join("kernels"))
}

/// Whether this machine has a CUDA driver and at least one GPU, without creating a context.
pub fn gpu_available() -> bool {
    launch::driver_present() && CudaContext::device_count().is_ok_and(|n| n > 0)
}

impl CudaDevice {
    /// Opens GPU 0 with the default kernel cache.
    pub fn new() -> Result<Self, CudaError> {
        Self::with_options(&DeviceOptions::default())
    }

    /// Opens the GPU `options.ordinal`: creates its context and stream, and compiles (or loads
    /// from the cache) every kernel module for its compute capability.
    ///
    /// Without a driver or GPU this returns [`CudaError::DriverNotFound`] or
    /// [`CudaError::NoDevice`]; it never panics.
    pub fn with_options(options: &DeviceOptions) -> Result<Self, CudaError> {
        if !launch::driver_present() {
            return Err(CudaError::DriverNotFound);
        }
        // A driver with no GPU to drive (or none visible) answers the count with an error.
        let count = match CudaContext::device_count() {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => 0,
            Err(e) => return Err(CudaError::driver("counting devices")(e)),
        };
        if options.ordinal >= count {
            return Err(CudaError::NoDevice {
                ordinal: options.ordinal,
                count,
            });
        }
        let ctx =
            CudaContext::new(options.ordinal).map_err(CudaError::driver("creating context"))?;
        launch::disable_event_tracking(&ctx);
        let stream = ctx
            .new_stream()
            .map_err(CudaError::driver("creating stream"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(CudaError::driver("reading compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx
            .name()
            .map_err(CudaError::driver("reading device name"))?;

        let cache = if options.no_cache {
            None
        } else {
            options.kernel_cache.clone().or_else(default_kernel_cache)
        };
        let mut functions = HashMap::new();
        for module in MODULES {
            let ptx = module_ptx(module, &arch, cache.as_deref())?;
            let loaded = ctx
                .load_module(Ptx::from_src(ptx))
                .map_err(CudaError::driver("loading kernel module"))?;
            for &kernel in module.kernels {
                let f = loaded
                    .load_function(kernel)
                    .map_err(CudaError::driver("looking up kernel"))?;
                functions.insert(kernel, f);
            }
        }
        // cuBLAS serves only prompt-sized products; without it decode still works.
        let blas = if launch::cublas_present() {
            Some(
                CudaBlas::new(stream.clone()).map_err(|e| CudaError::Cublas {
                    op: "creating handle",
                    message: e.to_string(),
                })?,
            )
        } else {
            None
        };
        Ok(Self {
            ctx,
            stream,
            arch,
            name,
            functions,
            blas,
            step: StepState::default(),
        })
    }

    /// The context, for cudarc calls the runtime does not wrap.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every operation of this device is queued on, in order.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The architecture the kernels were compiled for, such as `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until all queued work is done, and reports any error a kernel raised.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("synchronizing"))
    }

    /// Free and total device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx
            .mem_get_info()
            .map_err(CudaError::driver("reading memory info"))
    }

    /// Records the work that `record` queues on this device's stream into a CUDA graph instead
    /// of running it; [`DeviceGraph::launch`] then replays all of it with one launch. Buffers
    /// must exist before the capture, and values that change between replays (positions,
    /// token ids) must be read by the kernels from device memory.
    pub fn capture(
        &self,
        record: impl FnOnce(&Self) -> Result<(), CudaError>,
    ) -> Result<DeviceGraph, CudaError> {
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(CudaError::driver("beginning graph capture"))?;
        let recorded = record(self);
        // The capture must end even when recording failed, or the stream stays unusable.
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH);
        recorded?;
        let graph = graph.map_err(CudaError::driver("ending graph capture"))?;
        graph
            .map(DeviceGraph)
            .ok_or_else(|| CudaError::Unsupported {
                op: "graph capture",
                what: "nothing was recorded".into(),
            })
    }

    pub(crate) fn blas(&self) -> Result<&CudaBlas, CudaError> {
        self.blas.as_ref().ok_or(CudaError::CublasNotFound)
    }

    /// The kernel `name`, with the name as the module lists it.
    pub(crate) fn function(&self, name: &str) -> Result<(&'static str, &CudaFunction), CudaError> {
        self.functions
            .get_key_value(name)
            .map(|(k, f)| (*k, f))
            .ok_or_else(|| CudaError::KernelMissing {
                name: name.to_owned(),
            })
    }
}

/// A recorded sequence of kernels, replayed with one launch.
pub struct DeviceGraph(CudaGraph);

impl std::fmt::Debug for DeviceGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceGraph")
    }
}

impl DeviceGraph {
    /// Queues one replay of the recorded work on the stream it was recorded from.
    pub fn launch(&self) -> Result<(), CudaError> {
        self.0
            .launch()
            .map_err(CudaError::driver("launching graph"))
    }
}

/// NVRTC options besides the architecture; part of the cache key.
const NVRTC_OPTIONS: &[&str] = &["--std=c++17"];

/// Compiles `module` for `arch` (`sm_90`) to PTX with NVRTC, or reads the PTX that an earlier
/// compilation of the same sources for the same architecture left in `cache`.
pub fn module_ptx(
    module: &'static KernelModule,
    arch: &str,
    cache: Option<&Path>,
) -> Result<String, CudaError> {
    let file = cache.map(|dir| {
        let options = NVRTC_OPTIONS.join(" ");
        let key = module.hash()
            ^ options
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        dir.join(format!("{}-{key:016x}-{arch}.ptx", module.name))
    });
    if let Some(Ok(ptx)) = file.as_ref().map(std::fs::read_to_string) {
        return Ok(ptx);
    }
    let ptx = compile_ptx(module, arch)?;
    if let Some(path) = &file {
        store(path, &ptx)?;
    }
    Ok(ptx)
}

/// Compiles `module` for `arch` with NVRTC, without any cache.
pub fn compile_ptx(module: &'static KernelModule, arch: &str) -> Result<String, CudaError> {
    if !launch::nvrtc_present() {
        return Err(CudaError::NvrtcNotFound);
    }
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| (*s).to_owned()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts = CompileOptions {
        options,
        name: Some(format!("{}.cu", module.name)),
        ..CompileOptions::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(module.full_source(), opts).map_err(|e| {
        CudaError::Compile {
            module: module.name,
            arch: arch.to_owned(),
            log: match e {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => other.to_string(),
            },
        }
    })?;
    Ok(ptx.to_src())
}

/// Writes the file through a temporary name so a concurrent reader never sees half of it.
fn store(path: &Path, text: &str) -> Result<(), CudaError> {
    let err = |source| CudaError::Cache {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
