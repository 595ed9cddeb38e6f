//! Reader and writer for GGUF, the file format of llama.cpp models.
//!
//! A GGUF file holds typed metadata (architecture, hyperparameters, the
//! tokenizer's vocabulary) followed by tensors in ggml's element types.
//! This crate reads versions 2 and 3:
//!
//! - [`GgufFile::open`] maps a file read-only and validates it; [`Gguf::parse`]
//!   does the same over any byte slice.
//! - Validation is complete before anything is used: every count, length and
//!   offset is checked against the file's size before it is allocated from,
//!   arithmetic is overflow-checked, every tensor's bytes lie inside the file,
//!   shapes are checked the way ggml requires. Hostile files get a [`GgufError`]
//!   that says what is wrong and where, never a panic.
//! - Metadata strings and tensor data ([`TensorView::data`]) borrow from the
//!   file; nothing is copied.
//! - [`GgmlType`] is ggml's complete type table with block sizes and bytes per block.
//! - [`keys`] names the metadata keys, so callers never spell key strings.
//! - [`GgufWriter`] writes version 3 files.
//!
//! # Example
//!
//! ```
//! use ferrolm_gguf::{keys, GgmlType, Gguf, GgufWriter, keys::ArchKey};
//!
//! let mut writer = GgufWriter::new();
//! writer.add_metadata(keys::general::ARCHITECTURE, "llama");
//! writer.add_metadata(&ArchKey::ContextLength.key("llama"), 2048u32);
//! let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
//!     .iter()
//!     .flat_map(|x| x.to_le_bytes())
//!     .collect();
//! writer.add_tensor("output.weight", &[3, 2], GgmlType::F32, weights)?;
//! let mut file = Vec::new();
//! writer.write_to(&mut file)?;
//!
//! let gguf = Gguf::parse(&file)?;
//! assert_eq!(gguf.architecture()?, "llama");
//! assert_eq!(gguf.get_u32(&gguf.arch_key(ArchKey::ContextLength)?)?, 2048);
//! let w = gguf.tensor("output.weight").unwrap();
//! assert_eq!((w.row_len(), w.n_rows(), w.ty), (3, 2, GgmlType::F32));
//! assert_eq!(&w.data[12..16], &4.0f32.to_le_bytes());
//! # Ok::<(), ferrolm_gguf::GgufError>(())
//! ```
#![deny(missing_docs)]

mod cursor;
mod error;
mod file;
mod ggml_type;
pub mod keys;
mod metadata;
#[allow(unsafe_code)]
mod mmap;
mod reader;
mod tensor;
mod writer;

pub use error::GgufError;
pub use file::GgufFile;
pub use ggml_type::GgmlType;
pub use metadata::{MetadataArray, MetadataValue, OwnedArray, OwnedMetadataValue, ValueType};
pub use reader::{DEFAULT_ALIGNMENT, Gguf, MAGIC, MAX_ARRAY_DEPTH};
pub use tensor::{MAX_DIMS, TensorInfo, TensorView};
pub use writer::GgufWriter;
