use ferrolm_gguf::{GgmlType, GgufError};

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformerError {
    /// The GGUF file could not be read, or a metadata key is missing or of the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The file's architecture is not one this crate runs.
    #[error("architecture {arch:?} is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        /// The architecture the file names.
        arch: String,
        /// The supported architectures, comma separated.
        supported: String,
    },
    /// A hyperparameter has a value the model cannot be built with.
    #[error("invalid hyperparameter {key}: {reason}")]
    InvalidConfig {
        /// The metadata key (or derived quantity) at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required tensor is not in the file.
    #[error("tensor {name} is missing from the model file")]
    MissingTensor {
        /// The tensor's name.
        name: String,
    },
    /// A tensor has a shape other than the architecture requires.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The expected dims, ggml order (row length first).
        expected: Vec<u64>,
        /// The dims found in the file.
        got: Vec<u64>,
    },
    /// A tensor's element type cannot be used where it is.
    #[error("tensor {name} has type {ty}, which {backend} cannot use here")]
    UnsupportedTensorType {
        /// The tensor's name.
        name: String,
        /// Its element type.
        ty: GgmlType,
        /// The backend that refused it.
        backend: &'static str,
    },
    /// A weight-matrix operation failed.
    #[error("matrix operation failed: {0}")]
    Quant(#[from] ferrolm_quant::QuantError),
    /// A KV cache operation failed.
    #[error("KV cache: {0}")]
    KvCache(#[from] ferrolm_kvcache::KvCacheError),
    /// A token id is not below the vocabulary size.
    #[error("token id {id} is out of range (vocabulary of {vocab})")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A batch is malformed (lengths disagree, too many tokens, unknown sequence).
    #[error("invalid batch: {reason}")]
    InvalidBatch {
        /// What is wrong with it.
        reason: String,
    },
    /// The sequence would grow past the context window.
    #[error("context is full: {needed} positions needed, the context holds {n_ctx}")]
    ContextFull {
        /// Positions the sequence would need.
        needed: usize,
        /// The context size.
        n_ctx: usize,
    },
    /// A partial forward pass asked for a number of blocks the model does not have.
    #[error("cannot run {requested} of the model's {n_layer} layers (1 to {n_layer})")]
    LayerCount {
        /// Blocks asked for.
        requested: usize,
        /// Blocks of the model.
        n_layer: usize,
    },
    /// A buffer would need more memory than the machine has.
    #[error(
        "{what} needs {needed_mib} MiB, but only {available_mib} MiB are available; lower the context size (-c) or the number of sequences"
    )]
    InsufficientMemory {
        /// What was to be allocated.
        what: String,
        /// MiB it needs.
        needed_mib: u64,
        /// MiB available.
        available_mib: u64,
    },
    /// The requested device is not available in this build or on this machine.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Sampling the next token failed.
    #[error("sampling failed: {0}")]
    Sampling(#[from] ferrolm_sampling::SamplingError),
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] ferrolm_tokenizer::TokenizerError),
    /// A CUDA operation failed (feature `cuda`).
    #[cfg(feature = "cuda")]
    #[error("CUDA: {0}")]
    Cuda(#[from] crate::cuda::CudaError),
    /// Building the thread pool failed.
    #[error("could not start {threads} worker threads: {reason}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// The reason given by the system.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = TransformerError> = std::result::Result<T, E>;

impl From<ferrolm_kvcache::SlotError> for TransformerError {
    fn from(e: ferrolm_kvcache::SlotError) -> Self {
        use ferrolm_kvcache::SlotError;
        match e {
            SlotError::ContextFull { needed, n_ctx } => {
                TransformerError::ContextFull { needed, n_ctx }
            }
            SlotError::Cache(e) => e.into(),
            e @ (SlotError::UnknownSlot { .. } | SlotError::Position { .. }) => {
                TransformerError::InvalidBatch {
                    reason: e.to_string(),
                }
            }
        }
    }
}
