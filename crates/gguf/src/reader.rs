use std::collections::HashMap;

use crate::cursor::{Cursor, align_up};
use crate::error::quoted;
use crate::keys::{self, ArchKey};
use crate::metadata::{MetadataArray, MetadataValue, ValueType};
use crate::tensor::{TensorInfo, TensorView, check_shape};
use crate::{GgmlType, GgufError, MAX_DIMS};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Deepest nesting of metadata arrays the reader accepts (an array of
/// arrays of scalars is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Bytes a tensor header entry takes at least: name length, one dimension,
/// dimension count, type and offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 8 + 4 + 8;

/// Bytes a metadata entry takes at least: key length, value type, one byte of value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;

/// A parsed and fully validated GGUF file over a byte slice.
///
/// Metadata strings and tensor data borrow from the slice; nothing is copied.
/// Once `parse` succeeds, every tensor's bytes lie inside the slice.
pub struct Gguf<'a> {
    bytes: &'a [u8],
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(&'a str, MetadataValue<'a>)>,
    key_index: HashMap<&'a str, usize>,
    tensors: Vec<TensorInfo<'a>>,
    /// Absolute byte range of each tensor's data, parallel to `tensors`.
    tensor_ranges: Vec<(usize, usize)>,
    tensor_index: HashMap<&'a str, usize>,
}

