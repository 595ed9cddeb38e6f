use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// `Display` is a single line that says what is wrong and, for problems in
/// the file's bytes, at which byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, inspected, mapped or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file in question.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing to a stream (not a named file) failed.
    #[error("cannot write GGUF data: {source}")]
    Write {
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path exists but is not a regular file (for example a directory).
    #[error("{}: is not a regular file ({kind})", path.display())]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is instead ("a directory", ...).
        kind: &'static str,
    },
    /// A problem with the contents of a named file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<GgufError>,
    },
    /// The file ends before a field that must be there.
    #[error(
        "truncated file: {what} at byte offset {offset} needs {needed} bytes but only {available} remain"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The version field is byte-swapped: the file was written big-endian.
    #[error(
        "big-endian GGUF file (version field reads {raw:#010x}); only little-endian files are supported"
    )]
    BigEndian {
        /// The version field as read little-endian.
        raw: u32,
    },
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version}; versions 2 and 3 are supported")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
    },
    /// A count (tensors, metadata entries, array elements) that the rest of the
    /// file cannot possibly hold.
    #[error(
        "{what} count {count} at byte offset {offset} is impossible: the remaining {available} bytes hold at most {max}"
    )]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// The count the file claims.
        count: u64,
        /// Byte offset of the count.
        offset: u64,
        /// Bytes left in the file after the count.
        available: u64,
        /// The largest count those bytes could hold.
        max: u64,
    },
    /// A string that is not valid UTF-8.
    #[error("{what} at byte offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
        /// Byte offset of the string's bytes.
        offset: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("metadata key {k}: unknown value type {type_id} at byte offset {offset}", k = quoted(key))]
    UnknownValueType {
        /// The key whose value it is.
        key: String,
        /// The type id found.
        type_id: u32,
        /// Byte offset of the type id.
        offset: u64,
    },
    /// A boolean stored as a byte other than 0 or 1.
    #[error("metadata key {k}: invalid boolean byte {value} at byte offset {offset}", k = quoted(key))]
    InvalidBool {
        /// The key whose value it is.
        key: String,
        /// The byte found.
        value: u8,
        /// Byte offset of the byte.
        offset: u64,
    },
    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("metadata key {k}: arrays nested deeper than {max} levels at byte offset {offset}", k = quoted(key))]
    ArrayTooDeep {
        /// The key whose value it is.
        key: String,
        /// The nesting limit.
        max: usize,
        /// Byte offset of the array that is one level too deep.
        offset: u64,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key {k} at byte offset {offset}", k = quoted(key))]
    DuplicateKey {
        /// The key.
        key: String,
        /// Byte offset of the second occurrence.
        offset: u64,
    },
    /// `general.alignment` is zero, not a power of two, or not an integer.
    #[error("invalid general.alignment {value}: must be a nonzero power of two")]
    InvalidAlignment {
        /// The value found, as text.
        value: String,
    },
    /// A tensor type id that ggml does not define.
    #[error("tensor {t}: unknown ggml type id {type_id}", t = quoted(tensor))]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The type id found.
        type_id: u32,
    },
    /// A tensor with zero dimensions or more than [`crate::MAX_DIMS`].
    #[error("tensor {t}: {n_dims} dimensions; 1 to {max} are allowed", max = crate::MAX_DIMS, t = quoted(tensor))]
    BadDimCount {
        /// The tensor.
        tensor: String,
        /// The number of dimensions found.
        n_dims: u64,
    },
    /// A dimension of zero.
    #[error("tensor {t}: dimension {index} is zero (shape {dims:?})", t = quoted(tensor))]
    ZeroDim {
        /// The tensor.
        tensor: String,
        /// Which dimension.
        index: usize,
        /// The whole shape.
        dims: Vec<u64>,
    },
    /// Dimensions whose product (or byte size) does not fit in a signed 64-bit integer.
    #[error("tensor {t}: shape {dims:?} overflows: its element or byte count is not representable", t = quoted(tensor))]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// The shape.
        dims: Vec<u64>,
    },
    /// A row length that is not a multiple of the type's block size.
    #[error("tensor {t}: row length {row_len} is not a multiple of {ty}'s block size {block_size}", ty = ty.name(), t = quoted(tensor))]
    RowNotBlockMultiple {
        /// The tensor.
        tensor: String,
        /// The type.
        ty: GgmlType,
        /// `dims[0]`.
        row_len: u64,
        /// Elements per block of `ty`.
        block_size: usize,
    },
    /// Two tensors with the same name.
    #[error("duplicate tensor name {t}", t = quoted(tensor))]
    DuplicateTensor {
        /// The name.
        tensor: String,
    },
    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor {t}: data offset {offset} is not a multiple of the alignment {alignment}", t = quoted(tensor))]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose bytes do not lie inside the data section.
    #[error("tensor {t}: data at byte offset {start} of {len} bytes runs past the end of the file ({file_len} bytes)", t = quoted(tensor))]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute byte offset of its data.
        start: u64,
        /// Its size in bytes.
        len: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A required metadata key is absent.
    #[error("metadata key {k} is missing", k = quoted(key))]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of another type than the one asked for.
    #[error("metadata key {k} has type {found}, expected {expected}", k = quoted(key))]
    WrongType {
        /// The key.
        key: String,
        /// What was asked for.
        expected: &'static str,
        /// What the file holds.
        found: &'static str,
    },
    /// An integer metadata value that does not fit the type asked for.
    #[error("metadata key {k} value {value} does not fit in {expected}", k = quoted(key))]
    OutOfRange {
        /// The key.
        key: String,
        /// What was asked for.
        expected: &'static str,
        /// The value, as text.
        value: String,
    },
    /// Tensor data handed to the writer has the wrong length for its shape and type.
    #[error("tensor {t}: {got} bytes of data given but shape and type need {expected}", t = quoted(tensor))]
    TensorSizeMismatch {
        /// The tensor.
        tensor: String,
        /// Bytes the shape and type need.
        expected: u64,
        /// Bytes given.
        got: u64,
    },
}

impl GgufError {
    /// Wraps `self` so that its message names `path`.
    #[must_use]
    pub fn in_file(self, path: impl Into<PathBuf>) -> GgufError {
        GgufError::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }
}

/// `s` in quotes with control characters escaped (so a message stays on one
/// line), cut short when long.
pub(crate) fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}
