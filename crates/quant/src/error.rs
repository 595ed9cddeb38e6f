//! The crate's error type.

use ferrolm_gguf::GgmlType;

/// What went wrong in a quantization-format operation.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The type has no implementation of the requested operation here.
    #[error("{op} is not implemented for ggml type {ty}")]
    Unsupported {
        /// The ggml type asked for.
        ty: GgmlType,
        /// The operation: "dequantization", "quantization", ...
        op: &'static str,
    },
    /// A row's element count is not a whole number of the type's blocks.
    #[error("{ty} stores {block} elements per block, but a row of {elements} elements was given")]
    NotBlockMultiple {
        /// The ggml type.
        ty: GgmlType,
        /// Elements given.
        elements: usize,
        /// Elements per block of `ty`.
        block: usize,
    },
    /// The quantized byte buffer does not hold exactly the given elements.
    #[error("{elements} elements of {ty} take {expected} bytes, but the buffer has {got}")]
    ByteLength {
        /// The ggml type.
        ty: GgmlType,
        /// Elements to decode or encode.
        elements: usize,
        /// Bytes those elements take.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A source and a destination slice of different lengths.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Which buffer is wrong.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A tensor whose shape cannot be processed.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A requantization asked to overwrite its own input.
    #[error("output {path} is the input file; write to another path")]
    SameFile {
        /// The path given as both input and output.
        path: std::path::PathBuf,
    },
    /// Writing or renaming the output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory being written.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Reading or writing a GGUF container failed.
    #[error(transparent)]
    Gguf(#[from] ferrolm_gguf::GgufError),
}