impl std::fmt::Debug for Gguf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("len", &self.bytes.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Gguf<'a> {
    /// Parses and validates a whole GGUF file held in `bytes`.
    ///
    /// Every count, length and offset is checked against the slice's length
    /// before anything is allocated from it, so hostile input is rejected with
    /// an error and never makes the reader allocate more than a small multiple
    /// of `bytes.len()`.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut cur = Cursor::new(bytes);
        let magic: [u8; 4] = cur.array(|| "magic".to_owned())?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = cur.u32(|| "version".to_owned())?;
        if (1..=3).contains(&version.swap_bytes()) {
            return Err(GgufError::BigEndian { raw: version });
        }
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors_offset = cur.pos();
        let n_tensors = cur.u64(|| "tensor count".to_owned())?;
        let n_kv_offset = cur.pos();
        let n_kv = cur.u64(|| "metadata count".to_owned())?;
        let n_kv = check_count(&cur, n_kv, MIN_KV_LEN, n_kv_offset, "metadata entry")?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut key_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key_offset = cur.pos();
            let key = cur.string(|| format!("key of metadata entry {i}"))?;
            if key_index.insert(key, metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey {
                    key: key.to_owned(),
                    offset: key_offset,
                });
            }
            let type_offset = cur.pos();
            let type_id = cur.u32(|| format!("value type of metadata key {}", quoted(key)))?;
            let ty = value_type(type_id, key, type_offset)?;
            let value = read_value(&mut cur, ty, key)?;
            metadata.push((key, value));
        }

        let n_tensors = check_count(
            &cur,
            n_tensors,
            MIN_TENSOR_INFO_LEN,
            n_tensors_offset,
            "tensor",
        )?;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let info = read_tensor_info(&mut cur, i)?;
            if tensor_index.insert(info.name, tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor {
                    tensor: info.name.to_owned(),
                });
            }
            tensors.push(info);
        }

        let alignment = alignment_of(&metadata, &key_index)?;
        let file_len = bytes.len() as u64;
        let data_offset =
            align_up(cur.pos(), alignment).ok_or_else(|| GgufError::InvalidAlignment {
                value: alignment.to_string(),
            })?;

        let mut tensor_ranges = Vec::with_capacity(tensors.len());
        for info in &tensors {
            let len = check_shape(info.name, &info.dims, info.ty)?;
            if !info.offset.is_multiple_of(alignment) {
                return Err(GgufError::MisalignedTensor {
                    tensor: info.name.to_owned(),
                    offset: info.offset,
                    alignment,
                });
            }
            let out_of_bounds = || GgufError::TensorOutOfBounds {
                tensor: info.name.to_owned(),
                start: data_offset.saturating_add(info.offset),
                len,
                file_len,
            };
            let start = data_offset
                .checked_add(info.offset)
                .ok_or_else(out_of_bounds)?;
            let end = start
                .checked_add(len)
                .filter(|&end| end <= file_len)
                .ok_or_else(out_of_bounds)?;
            // end <= file_len, which is a usize.
            tensor_ranges.push((start as usize, end as usize));
        }

        Ok(Gguf {
            bytes,
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_ranges,
            tensor_index,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data (`general.alignment`, 32 when absent).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the data section; tensor offsets are relative to it.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(&'a str, MetadataValue<'a>)] {
        &self.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue<'a>> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue<'a>, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, found: &MetadataValue<'_>) -> GgufError {
        GgufError::WrongType {
            key: key.to_owned(),
            expected,
            found: found.value_type().name(),
        }
    }

    fn integer<T>(
        &self,
        key: &str,
        expected: &'static str,
        convert: impl Fn(&MetadataValue<'a>) -> Option<T>,
    ) -> Result<T, GgufError> {
        let value = self.require(key)?;
        if !value.is_integer() {
            return Err(Self::wrong_type(key, expected, value));
        }
        convert(value).ok_or_else(|| GgufError::OutOfRange {
            key: key.to_owned(),
            expected,
            value: value.to_string(),
        })
    }

    /// The model architecture (`general.architecture`), e.g. `"llama"`.
    pub fn architecture(&self) -> Result<&'a str, GgufError> {
        self.get_str(keys::general::ARCHITECTURE)
    }

    /// The full key of an architecture-specific parameter for this file's
    /// architecture, e.g. `"llama.context_length"`.
    pub fn arch_key(&self, k: ArchKey) -> Result<String, GgufError> {
        Ok(k.key(self.architecture()?))
    }

    /// A required integer of any integer type whose value fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.integer(key, "u32", MetadataValue::as_u32)
    }

    /// A required integer of any integer type whose value fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.integer(key, "u64", MetadataValue::as_u64)
    }

    /// A required integer of any integer type whose value fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.integer(key, "i64", MetadataValue::as_i64)
    }

    /// A required `f32` (an `f64` is rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let value = self.require(key)?;
        value
            .as_f32()
            .ok_or_else(|| Self::wrong_type(key, "f32", value))
    }

    /// A required `f64` (an `f32` is widened).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let value = self.require(key)?;
        value
            .as_f64()
            .ok_or_else(|| Self::wrong_type(key, "f64", value))
    }

    /// A required boolean.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let value = self.require(key)?;
        value
            .as_bool()
            .ok_or_else(|| Self::wrong_type(key, "bool", value))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&'a str, GgufError> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| Self::wrong_type(key, "string", value))
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray<'a>, GgufError> {
        let value = self.require(key)?;
        value
            .as_array()
            .ok_or_else(|| Self::wrong_type(key, "array", value))
    }

    /// An optional integer: `Ok(None)` when the key is absent, an error when
    /// it holds another type or a value that does not fit in `u32`.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.optional(key, Self::get_u32)
    }

    /// An optional integer that fits in `u64` (see [`Gguf::opt_u32`]).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.optional(key, Self::get_u64)
    }

    /// An optional `f32` (see [`Gguf::opt_u32`]).
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.optional(key, Self::get_f32)
    }

    /// An optional boolean (see [`Gguf::opt_u32`]).
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.optional(key, Self::get_bool)
    }

    /// An optional string (see [`Gguf::opt_u32`]).
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, GgufError> {
        self.optional(key, Self::get_str)
    }

    /// An optional array (see [`Gguf::opt_u32`]).
    pub fn opt_array(&self, key: &str) -> Result<Option<&MetadataArray<'a>>, GgufError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.get_array(key).map(Some)
    }

    fn optional<T>(
        &self,
        key: &str,
        get: impl Fn(&Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        get(self, key).map(Some)
    }

    /// All tensor header entries in file order.
    pub fn tensors(&self) -> &[TensorInfo<'a>] {
        &self.tensors
    }

    /// The header entry of the tensor named `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor named `name`, with its data.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'a>> {
        self.tensor_index.get(name).and_then(|&i| self.view(i))
    }

    /// Every tensor with its data, in file order.
    pub fn tensor_views(&self) -> impl Iterator<Item = TensorView<'a>> + '_ {
        (0..self.tensors.len()).filter_map(|i| self.view(i))
    }

    fn view(&self, i: usize) -> Option<TensorView<'a>> {
        let info = self.tensors.get(i)?;
        let &(start, end) = self.tensor_ranges.get(i)?;
        Some(TensorView {
            name: info.name,
            dims: info.dims.clone(),
            ty: info.ty,
            data: self.bytes.get(start..end)?,
        })
    }
}

fn check_count(
    cur: &Cursor<'_>,
    count: u64,
    min_len: u64,
    offset: u64,
    what: &str,
) -> Result<usize, GgufError> {
    let max = cur.remaining() / min_len;
    if count > max {
        return Err(GgufError::CountTooLarge {
            what: what.to_owned(),
            count,
            offset,
            available: cur.remaining(),
            max,
        });
    }
    // count <= remaining bytes, which fit in usize.
    Ok(count as usize)
}

fn value_type(type_id: u32, key: &str, offset: u64) -> Result<ValueType, GgufError> {
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        type_id,
        offset,
    })
}

