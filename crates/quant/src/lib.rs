//! Every GGUF/ggml block quantization format the ferrolm runtime reads:
//! block structs laid out byte for byte as in the file, exact scalar
//! dequantization, and quantizers as good as ggml's reference ones.
//!
//! - [`blocks`]: one `#[repr(C)]` [`bytemuck::Pod`] struct per format
//!   (Q4_0 … Q8_1, Q2_K … Q8_K, IQ4_NL, IQ4_XS) with `dequantize` and
//!   `quantize` on fixed-size arrays.
//! - [`BlockFormat`]: the trait over all block structs (ggml type, elements
//!   per block, slice codecs) for code generic over formats.
//! - [`dequantize_row`] / [`quantize_row`]: the same for a row of raw bytes,
//!   dispatched on a [`GgmlType`]; F32, F16 and BF16 are handled as plain
//!   element types. [`dequantize_tensor`] decodes a whole tensor.
//! - [`mix`]: llama.cpp's quantization mixes (`q4_K_M`, `q3_K_S`, ...) and
//!   the type each tensor of a model gets under one.
//! - [`requantize()`]: a whole GGUF model requantized with a mix (what
//!   `ferrolm quantize` runs).
//!
//! ```
//! use ferrolm_gguf::GgmlType;
//! use ferrolm_quant::{dequantize_row, quantize_row, row_size};
//!
//! # fn main() -> Result<(), ferrolm_quant::QuantError> {
//! let src: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
//! let mut bytes = vec![0u8; row_size(GgmlType::Q4_0, src.len())?];
//! quantize_row(GgmlType::Q4_0, &src, &mut bytes)?;
//! let mut back = vec![0.0f32; src.len()];
//! dequantize_row(GgmlType::Q4_0, &bytes, &mut back)?;
//! let worst = src.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(worst < 0.15);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod blocks;
pub mod dot;
mod error;
mod format;
pub mod interleave;
pub mod matrix;
pub mod mix;
pub mod requantize;
mod row;
mod scale_search;
mod simd;

pub use dot::QuantizedActivations;
pub use error::QuantError;
pub use ferrolm_gguf::GgmlType;
pub use format::BlockFormat;
pub use interleave::Interleaved;
pub use matrix::{Input, MatScratch, Precision, QMatrix};
pub use mix::{Mix, MixOptions, QuantPlan};
pub use requantize::{requantize, requantize_file};
pub use row::{
    block_layout, can_dequantize, can_quantize, dequantize_row, dequantize_tensor, quantize_row,
    row_size,
};
pub use simd::{KERNELS_ENV, kernel_set, requested_kernels};
