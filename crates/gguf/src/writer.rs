use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use crate::cursor::align_up;
use crate::metadata::{OwnedArray, OwnedMetadataValue};
use crate::tensor::check_shape;
use crate::{DEFAULT_ALIGNMENT, GgmlType, Gguf, GgufError, MAGIC, keys};

/// Builds a GGUF version 3 file: metadata entries and tensors, written with
/// tensor data aligned to `general.alignment` (32 unless set).
///
/// Tensor data may be borrowed (for example from another file's mapping), so
/// rewriting a model does not need to copy its unchanged tensors.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, OwnedMetadataValue)>,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
}

#[derive(Clone, Debug)]
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

impl<'a> GgufWriter<'a> {
    /// An empty file with the default alignment.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty file whose tensor data is aligned to `align` bytes; sets
    /// `general.alignment`. `align` must be a nonzero power of two, which
    /// [`GgufWriter::write_to`] checks.
    pub fn with_alignment(align: u64) -> Self {
        let mut w = Self::new();
        let value = match u32::try_from(align) {
            Ok(a) => OwnedMetadataValue::U32(a),
            Err(_) => OwnedMetadataValue::U64(align),
        };
        w.add_metadata(keys::general::ALIGNMENT, value);
        w
    }

    /// A writer holding all of `gguf`'s metadata and tensors (the tensor data
    /// borrowed, not copied), to be modified and written out.
    pub fn from_gguf(gguf: &Gguf<'a>) -> Result<Self, GgufError> {
        let mut w = Self::new();
        for (key, value) in gguf.metadata() {
            w.add_metadata(key, OwnedMetadataValue::from(value));
        }
        for t in gguf.tensor_views() {
            w.add_tensor(t.name, &t.dims, t.ty, t.data)?;
        }
        Ok(w)
    }

    /// Sets metadata key `key`. Keys keep the order they were first added in;
    /// adding a key again replaces its value.
    pub fn add_metadata(&mut self, key: &str, value: impl Into<OwnedMetadataValue>) {
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
    }

    /// Metadata entries added so far, in order.
    pub fn metadata(&self) -> &[(String, OwnedMetadataValue)] {
        &self.metadata
    }

    /// Adds a tensor. `dims` are in ggml order (`dims[0]` is the row length);
    /// `data` must be exactly the size the shape and type need.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufError> {
        let data = data.into();
        let expected = check_shape(name, dims, ty)?;
        if data.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name.to_owned(),
                expected,
                got: data.len() as u64,
            });
        }
        if !self.names.insert(name.to_owned()) {
            return Err(GgufError::DuplicateTensor {
                tensor: name.to_owned(),
            });
        }
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ty,
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> Result<u64, GgufError> {
        let Some((_, value)) = self
            .metadata
            .iter()
            .find(|(k, _)| k == keys::general::ALIGNMENT)
        else {
            return Ok(DEFAULT_ALIGNMENT);
        };
        let align = match *value {
            OwnedMetadataValue::U8(a) => Some(u64::from(a)),
            OwnedMetadataValue::U16(a) => Some(u64::from(a)),
            OwnedMetadataValue::U32(a) => Some(u64::from(a)),
            OwnedMetadataValue::U64(a) => Some(a),
            OwnedMetadataValue::I8(a) => u64::try_from(a).ok(),
            OwnedMetadataValue::I16(a) => u64::try_from(a).ok(),
            OwnedMetadataValue::I32(a) => u64::try_from(a).ok(),
            OwnedMetadataValue::I64(a) => u64::try_from(a).ok(),
            _ => None,
        };
        align
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| GgufError::InvalidAlignment {
                value: format!("{value:?}"),
            })
    }

    /// Writes the file to `w`.
    pub fn write_to(&self, w: impl Write) -> Result<(), GgufError> {
        let alignment = self.alignment()?;
        let mut out = CountingWriter {
            inner: std::io::BufWriter::new(w),
            written: 0,
        };
        self.write_all(&mut out, alignment)
            .and_then(|()| out.inner.flush())
            .map_err(|source| GgufError::Write { source })
    }

    /// Writes the file to `path`, replacing any file there.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io_error = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io_error)?;
        match self.write_to(&file) {
            Err(GgufError::Write { source }) => Err(io_error(source)),
            other => other,
        }?;
        file.sync_all().map_err(io_error)
    }

    fn write_all<W: Write>(
        &self,
        out: &mut CountingWriter<W>,
        alignment: u64,
    ) -> std::io::Result<()> {
        out.write_all(&MAGIC)?;
        out.write_all(&3u32.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(out, key)?;
            out.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(out, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(out, &t.name)?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ty.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            offset = offset
                .checked_add(t.data.len() as u64)
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(too_large)?;
        }
        // Only a data section is aligned: without tensors the file ends here, whatever the
        // alignment (a parsed file may say 2^63, which would be that many bytes of padding).
        if self.tensors.is_empty() {
            return Ok(());
        }
        out.pad_to(alignment)?;
        for t in &self.tensors {
            out.write_all(&t.data)?;
            out.pad_to(alignment)?;
        }
        Ok(())
    }
}

fn too_large() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "tensor data larger than a GGUF file can address",
    )
}

struct CountingWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, alignment: u64) -> std::io::Result<()> {
        let target = align_up(self.written, alignment).ok_or_else(too_large)?;
        let zeros = [0u8; 256];
        while self.written < target {
            let n = (target - self.written).min(zeros.len() as u64) as usize;
            self.write_all(&zeros[..n])?;
        }
        Ok(())
    }
}

fn write_string<W: Write>(out: &mut CountingWriter<W>, s: &str) -> std::io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn write_value<W: Write>(
    out: &mut CountingWriter<W>,
    value: &OwnedMetadataValue,
) -> std::io::Result<()> {
    match value {
        OwnedMetadataValue::U8(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::I8(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::U16(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::I16(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::U32(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::I32(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::U64(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::I64(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::F32(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::F64(v) => out.write_all(&v.to_le_bytes()),
        OwnedMetadataValue::Bool(v) => out.write_all(&[u8::from(*v)]),
        OwnedMetadataValue::String(s) => write_string(out, s),
        OwnedMetadataValue::Array(a) => write_array(out, a),
    }
}

fn write_elements<W: Write, T, const N: usize>(
    out: &mut CountingWriter<W>,
    items: &[T],
    encode: impl Fn(&T) -> [u8; N],
) -> std::io::Result<()> {
    items.iter().try_for_each(|x| out.write_all(&encode(x)))
}

fn write_array<W: Write>(out: &mut CountingWriter<W>, a: &OwnedArray) -> std::io::Result<()> {
    out.write_all(&a.element_type().id().to_le_bytes())?;
    out.write_all(&(a.len() as u64).to_le_bytes())?;
    match a {
        OwnedArray::U8(v) => out.write_all(v),
        OwnedArray::I8(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::U16(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::I16(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::U32(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::I32(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::U64(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::I64(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::F32(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::F64(v) => write_elements(out, v, |x| x.to_le_bytes()),
        OwnedArray::Bool(v) => write_elements(out, v, |&x| [u8::from(x)]),
        OwnedArray::String(v) => v.iter().try_for_each(|s| write_string(out, s)),
        OwnedArray::Array(v) => v.iter().try_for_each(|inner| write_array(out, inner)),
    }
}