fn read_value<'a>(
    cur: &mut Cursor<'a>,
    ty: ValueType,
    key: &str,
) -> Result<MetadataValue<'a>, GgufError> {
    let what = || format!("value of metadata key {}", quoted(key));
    Ok(match ty {
        ValueType::U8 => MetadataValue::U8(cur.u8(what)?),
        ValueType::I8 => MetadataValue::I8(cur.u8(what)? as i8),
        ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(cur.array(what)?)),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(cur.array(what)?)),
        ValueType::U32 => MetadataValue::U32(cur.u32(what)?),
        ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(cur.array(what)?)),
        ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(cur.array(what)?)),
        ValueType::U64 => MetadataValue::U64(cur.u64(what)?),
        ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(cur.array(what)?)),
        ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(cur.array(what)?)),
        ValueType::Bool => MetadataValue::Bool(read_bool(cur, key)?),
        ValueType::String => MetadataValue::String(cur.string(what)?),
        ValueType::Array => MetadataValue::Array(read_array(cur, key, 1)?),
    })
}

fn read_bool(cur: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    let offset = cur.pos();
    match cur.u8(|| format!("value of metadata key {}", quoted(key)))? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool {
            key: key.to_owned(),
            value,
            offset,
        }),
    }
}

/// Reads `count` fixed-size little-endian elements in one bounds check.
fn read_fixed<T, const N: usize>(
    cur: &mut Cursor<'_>,
    count: usize,
    key: &str,
    decode: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    let bytes = cur.take((count * N) as u64, || {
        format!("array elements of metadata key {}", quoted(key))
    })?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            decode(a)
        })
        .collect())
}

fn read_array<'a>(
    cur: &mut Cursor<'a>,
    key: &str,
    depth: usize,
) -> Result<MetadataArray<'a>, GgufError> {
    let start = cur.pos();
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
            offset: start,
        });
    }
    let type_id = cur.u32(|| format!("array element type of metadata key {}", quoted(key)))?;
    let elem = value_type(type_id, key, start)?;
    let count = cur.count(elem.min_encoded_len(), || {
        format!("array of metadata key {}", quoted(key))
    })?;
    Ok(match elem {
        ValueType::U8 => MetadataArray::U8(read_fixed(cur, count, key, |[b]| b)?),
        ValueType::I8 => MetadataArray::I8(read_fixed(cur, count, key, i8::from_le_bytes)?),
        ValueType::U16 => MetadataArray::U16(read_fixed(cur, count, key, u16::from_le_bytes)?),
        ValueType::I16 => MetadataArray::I16(read_fixed(cur, count, key, i16::from_le_bytes)?),
        ValueType::U32 => MetadataArray::U32(read_fixed(cur, count, key, u32::from_le_bytes)?),
        ValueType::I32 => MetadataArray::I32(read_fixed(cur, count, key, i32::from_le_bytes)?),
        ValueType::F32 => MetadataArray::F32(read_fixed(cur, count, key, f32::from_le_bytes)?),
        ValueType::U64 => MetadataArray::U64(read_fixed(cur, count, key, u64::from_le_bytes)?),
        ValueType::I64 => MetadataArray::I64(read_fixed(cur, count, key, i64::from_le_bytes)?),
        ValueType::F64 => MetadataArray::F64(read_fixed(cur, count, key, f64::from_le_bytes)?),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(read_bool(cur, key)?);
            }
            MetadataArray::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(count);
            for i in 0..count {
                v.push(cur.string(|| format!("element {i} of metadata key {}", quoted(key)))?);
            }
            MetadataArray::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                v.push(read_array(cur, key, depth + 1)?);
            }
            MetadataArray::Array(v)
        }
    })
}

fn read_tensor_info<'a>(cur: &mut Cursor<'a>, index: usize) -> Result<TensorInfo<'a>, GgufError> {
    let name = cur.string(|| format!("name of tensor {index}"))?;
    let n_dims = cur.u32(|| format!("dimension count of tensor {}", quoted(name)))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: n_dims.into(),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(|| format!("dimensions of tensor {}", quoted(name)))?);
    }
    let type_id = cur.u32(|| format!("type of tensor {}", quoted(name)))?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        tensor: name.to_owned(),
        type_id,
    })?;
    let offset = cur.u64(|| format!("data offset of tensor {}", quoted(name)))?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
    })
}

/// `general.alignment` when present: any integer type, nonzero power of two.
fn alignment_of(
    metadata: &[(&str, MetadataValue<'_>)],
    key_index: &HashMap<&str, usize>,
) -> Result<u64, GgufError> {
    let Some(&i) = key_index.get(keys::general::ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let value = &metadata[i].1;
    match value.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => Err(GgufError::InvalidAlignment {
            value: value.to_string(),
        }),
    }
}
